"""Video backbones and heads.

    from asc_tf.models import build_backbone
    encoder = build_backbone("r3d_18", width=1.0)
    features = encoder(clips)   # clips [N, T, H, W, 3] float → [N, encoder.output_dim] float32
"""

from asc_tf.choices import BACKBONE_NAMES
from asc_tf.models.port import load_torchvision_state, torch_state_names
from asc_tf.models.resnet3d import r2plus1d_10, r2plus1d_18, r3d_18
from asc_tf.models.s3d import s3d, s3dg

BACKBONES = {
    "r3d_18": r3d_18,
    "r2plus1d_18": r2plus1d_18,
    "r2plus1d_10": r2plus1d_10,
    "s3d": s3d,
    "s3dg": s3dg,
}
# The flags offer BACKBONE_NAMES without importing this module (TensorFlow); a name added on one side only
# would be offered and then fail, or never be offered.
if set(BACKBONES) != set(BACKBONE_NAMES):
    raise ImportError(f"BACKBONES {sorted(BACKBONES)} and asc_tf.choices.BACKBONE_NAMES {sorted(BACKBONE_NAMES)} "
                      "must name the same backbones")


def build_backbone(backbone, width=1.0, sync_bn=False, **kwargs):
    """Builds a backbone by name (one of `BACKBONES`).

    Args:
      backbone: "r3d_18", "r2plus1d_18", "r2plus1d_10", "s3d" or "s3dg".
      width: channel multiplier; 1.0 is the published architecture.
      sync_bn: synchronised (cross-replica) BatchNorm, for multi-replica training.
      **kwargs: e.g. `name` (the Keras model name; default the backbone's).

    Raises:
      ValueError: unknown name (the message lists the valid ones) or width <= 0.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(sorted(BACKBONES))}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    return BACKBONES[backbone](width=width, sync_bn=sync_bn, **kwargs)


__all__ = ["BACKBONES", "build_backbone", "load_torchvision_state", "torch_state_names"]
