"""The CPU TensorFlow runs on: its instruction sets, and whether oneDNN's kernels are on.

TensorFlow 2.21 turns its oneDNN kernels on by default only where the CPU has
AVX-512 VNNI/BF16 or AMX. Elsewhere — AVX2-only CPUs: AMD before Zen 4, Intel
desktop and laptop chips since Alder Lake — it falls back to Eigen's Conv3D
kernels, whose backward pass is 2× (R3D-18, 16×112²) to 40× (the demo's thin
R3D-18) slower, with the same losses. `use_onednn_by_default` (called by
`import asc_tf`, hence by every binary, test and bench) turns oneDNN on unless
the user has set `TF_ENABLE_ONEDNN_OPTS` already; it only takes effect before
TensorFlow is first imported.

Nothing here imports TensorFlow at module level.
"""

import os
import sys

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ISA_LIMIT_ENV = "ONEDNN_MAX_CPU_ISA"

# /proc/cpuinfo flag names of the instruction sets that decide TensorFlow's kernels on x86.
_FLAGS = {
    "avx2": ("avx2",),
    "avx512f": ("avx512f",),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_tile"),
}
# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) under which oneDNN may still use bfloat16 instructions.
_BF16_ISA_LIMITS = {"", "ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                    "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                    "AVX10_2_512", "AVX10_2_512_AMX_2"}


def use_onednn_by_default():
    """Sets TF_ENABLE_ONEDNN_OPTS=1 unless the user set it; False if TensorFlow was imported first (too late)."""
    if ONEDNN_ENV in os.environ:
        return True
    os.environ[ONEDNN_ENV] = "1"
    return "tensorflow" not in sys.modules


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags as a set of names (empty where /proc/cpuinfo does not exist)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def instruction_sets(flags=None):
    """{"avx2": bool, "avx512f": bool, "avx512_bf16": bool, "amx": bool} of this CPU."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(f in flags for f in names) for name, names in _FLAGS.items()}


def isa_limit():
    """The ONEDNN_MAX_CPU_ISA limit in force (upper case), or None."""
    value = os.environ.get(ISA_LIMIT_ENV, "").strip().upper()
    return value or None


def bf16_units(flags=None):
    """Whether oneDNN can run bfloat16 convolutions on bfloat16 hardware here (AVX-512 BF16 or AMX, not limited)."""
    sets = instruction_sets(flags)
    return (sets["avx512_bf16"] or sets["amx"]) and (isa_limit() or "") in _BF16_ISA_LIMITS


def onednn_enabled():
    """Whether this process's TensorFlow runs its oneDNN kernels (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def describe():
    """What a benchmark line records about the CPU: instruction sets, oneDNN on or off, its ISA limit."""
    return {"cpu": instruction_sets(), "onednn": onednn_enabled(), "onednn_max_cpu_isa": isa_limit()}


def bf16_warning():
    """One line saying why bfloat16 will be slower than float32 here, or None where the CPU has bf16 units."""
    if bf16_units():
        return None
    limit, sets = isa_limit(), instruction_sets()
    if limit and (sets["avx512_bf16"] or sets["amx"]):
        why = f"{ISA_LIMIT_ENV}={limit} keeps oneDNN off this CPU's bfloat16 instructions"
    else:
        why = "this CPU has no bfloat16 units (AVX-512 BF16 or AMX)"
    # Without the units bfloat16 is converted through float32 op by op (Eigen), or has no convolution at all
    # (oneDNN below AVX-512: pretraining.check_bf16_convolutions says so).
    return f"--mixed_precision: {why}, so bfloat16 is slower than float32 here, where it runs at all"
