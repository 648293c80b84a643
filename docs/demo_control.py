"""The demo's positive control: what the supervised variant reaches on the synthetic set, per recipe.

    python docs/demo_control.py --output_dir=runs/demo_control [--variants=NAME,...]

Trains the demo's classifier (a thin R3D-18 and a linear head, `finetune.build_classifier`)
from random init with the labels of the synthetic validation recipe and scores
it at the video level on the validation split (`finetune.evaluate`, 4 clips per
video, centre crop), one JSON line per variant. Each variant is a change of
the baseline below (the demo's supervised run as it stood: SGD at base rate
0.4, the fine-tuning crop of 30-100 % of the area, 1,000 steps of 16). The
sets are ingested once per set setting (frames, size and the set's constants,
patched in this process only) with `ingest.ingest`, as tools.build_tfrecords
does, and cached; a finished variant is read back, not run again. The
`*_demean` variants subtract each clip's mean over time before the encoder:
a diagnosis of what stops the classifier (docs/experiments.md, "The positive
control"), not a recipe.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


@dataclasses.dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"
    lr: float = 0.4  # SGD: base rate at batch 128 (scaled); Adam: the rate itself
    crop_scale: tuple = (0.3, 1.0)
    steps: int = 1000
    batch_size: int = 16
    frames: int = 8
    crop_size: int = 32
    stride: int = 1
    video_frames: int = 48
    video_size: int = 48
    train_videos: int = 384
    val_videos: int = 192
    width: float = 0.25
    seed: int = 0
    # the set's constants (asc_tf/data/synthetic.py), in pixels of a 64-pixel frame
    pattern_speed: float = 2.0
    background_contrast: float = 90.0
    object_contrast: float = 80.0
    object_size: tuple = (10.0, 20.0)
    background_mean: object = None  # None: drawn per video; a grey level: every video's mean background colour
    background_pan: float = 0.0
    # a diagnosis, not a recipe: every clip minus its mean over time (the static picture removed) before the encoder
    demean: bool = False


SET_CONSTANTS = ("pattern_speed", "background_contrast", "object_contrast", "object_size", "background_pan")
# The cache folder's name: these, in this order (background_mean is an argument of the set, not a constant).
SET_FIELDS = ("video_frames", "video_size", "pattern_speed", "background_contrast", "object_contrast", "object_size",
              "background_mean", "background_pan")


VARIANTS = {
    "baseline": Recipe(),
    "adam": Recipe(optimizer="adam", lr=1e-3),
    "adam_crop_mild": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0)),
    "adam_fast": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), pattern_speed=4.0),
    "adam_fast_flat": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), pattern_speed=4.0,
                             background_contrast=30.0),
    "adam_fast_16f": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), pattern_speed=4.0, frames=16),
    "adam_fast_size32": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), pattern_speed=4.0,
                               video_size=32),
    "sgd_fast": Recipe(crop_scale=(0.7, 1.0), pattern_speed=4.0),
    # More videos than the classifier can learn by their looks (adam_fast fits 384 at 0.62, chance on val).
    "adam_fast_3k": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), pattern_speed=4.0,
                           train_videos=3072),
    "adam_3k": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), train_videos=3072),
    # Large objects on a nearly flat background.
    "easy_3k": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), pattern_speed=4.0, train_videos=3072,
                      background_contrast=20.0, object_size=(24.0, 32.0)),
    # Does the classifier find the motion once the static picture is gone? (adam_crop_mild, adam_3k otherwise)
    "adam_demean": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), demean=True),
    "adam_3k_demean": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), train_videos=3072, demean=True),
    # Every video's background has the same mean colour: no per-video colour offset at the input.
    "adam_grey": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), background_mean=128.0),
    "sgd_grey": Recipe(background_mean=128.0),
    "sgd_grey_crop_mild": Recipe(crop_scale=(0.7, 1.0), background_mean=128.0),
    "adam_grey_3k": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), background_mean=128.0,
                           train_videos=3072),
    "adam_grey_3k_3000": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), background_mean=128.0,
                                train_videos=3072, steps=3000),
    # Within the demo's 1,000 steps: clips at stride 2 (3 px per sampled frame after the crop).
    "adam_grey_3k_s2": Recipe(optimizer="adam", lr=1e-3, crop_scale=(0.7, 1.0), background_mean=128.0,
                              train_videos=3072, stride=2),
    # Within a shorter budget: Adam at 3e-3 (the PyTorch sketch's rate).
    "adam_grey_3k_lr3": Recipe(optimizer="adam", lr=3e-3, crop_scale=(0.7, 1.0), background_mean=128.0,
                               train_videos=3072),
}


def build(data_dir, split, count, recipe):
    """The recipe's synthetic split, ingested in this process with the set's constants of the recipe."""
    from asc_tf.data import ingest, synthetic

    values = [getattr(recipe, name) for name in SET_FIELDS]
    output = os.path.join(data_dir, f"{split}_{count}_" + "_".join(
        "-".join(map(str, value)) if isinstance(value, tuple) else str(value) for value in values))
    if not os.path.isfile(os.path.join(output, "manifest.json")):
        saved = {name: getattr(synthetic, name.upper()) for name in SET_CONSTANTS}
        try:
            for name in SET_CONSTANTS:
                setattr(synthetic, name.upper(), getattr(recipe, name))
            listing = ingest.list_synthetic(count, split, 0, recipe.video_frames, recipe.video_size, "pattern",
                                            recipe.background_mean)
            ingest.ingest(listing, output, name=split, options=ingest.EncodeOptions(short_side=0),
                          progress_stream=open(os.devnull, "w"))
        finally:
            for name, value in saved.items():
                setattr(synthetic, name.upper(), value)
    return os.path.join(output, f"{split}-*.tfrecord")


def _demeaned(clips):
    """Clips [..., T, H, W, C] minus their mean over T (the static picture)."""
    import tensorflow as tf

    return clips - tf.reduce_mean(clips, axis=-4, keepdims=True)


def train_and_score(recipe, train_data, val_data):
    import keras

    from asc_tf.data import augment, pipeline
    from asc_tf.evaluation import finetune

    keras.utils.set_random_seed(recipe.seed)
    clip_shape = (recipe.frames, recipe.crop_size, recipe.crop_size, 3)
    model = finetune.build_classifier("r3d_18", recipe.width, 6, dropout=0.0, clip_shape=clip_shape)
    # compile_classifier scales a rate given at batch 128; an Adam recipe gives the rate itself.
    base_lr = recipe.lr if recipe.optimizer == "sgd" else recipe.lr * 128 / recipe.batch_size
    finetune.compile_classifier(model, base_lr, recipe.batch_size, recipe.steps, recipe.steps // 10,
                                optimizer=recipe.optimizer)
    config = dataclasses.replace(augment.FINETUNE, flip_prob=0.0, crop_scale=tuple(recipe.crop_scale))
    dataset = pipeline.finetune_dataset(train_data, recipe.batch_size, num_frames=recipe.frames,
                                        crop_size=recipe.crop_size, stride=recipe.stride, augment=config,
                                        seed=recipe.seed, shuffle_buffer=recipe.train_videos)
    dataset = dataset.map(lambda element: (element["clip"], element["label"]))
    if recipe.demean:
        dataset = dataset.map(lambda clips, labels: (_demeaned(clips), labels))
    started = time.monotonic()
    logs = finetune.train(model, dataset, recipe.steps, stream=open(os.devnull, "w"))
    seconds = time.monotonic() - started
    test = pipeline.eval_dataset(val_data, num_clips=4, num_frames=recipe.frames, stride=recipe.stride,
                                 resize_short=augment.protocol_resize_short(recipe.crop_size),
                                 crop_size=recipe.crop_size, batch_size=16)
    if recipe.demean:
        test = test.map(lambda element: {**element, "clips": _demeaned(element["clips"])})
    scores = finetune.evaluate(model, test, stream=open(os.devnull, "w"))
    return {"val_top1": 100.0 * scores["top1"], "train_accuracy": logs.get("accuracy"),
            "first_loss": logs.get("first_loss"), "last_loss": logs.get("loss"), "train_seconds": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/demo_control")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    names = [name for name in args.variants.split(",") if name]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    os.makedirs(args.output_dir, exist_ok=True)
    for name in names:
        recipe = VARIANTS[name]
        path = os.path.join(args.output_dir, f"{name}.json")
        if os.path.isfile(path):
            with open(path) as fh:
                saved = json.load(fh)
            if saved["recipe"] == json.loads(json.dumps(dataclasses.asdict(recipe))):
                print(json.dumps(saved))
                continue
        data_dir = os.path.join(args.output_dir, "data")
        train_data = build(data_dir, "train", recipe.train_videos, recipe)
        val_data = build(data_dir, "val", recipe.val_videos, recipe)
        result = {"variant": name, "recipe": dataclasses.asdict(recipe),
                  **train_and_score(recipe, train_data, val_data)}
        with open(path, "w") as fh:
            json.dump(result, fh)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
