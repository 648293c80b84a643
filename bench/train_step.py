"""Training speed: one ASCNet pretraining step in TF against the same step in PyTorch.

What is timed:

  train_step    A full ASC iteration (paper Algorithm 1): r3d_18, linear
                projection heads, predictors, a K-row feature queue, LARS,
                at two shapes (`--shapes`):
                  paper  width 1.0, 16×112×112, 256-d heads, 4096-wide
                         predictors, K = 65,536, speeds {4, 8}, batches 2, 4;
                  thin   the demo's and the tests' encoder: width 0.25,
                         8×32×32, 64-d heads, 256-wide predictors, K = 1,024,
                         speeds {1, 2}, batches 16, 32.
                TF: the model `asc_tf.pretraining.build_model` builds, driven
                as a real run drives it (`pretraining.make_train_function`, then
                `train_function(iterator)`) over a small in-memory
                `tf.data` set of random float32 clips; each call is timed up to
                `float(logs["loss"])`. PyTorch: `bench.torch_asc_step`, the
                same algorithm on torchvision's r3d_18 (channels scaled for
                `thin`), in a subprocess (the two frameworks must not share a
                process). The two are interleaved — TF step, PyTorch step, TF
                step, ... — after 2 warm-up steps each, so both see the same
                load on a shared machine. Both use every core.
                With `--mixed_precision` TF runs under Keras `mixed_bfloat16`
                (`PretrainConfig.mixed_precision`) and each round times three
                steps: TF bf16, PyTorch under
                `torch.autocast("cpu", dtype=torch.bfloat16)`, PyTorch float32.
                Where TF has no bfloat16 convolution (oneDNN below AVX-512,
                e.g. under ONEDNN_MAX_CPU_ISA=AVX2) it prints one line saying
                so and times nothing.
  queue_lookup  `asc_tf.queue.select_scp_targets` (mode "similar") alone in a
                tf.function: K queue rows of D=256 plus the 2B batch rows as
                candidates, for B=256 anchors (a paper-sized batch) and for the
                largest measured batch (paper shape only).

Every line records the CPU (`asc_tf.cpu.describe()`: avx2 / avx512f /
avx512_bf16 / amx, whether TF's oneDNN is on, and the ONEDNN_MAX_CPU_ISA
limit). `ONEDNN_MAX_CPU_ISA=AVX2` limits oneDNN (TF's and PyTorch's alike) to
AVX2 code: the AVX2-only CPU class on an AVX-512 machine. Only an idle machine
gives a fair comparison, hence `load_avg_1min` in every line: with one core
taken by another process, PyTorch's OpenMP threads stall at their barriers
(its thin step at batch 16 measured 3–4 s there, 0.19 s alone), while TF's
work-stealing thread pool degrades gracefully.
`TF_ENABLE_ONEDNN_OPTS=0` gives TF's Eigen kernels, its default on AVX2-only
CPUs before `import asc_tf` turned oneDNN on.

Output, one JSON line each:

  {"bench": "train_step", "shape", "batch", "precision", "tf_median_s",
   "torch_median_s", "speedup_tf_over_torch" (= torch median / TF median at
   the same precision, > 1 means TF is faster), with --mixed_precision also
   "torch_float32_median_s" and "speedup_tf_over_torch_float32", the
   individual runs, "tf_peak_rss_mb" (the TF process's peak resident memory so
   far, from ru_maxrss), "cpu", "onednn", "onednn_max_cpu_isa", ...}
  {"bench": "queue_lookup", "K", "D", "batch": 256, "median_s",
   "step_median_s_batch_256_extrapolated" (TF step time per clip pair at the
   largest measured batch × 256: a linear extrapolation, not a measurement),
   "fraction_of_step" (lookup / that estimate), "median_s_batch_<B>" and
   "fraction_of_step_batch_<B>" (the lookup at the largest measured batch
   against that batch's measured step)}

Never run in CI.

    python -m bench.train_step                                  # both shapes, 7 repeats
    ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.train_step          # the AVX2 class
    python -m bench.train_step --shapes thin --mixed_precision
    python -m bench.train_step --shapes paper --batches 2 --repeats 3 --no-torch
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import asc_tf  # noqa: E402  (before TensorFlow: oneDNN on)
from asc_tf import cpu  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from asc_tf.pretraining import (  # noqa: E402
    PretrainConfig, UnsupportedPrecision, build_model, check_bf16_convolutions, make_train_function,
)
from asc_tf.queue import select_scp_targets  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmarked setting: the encoder's width, the clip, the heads, the queue, the speeds, the batches."""

    width: float
    frames: int
    size: int
    dim: int
    hidden: int
    queue_size: int
    speeds: tuple
    batches: tuple


