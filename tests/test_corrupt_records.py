"""Damaged TFRecords: pretraining and retrieval skip them, count them, and finish."""

import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import REPO_ROOT, synthetic_records

TINY = ["--backbone=r3d_18", "--width=0.125", "--frames=4", "--crop_size=16"]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Synthetic train (2 shards, one with flipped bytes, plus a file with one junk record) and clean test."""
    patterns = {split: synthetic_records(tmp_path_factory.mktemp(split), 12, split, 2) for split in ("train", "test")}
    shard = sorted(glob.glob(patterns["train"]))[0]
    data = bytearray(open(shard, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    open(shard, "wb").write(bytes(data))
    with tf.io.TFRecordWriter(os.path.join(os.path.dirname(shard), "train-junk.tfrecord")) as writer:
        writer.write(b"framed correctly, but not a SequenceExample")
    return patterns


# TensorFlow's C++ start-up lines, which the binaries drop (flags/startup_noise.py).
STARTUP_NOISE = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "cuInit")


def run_tool(module, *args, log_level="3"):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = log_level
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def last_scalars(directory):
    values = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("input/"):
                    values[value.tag] = float(tf.make_ndarray(value.tensor))
    return values


def test_pretraining_skips_and_counts_damaged_records(damaged, tmp_path):
    model_dir = str(tmp_path / "run")
    result = run_tool(
        "tools.pretrain", *TINY, "--speed_set=1,2", "--global_batch_size=4", "--queue_size=32", "--dim=8",
        "--predictor_hidden=16", "--log_every=1", "--shuffle_buffer=8", "--train_steps=8",
        f"--train_data={damaged['train']}", f"--model_dir={model_dir}", log_level=None,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steps 0→8" in result.stdout
    # 8 steps x 4 videos from at most 6 + 3 usable records per epoch: at least 4 epochs read,
    # each skipping the junk record and the rest of the damaged shard once.
    scalars = last_scalars(os.path.join(model_dir, "train"))
    assert scalars["input/records_skipped"] >= 4 and scalars["input/shards_cut_short"] >= 4, scalars
    assert "input: skipped" in result.stdout
    assert "damaged TFRecord framing" in result.stderr and "train-00000-of-00002" in result.stderr
    # With the user's default log level, the warning that matters passes and the start-up noise does not.
    assert [line for line in result.stderr.splitlines() if any(n in line for n in STARTUP_NOISE)] == []


def test_retrieval_skips_and_counts_damaged_records(damaged, tmp_path):
    output = tmp_path / "out"
    result = run_tool(
        "tools.retrieve", *TINY, f"--train_data={damaged['train']}", f"--test_data={damaged['test']}",
        f"--output_dir={output}", "--resize_short=20", "--num_clips=2", "--init=random",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((output / "retrieval.json").read_text())
    assert results["input"] == {"records_skipped": 1, "shards_cut_short": 1}
    assert results["num_queries"] == 12
    # The damaged shard's records before the damage survive; the other shard is whole.
    assert 6 < results["num_gallery"] < 12
    assert "skipped: 1 unreadable records, 1 TFRecord files" in result.stderr


@pytest.fixture(scope="module")
def unusable(tmp_path_factory):
    """Shards that hold no clip: valid TFRecords of another schema (image Examples), and an empty file."""
    folder = tmp_path_factory.mktemp("unusable")
    with tf.io.TFRecordWriter(str(folder / "images.tfrecord")) as writer:
        for _ in range(4):
            feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"not a video"]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    (folder / "empty.tfrecord").write_bytes(b"")
    return {"images": str(folder / "images.tfrecord"), "empty": str(folder / "empty.tfrecord"),
            "clean": synthetic_records(tmp_path_factory.mktemp("clean"), 4, "test", 1)}


@pytest.mark.parametrize("kind, why", [("images", "skipped 4 unreadable records"), ("empty", "no records")])
def test_pretraining_on_input_without_a_clip_says_so_in_one_line(unusable, tmp_path, kind, why):
    result = run_tool(
        "tools.pretrain", *TINY, "--speed_set=1,2", "--global_batch_size=4", "--queue_size=32", "--dim=8",
        "--predictor_hidden=16", "--train_steps=2", f"--train_data={unusable[kind]}",
        f"--model_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pretrain: error: --train_data: no usable clip in {unusable[kind]}: {why}"), last
    assert "Traceback" not in result.stderr


def test_evaluation_tools_on_input_without_a_clip_say_so_in_one_line(unusable, tmp_path):
    data = [f"--train_data={unusable['images']}", f"--test_data={unusable['clean']}"]
    retrieve = run_tool("tools.retrieve", *TINY, *data, f"--output_dir={tmp_path / 'r'}", "--resize_short=20",
                        "--num_clips=2", "--init=random")
    finetune = run_tool("tools.finetune", *TINY, f"--train_data={unusable['clean']}",
                        f"--test_data={unusable['empty']}", f"--output_dir={tmp_path / 'f'}", "--resize_short=20",
                        "--eval_clips=2", "--init=random", "--train_steps=2", "--batch_size=2")
    for result, tool, flag, pattern in ((retrieve, "retrieve", "train_data", unusable["images"]),
                                        (finetune, "finetune", "test_data", unusable["empty"])):
        assert result.returncode == 1, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"{tool}: error: --{flag}: no usable clip in {pattern}"), last
        assert "Traceback" not in result.stderr
