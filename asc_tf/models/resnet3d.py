"""3D ResNets: r3d_18 and r2plus1d_18 (torchvision), r2plus1d_10 (VCOP / RSPNet).

Input `[N, T, H, W, 3]` float, output the globally average-pooled feature
`[N, 512 · width]` float32. Layer for layer as the PyTorch originals, so their
weights can be ported (`asc_tf.models.port`); every model keeps a table
`torch_names` from PyTorch `state_dict` prefixes to its own layers.

Published parameter counts (width 1.0, no classifier): r3d_18 33,166,272;
r2plus1d_18 31,300,125; r2plus1d_10 14,365,303.
"""

import keras

from asc_tf.models.layers import TorchConv3D, batch_norm, global_average_pool, scaled

# torchvision's BatchNorm3d defaults: eps 1e-5, torch momentum 0.1.
RESNET_BN = dict(epsilon=1e-5, momentum=0.9)


class _Backbone(keras.Model):
    """Shared plumbing: the PyTorch name table, the output size, and the forward pass.

    Subclasses create `self.stem` and the list `self.blocks`.
    """

    def __init__(self, output_dim, sync_bn, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.sync_bn = sync_bn
        # torch state_dict prefix → Keras layer name (strings: Keras must not track layers twice).
        self.torch_names = {}

    def call(self, inputs, training=None):
        """clips [N, T, H, W, 3] → [N, output_dim] float32: stem, blocks, global average pool."""
        x = self.stem(inputs, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return global_average_pool(x)

    def _conv(self, torch_name, name, filters, kernel, strides=1, padding=0, use_bias=False, initializer=None):
        extra = {} if initializer is None else {"kernel_initializer": initializer}
        layer = TorchConv3D(filters, kernel, strides, padding, use_bias=use_bias, name=name, **extra)
        self.torch_names[torch_name] = name
        return layer

    def _bn(self, torch_name, name, **overrides):
        settings = {**RESNET_BN, **overrides}
        layer = batch_norm(name, synchronized=self.sync_bn, **settings)
        self.torch_names[torch_name] = name
        return layer


class _Sequence(keras.layers.Layer):
    """Layers applied in order, with a ReLU after the positions listed in `relu_after`."""

    def __init__(self, layers, relu_after=(), **kwargs):
        super().__init__(**kwargs)
        self.steps = list(layers)
        self.relu_after = tuple(relu_after)

    def call(self, x, training=None):
        for index, layer in enumerate(self.steps):
            x = layer(x, training=training)
            if index in self.relu_after:
                x = keras.ops.relu(x)
        return x


class _ResidualBlock(keras.layers.Layer):
    """conv1 → BN → ReLU → conv2 → BN, plus the input (projected when shapes change), then ReLU."""

    def __init__(self, conv1, bn1, conv2, bn2, shortcut=None, **kwargs):
        super().__init__(**kwargs)
        self.conv1, self.bn1, self.conv2, self.bn2 = conv1, bn1, conv2, bn2
        self.shortcut = shortcut

    def call(self, x, training=None):
        out = keras.ops.relu(self.bn1(self.conv1(x, training=training), training=training))
        out = self.bn2(self.conv2(out, training=training), training=training)
        residual = x if self.shortcut is None else self.shortcut(x, training=training)
        return keras.ops.relu(out + residual)


class VideoResNet(_Backbone):
    """torchvision's VideoResNet with BasicBlocks: r3d_18 and r2plus1d_18.

    Args:
      conv_type: "3d" (3×3×3 convolutions, R3D) or "2plus1d" (1×3×3 → BN → ReLU → 3×1×1, R(2+1)D).
      layers: blocks per stage.
      width: channel multiplier (1.0 = published model).
      sync_bn: synchronised (cross-replica) BatchNorm.
    """

    def __init__(self, conv_type="3d", layers=(2, 2, 2, 2), width=1.0, sync_bn=False, name=None, **kwargs):
        if conv_type not in ("3d", "2plus1d"):
            raise ValueError(f"conv_type must be '3d' or '2plus1d', got {conv_type!r}")
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        super().__init__(output_dim=planes[-1], sync_bn=sync_bn, name=name, **kwargs)
        self.conv_type = conv_type
        self.width = width

        if conv_type == "3d":
            self.stem = _Sequence(
                [
                    self._conv("stem.0", "stem_conv", planes[0], (3, 7, 7), (1, 2, 2), (1, 3, 3)),
                    self._bn("stem.1", "stem_bn"),
                ],
                relu_after=(1,),
                name="stem",
            )
        else:
            stem_mid = scaled(45, width)
            self.stem = _Sequence(
                [
                    self._conv("stem.0", "stem_conv_spatial", stem_mid, (1, 7, 7), (1, 2, 2), (0, 3, 3)),
                    self._bn("stem.1", "stem_bn_spatial"),
                    self._conv("stem.3", "stem_conv_temporal", planes[0], (3, 1, 1), 1, (1, 0, 0)),
                    self._bn("stem.4", "stem_bn"),
                ],
                relu_after=(1, 3),
                name="stem",
            )

        self.blocks = []
        inplanes = planes[0]
        for stage, (out, count) in enumerate(zip(planes, layers), start=1):
            for index in range(count):
                stride = 2 if stage > 1 and index == 0 else 1
                self.blocks.append(self._block(stage, index, inplanes, out, stride))
                inplanes = out

    def _unit(self, prefix, name, inplanes, planes, midplanes, stride):
        """One 3×3×3 convolution (R3D) or its (2+1)D factorisation."""
        if self.conv_type == "3d":
            return self._conv(prefix, name, planes, 3, stride, 1)
        return _Sequence(
            [
                self._conv(f"{prefix}.0", f"{name}_spatial", midplanes, (1, 3, 3), (1, stride, stride), (0, 1, 1)),
                self._bn(f"{prefix}.1", f"{name}_midbn"),
                self._conv(f"{prefix}.3", f"{name}_temporal", planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0)),
            ],
            relu_after=(1,),
            name=name,
        )

    def _block(self, stage, index, inplanes, planes, stride):
        torch_prefix = f"layer{stage}.{index}"
        name = f"layer{stage}_block{index}"
        # torchvision computes midplanes once from (inplanes, planes) and reuses it
        # for the block's second convolution (planes → planes): a quirk kept for
        # weight compatibility and the published parameter count.
        midplanes = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)
        shortcut = None
        if stride != 1 or inplanes != planes:
            shortcut = _Sequence(
                [
                    self._conv(f"{torch_prefix}.downsample.0", f"{name}_downsample_conv", planes, 1, stride, 0),
                    self._bn(f"{torch_prefix}.downsample.1", f"{name}_downsample_bn"),
                ],
                name=f"{name}_downsample",
            )
        return _ResidualBlock(
            self._unit(f"{torch_prefix}.conv1.0", f"{name}_conv1", inplanes, planes, midplanes, stride),
            self._bn(f"{torch_prefix}.conv1.1", f"{name}_bn1"),
            self._unit(f"{torch_prefix}.conv2.0", f"{name}_conv2", planes, planes, midplanes, 1),
            self._bn(f"{torch_prefix}.conv2.1", f"{name}_bn2"),
            shortcut,
            name=name,
        )


