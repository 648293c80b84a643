"""Training speed: one ASCNet pretraining step in TF against the same step in PyTorch.

What is timed:

  train_step    A full ASC iteration (paper Algorithm 1) with the paper's
                settings: r3d_18 at width 1.0, 256-d linear projection heads,
                4096-wide predictors, a K-row feature queue, speeds {4, 8}, LARS.
                TF: the model `asc_tf.pretraining.build_model` builds, driven
                as a real run drives it (`pretraining.make_train_function`, then
                `train_function(iterator)`) over a small in-memory
                `tf.data` set of random float32 clips; each call is timed up to
                `float(logs["loss"])`. PyTorch: `bench.torch_asc_step`, the
                same algorithm on torchvision's r3d_18, in a subprocess (the two
                frameworks must not share a process). The two are interleaved —
                TF step, PyTorch step, TF step, ... — after 2 warm-up steps each,
                so both see the same load on a shared machine. Both use every
                core.
  queue_lookup  `asc_tf.queue.select_scp_targets` (mode "similar") alone in a
                tf.function: K queue rows of D=256 plus the 2B batch rows as
                candidates, for B=256 anchors (a paper-sized batch) and for the
                largest measured batch.

Output, one JSON line each:

  {"bench": "train_step", "batch": B, "tf_median_s", "torch_median_s",
   "speedup_tf_over_torch" (= torch median / TF median, > 1 means TF is
   faster), the individual runs, "tf_peak_rss_mb" (the TF process's peak
   resident memory so far, from ru_maxrss), ...}
  {"bench": "queue_lookup", "K", "D", "batch": 256, "median_s",
   "step_median_s_batch_256_extrapolated" (TF step time per clip pair at the
   largest measured batch × 256: a linear extrapolation, not a measurement),
   "fraction_of_step" (lookup / that estimate), "median_s_batch_<B>" and
   "fraction_of_step_batch_<B>" (the lookup at the largest measured batch
   against that batch's measured step)}

Never run in CI.

    python -m bench.train_step                         # batches 2 and 4, 16×112×112, 7 repeats
    python -m bench.train_step --frames 8 --size 32 --queue_size 1024 --repeats 2 --batches 2
    python -m bench.train_step --no-torch
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from asc_tf.pretraining import PretrainConfig, build_model, make_train_function  # noqa: E402
from asc_tf.queue import select_scp_targets  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEEDS = (4, 8)
WARMUP = 2
LOOKUP_BATCH = 256
LOOKUP_REPEATS = 10


def peak_rss_mb():
    """Peak resident memory of this process in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- TensorFlow side
def make_config(args, batch):
    return PretrainConfig(
        backbone=args.backbone,
        width=1.0,
        dim=256,
        predictor_hidden=4096,
        frames=args.frames,
        crop_size=args.size,
        speed_set=SPEEDS,
        queue_size=args.queue_size,
        global_batch_size=batch,
        optimizer="lars",
    )


def make_dataset(batch, frames, size, samples_per_batch=2, seed=0):
    """An in-memory, repeating two-view dataset of random clips: `samples_per_batch` distinct batches."""
    rng = np.random.default_rng(seed)
    count = batch * samples_per_batch
    shape = (count, frames, size, size, 3)
    samples = {
        "view_i": rng.standard_normal(shape, dtype=np.float32),
        "view_j": rng.standard_normal(shape, dtype=np.float32),
        "video_id": np.arange(count, dtype=np.int64),
        "speed_i": rng.choice(SPEEDS, count).astype(np.int32),
        "speed_j": rng.choice(SPEEDS, count).astype(np.int32),
        "label": rng.integers(0, 10, count).astype(np.int64),
    }
    return tf.data.Dataset.from_tensor_slices(samples).batch(batch, drop_remainder=True).repeat()


class TFStep:
    """The compiled train function of one ASCNet (`pretraining.make_train_function`), for one batch size."""

    def __init__(self, args, batch):
        config = make_config(args, batch)
        self.strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        self.model = build_model(config, self.strategy)
        dataset = make_dataset(batch, args.frames, args.size)
        self.iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        self.train_function = make_train_function(self.model, self.strategy, config.jit_compile)

    def __call__(self):
        start = time.perf_counter()
        logs = self.train_function(self.iterator)
        loss = float(logs["loss"])
        elapsed = time.perf_counter() - start
        if not np.isfinite(loss):
            raise RuntimeError(f"TF loss is {loss}")
        return elapsed


# ---------------------------------------------------------------- PyTorch side
class TorchWorker:
    """The `bench.torch_asc_step` subprocess; `available` is False when it failed to start."""

    def __init__(self, args):
        self.version = None
        command = [sys.executable, "-m", "bench.torch_asc_step", "--frames", str(args.frames), "--size",
                   str(args.size), "--queue_size", str(args.queue_size)]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        first = self.process.stdout.readline().split()
        if not first or first[0] != "ready":
            self.close()
            self.process = None
            return
        self.version = first[1]

    @property
    def available(self):
        return self.process is not None

    def _ask(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"PyTorch worker exited (code {self.process.poll()}) after {line!r}")
        return answer.split()

    def set_batch(self, batch):
        answer = self._ask(f"batch {batch}")
        if answer != ["ok"]:
            raise RuntimeError(f"PyTorch worker: {' '.join(answer)}")

    def __call__(self):
        seconds, loss = (float(x) for x in self._ask("step"))
        if not np.isfinite(loss):
            raise RuntimeError(f"PyTorch loss is {loss}")
        return seconds

    def close(self):
        if self.process is None:
            return
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.process.wait(timeout=60)


