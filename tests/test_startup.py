"""Every binary in tools/ answers --help and a bad flag before TensorFlow is imported.

Importing TensorFlow takes seconds on an idle machine and minutes on a loaded
one; nothing a flag check needs comes from it. Each case runs the binary as
`python -m` would (runpy, as __main__) in a fresh interpreter that reports
the exit code and whether tensorflow or keras was imported by then. How long
the answer took is measured by hand, never asserted here.
"""

import ast
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

HEAVY = ("tensorflow", "keras")

# Runs tools.<name> under the given argv; the last stdout line is the report (--help prints above it).
PROBE = """
import json, runpy, sys
name, argv = sys.argv[1], sys.argv[2:]
sys.argv = [name] + argv
try:
    runpy.run_module(name, run_name="__main__", alter_sys=True)
    code = None
except SystemExit as stop:
    code = stop.code
from absl import flags
defined = sorted(f.name for module, fs in flags.FLAGS.flags_by_module_dict().items() if not module.startswith("absl.")
                 for f in fs)
print(json.dumps({"code": code, "imported": [m for m in %r if m in sys.modules], "defined": defined}))
""" % (HEAVY,)

# One flag per binary that its own checks (not absl's parser) reject; {tmp} is an empty folder.
BAD_FLAGS = [
    ("build_tfrecords", ["--layout=synthetic", "--output_dir={tmp}/out", "--num_videos=0"], "num_videos"),
    ("pretrain", ["--width=-1"], "width"),
    ("finetune", ["--width=-1"], "width"),
    ("retrieve", ["--width=-1"], "width"),
    ("export", ["--model_dir={tmp}/absent", "--output_dir={tmp}/out"], "model_dir"),
    ("search", ["index", "--saved_model={tmp}/absent"], "saved_model"),
    ("demo", ["--width=-1"], "width"),
    ("inspect_backbone", ["--width=-1"], "width"),
    # Checks that read the data, but not with TensorFlow: --epochs needs the manifest.json beside the shards.
    ("pretrain", ["--train_data={tmp}/x.tfrecord", "--model_dir={tmp}/out", "--epochs=1"], "epochs"),
    ("finetune", ["--init=random", "--train_data={tmp}/x.tfrecord", "--test_data={tmp}/x.tfrecord",
                  "--output_dir={tmp}/out", "--epochs=1"], "epochs"),
]
# An output location that cannot be created (/proc takes no new folders), after every other flag is good.
UNWRITABLE = [
    ("build_tfrecords", ["--layout=synthetic", "--num_videos=2", "--output_dir=/proc/asc/out"], "output_dir"),
    ("pretrain", ["--train_data={tmp}/x.tfrecord", "--train_steps=2", "--model_dir=/proc/asc/run"], "model_dir"),
    ("finetune", ["--init=random", "--train_data={tmp}/x.tfrecord", "--test_data={tmp}/x.tfrecord",
                  "--train_steps=2", "--output_dir=/proc/asc/out"], "output_dir"),
    ("retrieve", ["--init=random", "--train_data={tmp}/x.tfrecord", "--test_data={tmp}/x.tfrecord",
                  "--output_dir=/proc/asc/out"], "output_dir"),
    ("demo", ["--output_dir=/proc/asc/out"], "output_dir"),
    ("demo", ["--output_dir={tmp}/out", "--data_dir=/proc/asc/data"], "data_dir"),
]
BAD_FLAGS += UNWRITABLE
BINARIES = sorted({binary for binary, _, _ in BAD_FLAGS})


def run_probe(binary, argv):
    result = subprocess.run([sys.executable, "-c", PROBE, f"tools.{binary}", *argv], cwd=REPO_ROOT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
                            timeout=600)
    report = f"tools.{binary} {' '.join(argv)}\n{result.stderr[-2000:]}"
    assert result.returncode == 0 and result.stdout.strip(), report
    return json.loads(result.stdout.strip().splitlines()[-1]), result, report


@pytest.mark.parametrize("binary", BINARIES)
def test_help_answers_without_tensorflow(binary):
    probe, result, report = run_probe(binary, ["--help"])
    assert (probe["code"], probe["imported"]) == (0, []), report
    # Every flag the binary defines, its own and those of flags/ (absl's --help showed only its own).
    listed = re.findall(r"^\s+--(?:\[no\])?(\w+):", result.stdout, flags=re.MULTILINE)
    assert sorted(listed) == probe["defined"] and len(listed) >= 5, report
    with open(os.path.join(REPO_ROOT, "tools", f"{binary}.py")) as fh:
        doc = ast.get_docstring(ast.parse(fh.read()))
    assert result.stdout.startswith(doc.splitlines()[0]) and "--flagfile" in result.stdout, report


def test_help_lists_the_flags_of_flags_modules():
    _, result, report = run_probe("retrieve", ["--help"])
    for name in ("train_data", "test_data", "init", "width", "output_dir", "num_clips"):
        assert f"--{name}:" in result.stdout, report
    _, result, report = run_probe("inspect_backbone", ["-h"])
    assert "--backbone:" in result.stdout, report


@pytest.mark.parametrize("binary, args, flag", BAD_FLAGS, ids=[f"{b}-{f}" for b, _, f in BAD_FLAGS])
def test_bad_flag_answers_without_tensorflow(tmp_path, binary, args, flag):
    (tmp_path / "x.tfrecord").write_bytes(b"")
    probe, result, report = run_probe(binary, [a.format(tmp=tmp_path) for a in args])
    assert (probe["code"], probe["imported"]) == (2, []), report
    assert result.stderr.strip().splitlines()[-1].startswith(f"{binary}: error: --{flag}:"), report
    assert not (tmp_path / "out").exists(), report


