"""S3D (torchvision) and S3D-G (S3D with feature gating, Xie et al. 2018).

Input `[N, T, H, W, 3]` float, output the globally average-pooled feature
`[N, 1024 · width]` float32. S3D follows torchvision's `s3d` layer for layer
(`features.0` … `features.15`); S3D-G adds self-gating — mean over T, H, W →
1×1×1 convolution with bias → sigmoid → channel-wise scale — after the
192-channel stem convolution and on each of the four branch outputs of every
Mixed block. The gates have no torchvision counterpart; their PyTorch-style
names (`features.3.gate`, `features.5.branch0_gate`, …) are this project's own.

Published parameter counts (width 1.0, no classifier): s3d 7,910,048; s3dg 9,135,056.
"""

import keras
import tensorflow as tf

from asc_tf.models.layers import TorchMaxPool3D, scaled
from asc_tf.models.resnet3d import _Backbone, _Sequence

# torchvision's S3D BatchNorm: eps 1e-3, torch momentum 0.001.
S3D_BN = dict(epsilon=1e-3, momentum=0.999)

# (index in torchvision's `features`, Keras name, in, b0, b1a, b1b, b2a, b2b, b3)
MIXED_BLOCKS = (
    (5, "mixed_3b", 192, 64, 96, 128, 16, 32, 32),
    (6, "mixed_3c", 256, 128, 128, 192, 32, 96, 64),
    (8, "mixed_4b", 480, 192, 96, 208, 16, 48, 64),
    (9, "mixed_4c", 512, 160, 112, 224, 24, 64, 64),
    (10, "mixed_4d", 512, 128, 128, 256, 24, 64, 64),
    (11, "mixed_4e", 512, 112, 144, 288, 32, 64, 64),
    (12, "mixed_4f", 528, 256, 160, 320, 32, 128, 128),
    (14, "mixed_5b", 832, 256, 160, 320, 32, 128, 128),
    (15, "mixed_5c", 832, 384, 192, 384, 48, 128, 128),
)


class SelfGate(keras.layers.Layer):
    """S3D-G feature gating: x · sigmoid(W · mean_{T,H,W}(x) + b), per channel."""

    def __init__(self, conv, **kwargs):
        super().__init__(**kwargs)
        self.conv = conv

    def call(self, x):
        pooled = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        return x * keras.ops.sigmoid(self.conv(pooled))


class _MixedBlock(keras.layers.Layer):
    """Inception cell: four branches concatenated on channels (each optionally gated)."""

    def __init__(self, branches, gates, **kwargs):
        super().__init__(**kwargs)
        self.branches = branches
        self.gates = gates

    def call(self, x, training=None):
        outputs = []
        for index, branch in enumerate(self.branches):
            out = branch(x, training=training)
            if self.gates:
                out = self.gates[index](out)
            outputs.append(out)
        return tf.concat(outputs, axis=-1)


