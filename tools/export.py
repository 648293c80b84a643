"""Exports an encoder or a fine-tuned classifier as a SavedModel that takes raw uint8 clips.

    python -m tools.export --model_dir=runs/k400_r3d18 --output_dir=exports/k400_r3d18_encoder
    python -m tools.export --classifier_dir=runs/ucf101_finetune --output_dir=exports/ucf101_classifier

The encoder is the online encoder of the newest checkpoint of a pretraining
run (architecture, frames and crop size from its config.json); the classifier
is what tools.finetune wrote (classifier.json + classifier.weights.h5). The
export runs without this package:

    model = tf.saved_model.load("exports/k400_r3d18_encoder")
    model.signatures["serving_default"](clips=uint8 [N, frames, H, W, 3])   # {"features": [N, D]}

See asc_tf/export.py for every signature.
"""

import json
import os

from absl import flags as absl_flags

import flags

absl_flags.DEFINE_string("model_dir", None, "A pretraining run (tools.pretrain --model_dir): export its encoder.")
absl_flags.DEFINE_string("classifier_dir", None, "A fine-tuning output directory (tools.finetune): export its classifier.")
absl_flags.DEFINE_string("output_dir", None, "The SavedModel directory to write.")
absl_flags.DEFINE_integer("resize_short", None,
                          "Short side before the centre crop. Default: the classifier's own; for an encoder "
                          "crop_size · 128/112 (the paper's 128 for 112).")
absl_flags.DEFINE_integer("frames", None, "Frames per clip of the serving signature. Default: the model's.")
absl_flags.DEFINE_integer("crop_size", None, "Centre crop. Default: the model's.")
FLAGS = flags.FLAGS

CLASSIFIER_CONFIG = "classifier.json"
CLASSIFIER_WEIGHTS = "classifier.weights.h5"


def _read_json(flag, path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        flags.fail(flag, f"cannot read {path}: {error}")


def _validate():
    """The source's settings (config.json or classifier.json), after every flag is checked."""
    if bool(FLAGS.model_dir) == bool(FLAGS.classifier_dir):
        flags.fail("model_dir", "give exactly one of --model_dir and --classifier_dir")
    if FLAGS.model_dir:
        config_path = os.path.join(FLAGS.model_dir, "config.json")
        if not os.path.isfile(config_path):
            flags.fail("model_dir", f"not a pretraining run (no config.json): {FLAGS.model_dir}")
        if not os.path.isfile(os.path.join(FLAGS.model_dir, "checkpoints", "checkpoint")):
            flags.fail("model_dir", f"has no checkpoint: {FLAGS.model_dir}")
        settings = _read_json("model_dir", config_path)
    else:
        for name in (CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS):
            if not os.path.isfile(os.path.join(FLAGS.classifier_dir, name)):
                flags.fail("classifier_dir", f"no {name} in {FLAGS.classifier_dir}")
        settings = _read_json("classifier_dir", os.path.join(FLAGS.classifier_dir, CLASSIFIER_CONFIG))
    if not FLAGS.output_dir:
        flags.fail("output_dir", "is required")
    if FLAGS.frames is not None and FLAGS.frames < 1:
        flags.fail("frames", f"must be at least 1, got {FLAGS.frames}")
    if FLAGS.crop_size is not None and FLAGS.crop_size < 16:
        flags.fail("crop_size", f"must be at least 16 pixels, got {FLAGS.crop_size}")
    crop_size = FLAGS.crop_size or settings["crop_size"]
    if FLAGS.resize_short is not None and FLAGS.resize_short < crop_size:
        flags.fail("resize_short", f"must be at least the crop size {crop_size}, got {FLAGS.resize_short}")
    return settings


def _classifier(settings, frames, crop_size):
    from asc_tf.evaluation import finetune

    model = finetune.build_classifier(settings["backbone"], settings["width"], settings["num_classes"],
                                      dropout=settings["dropout"], clip_shape=(frames, crop_size, crop_size, 3))
    model.load_weights(os.path.join(FLAGS.classifier_dir, CLASSIFIER_WEIGHTS))
    return model


def main(argv):
    del argv
    settings = _validate()
    flags.require_writable("output_dir")
    from asc_tf import export
    from asc_tf.data import augment

    frames = FLAGS.frames or settings["frames"]
    crop_size = FLAGS.crop_size or settings["crop_size"]
    if FLAGS.model_dir:
        from asc_tf.evaluation import encoders

        resize_short = FLAGS.resize_short or augment.protocol_resize_short(crop_size)
        encoder = encoders.from_pretraining(FLAGS.model_dir)
        export.export_encoder(encoder.model, FLAGS.output_dir, frames, crop_size, resize_short)
        output = f'{{"features": [N, {encoder.model.output_dim}] float32}}'
        source = f"encoder {settings['backbone']} (width {settings['width']}) from {encoder.source}"
    else:
        resize_short = FLAGS.resize_short or settings.get("resize_short") or augment.protocol_resize_short(crop_size)
        class_names = settings["class_names"]
        export.export_classifier(_classifier(settings, frames, crop_size), FLAGS.output_dir, class_names,
                                 frames, crop_size, resize_short)
        output = f'{{"probabilities": [N, {len(class_names)}] float32}}, class_names'
        source = f"classifier {settings['backbone']} ({len(class_names)} classes) from {FLAGS.classifier_dir}"
    print(f"exported {source} to {FLAGS.output_dir}\n"
          f"  serving_default: clips uint8 [N, {frames}, H, W, 3] -> short side {resize_short}, "
          f"centre crop {crop_size}, normalise -> {output}; other T fail\n"
          f"  any_length: the same for clips of any T")
    return 0


if __name__ == "__main__":
    flags.run(main)