class R2Plus1D10(_Backbone):
    """The VCOP / RSPNet R2Plus1DNet with one block per stage (the paper's 14.4M "R(2+1)D").

    Its unit is SpatioTemporalConv(cin, cout, (kt, kh, kw)) = Conv (1, kh, kw) →
    BN → ReLU → Conv (kt, 1, 1), mid = ⌊kt·kh·kw·cin·cout / (kh·kw·cin + kt·cout)⌋,
    computed per convolution (unlike torchvision). PyTorch names follow VCOP's
    `R2Plus1DNet` (`conv1.spatial_conv`, `conv2.block1.conv1.bn`, …).
    """

    def __init__(self, width=1.0, sync_bn=False, name=None, **kwargs):
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        super().__init__(output_dim=planes[-1], sync_bn=sync_bn, name=name, **kwargs)
        self.width = width
        self.stem = _Sequence(
            [
                self._st_conv("conv1", "stem_conv", 3, planes[0], (3, 7, 7), (1, 2, 2), (1, 3, 3)),
                self._bn("bn1", "stem_bn"),
            ],
            relu_after=(1,),
            name="stem",
        )
        self.blocks = []
        inplanes = planes[0]
        for stage, out in enumerate(planes, start=2):
            downsample = stage > 2
            self.blocks.append(self._block(f"conv{stage}.block1", f"conv{stage}_block1", inplanes, out, downsample))
            inplanes = out

    def _st_conv(self, prefix, name, cin, cout, kernel, strides, padding):
        kt, kh, kw = kernel
        st, sh, sw = strides
        pt, ph, pw = padding
        mid = (kt * kh * kw * cin * cout) // (kh * kw * cin + kt * cout)
        return _Sequence(
            [
                self._conv(f"{prefix}.spatial_conv", f"{name}_spatial", mid, (1, kh, kw), (1, sh, sw), (0, ph, pw)),
                self._bn(f"{prefix}.bn", f"{name}_midbn"),
                self._conv(f"{prefix}.temporal_conv", f"{name}_temporal", cout, (kt, 1, 1), (st, 1, 1), (pt, 0, 0)),
            ],
            relu_after=(1,),
            name=name,
        )

    def _block(self, prefix, name, inplanes, planes, downsample):
        stride = 2 if downsample else 1
        shortcut = None
        if downsample:
            shortcut = _Sequence(
                [
                    self._st_conv(
                        f"{prefix}.downsampleconv", f"{name}_downsample_conv", inplanes, planes, (1, 1, 1), (2, 2, 2), (0, 0, 0)
                    ),
                    self._bn(f"{prefix}.downsamplebn", f"{name}_downsample_bn"),
                ],
                name=f"{name}_downsample",
            )
        return _ResidualBlock(
            self._st_conv(f"{prefix}.conv1", f"{name}_conv1", inplanes, planes, (3, 3, 3), (stride,) * 3, (1, 1, 1)),
            self._bn(f"{prefix}.bn1", f"{name}_bn1"),
            self._st_conv(f"{prefix}.conv2", f"{name}_conv2", planes, planes, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
            self._bn(f"{prefix}.bn2", f"{name}_bn2"),
            shortcut,
            name=name,
        )


def r3d_18(width=1.0, sync_bn=False, name="r3d_18"):
    """torchvision r3d_18 without its classifier: 33,166,272 parameters at width 1.0."""
    return VideoResNet("3d", (2, 2, 2, 2), width=width, sync_bn=sync_bn, name=name)


def r2plus1d_18(width=1.0, sync_bn=False, name="r2plus1d_18"):
    """torchvision r2plus1d_18 without its classifier: 31,300,125 parameters at width 1.0."""
    return VideoResNet("2plus1d", (2, 2, 2, 2), width=width, sync_bn=sync_bn, name=name)


def r2plus1d_10(width=1.0, sync_bn=False, name="r2plus1d_10"):
    """VCOP / RSPNet R(2+1)D, one block per stage: 14,365,303 parameters at width 1.0."""
    return R2Plus1D10(width=width, sync_bn=sync_bn, name=name)
