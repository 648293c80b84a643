"""Flags shared by the evaluation binaries (finetune, retrieve, export, search)."""

import glob
import os

from absl import flags as absl_flags

import flags as asc_flags
from flags.model import define_model_flags, validate_model_flags


def define_encoder_flags():
    """--backbone, --width, --frames, --crop_size, --init, --model_dir, --saved_model, --seed."""
    define_model_flags()
    absl_flags.DEFINE_enum("init", "pretrained", ["pretrained", "random"],
                           "pretrained: from --model_dir or --saved_model; random: the w/o-pretraining baseline.")
    absl_flags.DEFINE_string("model_dir", None, "A pretraining run (tools.pretrain --model_dir).")
    absl_flags.DEFINE_string("saved_model", None, "An encoder SavedModel exported by tools.export.")
    absl_flags.DEFINE_integer("seed", 0, "Seed (random init, data order).")


def define_data_flags():
    """--train_data, --test_data, --output_dir."""
    absl_flags.DEFINE_string("train_data", None, "File pattern of the training (gallery) TFRecord shards.")
    absl_flags.DEFINE_string("test_data", None, "File pattern of the test (query) TFRecord shards.")
    absl_flags.DEFINE_string("output_dir", None, "Results, pictures and TensorBoard logs go here.")


def validate_encoder_flags():
    values = asc_flags.FLAGS
    validate_model_flags()
    if values.init == "pretrained" and bool(values.model_dir) == bool(values.saved_model):
        asc_flags.fail("model_dir", "with --init=pretrained give exactly one of --model_dir and --saved_model")
    if values.model_dir and not os.path.isfile(os.path.join(values.model_dir, "config.json")):
        asc_flags.fail("model_dir", f"not a pretraining run (no config.json): {values.model_dir}")
    if values.saved_model and not os.path.isfile(os.path.join(values.saved_model, "saved_model.pb")):
        asc_flags.fail("saved_model", f"no saved_model.pb in {values.saved_model}")


def validate_data_flags(*required):
    """Each named pattern flag must match files; --output_dir must not be a file."""
    values = asc_flags.FLAGS
    for name in required:
        pattern = getattr(values, name)
        if not pattern:
            asc_flags.fail(name, "is required")
        if not glob.glob(pattern):
            asc_flags.fail(name, f"no files match {pattern}")
    if not values.output_dir:
        asc_flags.fail("output_dir", "is required")
    if os.path.exists(values.output_dir) and not os.path.isdir(values.output_dir):
        asc_flags.fail("output_dir", f"exists and is not a directory: {values.output_dir}")