def torch_installed():
    """Whether PyTorch and torchvision can be found, without importing them here."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "torchvision"))


# ---------------------------------------------------------------- queue lookup
def time_lookup(queue_size, dim, batch, repeats=LOOKUP_REPEATS, seed=0):
    """Median seconds of `select_scp_targets` ("similar") for `batch` anchors over the queue + 2·batch rows."""
    rng = np.random.default_rng(seed)

    def unit(rows):
        x = rng.standard_normal((rows, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    candidates = queue_size + 2 * batch
    batch_ids = np.arange(batch, dtype=np.int64)
    inputs = (
        tf.constant(unit(batch)),
        tf.constant(batch_ids),
        tf.constant(rng.choice(SPEEDS, batch).astype(np.int32)),
        tf.constant(unit(candidates)),
        tf.constant(unit(candidates)),
        tf.constant(np.concatenate([rng.integers(batch, 10**9, queue_size), batch_ids, batch_ids])),
        tf.constant(rng.choice(SPEEDS, candidates).astype(np.int32)),
        tf.constant(np.ones(candidates, bool)),
    )

    lookup = tf.function(lambda *tensors: select_scp_targets(*tensors, mode="similar"))

    def run():
        start = time.perf_counter()
        outputs = lookup(*inputs)
        _ = [t.numpy() for t in outputs]
        return time.perf_counter() - start

    for _ in range(WARMUP + 1):
        run()
    return statistics.median(run() for _ in range(repeats))


# ---------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--backbone", default="r3d_18", help="TF backbone; the PyTorch reference is always r3d_18")
    parser.add_argument("--queue_size", type=int, default=65536)
    parser.add_argument("--no-torch", action="store_true", help="time the TF step only")
    args = parser.parse_args()

    worker, torch_status = None, "not run (--no-torch)"
    if not args.no_torch:
        if args.backbone != "r3d_18":
            torch_status = f"no PyTorch reference for {args.backbone}"
        elif not torch_installed():
            torch_status = "not installed"
        else:
            worker = TorchWorker(args)
            if not worker.available:
                worker, torch_status = None, "worker failed to start"
    compare = worker is not None

    tf_medians = {}
    try:
        for batch in args.batches:
            tf_step = TFStep(args, batch)
            if compare:
                worker.set_batch(batch)
            for _ in range(WARMUP):
                tf_step()
                if compare:
                    worker()
            tf_runs, torch_runs = [], []
            for _ in range(args.repeats):
                tf_runs.append(tf_step())
                if compare:
                    torch_runs.append(worker())
            tf_median = statistics.median(tf_runs)
            tf_medians[batch] = tf_median
            line = {
                "bench": "train_step",
                "backbone": args.backbone,
                "batch": batch,
                "clip": [args.frames, args.size, args.size],
                "queue_size": args.queue_size,
                "tf_median_s": round(tf_median, 4),
                "tf_steps_per_s": round(1.0 / tf_median, 4),
            }
            if compare:
                torch_median = statistics.median(torch_runs)
                line.update(
                    torch_median_s=round(torch_median, 4),
                    torch_steps_per_s=round(1.0 / torch_median, 4),
                    speedup_tf_over_torch=round(torch_median / tf_median, 3),
                )
            line["tf_runs"] = [round(t, 4) for t in tf_runs]
            if compare:
                line.update(torch_runs=[round(t, 4) for t in torch_runs], torch_version=worker.version)
            else:
                line["torch"] = torch_status
            line.update(tf_peak_rss_mb=round(peak_rss_mb(), 1), warmup_steps=WARMUP, threads=os.cpu_count())
            print(json.dumps(line), flush=True)
            del tf_step
    finally:
        if worker is not None:
            worker.close()

    largest = max(tf_medians)
    lookup_256 = time_lookup(args.queue_size, 256, LOOKUP_BATCH)
    lookup_largest = time_lookup(args.queue_size, 256, largest)
    step_estimate = tf_medians[largest] / largest * LOOKUP_BATCH
    print(
        json.dumps(
            {
                "bench": "queue_lookup",
                "K": args.queue_size,
                "D": 256,
                "batch": LOOKUP_BATCH,
                "median_s": round(lookup_256, 5),
                "step_median_s_batch_256_extrapolated": round(step_estimate, 3),
                "fraction_of_step": round(lookup_256 / step_estimate, 5),
                f"median_s_batch_{largest}": round(lookup_largest, 5),
                f"fraction_of_step_batch_{largest}": round(lookup_largest / tf_medians[largest], 5),
                "note": f"the batch-256 step time is the TF step per clip pair at batch {largest} x 256, "
                "a linear extrapolation, not a measurement",
                "repeats": LOOKUP_REPEATS,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
