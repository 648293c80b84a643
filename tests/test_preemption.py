"""Preemption: a pretraining run SIGKILLed five times and resumed each time ends where an uninterrupted run ends.

The kills land at moments drawn from a seeded generator, before the first
checkpoint, while a checkpoint is being written (its temporary files are on
disk) and just after one; after each kill the newest checkpoint must be
readable in full. The final checkpoint of the interrupted run must then hold
the same online and target networks, BatchNorm statistics, queue, data
position and optimiser slots as the uninterrupted run's: the resumed run
replays the same batches, clips and augmentations (the data position is in
the checkpoint), so the two agree to float32 rounding. Measured here: they
are bit-identical; the tolerance allows 1e-6 of each tensor's scale.
"""

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, TINY_PRETRAIN, synthetic_records

STEPS = 16
KILLS = ("before_first_checkpoint", "during_a_write", "after_a_write", "during_a_write", "after_a_write")
FLAGS = [
    *TINY_PRETRAIN, f"--train_steps={STEPS}", "--checkpoint_every=1", "--keep_checkpoints=3", "--seed=7",
]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    # 10 videos, batch 4: epochs end inside batches, so the resume crosses epoch boundaries.
    return synthetic_records(tmp_path_factory.mktemp("synthetic"), 10, num_shards=3)


def _start(records, model_dir, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-m", "tools.pretrain", *FLAGS, f"--train_data={records}", f"--model_dir={model_dir}"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _newest_step(checkpoints):
    latest = tf.train.latest_checkpoint(checkpoints)
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _kill_at(process, checkpoints, moment, rng, deadline):
    """Waits for `moment` (polling every millisecond), SIGKILLs, and says what the kill hit."""
    start_step = _newest_step(checkpoints)
    stale = set(glob.glob(os.path.join(checkpoints, "*_temp*")))  # left by an earlier kill; the run removes them
    while process.poll() is None and time.monotonic() < deadline:
        writing = set(glob.glob(os.path.join(checkpoints, "*_temp*"))) - stale
        step = _newest_step(checkpoints)
        if moment == "before_first_checkpoint" and not os.path.isdir(checkpoints):
            time.sleep(rng.uniform(0.0, 3.0))
            break
        if moment == "during_a_write" and writing:
            break
        if moment == "after_a_write" and step > start_step + 1:
            time.sleep(rng.uniform(0.0, 0.2))
            break
        time.sleep(0.001)
    assert process.poll() is None, "the run ended before the kill"
    writing = set(glob.glob(os.path.join(checkpoints, "*_temp*"))) - stale
    hit = f"step {_newest_step(checkpoints)}, " + ("a write in progress" if writing else "no write in progress")
    process.send_signal(signal.SIGKILL)
    process.wait()
    return hit


def _read_all(path):
    """Every tensor of a checkpoint, read with the plain reader (fails on a damaged checkpoint)."""
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)}


def test_five_sigkills_then_resume_end_where_an_uninterrupted_run_ends(records, tmp_path):
    deadline = time.monotonic() + 280
    with open(tmp_path / "straight.log", "w") as log:
        straight = _start(records, str(tmp_path / "straight"), log)
        assert straight.wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-2000:]

    model_dir = str(tmp_path / "killed")
    checkpoints = os.path.join(model_dir, "checkpoints")
    rng = np.random.default_rng(0)
    hits, resumable = [], 0
    with open(tmp_path / "killed.log", "w") as log:
        for moment in KILLS:
            resumable += bool(tf.train.latest_checkpoint(checkpoints))
            hits.append((moment, _kill_at(_start(records, model_dir, log), checkpoints, moment, rng, deadline)))
            latest = tf.train.latest_checkpoint(checkpoints)
            if latest:  # never left unreadable
                assert _read_all(latest)
        final = _start(records, model_dir, log)
        assert final.wait(timeout=240) == 0, (tmp_path / "killed.log").read_text()[-2000:]
    assert not glob.glob(os.path.join(checkpoints, "*_temp*"))  # a resumed run removes half-written checkpoints
    print("kills:", hits)
    log_text = (tmp_path / "killed.log").read_text()
    # Every launch that found a checkpoint resumed from it (the final one at least).
    assert log_text.count("resuming from") == resumable + 1 >= 3, log_text[-2000:]
    assert [moment for moment, hit in hits if "a write in progress" in hit], hits

    expected = _read_all(os.path.join(tmp_path, "straight", "checkpoints", f"ckpt-{STEPS}"))
    resumed = _read_all(os.path.join(checkpoints, f"ckpt-{STEPS}"))
    assert expected.keys() == resumed.keys()
    kinds = {"online": 0, "target": 0, "moving": 0, "queue": 0, "data_position": 0, "optimizer": 0}
    worst = 0.0
    for name, value in expected.items():
        if name.startswith("save_counter") or name == "_CHECKPOINTABLE_OBJECT_GRAPH":
            continue
        for kind in kinds:
            kinds[kind] += kind in name
        if value.dtype.kind in "iub":
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)
            continue
        gap = float(np.max(np.abs(resumed[name] - value), initial=0.0))
        scale = float(np.max(np.abs(value), initial=0.0)) or 1.0
        worst = max(worst, gap / scale)
        assert gap <= 1e-6 * scale, f"{name}: {gap:.3e} (scale {scale:.3e})"
    print(f"largest relative gap over every float tensor: {worst:.3e}")
    assert all(kinds.values()), kinds  # every kind of state was compared
