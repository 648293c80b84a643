"""oneDNN on wherever the project runs TensorFlow, the user's own setting kept, and the same losses either way."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from asc_tf import cpu

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every binary and every bench that runs TensorFlow in its own process: the PyTorch reference runs
# none, and bench.pretrain_memory runs it only in its child, tools.pretrain.
NO_TENSORFLOW = ("__init__.py", "torch_asc_step.py", "pretrain_memory.py")
MODULES = sorted(
    f"{folder}.{os.path.basename(path)[:-3]}"
    for folder in ("tools", "bench")
    for path in glob.glob(os.path.join(REPO_ROOT, folder, "*.py"))
    if not path.endswith(NO_TENSORFLOW)
)
# Imports the module as `python -m` would, then TensorFlow as its main() does, and says what TF runs.
PROBE = (
    "import importlib, json, os, sys; importlib.import_module(sys.argv[1]); import tensorflow; "
    "from tensorflow.python.util import _pywrap_util_port as port; "
    "print(json.dumps([os.environ.get('TF_ENABLE_ONEDNN_OPTS'), bool(port.IsMklEnabled())]))"
)

TOO_LATE = "asc_tf was imported after tensorflow"


def environment(**values):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **values)
    return env


def probe(modules, env):
    """{module: (TF_ENABLE_ONEDNN_OPTS after its import, IsMklEnabled)}, the probes run side by side."""
    processes = {
        # The warning `import asc_tf` gives when TensorFlow came first (too late to set its environment) fails it.
        module: subprocess.Popen([sys.executable, "-W", f"error:{TOO_LATE}::", "-c", PROBE, module],
                                 cwd=REPO_ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for module in modules
    }
    results = {}
    for module, process in processes.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"{module}: {err[-2000:]}"
        results[module] = tuple(json.loads(out.strip().splitlines()[-1]))
    return results


def test_every_binary_and_bench_runs_tensorflow_with_onednn():
    assert "tools.pretrain" in MODULES and "bench.train_step" in MODULES
    results = probe(MODULES, environment())
    assert {module: result for module, result in results.items() if result != ("1", True)} == {}


def test_a_users_own_setting_is_left_alone():
    results = probe(["tools.pretrain", "bench.train_step"], environment(TF_ENABLE_ONEDNN_OPTS="0"))
    assert results == {"tools.pretrain": ("0", False), "bench.train_step": ("0", False)}


def first_losses(onednn):
    out = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests", "scripts", "first_losses.py")],
                         cwd=REPO_ROOT, env=environment(TF_ENABLE_ONEDNN_OPTS=onednn), capture_output=True,
                         text=True, timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_first_losses_agree_with_and_without_onednn():
    eigen, onednn = first_losses("0"), first_losses("1")
    assert (eigen["onednn"], onednn["onednn"]) == (False, True)
    table = [[step[name] for name in ("loss", "loss_a", "loss_m")] for step in eigen["losses"]]
    other = [[step[name] for name in ("loss", "loss_a", "loss_m")] for step in onednn["losses"]]
    assert len(table) == 3
    # Different kernels sum in different orders: float32 round-off, amplified a little by 3 steps of training.
    np.testing.assert_allclose(other, table, rtol=1e-4, atol=1e-4)
    # The steps did train: the losses moved by far more than the tolerance.
    assert abs(table[0][0] - table[-1][0]) > 0.05


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse avx2 fma {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("extra, expected", [
    ("", {"avx2": True, "avx512f": False, "avx512_bf16": False, "amx": False}),
    ("avx512f avx512_bf16", {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx": False}),
    ("avx512f amx_tile amx_bf16", {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx": True}),
])
def test_instruction_sets_are_read_from_cpuinfo(tmp_path, extra, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    assert cpu.instruction_sets(cpu.cpu_flags(str(path))) == expected


def test_bf16_units_need_the_instructions_and_no_isa_limit_below_them(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu.bf16_units({"avx2", "avx512f", "avx512_bf16"})
    assert cpu.bf16_units({"avx2", "amx_bf16", "amx_tile"})
    assert not cpu.bf16_units({"avx2", "avx512f"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert cpu.isa_limit() == "AVX2"
    assert not cpu.bf16_units({"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu.bf16_units({"avx2", "avx512f", "avx512_bf16"})