SHAPES = {
    "paper": Shape(width=1.0, frames=16, size=112, dim=256, hidden=4096, queue_size=65536, speeds=(4, 8),
                   batches=(2, 4)),
    "thin": Shape(width=0.25, frames=8, size=32, dim=64, hidden=256, queue_size=1024, speeds=(1, 2),
                  batches=(16, 32)),
}
WARMUP = 2
LOOKUP_BATCH = 256
LOOKUP_REPEATS = 10


def peak_rss_mb():
    """Peak resident memory of this process in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- TensorFlow side
def make_config(args, shape, batch):
    return PretrainConfig(
        backbone=args.backbone,
        width=shape.width,
        dim=shape.dim,
        predictor_hidden=shape.hidden,
        frames=shape.frames,
        crop_size=shape.size,
        speed_set=shape.speeds,
        queue_size=shape.queue_size,
        global_batch_size=batch,
        optimizer="lars",
        mixed_precision=args.mixed_precision,
    )


def make_dataset(batch, frames, size, speeds, samples_per_batch=2, seed=0):
    """An in-memory, repeating two-view dataset of random clips: `samples_per_batch` distinct batches."""
    rng = np.random.default_rng(seed)
    count = batch * samples_per_batch
    shape = (count, frames, size, size, 3)
    samples = {
        "view_i": rng.standard_normal(shape, dtype=np.float32),
        "view_j": rng.standard_normal(shape, dtype=np.float32),
        "video_id": np.arange(count, dtype=np.int64),
        "speed_i": rng.choice(speeds, count).astype(np.int32),
        "speed_j": rng.choice(speeds, count).astype(np.int32),
        "label": rng.integers(0, 10, count).astype(np.int64),
    }
    return tf.data.Dataset.from_tensor_slices(samples).batch(batch, drop_remainder=True).repeat()


class TFStep:
    """The compiled train function of one ASCNet (`pretraining.make_train_function`), for one batch size."""

    def __init__(self, args, shape, batch):
        config = make_config(args, shape, batch)
        self.strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        self.model = build_model(config, self.strategy)
        dataset = make_dataset(batch, shape.frames, shape.size, shape.speeds)
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

    def __init__(self, shape):
        self.version = None
        command = [sys.executable, "-m", "bench.torch_asc_step", "--frames", str(shape.frames), "--size",
                   str(shape.size), "--queue_size", str(shape.queue_size), "--width", str(shape.width), "--dim",
                   str(shape.dim), "--hidden", str(shape.hidden), "--speeds", *map(str, shape.speeds)]
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

    def __call__(self, precision="float32"):
        seconds, loss = (float(x) for x in self._ask(f"step {precision}"))
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
def time_lookup(queue_size, dim, batch, speeds, repeats=LOOKUP_REPEATS, seed=0):
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
        tf.constant(rng.choice(speeds, batch).astype(np.int32)),
        tf.constant(unit(candidates)),
        tf.constant(unit(candidates)),
        tf.constant(np.concatenate([rng.integers(batch, 10**9, queue_size), batch_ids, batch_ids])),
        tf.constant(rng.choice(speeds, candidates).astype(np.int32)),
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
def rounded(runs):
    return [round(t, 4) for t in runs]


def bench_shape(args, name, shape, worker):
    """Times every batch of one shape; prints a line per batch; returns {batch: TF median}."""
    compare = worker is not None
    torch_precision = "bfloat16" if args.mixed_precision else "float32"
    tf_medians = {}
    for batch in args.batches or shape.batches:
        tf_step = TFStep(args, shape, batch)
        if compare:
            worker.set_batch(batch)
        runs = {"tf": [], "torch": [], "torch_float32": []}

        def one_round(record):
            times = {"tf": tf_step()}
            if compare:
                times["torch"] = worker(torch_precision)
                if args.mixed_precision:
                    times["torch_float32"] = worker("float32")
            if record:
                for key, value in times.items():
                    runs[key].append(value)

        for _ in range(WARMUP):
            one_round(record=False)
        for _ in range(args.repeats):
            one_round(record=True)
        tf_median = statistics.median(runs["tf"])
        tf_medians[batch] = tf_median
        line = {
            "bench": "train_step",
            "shape": name,
            "backbone": args.backbone,
            "width": shape.width,
            "batch": batch,
            "clip": [shape.frames, shape.size, shape.size],
            "queue_size": shape.queue_size,
            "precision": "bfloat16" if args.mixed_precision else "float32",
            "tf_median_s": round(tf_median, 4),
            "tf_steps_per_s": round(1.0 / tf_median, 4),
        }
        if compare:
            torch_median = statistics.median(runs["torch"])
            line.update(torch_median_s=round(torch_median, 4), speedup_tf_over_torch=round(torch_median / tf_median, 3))
            if args.mixed_precision:
                torch_f32 = statistics.median(runs["torch_float32"])
                line.update(torch_float32_median_s=round(torch_f32, 4),
                            speedup_tf_over_torch_float32=round(torch_f32 / tf_median, 3))
        line["tf_runs"] = rounded(runs["tf"])
        if compare:
            line.update(torch_runs=rounded(runs["torch"]), torch_version=worker.version)
            if args.mixed_precision:
                line["torch_float32_runs"] = rounded(runs["torch_float32"])
        line.update(tf_peak_rss_mb=round(peak_rss_mb(), 1), warmup_steps=WARMUP, threads=os.cpu_count(),
                    load_avg_1min=round(os.getloadavg()[0], 2), **cpu.describe())
        print(json.dumps(line), flush=True)
        del tf_step
    return tf_medians


def bench_lookup(shape, tf_medians):
    largest = max(tf_medians)
    lookup_256 = time_lookup(shape.queue_size, shape.dim, LOOKUP_BATCH, shape.speeds)
    lookup_largest = time_lookup(shape.queue_size, shape.dim, largest, shape.speeds)
    step_estimate = tf_medians[largest] / largest * LOOKUP_BATCH
    print(
        json.dumps(
            {
                "bench": "queue_lookup",
                "K": shape.queue_size,
                "D": shape.dim,
                "batch": LOOKUP_BATCH,
                "median_s": round(lookup_256, 5),
                "step_median_s_batch_256_extrapolated": round(step_estimate, 3),
                "fraction_of_step": round(lookup_256 / step_estimate, 5),
                f"median_s_batch_{largest}": round(lookup_largest, 5),
                f"fraction_of_step_batch_{largest}": round(lookup_largest / tf_medians[largest], 5),
                "note": f"the batch-256 step time is the TF step per clip pair at batch {largest} x 256, "
                "a linear extrapolation, not a measurement",
                "repeats": LOOKUP_REPEATS,
                **cpu.describe(),
            }
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", type=int, nargs="+", help="instead of each shape's own batches")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backbone", default="r3d_18", help="TF backbone; the PyTorch reference is always r3d_18")
    parser.add_argument("--mixed_precision", action="store_true",
                        help="TF mixed_bfloat16 against PyTorch bfloat16 autocast and PyTorch float32")
    parser.add_argument("--no-torch", action="store_true", help="time the TF step only")
    parser.add_argument("--no-lookup", action="store_true", help="skip the queue_lookup line")
    args = parser.parse_args()

    torch_status = "not run (--no-torch)"
    if not args.no_torch:
        if args.backbone != "r3d_18":
            torch_status = f"no PyTorch reference for {args.backbone}"
        elif not torch_installed():
            torch_status = "not installed"
        else:
            torch_status = None
    if args.mixed_precision:
        if warning := cpu.bf16_warning():
            print(warning, file=sys.stderr)
        try:
            check_bf16_convolutions()
        except UnsupportedPrecision as error:
            print(json.dumps({"bench": "train_step", "precision": "bfloat16", "tf": f"unsupported: {error}",
                              **cpu.describe()}), flush=True)
            return

    for name in args.shapes:
        shape = SHAPES[name]
        worker = None
        if torch_status is None:
            worker = TorchWorker(shape)
            if not worker.available:
                sys.exit(f"bench.train_step: the PyTorch worker failed to start for shape {name}")
        try:
            tf_medians = bench_shape(args, name, shape, worker)
        finally:
            if worker is not None:
                worker.close()
        if torch_status is not None:
            print(json.dumps({"bench": "train_step", "shape": name, "torch": torch_status}), flush=True)
        if name == "paper" and not args.no_lookup:
            bench_lookup(shape, tf_medians)


if __name__ == "__main__":
    main()
