"""oneDNN's bfloat16 Conv3D weight gradient against float32's, raw op by raw op, at the shapes that matter.

    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python docs/bf16_filter_gradient.py

One JSON line per shape ("nan" where bfloat16's gradient is not finite): the largest difference between the bfloat16 and the float32
`Conv3DBackpropFilterV2`, relative to float32's largest entry (bfloat16 rounding alone gives ~0.004).
The shapes are the stride-1 3×3×3 convolutions of R3D-18 at 16×112² (batch 8) and of the tests' thin
R3D-18 at 4×16² (width 1/8, batch 4). The README's mixed-precision section quotes this script; TorchConv3D
avoids the fault (`asc_tf.models.layers.bf16_filter_gradient_is_wrong`).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import asc_tf  # noqa: E402,F401  (oneDNN on, before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from asc_tf import cpu  # noqa: E402

# (name, N, T, H, W, C_in, C_out)
SHAPES = [
    ("r3d_18 16x112 layer1", 8, 16, 56, 56, 64, 64),
    ("r3d_18 16x112 layer2", 8, 8, 28, 28, 128, 128),
    ("r3d_18 16x112 layer3", 8, 4, 14, 14, 256, 256),
    ("r3d_18 16x112 layer4", 8, 2, 7, 7, 512, 512),
    ("thin r3d_18 4x16 layer1", 4, 4, 8, 8, 8, 8),
    ("thin r3d_18 4x16 layer2", 4, 2, 4, 4, 16, 16),
    ("thin r3d_18 4x16 layer3", 4, 1, 2, 2, 32, 32),
]


def relative_error(n, t, h, w, c_in, c_out, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, h, w, c_in)).astype(np.float32)
    dy = rng.normal(size=(n, t, h, w, c_out)).astype(np.float32)
    grads = [
        tf.cast(tf.raw_ops.Conv3DBackpropFilterV2(
            input=tf.cast(x, dtype), filter_sizes=[3, 3, 3, c_in, c_out], out_backprop=tf.cast(dy, dtype),
            strides=[1] * 5, padding="SAME"), tf.float32).numpy()
        for dtype in (tf.float32, tf.bfloat16)
    ]
    return float(np.max(np.abs(grads[1] - grads[0])) / np.max(np.abs(grads[0])))


def main():
    machine = cpu.describe()
    for name, *shape in SHAPES:
        error = relative_error(*shape)
        print(json.dumps({"shape": name, "n_t_h_w_cin_cout": shape,
                          "bf16_vs_f32_rel_error": error if np.isfinite(error) else str(error), **machine}), flush=True)


if __name__ == "__main__":
    main()
