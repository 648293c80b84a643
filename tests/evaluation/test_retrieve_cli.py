"""tools.retrieve end to end on tiny synthetic records, its flag checks, and the retrieval monitor in pretraining."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT

TINY = ["--backbone=r3d_18", "--width=0.125", "--frames=4", "--crop_size=16"]
TINY_PRETRAIN = TINY + [
    "--speed_set=1,2", "--global_batch_size=4", "--queue_size=32", "--dim=8", "--predictor_hidden=16",
    "--log_every=1", "--shuffle_buffer=8",
]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from asc_tf.data import ingest

    patterns = {}
    for split in ("train", "test"):
        output = str(tmp_path_factory.mktemp(split))
        listing = ingest.list_synthetic(12, split=split, seed=0, num_frames=12, size=20, motion="pattern")
        ingest.ingest(listing, output, name=split, options=ingest.EncodeOptions(short_side=0), command=["test"])
        patterns[split] = os.path.join(output, f"{split}-*.tfrecord")
    return patterns


def run_tool(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def retrieve(records, output_dir, *args):
    return run_tool("tools.retrieve", *TINY, f"--train_data={records['train']}", f"--test_data={records['test']}",
                    f"--output_dir={output_dir}", "--resize_short=20", "--num_clips=2", *args)


def events(directory):
    """{tag: [(step, value or None for images)]} from the event files in `directory`."""
    found = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.tensor.dtype == tf.float32 else None
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def test_retrieve_with_random_init_writes_results_picture_and_tensorboard(records, tmp_path):
    from asc_tf.evaluation import retrieval

    output = tmp_path / "out"
    result = retrieve(records, output, "--init=random")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output / "retrieval.json") as f:
        results = json.load(f)
    assert (results["num_queries"], results["num_gallery"], results["num_clips"]) == (12, 12, 2)
    assert results["units"] == "percent" and results["flags"]["init"] == "random"
    assert results["queries_in_gallery"] == 0 and "warning" not in result.stderr
    tops = [results[f"top{k}"] for k in (1, 5, 10, 20, 50)]
    assert tops == sorted(tops) and all(0.0 <= top <= 100.0 for top in tops)
    # Top-50 covers the whole gallery: a hit exactly when the query's class is in the training split.
    train_classes = {text for _, text in retrieval.video_names(records["train"]).values()}
    test_classes = [text for _, text in retrieval.video_names(records["test"]).values()]
    assert results["top50"] == pytest.approx(100.0 * np.mean([c in train_classes for c in test_classes]))
    assert f"top1 {results['top1']:.2f} top5 {results['top5']:.2f}" in result.stdout

    picture = tf.io.decode_png(tf.io.read_file(str(output / "retrieval.png"))).numpy()
    # --picture_rows=8 of the 12 queries, under a title line
    assert picture.shape[0] == retrieval.TITLE_HEIGHT + 8 * retrieval.row_height()

    logged = events(output / "tensorboard")
    assert logged["retrieval/top1"] == [(0, pytest.approx(results["top1"]))]
    assert logged["retrieval/top50"] == [(0, pytest.approx(results["top50"]))]
    assert "retrieval/query_then_nearest_train_videos" in logged


def test_queries_that_are_in_the_gallery_are_counted_and_warned_of(records, tmp_path):
    result = run_tool("tools.retrieve", *TINY, f"--train_data={records['train']}",
                      f"--test_data={records['train']}", f"--output_dir={tmp_path / 'out'}", "--resize_short=20",
                      "--num_clips=2", "--init=random")
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "retrieval.json").read_text())
    assert results["queries_in_gallery"] == 12 and results["top1"] == 100.0
    assert "retrieve: warning: 12 of 12 queries are also in the gallery" in result.stderr


def test_unlabelled_queries_are_refused_a_top_k(records, tmp_path):
    from asc_tf.data import records as records_format

    rng = np.random.default_rng(0)
    pattern = str(tmp_path / "unlabelled.tfrecord")
    with tf.io.TFRecordWriter(pattern) as writer:
        for video in range(4):
            frames = [tf.io.encode_jpeg(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).numpy() for _ in range(12)]
            example = records_format.make_sequence_example(frames, -1, "", video, 25.0, f"unlabelled/{video}.mp4")
            writer.write(example.SerializeToString())
    result = run_tool("tools.retrieve", *TINY, f"--train_data={records['train']}", f"--test_data={pattern}",
                      f"--output_dir={tmp_path / 'out'}", "--resize_short=20", "--num_clips=2", "--init=random")
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "retrieve: error: --test_data: 4 of 4 videos have no label"), result.stderr[-2000:]
    assert not (tmp_path / "out" / "retrieval.json").exists()


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--init=random", "--num_clips=0"], "num_clips"),
        (["--init=random", "--resize_short=8"], "resize_short"),
        (["--init=random", "--test_data=/nonexistent/*.tfrecord"], "test_data"),
        ([], "model_dir"),  # --init=pretrained needs a run or a SavedModel
    ],
)
def test_bad_retrieve_flags_exit_2_with_one_line_naming_the_flag(records, tmp_path, args, flag):
    result = retrieve(records, tmp_path / "out", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"--{flag}" in errors[0], result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "out")


def test_monitor_writes_retrieval_top1_and_top5_during_pretraining(records, tmp_path):
    model_dir = tmp_path / "run"
    result = run_tool("tools.pretrain", *TINY_PRETRAIN, f"--train_data={records['train']}", f"--model_dir={model_dir}",
                      "--train_steps=4", f"--monitor_train_data={records['train']}",
                      f"--monitor_test_data={records['test']}", "--monitor_every=2", "--monitor_clips=2")
    assert result.returncode == 0, result.stderr[-2000:]
    logged = events(model_dir / "train")
    for tag in ("monitor/retrieval_top1_2clips", "monitor/retrieval_top5_2clips"):
        assert [step for step, _ in logged[tag]] == [2, 4]
        assert all(0.0 <= value <= 100.0 for _, value in logged[tag])
    top1 = dict(logged["monitor/retrieval_top1_2clips"])
    top5 = dict(logged["monitor/retrieval_top5_2clips"])
    assert all(top1[step] <= top5[step] for step in (2, 4))


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--monitor_every=-1"], "monitor_every"),
        (["--monitor_every=2"], "monitor_test_data"),  # the test split is missing
    ],
)
def test_bad_monitor_flags_exit_2_naming_the_flag(records, tmp_path, args, flag):
    result = run_tool("tools.pretrain", *TINY_PRETRAIN, f"--train_data={records['train']}",
                      f"--model_dir={tmp_path / 'run'}", "--train_steps=2",
                      f"--monitor_train_data={records['train']}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"--{flag}" in errors[0], result.stderr[-2000:]
