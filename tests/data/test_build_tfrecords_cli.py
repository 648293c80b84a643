"""The build_tfrecords binary: flag errors before any work, and resume after a kill."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from asc_tf.data import records
from conftest import REALCLIPS, REPO_ROOT

KINETICS = os.path.join(REALCLIPS, "kinetics", "train")


def run_tool(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "tools.build_tfrecords", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("args, flag", [
    (["--layout=bogus"], "layout"),
    (["--layout=folder", "--jpeg_quality=0"], "jpeg_quality"),
    (["--layout=folder", "--workers=0"], "workers"),
    (["--layout=folder", "--short_side=-1"], "short_side"),
    (["--layout=ucf101", "--split_file=/nonexistent/trainlist01.txt"], "split_file"),
    (["--layout=hmdb51", "--split_dir={root}", "--subset=val"], "subset"),
    (["--layout=folder", "--output_dir={file}"], "output_dir"),
    (["--layout=folder", "--root={file}"], "root"),
    (["--layout=folder", "--only=/nonexistent/train.txt"], "only"),
    (["--layout=synthetic", "--num_videos=2", "--only={file}"], "only"),
])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(tmp_path, args, flag):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    defaults = [f"--root={tmp_path}", f"--output_dir={tmp_path / 'out'}"]
    args = [a.format(root=tmp_path, file=a_file) for a in defaults + args]
    result = run_tool(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--{flag}" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()  # rejected before any work


def _ids_and_paths(output_dir):
    files = sorted(glob.glob(os.path.join(output_dir, "*.tfrecord")))
    parsed = [records.parse_sequence_example(s) for s in tf.data.TFRecordDataset(files)]
    return [int(p["video_id"]) for p in parsed], [p["path"].numpy().decode() for p in parsed]


def test_kill_midway_then_rerun_completes_without_duplicates(tmp_path):
    if not os.path.isdir(REALCLIPS):
        pytest.skip(f"real clips not found at {REALCLIPS} (see tests/conftest.py)")
    out = tmp_path / "out"
    args = ["--layout=kinetics", f"--root={KINETICS}", f"--output_dir={out}", "--num_shards=3",
            "--short_side=32", "--max_frames=0"]
    process = subprocess.Popen([sys.executable, "-m", "tools.build_tfrecords", *args], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not glob.glob(os.path.join(out, "train-*-of-00003.tfrecord")):
        assert process.poll() is None and time.monotonic() < deadline, "no shard was written"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the binary and its decoder process
    process.wait()
    complete = glob.glob(os.path.join(out, "train-*-of-00003.tfrecord"))
    assert len(complete) < 3, "the ingest finished before it could be killed"

    result = run_tool(*args)
    assert result.returncode == 0, result.stderr
    assert not glob.glob(os.path.join(out, "*.tmp-*"))
    ids, paths = _ids_and_paths(out)
    assert sorted(ids) == list(range(9)) and len(set(paths)) == 9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["shards_resumed"] == len(complete)
    assert manifest["totals"] == {"listed": 9, "ingested": 9, "rejected": 0, "missing": 0,
                                  "unlisted": 0, "ignored": 0, "short": 0, "frames": 2678}
    assert [(c["name"], c["ingested"]) for c in manifest["per_class"]] == [
        ("arm_wrestling", 5), ("bungee_jumping", 4)]
    assert manifest["shards"] == [f"train-0000{k}-of-00003.tfrecord" for k in range(3)]
    assert manifest["command"][1:] == args
    again = run_tool(*args)  # into the finished folder: nothing to decode, and it says so
    assert again.returncode == 0 and "train: 9 videos in 3 shards" in again.stdout, again.stderr
    assert "(already complete)" in again.stdout, again.stdout
    assert "videos/s" not in again.stdout + again.stderr, again.stdout + again.stderr


def test_only_ingests_the_named_videos_of_the_layout_and_reports_the_named_ones_it_lacks(tmp_path):
    if not os.path.isdir(REALCLIPS):
        pytest.skip(f"real clips not found at {REALCLIPS} (see tests/conftest.py)")
    only = tmp_path / "val.txt"
    only.write_text("bungee_jumping/b6yQZjPE26c_000023_000033.mp4\n\narm_wrestling/demo_arm_wrestling.mp4\n"
                    "arm_wrestling/not_on_disk.mp4\n")
    out = tmp_path / "out"
    result = run_tool("--layout=kinetics", f"--root={KINETICS}", f"--only={only}", f"--output_dir={out}",
                      "--short_side=32", "--max_frames=4", "--name=val")
    assert result.returncode == 0, result.stderr
    ids, paths = _ids_and_paths(out)
    assert sorted(paths) == ["arm_wrestling/demo_arm_wrestling.mp4", "bungee_jumping/b6yQZjPE26c_000023_000033.mp4"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["ingested"] == 2 and manifest["totals"]["missing"] == 1
    assert manifest["totals"]["unlisted"] == 0  # the layout's other videos are another split's, not unlisted
    # The class index stays the whole layout's, so both splits of a folder share their labels.
    assert manifest["class_names"] == ["arm_wrestling", "bungee_jumping"]
    assert manifest["options"]["only"] == str(only) and manifest["options"]["only_videos"] == 3


def test_an_ingest_with_no_usable_video_exits_1_and_says_so(tmp_path):
    (tmp_path / "root" / "waving").mkdir(parents=True)
    (tmp_path / "root" / "waving" / "broken.mp4").write_bytes(b"not a video" * 100)
    out = tmp_path / "out"
    result = run_tool("--layout=folder", f"--root={tmp_path / 'root'}", f"--output_dir={out}", "--workers=1")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("build_tfrecords: error: no usable video in the "), \
        result.stderr
    totals = json.loads((out / "manifest.json").read_text())["totals"]
    assert (totals["ingested"], totals["rejected"]) == (0, 1), totals
