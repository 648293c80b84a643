"""asc-tf: ASCNet (appearance-speed consistency) video self-supervised learning in TF2 / Keras 3."""

import warnings

from asc_tf import cpu

__version__ = "0.1.0"

# The one place that turns TensorFlow's oneDNN kernels on (asc_tf/cpu.py says why); a user's own
# TF_ENABLE_ONEDNN_OPTS is left alone. It must run before TensorFlow is first imported.
if not cpu.use_onednn_by_default():
    warnings.warn("asc_tf was imported after tensorflow: TF_ENABLE_ONEDNN_OPTS=1 comes too late for this process; "
                  "import asc_tf first (on AVX2-only CPUs TensorFlow's default kernels are several times slower)",
                  stacklevel=2)
