"""Every binary in tools/ against the same kinds of bad flag: exit 2, one line naming the flag, no work done.

Each row gives the binary the flags it needs so that only the bad one is wrong:
{records} matches a tiny synthetic TFRecord set, {run}, {classifier} and {model}
are a pretraining run, a fine-tuning output and an encoder SavedModel that pass
the binaries' checks (fakes: nothing here loads them), {file} is a regular file,
{absent} does not exist and {out} is the output the command names, which must
not be created.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# Flags every row of a binary gets unless the row sets the same flag itself.
DEFAULTS = {
    "inspect_backbone": [],
    "build_tfrecords": ["--output_dir={out}"],
    "pretrain": ["--train_data={records}", "--model_dir={out}", "--train_steps=2"],
    "finetune": ["--init=random", "--train_data={records}", "--test_data={records}", "--output_dir={out}",
                 "--train_steps=2"],
    "retrieve": ["--init=random", "--train_data={records}", "--test_data={records}", "--output_dir={out}"],
    "export": ["--output_dir={out}"],
    "search": ["--saved_model={model}"],
    "demo": ["--output_dir={out}"],
}

ROWS = [
    # inspect_backbone: no output folder; a model is built only after the checks.
    ("inspect_backbone", ["--no_such_flag=1"], "no_such_flag"),
    ("inspect_backbone", ["--batch_size=-1"], "batch_size"),
    ("inspect_backbone", ["--torch_state={absent}/r3d_18.npz"], "torch_state"),
    # build_tfrecords
    ("build_tfrecords", ["--layout=folder", "--root={tmp}", "--no_such_flag=1"], "no_such_flag"),
    ("build_tfrecords", ["--layout=folder", "--root={tmp}", "--num_shards=-1"], "num_shards"),
    ("build_tfrecords", ["--layout=folder", "--root={tmp}", "--workers=-1"], "workers"),
    ("build_tfrecords", ["--layout=synthetic", "--num_videos=0"], "num_videos"),
    ("build_tfrecords", ["--layout=synthetic", "--num_videos=4", "--synthetic_frames=0"], "synthetic_frames"),
    ("build_tfrecords", ["--layout=synthetic", "--num_videos=4", "--synthetic_background_mean=-1"],
     "synthetic_background_mean"),
    ("build_tfrecords", ["--layout=synthetic", "--num_videos=4", "--output_dir={file}"], "output_dir"),
    ("build_tfrecords", ["--layout=folder", "--root={absent}"], "root"),
    ("build_tfrecords", ["--layout=ucf101", "--root={tmp}", "--split_file={file}",
                         "--class_index={absent}/classInd.txt"], "class_index"),
    ("build_tfrecords", ["--layout=kinetics", "--root={tmp}", "--csv={absent}/train.csv"], "csv"),
    # pretrain
    ("pretrain", ["--no_such_flag=1"], "no_such_flag"),
    ("pretrain", ["--global_batch_size=0"], "global_batch_size"),
    ("pretrain", ["--speed_set=0,2"], "speed_set"),
    ("pretrain", ["--speed_i=0"], "speed_i"),
    ("pretrain", ["--global_batch_size=3", "--strategy=mirrored", "--cpu_replicas=2"], "global_batch_size"),
    ("pretrain", ["--train_steps=-1"], "train_steps"),
    ("pretrain", ["--appearance_loss=nce"], "appearance_loss"),
    ("pretrain", ["--appearance_loss=infonce", "--temperature=0"], "temperature"),
    ("pretrain", ["--train_data={absent}/*.tfrecord"], "train_data"),
    ("pretrain", ["--model_dir={file}"], "model_dir"),
    ("pretrain", ["--train_data={file}", "--train_steps=0", "--epochs=1"], "epochs"),  # no manifest.json beside it
    ("pretrain", ["--monitor_every=1", "--monitor_train_data={records}",
                  "--monitor_test_data={absent}/*.tfrecord"], "monitor_test_data"),
    # finetune
    ("finetune", ["--no_such_flag=1"], "no_such_flag"),
    ("finetune", ["--batch_size=0"], "batch_size"),
    ("finetune", ["--frames=-1"], "frames"),
    ("finetune", ["--train_data={absent}/*.tfrecord"], "train_data"),
    ("finetune", ["--output_dir={file}"], "output_dir"),
    ("finetune", ["--init=pretrained", "--model_dir={absent}"], "model_dir"),
    ("finetune", ["--train_data={file}", "--train_steps=0", "--epochs=1"], "epochs"),  # no manifest.json beside it
    # retrieve
    ("retrieve", ["--no_such_flag=1"], "no_such_flag"),
    ("retrieve", ["--stride=0"], "stride"),
    ("retrieve", ["--train_data={absent}/*.tfrecord"], "train_data"),
    ("retrieve", ["--output_dir={file}"], "output_dir"),
    ("retrieve", ["--init=pretrained", "--saved_model={absent}"], "saved_model"),
    # export
    ("export", ["--model_dir={run}", "--no_such_flag=1"], "no_such_flag"),
    ("export", ["--model_dir={absent}"], "model_dir"),
    ("export", ["--classifier_dir={absent}"], "classifier_dir"),
    ("export", ["--classifier_dir={classifier}", "--output_dir={file}"], "output_dir"),
    ("export", ["--model_dir={run}", "--frames=-1"], "frames"),
    ("export", ["--classifier_dir={classifier}", "--crop_size=0"], "crop_size"),
    # search: its output is the index file, put under {out}
    ("search", ["index", "--videos={tmp}", "--index={out}/i.npz", "--no_such_flag=1"], "no_such_flag"),
    ("search", ["index", "--videos={tmp}", "--index={out}/i.npz", "--num_clips=-1"], "num_clips"),
    ("search", ["index", "--videos={file}", "--index={out}/i.npz"], "videos"),
    ("search", ["index", "--saved_model={absent}", "--videos={tmp}", "--index={out}/i.npz"], "saved_model"),
    ("search", ["query", "--index={file}", "--video={file}", "--k=-1"], "k"),
    # demo
    ("demo", ["--no_such_flag=1"], "no_such_flag"),
    ("demo", ["--speeds=0,2"], "speeds"),
    ("demo", ["--batch_size=-1"], "batch_size"),
    ("demo", ["--backbone=r3d_50"], "backbone"),
    ("demo", ["--steps=ten"], "steps"),
    ("demo", ["--background_mean=300"], "background_mean"),
    ("demo", ["--supervised_crop_scale=0,1"], "supervised_crop_scale"),
    ("demo", ["--supervised_optimizer=lars"], "supervised_optimizer"),
    ("demo", ["--output_dir={file}"], "output_dir"),
    ("demo", ["--data_dir={file}"], "data_dir"),
    # an output location that cannot be created (/proc takes no new folders), after every other flag passed
    ("build_tfrecords", ["--layout=synthetic", "--num_videos=4", "--output_dir=/proc/asc/out"], "output_dir"),
    ("pretrain", ["--model_dir=/proc/asc/run"], "model_dir"),
    ("finetune", ["--output_dir=/proc/asc/out"], "output_dir"),
    ("retrieve", ["--output_dir=/proc/asc/out"], "output_dir"),
    ("export", ["--model_dir={run}", "--output_dir=/proc/asc/out"], "output_dir"),
    ("search", ["index", "--videos={tmp}", "--index=/proc/asc/i.npz"], "index"),
    ("demo", ["--output_dir=/proc/asc/out"], "output_dir"),
    ("demo", ["--data_dir=/proc/asc/data"], "data_dir"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Paths that pass every binary's checks, shared by the rows."""
    from asc_tf.data import ingest

    root = tmp_path_factory.mktemp("inputs")
    records = root / "records"
    listing = ingest.list_synthetic(12, split="train", seed=0, num_frames=12, size=20, motion="pattern")
    ingest.ingest(listing, str(records), name="train", options=ingest.EncodeOptions(short_side=0), command=["test"])
    settings = {"backbone": "r3d_18", "width": 0.125, "frames": 4, "crop_size": 16}
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(settings))
    (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    classifier = root / "classifier"
    classifier.mkdir()
    (classifier / "classifier.json").write_text(json.dumps({**settings, "num_classes": 2, "dropout": 0.5,
                                                            "class_names": ["a", "b"]}))
    (classifier / "classifier.weights.h5").write_bytes(b"")
    model = root / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")
    return {"records": str(records / "train-*.tfrecord"), "run": str(run), "classifier": str(classifier),
            "model": str(model)}


def command_line(binary, args, paths):
    """Positional args, then the defaults the row does not override, then the row's flags."""
    given = {a.split("=")[0] for a in args if a.startswith("--")}
    flags = [a for a in DEFAULTS[binary] if a.split("=")[0] not in given]
    positional = [a for a in args if not a.startswith("--")]
    named = [a for a in args if a.startswith("--")]
    return [a.format(**paths) for a in positional + flags + named]


@pytest.mark.parametrize("binary, args, flag", ROWS, ids=[f"{b}-{f}-{i}" for i, (b, _, f) in enumerate(ROWS)])
def test_bad_flag_exits_2_with_one_line_naming_it(inputs, tmp_path, binary, args, flag):
    file = tmp_path / "file"
    file.write_text("not a folder\n")
    paths = {**inputs, "tmp": tmp_path, "file": file, "absent": tmp_path / "absent", "out": tmp_path / "out"}
    command = [sys.executable, "-m", f"tools.{binary}", *command_line(binary, args, paths)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            capture_output=True, text=True, timeout=120)
    report = f"{' '.join(command)}\n{result.stderr[-2000:]}"
    assert result.returncode == 2, report
    assert "Traceback" not in result.stderr, report
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and re.search(rf"--{flag}[:=]", errors[0]), report
    assert errors[0].startswith(f"{binary}: error: ") and errors[0] == lines[-1], report
    assert not (tmp_path / "out").exists(), report  # rejected before any work
    assert file.read_text() == "not a folder\n"
