"""Building blocks shared by the backbones: torch-compatible padding and BatchNorm.

PyTorch pads symmetrically (`padding=(1, 3, 3)`); TensorFlow's 'SAME' pads
asymmetrically when the stride is 2 (one pixel more on the right). The two give
the same output size but sample different pixels, so weights ported from
torchvision would be applied off by one. These layers pad exactly as PyTorch
does, and fall back to the (faster, fused) 'same' convolution wherever it is
equivalent: stride 1 and an odd kernel padded by k // 2.
"""

import functools

import keras
import numpy as np
import tensorflow as tf


def triple(value):
    """An int or a 3-sequence → a tuple of 3 ints (T, H, W)."""
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"expected an int or 3 values (T, H, W), got {value}")
    return value


def scaled(channels, width):
    """Channel count under a width multiplier; never below 1."""
    return max(1, int(round(channels * width)))


def kaiming_fan_out():
    """torchvision's video models initialise convolutions this way (fan_out, ReLU gain)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _is_same(kernel, strides, padding):
    return all(s == 1 and k % 2 == 1 and 2 * p == k - 1 for k, s, p in zip(kernel, strides, padding))


def _torch_pads(padding):
    return [[0, 0], [padding[0], padding[0]], [padding[1], padding[1]], [padding[2], padding[2]], [0, 0]]


@functools.lru_cache(maxsize=None)
def bf16_filter_gradient_is_wrong():
    """Whether this process's bfloat16 Conv3D weight gradient is wrong (oneDNN's AVX-512 kernels below AMX).

    On CPUs with AVX-512 BF16 but no AMX (or under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 or AVX512_CORE_FP16),
    TensorFlow 2.21's oneDNN backward-weights kernel returns garbage, often NaN, wherever the input has 2 frames
    and the kernel 3 taps in time at stride 1: R3D-18's layer4 at 16×112² is off by 108 % of float32's largest
    entry, the tests' thin R3D-18's layer2 is NaN (docs/bf16_filter_gradient.py). Outputs and input gradients
    are right. Probed once per process, eagerly even when first asked inside a trace, on that shape: a oneDNN
    that fixes it turns the workaround off by itself.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 2, 4, 4, 16)).astype(np.float32)
    dy = rng.normal(size=(2, 2, 4, 4, 16)).astype(np.float32)
    with tf.init_scope():
        try:
            got, want = (
                tf.cast(tf.raw_ops.Conv3DBackpropFilterV2(
                    input=tf.cast(x, dtype), filter_sizes=[3, 3, 3, 16, 16], out_backprop=tf.cast(dy, dtype),
                    strides=[1] * 5, padding="SAME"), tf.float32).numpy()
                for dtype in (tf.bfloat16, tf.float32)
            )
        except tf.errors.OpError:  # no bfloat16 convolution at all (pretraining.check_bf16_convolutions says so)
            return False
    return not np.all(np.abs(got - want) <= 0.05 * np.abs(want).max())


def conv3d_float32_filter_gradient(inputs, kernel, strides, padding, dilations):
    """A Conv3D whose weight gradient is computed in float32, its output and input gradient in the inputs' dtype.

    For bfloat16 where `bf16_filter_gradient_is_wrong()`; `kernel` is already in the inputs' dtype.
    """
    strides, dilations, padding = [1, *strides, 1], [1, *dilations, 1], padding.upper()

    @tf.custom_gradient
    def conv(x, k):
        def grad(dy):
            dx = tf.raw_ops.Conv3DBackpropInputV2(
                input_sizes=tf.shape(x), filter=k, out_backprop=dy, strides=strides, padding=padding,
                dilations=dilations)
            dk = tf.raw_ops.Conv3DBackpropFilterV2(
                input=tf.cast(x, tf.float32), filter_sizes=tf.shape(k), out_backprop=tf.cast(dy, tf.float32),
                strides=strides, padding=padding, dilations=dilations)
            return dx, tf.cast(dk, k.dtype)

        return tf.nn.conv3d(x, k, strides=strides, padding=padding, dilations=dilations), grad

    return conv(inputs, kernel)