def test_export_and_search_refuse_an_unwritable_output_before_work(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"frames": 8, "crop_size": 32}))
    (run / "checkpoints" / "checkpoint").write_text("")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"")
    cases = [
        ("export", [f"--model_dir={run}", "--output_dir=/proc/asc/encoder"], "output_dir"),
        ("search", ["index", f"--saved_model={tmp_path}/model", f"--videos={tmp_path}/videos",
                    "--index=/proc/asc/videos.npz"], "index"),
    ]
    for binary, args, flag in cases:
        probe, result, report = run_probe(binary, args)
        assert (probe["code"], probe["imported"]) == (2, []), report
        assert result.stderr.strip().splitlines()[-1].startswith(f"{binary}: error: --{flag}: cannot create"), report


def test_the_writable_check_leaves_nothing_behind(tmp_path):
    import flags

    target = tmp_path / "a" / "b" / "c"
    flags.require_writable("output_dir", str(target))
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    flags.require_writable("output_dir", str(tmp_path / "kept"))
    assert list((tmp_path / "kept").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(flags.FlagError, match="--output_dir: exists and is not a folder"):
        flags.require_writable("output_dir", str(tmp_path / "file"))


# TensorFlow 2.21's start-up lines on a CPU machine, as printed (flags/startup_noise.py drops them).
TF_STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796160464.470207   31413 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796160464.470668   31413 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1796160467.479614   31413 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "W0000 00:00:1796162537.451506    9132 dataset.cc:997] Input of GeneratorDatasetOp::Dataset will not be "
    "optimized because the dataset does not implement the AsGraphDefInternal() method needed to apply "
    "optimizations.",
    "E0000 00:00:1796161407.370744    9132 util.cc:131] oneDNN supports DT_UINT8 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
]
# Lines that look alike and must pass: a real C++ error, a Python warning, a message quoting the noise.
KEPT_LINES = [
    "E0000 00:00:1796160467.479614   31413 cuda_platform.cc:52] CUDA error: out of memory",
    "F0000 00:00:1796160467.479614   31413 tensor.cc:12] Check failed: dims() == 5",
    "W1201 21:30:01.123456   31413 pipeline.py:120] skipped 3 unreadable records in /data/train-00001",
    "note: Could not find cuda drivers on your machine is not an error here",
    "W0000 00:00:1796162537.451506    9132 dataset.cc:997] DataLossError: corrupted record at 1234",
    "E0000 00:00:1796161407.370744    9132 util.cc:131] oneDNN primitive creation failed: unimplemented",
]

# A binary whose main writes noise and real lines straight to fd 2 (as C++ does), then aborts.
ABORTING = """
import os, sys
sys.argv = ["noisy"] + sys.argv[1:]
import flags
lines = %r
def main(argv):
    os.write(2, "\\n".join(lines).encode() + b"\\n")
    sys.stderr.write("python line\\n")
    sys.stderr.flush()
    os.write(2, b"last words before the abort\\n")
    os.abort()
flags.run(main)
"""


def test_startup_noise_is_dropped_and_every_other_line_arrives_even_after_an_abort():
    from flags import startup_noise

    assert all(startup_noise.is_noise(line) for line in TF_STARTUP_LINES)
    assert not any(startup_noise.is_noise(line) for line in KEPT_LINES)
    mixed = [line for pair in zip(TF_STARTUP_LINES, KEPT_LINES) for line in pair]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", ABORTING % (mixed,)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -6, result.stderr  # SIGABRT
    lines = result.stderr.splitlines()
    kept = len(KEPT_LINES) + 2
    assert lines[:kept] == KEPT_LINES + ["python line", "last words before the abort"]
    # What is written after the abort (absl's faulthandler report) arrives too.
    assert "Fatal Python error: Aborted" in lines[kept:]
    # TF_CPP_MIN_LOG_LEVEL=0 asks for everything: nothing is filtered.
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    result = subprocess.run([sys.executable, "-c", ABORTING % (mixed,)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.stderr.splitlines()[:len(mixed) + 2] == mixed + ["python line", "last words before the abort"]


# A binary that draws a progress line on a terminal: "\r"-redraws without a newline, then waits for stdin.
REDRAWING = """
import os, sys
sys.argv = ["progress"]
import flags
def main(argv):
    sys.stdout.write(f"stderr is a terminal: {sys.stderr.isatty()}\\n")
    sys.stdout.flush()
    sys.stderr.write("\\rstep 1/2\\x1b[K")
    sys.stderr.flush()
    sys.stdin.readline()
flags.run(main)
"""


def test_a_progress_line_on_a_terminal_still_redraws_through_the_filter():
    import pty
    import select

    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.Popen([sys.executable, "-c", REDRAWING], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    try:
        assert process.stdout.readline() == b"stderr is a terminal: True\n"
        # The redraw arrives while the line is still open (the binary waits), not at its newline or exit.
        seen = b""
        while b"step 1/2" not in seen:
            assert select.select([controller], [], [], 30)[0], f"no redraw within 30 s: {seen!r}"
            seen += os.read(controller, 1024)
        assert seen.startswith(b"\rstep 1/2")
    finally:
        process.communicate(b"\n", timeout=60)
        os.close(controller)
    assert process.returncode == 0
