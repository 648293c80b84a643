"""tools.demo --videos end to end on a few real clips: UCF-101's layout split by group, and Kinetics' layout.

Minutes-scale shapes; files produced and numbers finite. No ordering of the
variants is asserted (that is what the study on ../shared/ucf6 measures).
"""

import csv
import glob
import json
import math
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from asc_tf.data import records, splits
from conftest import REALCLIPS, REPO_ROOT

UCF6 = os.path.join(os.path.dirname(REALCLIPS), "ucf6")
TINY = ["--steps=3", "--batch_size=2", "--width=0.125", "--frames=4", "--crop_size=16", "--eval_clips=2",
        "--probe_clips=1", "--same_video_draws=1", "--workers=2"]
RETRIEVE = ["--frames=4", "--crop_size=16", "--resize_short=18", "--num_clips=2"]
FINETUNE = ["--frames=4", "--crop_size=16", "--resize_short=18", "--train_steps=2", "--batch_size=2",
            "--base_lr=0.1", "--eval_clips=2", "--eval_batch_size=2", "--log_every=1"]


def _needs(path):
    if not os.path.isdir(path):
        pytest.skip(f"real clips not found at {path} (see tests/conftest.py)")


def _demo(tmp_path, *args, finetune=FINETUNE):
    flagfiles = []
    for name, lines in (("retrieve", RETRIEVE), ("finetune", finetune)):
        path = tmp_path / f"{name}.cfg"
        path.write_text("\n".join(lines) + "\n")
        flagfiles.append(f"--{name}_flagfile={path}")
    output = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "tools.demo", f"--output_dir={output}", *TINY, *flagfiles, *args],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return output, json.loads((output / "results.json").read_text()), result


def _paths(pattern):
    return sorted(records.parse_sequence_example(s)["path"].numpy().decode()
                  for s in tf.data.TFRecordDataset(sorted(glob.glob(pattern))))


def _check_measures(entry, finetuned):
    measures = entry["seeds"]["0"]
    for k in (1, 5, 10, 20, 50):
        assert 0.0 <= measures[f"retrieval_top{k}"] <= 100.0, (k, measures)
    tops = [measures[f"retrieval_top{k}"] for k in (1, 5, 10, 20, 50)]
    assert tops == sorted(tops)  # top-k can only grow with k
    for name in ("linear_probe", "speed_probe", "same_video_top1", "effective_rank"):
        assert math.isfinite(measures[name]), name
    if finetuned:
        assert 0.0 <= measures["finetune_top1"] <= measures["finetune_top5"] <= 100.0
    else:
        assert measures["finetune_top1"] is None


def test_ucf101_layout_splits_by_group_and_measures_with_the_tools(tmp_path):
    _needs(UCF6)
    # Two classes, groups 8, 12 and 13, each group's shortest clip: symlinks, never copies, of the shared clips.
    with open(os.path.join(UCF6, "SOURCES.tsv")) as fh:
        frames = {row["file"]: int(row["frames"]) for row in csv.DictReader(fh, delimiter="\t")}
    root = tmp_path / "ucf"
    (root / "ucfTrainTestlist").mkdir(parents=True)
    classes, lines = ("Archery", "Surfing"), []
    for label, name in enumerate(classes, 1):
        (root / "UCF-101" / name).mkdir(parents=True)
        for group in (8, 12, 13):
            path = min((f"{name}/v_{name}_g{group:02d}_c{k:02d}.avi" for k in (1, 2, 3)), key=frames.__getitem__)
            os.symlink(os.path.join(UCF6, "UCF-101", path), root / "UCF-101" / path)
            lines.append(f"{path} {label}")
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 Archery\r\n2 Surfing\r\n")
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("\r\n".join(lines) + "\r\n")

    output, results, result = _demo(tmp_path, f"--videos={root}", "--val_groups=8", "--variants=random,asc")
    data = output / "data"
    val, train = _paths(str(data / "val" / "val-*.tfrecord")), _paths(str(data / "train" / "train-*.tfrecord"))
    assert {splits.ucf_group(p) for p in val} == {8} and len(val) == 2
    assert {splits.ucf_group(p) for p in train} == {12, 13} and len(train) == 4
    assert results["settings"]["train_videos"] == 4 and results["settings"]["test_videos"] == 2
    assert "motion" not in results["settings"]  # the synthetic set's settings mean nothing here
    # Real video's defaults: the views keep their colour (crops, flips and blur only).
    views = json.loads((output / "seed0" / "asc" / "config.json").read_text())
    assert [views[k] for k in ("color_jitter", "grayscale", "solarize", "blur", "flip")] == [False] * 3 + [True] * 2
    for variant in ("random", "asc"):
        run = output / "seed0" / variant
        assert (run / "retrieve" / "retrieval.json").is_file() and (run / "finetune" / "results.json").is_file()
        _check_measures(results["variants"][variant], finetuned=True)
    # The pretrained variant is a run folder the tools take as --model_dir: the harness ran them on it.
    retrieval = json.loads((output / "seed0" / "asc" / "retrieve" / "retrieval.json").read_text())
    assert retrieval["flags"]["model_dir"] == str(output / "seed0" / "asc") and retrieval["num_queries"] == 2
    # It records the run's architecture (TINY's width), not the --width default it was not given.
    assert (retrieval["flags"]["backbone"], retrieval["flags"]["width"]) == ("r3d_18", 0.125)
    assert "fine-tuned@1" in result.stdout and "| asc |" in result.stdout

    # Another fine-tuning protocol: tools.finetune alone measures again, from the run folders as they are.
    retrieved = {v: (output / "seed0" / v / "retrieve" / "retrieval.json").stat().st_mtime_ns for v in ("random", "asc")}
    checkpoints = sorted(glob.glob(str(output / "seed0" / "asc" / "checkpoints" / "*")))
    _, again, rerun = _demo(tmp_path, f"--videos={root}", "--val_groups=8", "--variants=random,asc",
                            finetune=[line.replace("--train_steps=2", "--train_steps=3") for line in FINETUNE])
    assert rerun.stderr.count("the protocol of finetune changed: measuring with it again") == 2
    assert "pretraining" not in rerun.stderr and "tools.retrieve" not in rerun.stderr
    for variant in ("random", "asc"):
        run = output / "seed0" / variant
        assert (run / "retrieve" / "retrieval.json").stat().st_mtime_ns == retrieved[variant]
        assert json.loads((run / "finetune" / "results.json").read_text())["settings"]["train_steps"] == 3
        saved = json.loads((run / "measures.json").read_text())
        assert "--train_steps=3" in saved["tools"]["finetune"]
        unchanged = {k: v for k, v in results["variants"][variant]["seeds"]["0"].items() if not k.startswith("finetune")}
        assert {k: again["variants"][variant]["seeds"]["0"][k] for k in unchanged} == unchanged
    assert sorted(glob.glob(str(output / "seed0" / "asc" / "checkpoints" / "*"))) == checkpoints