@keras.saving.register_keras_serializable(package="asc_tf")
class TorchConv3D(keras.layers.Conv3D):
    """Conv3D on `[N, T, H, W, C]` with PyTorch's symmetric `padding=(pt, ph, pw)`.

    The kernel layout is Keras's `[kt, kh, kw, in, out]`; torchvision stores
    `[out, in, kt, kh, kw]` (see `asc_tf.models.port`).
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, use_bias=False, **kwargs):
        kernel_size, strides, padding = triple(kernel_size), triple(strides), triple(padding)
        same = _is_same(kernel_size, strides, padding)
        kwargs.setdefault("kernel_initializer", kaiming_fan_out())
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding="same" if same else "valid",
            use_bias=use_bias,
            **kwargs,
        )
        self.torch_padding = padding
        self._explicit_pad = None if same or padding == (0, 0, 0) else _torch_pads(padding)

    def call(self, inputs):
        if self._explicit_pad is not None:
            # PadV2, not Pad: Grappler's remapper tries to fuse Pad into the convolution, fails
            # on the backward pass (which still reads the padded tensor's shape) and logs an
            # error for every traced train step. Same result and speed, no error.
            zero = tf.zeros([], inputs.dtype)
            inputs = tf.raw_ops.PadV2(input=inputs, paddings=self._explicit_pad, constant_values=zero)
        return super().call(inputs)

    def convolution_op(self, inputs, kernel):
        # bfloat16 on a CPU whose oneDNN bfloat16 weight gradient is wrong: that gradient in float32 (see
        # bf16_filter_gradient_is_wrong); the output and the input gradient stay bfloat16.
        if inputs.dtype == tf.bfloat16 and bf16_filter_gradient_is_wrong():
            kernel = tf.cast(kernel, tf.bfloat16)
            return conv3d_float32_filter_gradient(inputs, kernel, self.strides, self.padding, self.dilation_rate)
        return super().convolution_op(inputs, kernel)

    def compute_output_shape(self, input_shape):
        if self._explicit_pad is not None:
            input_shape = list(input_shape)
            for axis, pad in zip((1, 2, 3), self.torch_padding):
                if input_shape[axis] is not None:
                    input_shape[axis] += 2 * pad
        return super().compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config["padding"] = self.torch_padding
        return config


@keras.saving.register_keras_serializable(package="asc_tf")
class TorchMaxPool3D(keras.layers.Layer):
    """MaxPool3d with PyTorch's symmetric padding (padded cells never win: −∞)."""

    def __init__(self, pool_size, strides, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding = triple(pool_size), triple(strides), triple(padding)
        self._same = _is_same(self.pool_size, self.strides, self.padding)

    def call(self, inputs):
        if self._same:
            return tf.nn.max_pool3d(inputs, self.pool_size, self.strides, "SAME")
        if self.padding != (0, 0, 0):
            inputs = tf.pad(inputs, _torch_pads(self.padding), constant_values=float("-inf"))
        return tf.nn.max_pool3d(inputs, self.pool_size, self.strides, "VALID")

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, (k, s, p) in enumerate(zip(self.pool_size, self.strides, self.padding), start=1):
            if shape[axis] is not None:
                shape[axis] = (shape[axis] + 2 * p - k) // s + 1
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="asc_tf")
class BatchNorm(keras.layers.BatchNormalization):
    """Keras BatchNormalization whose synchronised statistics are computed in two passes.

    Keras's cross-replica BatchNorm computes the variance in one pass,
    E[x²] − E[x]², from all-reduced sums. In float32 that cancels badly when
    the mean is large next to the spread (ReLU activations), and the resulting
    gradients differ measurably from single-device BatchNorm: a 2-replica run
    drifted from the 1-device run at the same global batch after one step.
    Here the mean is all-reduced first and then Σ(x − mean)², as
    `tf.nn.moments` does on one device: one more all-reduce of C numbers.
    """

    def _moments(self, inputs, mask):
        replica = tf.distribute.get_replica_context()
        if not self.synchronized or mask is not None or replica is None:
            return super()._moments(inputs, mask)
        axes = self._reduction_axes
        local_count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
        count = replica.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
        mean = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(inputs, axis=axes)) / count
        squares = tf.reduce_sum(tf.square(inputs - mean), axis=axes)
        variance = replica.all_reduce(tf.distribute.ReduceOp.SUM, squares) / count
        return mean, variance


def batch_norm(name, epsilon=1e-5, momentum=0.9, synchronized=False, **kwargs):
    """BatchNorm over the channel axis. Keras momentum m = 1 − torch momentum."""
    return BatchNorm(axis=-1, epsilon=epsilon, momentum=momentum, synchronized=synchronized, name=name, **kwargs)


def global_average_pool(features):
    """`[N, T, H, W, C]` → `[N, C]` float32 (a float32 feature even under mixed precision)."""
    return tf.reduce_mean(tf.cast(features, tf.float32), axis=[1, 2, 3])
