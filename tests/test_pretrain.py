"""The pretrain binary: trains, logs, checkpoints, resumes after SIGKILL, stops on NaN, rejects bad flags."""

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


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return synthetic_records(tmp_path_factory.mktemp("synthetic"), 12)


def pretrain(*args, wait=True):
    command = [sys.executable, "-m", "tools.pretrain", *TINY_PRETRAIN, *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if not wait:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def scalars_and_images(model_dir):
    tags, images = set(), set()
    for path in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add(value.tag)
                if value.metadata.plugin_data.plugin_name == "images":
                    images.add((value.tag, event.step))
    return tags, images


def test_trains_logs_checkpoints_exports_and_resumes(records, tmp_path):
    model_dir = str(tmp_path / "run")
    first = pretrain(f"--train_data={records}", f"--model_dir={model_dir}", "--train_steps=4", "--checkpoint_every=2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "steps 0→4: loss" in first.stdout
    assert sorted(os.path.basename(p) for p in glob.glob(f"{model_dir}/checkpoints/*.index")) == [
        "ckpt-2.index", "ckpt-4.index"
    ]
    tags, images = scalars_and_images(model_dir)
    for metric in ("loss", "loss_a", "loss_m", "tau", "lr", "scp_masked_fraction", "queue_fill", "encoder_std",
                   "projection_std", "collapse_alarm", "neighbour_same_label"):
        assert metric in tags
    assert images == {("views/rows_alternate_view_i_view_j", 0)}
    encoder = tf.saved_model.load(os.path.join(model_dir, "encoder"))
    serving = encoder.signatures["serving_default"](clips=tf.zeros((2, 4, 30, 20, 3), tf.uint8))
    assert serving["features"].shape == (2, 64)
    assert encoder.features(tf.zeros((2, 4, 16, 16, 3))).shape == (2, 64)
    assert os.path.isfile(os.path.join(model_dir, "encoder.weights.h5"))

    second = pretrain(f"--train_data={records}", f"--model_dir={model_dir}", "--train_steps=6", "--checkpoint_every=2")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stderr and "ckpt-4" in second.stderr
    assert "steps 4→6" in second.stdout


def test_sigkill_after_a_checkpoint_then_resume_restores_its_state(records, tmp_path):
    model_dir = str(tmp_path / "run")
    flags = [f"--train_data={records}", f"--model_dir={model_dir}", "--checkpoint_every=3", "--keep_checkpoints=2"]
    process = pretrain(*flags, "--train_steps=500", wait=False)
    deadline = time.monotonic() + 300
    while not glob.glob(f"{model_dir}/checkpoints/ckpt-6.index"):
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = tf.train.latest_checkpoint(f"{model_dir}/checkpoints")
    step = int(latest.rsplit("-", 1)[1])
    assert step >= 6 and step % 3 == 0

    # What the checkpoint holds, read with the plain reader.
    reader = tf.train.load_checkpoint(latest)
    names = [name for name, _ in tf.train.list_variables(latest)]

    def stored(path):
        return reader.get_tensor(f"variables/by_path/{path.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE")

    # Restored by the library exactly as a re-run does.
    from asc_tf import pretraining

    config = pretraining.PretrainConfig(
        train_data=records, model_dir=model_dir, backbone="r3d_18", width=0.125, frames=4, crop_size=16,
        speed_set=(1, 2), global_batch_size=4, queue_size=32, dim=8, predictor_hidden=16, train_steps=500,
        checkpoint_every=3, keep_checkpoints=2,
    )
    model, _, _, restored = pretraining.restore(config, tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert restored == latest
    assert int(model.optimizer.iterations.numpy()) == step
    assert int(model.queue.pointer.numpy()) == step * 2 * 4 == int(stored("queue/pointer"))
    np.testing.assert_array_equal(model.queue.keys.numpy(), stored("queue/keys"))
    np.testing.assert_array_equal(model.queue.ids.numpy(), stored("queue/ids"))
    # Every variable of the model is in the checkpoint under its path, and comes back exactly:
    # online and target networks, BatchNorm statistics, heads, queue; and every optimiser slot.
    for owner, variables in (("variables", model.variables), ("optimizer", model.optimizer.variables)):
        for variable in variables:
            key = f"{owner}/by_path/{variable.path.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"  # "/" is ".S"
            assert key in names, key
            np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(key), err_msg=variable.path)
    assert any("target_encoder" in v.path and "moving_variance" in v.path for v in model.variables)
    # The target is the EMA of the online network: close to it (a few steps of τ = 0.99 from ξ = θ), not equal.
    kernels = [(t, o) for t, o in model.ema_pairs() if t.path.endswith("kernel")]
    assert len(kernels) > 10
    for target, online in kernels:
        gap = np.linalg.norm(target.numpy() - online.numpy()) / np.linalg.norm(online.numpy())
        assert 0.0 < gap < 0.05, (target.path, gap)

    again = pretrain(*flags, f"--train_steps={step + 2}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"steps {step}→{step + 2}" in again.stdout


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(records, tmp_path):
    model_dir = str(tmp_path / "run")
    result = pretrain(f"--train_data={records}", f"--model_dir={model_dir}", "--train_steps=50",
                      "--checkpoint_every=1", "--optimizer=sgd", "--base_lr=1e30")
    assert result.returncode == 1
    line = [line for line in result.stderr.splitlines() if "stopped" in line]
    assert line and "loss is nan" in line[0] or "loss is inf" in line[0], result.stderr[-2000:]
    bad_step = int(line[0].split(" at step ")[1].split(";")[0])
    latest = tf.train.latest_checkpoint(f"{model_dir}/checkpoints")
    if bad_step > 1:
        assert latest.endswith(f"ckpt-{bad_step - 1}")
        tf.train.load_checkpoint(latest)  # readable
    else:
        assert latest is None


# tools.pretrain with its checkpoint writes failing from the second on as a full disk fails them
# (TensorFlow's ResourceExhaustedError); the first one is written for real.
DISK_FILLS = """
import runpy, sys
import tensorflow as tf
save, calls = tf.train.CheckpointManager.save, []
def full(self, *args, **kwargs):
    calls.append(1)
    if len(calls) > 1:
        raise tf.errors.ResourceExhaustedError(None, None, "ckpt-2.data-00000-of-00001.tempstate; No space left on device")
    return save(self, *args, **kwargs)
tf.train.CheckpointManager.save = full
sys.argv = ["tools.pretrain"] + sys.argv[1:]
runpy.run_module("tools.pretrain", run_name="__main__", alter_sys=True)
"""


def test_a_full_disk_at_a_checkpoint_stops_with_one_line_and_resumes_from_the_last_good_one(records, tmp_path):
    model_dir = str(tmp_path / "run")
    args = [*TINY_PRETRAIN, f"--train_data={records}", f"--model_dir={model_dir}", "--train_steps=4",
            "--checkpoint_every=2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", DISK_FILLS, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pretrain: stopped: could not write the checkpoint of step 4 in "), last
    assert "No space left on device" in last and last.endswith("newest good checkpoint: " + os.path.join(
        model_dir, "checkpoints", "ckpt-2")), last
    assert "Traceback" not in result.stderr
    again = pretrain(f"--train_data={records}", f"--model_dir={model_dir}", "--train_steps=4", "--checkpoint_every=2")
    assert again.returncode == 0 and "steps 2→4" in again.stdout, again.stderr[-2000:]


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--backbone=resnet50"], "backbone"),
        (["--speed_i=0", "--speed_mode=fixed"], "speed_i"),
        (["--speed_set=1,-2"], "speed_set"),
        (["--train_data=/nonexistent/*.tfrecord"], "train_data"),
        (["--global_batch_size=3", "--strategy=mirrored", "--cpu_replicas=2"], "global_batch_size"),
        (["--queue_size=4"], "queue_size"),
        (["--gamma=2"], "gamma"),
        (["--min_crop_scale=0"], "min_crop_scale"),
        (["--epochs=-1"], "epochs"),
        (["--epochs=2", "--train_steps=3"], "train_steps"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(records, tmp_path, args, flag):
    defaults = {"--train_data": f"--train_data={records}", "--model_dir": f"--model_dir={tmp_path / 'run'}"}
    steps = [] if any(a.startswith(("--epochs", "--train_steps")) for a in args) else ["--train_steps=2"]
    given = {a.split("=")[0] for a in args}
    result = pretrain(*[v for k, v in defaults.items() if k not in given], *steps, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"--{flag}" in errors[0], result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_model_dir_that_is_a_file_is_rejected(records, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    result = pretrain(f"--train_data={records}", f"--model_dir={path}", "--train_steps=2")
    assert result.returncode == 2 and "--model_dir" in result.stderr


def _losses(model_dir):
    losses = {}
    for path in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    return [losses[step] for step in sorted(losses)]


def test_same_seed_gives_the_same_first_five_losses(records, tmp_path):
    """Seeded data (stateless augmentation, fixed record order) and seeded initialisation: bit-identical losses."""
    # The three runs side by side, each its own process: nothing they share can make them agree.
    processes = {name: pretrain(f"--train_data={records}", f"--model_dir={tmp_path / name}", "--train_steps=5",
                                f"--seed={seed}", wait=False)
                 for name, seed in (("a", 3), ("b", 3), ("c", 4))}
    for name, process in processes.items():
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, (name, err[-2000:])
    runs = {name: _losses(str(tmp_path / name)) for name in processes}
    assert len(runs["a"]) == 5 and all(np.isfinite(runs["a"]))
    assert runs["a"] == runs["b"]
    assert runs["c"] != runs["a"]


def test_the_data_resumes_after_the_saved_position_or_at_the_next_epoch_under_other_replicas(records):
    from asc_tf import pretraining
    from asc_tf.data import pipeline

    config = pretraining.PretrainConfig(
        train_data=records, frames=4, crop_size=16, speed_set=(1, 2), global_batch_size=4, shuffle_buffer=8
    )
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    stride = pipeline.EPOCH_STRIDE

    def first_positions(positions):
        batch = next(iter(pretraining.make_dataset(config, strategy, np.array(positions))))
        return [int(p) for p in batch["position"].numpy()]

    # Saved by this replica count: the record right after the saved one, then on (12 records per epoch).
    assert first_positions([3 * stride + 5] + [-1] * 7) == [3 * stride + k for k in (6, 7, 8, 9)]
    # Saved by 2 replicas, resumed on 1: its streams were sharded otherwise, so the next epoch.
    assert first_positions([3 * stride + 5, 3 * stride + 7] + [-1] * 6) == [4 * stride + k for k in range(4)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "lars"])
def test_a_run_restores_in_the_process_that_trained_it_whatever_the_optimiser(tmp_path, optimizer):
    """Keras names a second Adam of a process "adam_1": the checkpoint keys must not depend on it."""
    from asc_tf import pretraining

    config = pretraining.PretrainConfig(
        model_dir=str(tmp_path), backbone="r3d_18", width=0.125, frames=4, crop_size=16, speed_set=(1, 2),
        global_batch_size=4, queue_size=8, dim=8, predictor_hidden=16, optimizer=optimizer,
    )
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    first, checkpoint, manager, restored = pretraining.restore(config, strategy)
    assert restored is None
    for index, variable in enumerate(first.optimizer.variables):
        variable.assign(tf.fill(variable.shape, tf.cast(index + 1, variable.dtype)))
    manager.save()
    second, _, _, restored = pretraining.restore(config, strategy)
    assert restored is not None
    if optimizer != "lars":  # LARS names itself; Keras numbers its own optimisers
        assert second.optimizer.name != first.optimizer.name
    values = [v.numpy() for v in second.optimizer.variables]
    assert len(values) == len(first.optimizer.variables) > 2
    for index, value in enumerate(values):
        np.testing.assert_array_equal(value, np.full(value.shape, index + 1, value.dtype))


def test_the_collapse_alarm_goes_off_once_after_a_run_of_low_projection_std():
    from asc_tf.pretraining import CollapseAlarm

    alarm = CollapseAlarm(dim=64, steps=3)  # healthy ≈ 1/8 = 0.125; the threshold 0.2/8 = 0.025
    healthy, collapsed = 0.12, 0.001
    assert [alarm.update(std, step) for step, std in enumerate([collapsed, collapsed, healthy, collapsed], 1)] == [
        None] * 4  # two low steps, then a healthy one: the count starts again
    assert alarm.update(collapsed, 5) is None and not alarm.on
    warning = alarm.update(collapsed, 6)
    assert alarm.on and warning.startswith("pretrain: warning: the projections look collapsed at step 6")
    assert alarm.update(collapsed, 7) is None and alarm.on  # said once
    assert alarm.update(healthy, 8) is None and not alarm.on