def test_kinetics_layout_splits_per_class_and_measures_the_supervised_encoder(tmp_path):
    kinetics = os.path.join(REALCLIPS, "kinetics")
    _needs(kinetics)
    output, results, result = _demo(tmp_path, f"--videos={kinetics}/train",
                               f"--videos_csv={kinetics}/kinetics_mini_train.csv", "--variants=supervised")
    val = _paths(str(output / "data" / "val" / "val-*.tfrecord"))
    # One validation video per class (the CSV lists 4 a class: the last fifth, at least one, of its sorted videos).
    assert [p.split("/")[0] for p in val] == ["arm_wrestling", "bungee_jumping"]
    assert results["settings"]["test_videos"] == 2 and results["settings"]["train_videos"] == 6
    # The supervised encoder, exported, is measured by tools.retrieve --saved_model; nothing to fine-tune from.
    assert (output / "seed0" / "supervised" / "encoder" / "saved_model.pb").is_file()
    _check_measures(results["variants"]["supervised"], finetuned=False)
    # The tools' own lines go with the progress to stderr: stdout is the demo's table and files alone.
    assert "retrieval top-k" in result.stderr and "retrieval top-k" not in result.stdout
    assert "videos in 1 shards" in result.stderr and "shards" not in result.stdout


@pytest.mark.parametrize("args, flag", [
    (["--videos={missing}"], "videos"),
    (["--videos={tmp}"], "videos"),  # neither UCF-101's layout nor two class folders
    (["--videos={ucf}", "--val_groups=8-x"], "val_groups"),
    (["--videos={ucf}", "--split_file=nope.txt"], "split_file"),
    (["--videos={ucf}", "--motion=pattern"], "motion"),  # the synthetic set's flags mean nothing here
    (["--videos={ucf}", "--eval_split=val"], "eval_split"),
    (["--videos={ucf}", "--weight_decay=-1"], "weight_decay"),
    (["--videos_csv={tmp}/k.csv"], "videos_csv"),  # only with --videos
])
def test_bad_video_flags_fail_before_any_work(tmp_path, args, flag):
    ucf = tmp_path / "ucf"
    (ucf / "UCF-101").mkdir(parents=True)
    (ucf / "ucfTrainTestlist").mkdir()
    for name in ("classInd.txt", "trainlist01.txt"):
        (ucf / "ucfTrainTestlist" / name).write_text("")
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path, ucf=ucf) for a in args]
    result = subprocess.run([sys.executable, "-m", "tools.demo", f"--output_dir={tmp_path / 'out'}", *args],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"demo: error: --{flag}"), result.stderr
    assert not (tmp_path / "out").exists()
