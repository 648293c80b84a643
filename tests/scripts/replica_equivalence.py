"""Trains ASCNet for N steps on 1 device and on 2 mirrored CPU replicas from the same state.

    python tests/scripts/replica_equivalence.py STEPS OUT.json [--sgd] [--one-sync-bn] [--gamma=G] [--scp_mode=M]
        [--appearance_loss=L]

Writes per-step losses of both runs, the largest difference between the two
replicas of every mirrored variable (should be exactly 0), and the largest
difference between the runs per group of variables. Run in its own process:
the CPU must be split into logical devices before TensorFlow starts.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from asc_tf import distribute  # noqa: E402

distribute.split_cpu(2)

import keras  # noqa: E402

keras.utils.set_random_seed(0)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from asc_tf import optim  # noqa: E402
from asc_tf.ascnet import ASCNet  # noqa: E402
from asc_tf.pretraining import make_train_function  # noqa: E402

CLIP = (8, 32, 32, 3)
BATCH = 8


def option(name, default):
    for arg in sys.argv:
        if arg.startswith(f"--{name}="):
            return type(default)(arg.split("=", 1)[1])
    return default


def build(strategy, sync_bn, use_sgd):
    with strategy.scope():
        model = ASCNet("r3d_18", width=0.125, sync_bn=sync_bn, dim=8, predictor_hidden=16, queue_size=64,
                       speed_set=(1, 2), tau=0.9, gamma=option("gamma", 0.5), scp_mode=option("scp_mode", "similar"),
                       appearance_loss=option("appearance_loss", "regression"))
        model.build_networks(CLIP)
        lr = option("lr", 0.05 if use_sgd else 1.0)
        optimizer = keras.optimizers.SGD(lr, momentum=0.9) if use_sgd else optim.LARS(lr)
        model.compile(optimizer=optimizer)
        optimizer.build(model.online_variables)
    return model


def batches(steps, permute=False):
    rng = np.random.default_rng(0)
    for step in range(steps):
        batch = {
            "view_i": rng.normal(size=(BATCH, *CLIP)).astype(np.float32),
            "view_j": rng.normal(size=(BATCH, *CLIP)).astype(np.float32),
            "video_id": np.arange(BATCH, dtype=np.int64) + 100 * step,
            "speed_i": rng.choice([1, 2], BATCH).astype(np.int32),
            "speed_j": rng.choice([1, 2], BATCH).astype(np.int32),
            "label": rng.integers(0, 3, BATCH).astype(np.int64),
        }
        # The same videos in another order: equal in exact arithmetic, summed in another order in floats.
        order = np.random.default_rng(step).permutation(BATCH) if permute else np.arange(BATCH)
        yield {k: v[order] for k, v in batch.items()}


def train(model, strategy, steps, permute=False):
    data = list(batches(steps, permute))
    dataset = tf.data.Dataset.from_tensor_slices({k: np.concatenate([d[k] for d in data]) for k in data[0]})
    iterator = iter(strategy.experimental_distribute_dataset(dataset.batch(BATCH)))
    train_function = make_train_function(model, strategy)
    losses, snapshots = [], []
    for _ in range(steps):
        logs = train_function(iterator)
        losses.append({k: float(np.asarray(v)) for k, v in logs.items() if k in ("loss", "loss_a", "loss_m")})
        snapshots.append([np.asarray(v.numpy(), np.float64) for v in model.online_variables])
        model.reset_metrics()
    return losses, snapshots


def per_step_gap(a, b):
    """Largest absolute difference of the online weights after each step."""
    return [max(float(np.max(np.abs(x - y))) for x, y in zip(sa, sb)) for sa, sb in zip(a, b)]


def groups(model):
    queue = model.queue.weights
    target = model.target_encoder.weights + model.target_appearance.weights + model.target_speed.weights
    moving = [v for v in model.weights if "moving_" in v.path]
    online = [v for v in model.online_variables]
    return {
        "online": online,
        "target": [v for v in target if "moving_" not in v.path],
        "bn_statistics": moving,
        "queue": queue,
        "optimizer": list(model.optimizer.variables),
    }


def main():
    steps, out = int(sys.argv[1]), sys.argv[2]
    use_sgd = "--sgd" in sys.argv
    one_strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    two_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # --one-sync-bn: the 1-device run also computes BatchNorm statistics the synchronised way.
    one = build(one_strategy, "--one-sync-bn" in sys.argv, use_sgd)
    two = build(two_strategy, True, use_sgd)
    permuted = build(one_strategy, "--one-sync-bn" in sys.argv, use_sgd)
    two.set_weights(one.get_weights())
    permuted.set_weights(one.get_weights())
    losses_one, online_one = train(one, one_strategy, steps)
    losses_two, online_two = train(two, two_strategy, steps)
    losses_permuted, online_permuted = train(permuted, one_strategy, steps, permute=True)
    result = {
        "losses_one": losses_one,
        "losses_two": losses_two,
        "losses_permuted": losses_permuted,
        "online_gap_two": per_step_gap(online_one, online_two),
        "online_gap_permuted": per_step_gap(online_one, online_permuted),
    }

    replica_gap = {}
    for name, variables in groups(two).items():
        gap = 0.0
        for variable in variables:
            value = getattr(variable, "value", variable)
            components = getattr(value, "values", None)
            if components is None or len(components) != 2:
                raise AssertionError(f"{variable.path} is not mirrored over 2 replicas")
            a, b = (np.asarray(c.numpy(), np.float64) for c in components)
            gap = max(gap, float(np.max(np.abs(a - b))) if a.size else 0.0)
        replica_gap[name] = gap
    result["replica_gap"] = replica_gap

    run_gap = {}
    for (name, a_vars), (_, b_vars) in zip(groups(one).items(), groups(two).items()):
        gap = 0.0
        for a, b in zip(a_vars, b_vars):
            a, b = np.asarray(a.numpy(), np.float64), np.asarray(b.numpy(), np.float64)
            if a.size:
                gap = max(gap, float(np.max(np.abs(a - b))))
        run_gap[name] = gap
    result["run_gap"] = run_gap
    result["permuted_gap"] = {
        name: max([float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(a_vars, b_vars) if a.numpy().size
                   and name != "queue"] or [0.0])
        for (name, a_vars), (_, b_vars) in zip(groups(one).items(), groups(permuted).items())
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
