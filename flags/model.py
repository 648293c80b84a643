"""Flags naming the backbone and the clip shape, shared by every binary that builds an encoder."""

from absl import flags as absl_flags

import flags as asc_flags

from asc_tf.choices import BACKBONE_NAMES


def define_model_flags(backbone="r3d_18", frames=16, crop_size=112):
    """--backbone, --width, --frames, --crop_size."""
    absl_flags.DEFINE_enum("backbone", backbone, sorted(BACKBONE_NAMES), "Video encoder architecture.")
    absl_flags.DEFINE_float("width", 1.0, "Channel multiplier; 1.0 is the published architecture.")
    absl_flags.DEFINE_integer("frames", frames, "Frames per clip.")
    absl_flags.DEFINE_integer("crop_size", crop_size, "Spatial size of a clip (height = width).")


def validate_model_flags():
    """Rejects impossible values with exit code 2, before any work."""
    values = asc_flags.FLAGS
    if not values.width > 0:
        asc_flags.fail("width", f"must be positive, got {values.width}")
    if values.frames < 1:
        asc_flags.fail("frames", f"must be at least 1, got {values.frames}")
    if values.crop_size < 16:
        asc_flags.fail("crop_size", f"must be at least 16 pixels, got {values.crop_size}")
