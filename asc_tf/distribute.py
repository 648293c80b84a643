"""Choosing the tf.distribute strategy, and who writes files.

  auto          MirroredStrategy over the local GPUs when there are several;
                MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of
                several tasks; otherwise one device.
  mirrored      MirroredStrategy over all local GPUs, or all logical CPU
                devices when there is no GPU (see `split_cpu`).
  multi_worker  MultiWorkerMirroredStrategy from TF_CONFIG.
  one_device    the first GPU, else the CPU.
"""

import json
import os

import tensorflow as tf

from asc_tf.choices import STRATEGIES


def split_cpu(count):
    """Makes the CPU appear as `count` logical devices (tests and CPU-only runs of MirroredStrategy).

    Must run before TensorFlow initialises its devices (before the first op).
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)


def _cluster_size():
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return sum(len(tasks) for tasks in config.get("cluster", {}).values())


def make_strategy(kind="auto"):
    """Returns a `tf.distribute.Strategy` (see the module docstring)."""
    if kind not in STRATEGIES:
        raise ValueError(f"unknown strategy {kind!r}; valid: {', '.join(STRATEGIES)}")
    if kind == "multi_worker" or (kind == "auto" and _cluster_size() > 1):
        # Before anything lists devices: collective ops must be configured before TensorFlow's runtime starts.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "auto":
        kind = "mirrored" if len(gpus) > 1 else "one_device"
    if kind == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy):
    """True on the task that writes checkpoints, summaries and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def worker_dir(strategy, directory):
    """Where this task writes: `directory` on the chief, a scratch folder elsewhere.

    Under MultiWorkerMirroredStrategy every worker must take part in saving a
    checkpoint (the save is collective), but only the chief's copy is kept.
    """
    if is_chief(strategy):
        return directory
    resolver = strategy.cluster_resolver
    return os.path.join(directory, f".worker_{resolver.task_type}_{resolver.task_id}")
