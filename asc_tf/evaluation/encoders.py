"""Where an encoder to evaluate comes from: a pretraining run, an exported SavedModel, or random init.

Every source gives the same thing, an `Encoder`: a callable from normalised
clips `[N, T, H, W, 3]` float32 (what `asc_tf.data.pipeline` yields) to
features `[N, D]` float32, plus the Keras backbone when there is one (to
fine-tune it).
"""

import dataclasses
import json
import os

import tensorflow as tf

from asc_tf.models import build_backbone

INITS = ("pretrained", "random")


@dataclasses.dataclass
class Encoder:
    """features(clips) → [N, D] float32; `model` is the Keras backbone (None for a SavedModel)."""

    features: object
    model: object
    output_dim: int
    source: str

    def __call__(self, clips):
        return self.features(clips)


def from_keras(model, source):
    """An Encoder running a Keras backbone in inference mode."""
    forward = tf.function(lambda clips: model(clips, training=False), reduce_retracing=True)
    return Encoder(features=forward, model=model, output_dim=model.output_dim, source=source)


def pretrain_config(model_dir):
    """The PretrainConfig a pretraining run saved in model_dir/config.json."""
    from asc_tf.pretraining import PretrainConfig

    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir} is not a pretraining run: no config.json")
    with open(path) as f:
        values = json.load(f)
    for name in ("speed_set", "crop_scale"):
        if name in values:
            values[name] = tuple(values[name])
    return PretrainConfig(**values)


def from_pretraining(model_dir):
    """The online encoder of the newest checkpoint of a pretraining run (architecture from its config.json)."""
    from asc_tf import pretraining

    config = pretrain_config(model_dir)
    if not tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")):
        raise FileNotFoundError(f"{model_dir} has no checkpoint")
    strategy = tf.distribute.get_strategy()
    model, _, _, path = pretraining.restore(config, strategy)
    return from_keras(model.online_encoder, source=path)


def from_saved_model(path):
    """An encoder exported by `tools.export` (its `features` function takes normalised float clips)."""
    loaded = tf.saved_model.load(path)
    if not hasattr(loaded, "features"):
        raise ValueError(f"{path} is not an encoder exported by tools.export (no `features` function)")
    # A restored function holds its variables weakly: the closure keeps `loaded` (and them) alive.
    return Encoder(
        features=lambda clips: loaded.features(clips), model=None, output_dim=int(loaded.output_dim.numpy()),
        source=path,
    )


def random_init(backbone, width, clip_shape, seed=0):
    """A randomly initialised backbone (the "w/o pretraining" baseline), seeded."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_backbone(backbone, width=width)
    model(tf.zeros((1, *clip_shape)))
    return from_keras(model, source=f"random init (seed {seed})")


def load_encoder(init="pretrained", model_dir=None, saved_model=None, backbone="r3d_18", width=1.0,
                 clip_shape=(16, 112, 112, 3), seed=0):
    """One entry point for the evaluation binaries.

    Args:
      init: "pretrained" (from `model_dir` or `saved_model`) or "random".
      model_dir: a pretraining run (tools.pretrain --model_dir).
      saved_model: an encoder SavedModel from tools.export.
      backbone, width, clip_shape, seed: for init="random".
    """
    if init == "random":
        return random_init(backbone, width, clip_shape, seed)
    if init != "pretrained":
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if bool(model_dir) == bool(saved_model):
        raise ValueError("give exactly one of model_dir and saved_model")
    return from_pretraining(model_dir) if model_dir else from_saved_model(saved_model)
