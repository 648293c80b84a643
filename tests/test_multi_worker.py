"""MultiWorkerMirroredStrategy: two worker processes on localhost train as one.

Each task runs tests/scripts/multi_worker.py with its own TF_CONFIG (loopback
ports only). Both must end with identical weights, BatchNorm statistics,
queue, data position and optimiser state; only the chief may write
checkpoints, TensorBoard events and the exported encoder into the model
directory, and the other worker leaves nothing behind.
"""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, synthetic_records

STEPS = 4


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return synthetic_records(tmp_path_factory.mktemp("synthetic"), 16, num_shards=4)


def test_two_workers_end_identical_and_only_the_chief_writes(records, tmp_path):
    model_dir = str(tmp_path / "run")
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append(subprocess.Popen(
            [sys.executable, "tests/scripts/multi_worker.py", records, model_dir, str(STEPS),
             str(tmp_path / f"state{index}.npz")],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ))
    try:
        codes = [p.wait(timeout=400) for p in processes]
    finally:
        for p in processes:
            p.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-1500:] for log in logs)
    assert f"task 0: 0→{STEPS}" in logs[0] and f"task 1: 0→{STEPS}" in logs[1]

    chief, other = np.load(tmp_path / "state0.npz"), np.load(tmp_path / "state1.npz")
    assert sorted(chief.files) == sorted(other.files)
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    names = " ".join(chief.files)
    for part in ("online_encoder", "target_encoder", "moving_variance", "queue/keys", "data_position", "optimizer/"):
        assert part in names, part
    assert int(chief["model/queue/pointer"]) == STEPS * 2 * 4  # the global batch, both clips
    # Two input pipelines, one per worker, each past its own records.
    positions = chief["model/ascnet/data_position"]
    assert (positions[:2] >= 0).all() and (positions[2:] == -1).all()

    # The chief alone wrote into the model directory; the worker's scratch folder is gone.
    entries = sorted(os.listdir(model_dir))
    assert entries == ["checkpoints", "config.json", "encoder", "encoder.weights.h5", "train"], entries
    assert sorted(os.path.basename(p) for p in glob.glob(f"{model_dir}/checkpoints/*.index")) == [
        "ckpt-2.index", "ckpt-4.index"
    ]
    assert len(glob.glob(f"{model_dir}/train/events.out.tfevents.*")) == 1