class S3D(_Backbone):
    """S3D / S3D-G backbone.

    Args:
      gating: add S3D-G's self-gating (False = torchvision's s3d).
      width: channel multiplier (1.0 = published model).
      sync_bn: synchronised (cross-replica) BatchNorm.
    """

    def __init__(self, gating=False, width=1.0, sync_bn=False, name=None, **kwargs):
        def c(channels):
            return scaled(channels, width)

        super().__init__(output_dim=c(384) + c(384) + c(128) + c(128), sync_bn=sync_bn, name=name, **kwargs)
        self.width = width
        self.gating = gating
        stem = [
            self._sep_conv("features.0", "conv1", 3, c(64), 7, 2, 3),
            TorchMaxPool3D((1, 3, 3), (1, 2, 2), (0, 1, 1), name="pool1"),
            self._conv_bn_relu("features.2", "conv2", c(64), 1),
            self._sep_conv("features.3", "conv3", c(64), c(192), 3, 1, 1),
        ]
        if gating:
            stem.append(self._gate("features.3.gate", "conv3_gate", c(192)))
        stem.append(TorchMaxPool3D((1, 3, 3), (1, 2, 2), (0, 1, 1), name="pool2"))
        self.stem = _Sequence(stem, name="stem")

        self.blocks = []
        for index, name, _, b0, b1a, b1b, b2a, b2b, b3 in MIXED_BLOCKS:
            if name == "mixed_4b":
                self.blocks.append(TorchMaxPool3D(3, 2, 1, name="pool3"))
            if name == "mixed_5b":
                self.blocks.append(TorchMaxPool3D(2, 2, 0, name="pool4"))
            self.blocks.append(self._mixed(index, name, c(b0), c(b1a), c(b1b), c(b2a), c(b2b), c(b3)))

    def _conv_bn_relu(self, prefix, name, filters, kernel, strides=1, padding=0):
        """torchvision's Conv3dNormActivation: conv (no bias) → BN → ReLU."""
        return _Sequence(
            [
                self._conv(f"{prefix}.0", f"{name}_conv", filters, kernel, strides, padding),
                self._bn(f"{prefix}.1", f"{name}_bn", **S3D_BN),
            ],
            relu_after=(1,),
            name=name,
        )

    def _sep_conv(self, prefix, name, cin, cout, k, s, p):
        """TemporalSeparableConv: (1, k, k) stride (1, s, s) → BN → ReLU → (k, 1, 1) stride (s, 1, 1) → BN → ReLU."""
        del cin  # inferred by Keras at build time
        return _Sequence(
            [
                self._conv_bn_relu(f"{prefix}.0", f"{name}_spatial", cout, (1, k, k), (1, s, s), (0, p, p)),
                self._conv_bn_relu(f"{prefix}.1", f"{name}_temporal", cout, (k, 1, 1), (s, 1, 1), (p, 0, 0)),
            ],
            name=name,
        )

    def _gate(self, torch_name, name, channels):
        conv = self._conv(torch_name, f"{name}_conv", channels, 1, 1, 0, use_bias=True, initializer="glorot_uniform")
        return SelfGate(conv, name=name)

    def _mixed(self, index, name, b0, b1a, b1b, b2a, b2b, b3):
        prefix = f"features.{index}"
        branches = [
            self._conv_bn_relu(f"{prefix}.branch0", f"{name}_branch0", b0, 1),
            _Sequence(
                [
                    self._conv_bn_relu(f"{prefix}.branch1.0", f"{name}_branch1_reduce", b1a, 1),
                    self._sep_conv(f"{prefix}.branch1.1", f"{name}_branch1", b1a, b1b, 3, 1, 1),
                ],
                name=f"{name}_branch1_seq",
            ),
            _Sequence(
                [
                    self._conv_bn_relu(f"{prefix}.branch2.0", f"{name}_branch2_reduce", b2a, 1),
                    self._sep_conv(f"{prefix}.branch2.1", f"{name}_branch2", b2a, b2b, 3, 1, 1),
                ],
                name=f"{name}_branch2_seq",
            ),
            _Sequence(
                [
                    TorchMaxPool3D(3, 1, 1, name=f"{name}_branch3_pool"),
                    self._conv_bn_relu(f"{prefix}.branch3.1", f"{name}_branch3", b3, 1),
                ],
                name=f"{name}_branch3_seq",
            ),
        ]
        gates = []
        if self.gating:
            gates = [
                self._gate(f"{prefix}.branch{i}_gate", f"{name}_branch{i}_gate", channels)
                for i, channels in enumerate((b0, b1b, b2b, b3))
            ]
        return _MixedBlock(branches, gates, name=name)



def s3d(width=1.0, sync_bn=False, name="s3d"):
    """torchvision s3d without its classifier: 7,910,048 parameters at width 1.0."""
    return S3D(gating=False, width=width, sync_bn=sync_bn, name=name)


def s3dg(width=1.0, sync_bn=False, name="s3dg"):
    """S3D-G (S3D + self-gating): 9,135,056 parameters at width 1.0."""
    return S3D(gating=True, width=width, sync_bn=sync_bn, name=name)
