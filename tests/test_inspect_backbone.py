"""The smallest real job the README names: a backbone forward on a random clip, and its flag errors."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


def run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "tools.inspect_backbone", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


def test_prints_feature_shape_and_parameter_count():
    result = run("--backbone=s3d", "--width=0.25", "--frames=8", "--crop_size=32", "--batch_size=3")
    assert result.returncode == 0, result.stderr
    assert "features      (3, 256) float32" in result.stdout
    assert "parameters" in result.stdout


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--backbone=resnet50"], "backbone"),
        (["--frames=0"], "frames"),
        (["--width=-1"], "width"),
        (["--crop_size=8"], "crop_size"),
        (["--torch_state=/nonexistent.npz"], "torch_state"),
    ],
)
def test_bad_flag_exits_2_with_one_line_naming_it(args, flag):
    result = run(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and f"--{flag}" in lines[0], result.stderr
