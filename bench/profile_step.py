"""Where the ASC train step spends its time, and how close it runs to this CPU's matmul rate.

    python -m bench.profile_step                      # R3D-18, 16×112×112, batch 4
    python -m bench.profile_step --batch 2 --steps 3
    ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.profile_step --batch 2   # the AVX2 class
    python -m bench.profile_step --shape thin --batch 16 --steps 5   # the demo's thin encoder

Builds the step exactly as `bench.train_step` does (one of its shapes, the
model `pretraining.build_model` builds, driven by
`pretraining.make_train_function`), warms it up, then:

  profile   runs `--steps` steps under the TensorFlow profiler
            (`tf.profiler.experimental`, viewable in TensorBoard's Profile
            tab from --logdir) and sums the host-CPU op events of the trace
            by op type (oneDNN's "_MklNative" prefix dropped) and by part of
            the model (online encoder forward,
            its gradient, target encoder, optimiser, EMA, queue, other),
            per step. Events of one op on several threads add up, so the
            sums are CPU time spread over threads, reported with their share
            of the total op time.
  flops     the forward FLOPs of one clip through the encoder, counted by
            TensorFlow's profiler on the traced forward graph (convolutions:
            2 × multiply-adds), and the step's FLOPs as 5 × forward × batch:
            online forward (1) and backward (2, the usual estimate) on the
            batch's clips i, target forward (1) on clips i and j. Heads,
            predictors and the queue are left out (< 1 %).
  matmul    float32 matmul rate, same process and threads: median of 10
            4096 × 4096 × 4096 products.

Output, one JSON line each: {"bench": "profile_step", ...}, {"bench":
"step_flops", "achieved_gflops", "matmul_gflops", "fraction_of_matmul", ...}.
Never run in CI.
"""

import argparse
import glob
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import asc_tf  # noqa: E402,F401  (before TensorFlow: oneDNN on)

import tensorflow as tf  # noqa: E402

from asc_tf import cpu  # noqa: E402
from bench.train_step import SHAPES, TFStep  # noqa: E402

PARTS = (  # first match wins, on the op's full name
    ("optimizer", ("lars", "sgd", "adam", "optimizer", "apply_gradient", "iteration")),
    ("online encoder backward", ("gradient_tape/", "gradients/")),
    ("target encoder", ("target_encoder",)),
    ("online encoder forward", ("online_encoder",)),
    ("queue and SCP", ("queue", "select_scp", "top_k", "topk")),
    ("heads and losses", ("appearance", "speed", "predictor", "loss")),
)


def part_of(name):
    lowered = name.lower()
    for part, keys in PARTS:
        if any(key in lowered for key in keys):
            return part
    return "other"


def host_op_events(logdir):
    """[(op name, op type, duration in seconds)] of the TensorFlow op events in the newest trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    if not paths:
        raise RuntimeError(f"no profiler trace under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    events = []
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        metadata = plane.event_metadata
        for line in plane.lines:
            for event in line.events:
                name = metadata[event.metadata_id].name
                # TensorFlow op events are named "<op name>:<op type>"; runtime events
                # ("ExecutorState::Process", "EagerExecute", ...) wrap them and are left out.
                if ":" not in name or "::" in name or " " in name or name.startswith(("tf_data", "Iterator")):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                if not op_type:
                    continue
                events.append((op_name, op_type.removeprefix("_MklNative").removeprefix("_Mkl"),
                               event.duration_ps * 1e-12))
    return events


def forward_flops(encoder, clip_shape):
    """FLOPs of one clip's forward pass, from TensorFlow's registered op statistics."""
    function = tf.function(lambda clips: encoder(clips, training=False))
    graph = function.get_concrete_function(tf.TensorSpec([1, *clip_shape], tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def matmul_gflops(size=4096, repeats=10):
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    product = tf.function(lambda x, y: tf.matmul(x, y))
    product(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps under the profiler")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps without the profiler")
    parser.add_argument("--shape", default="paper", choices=list(SHAPES))
    parser.add_argument("--backbone", default="r3d_18")
    parser.add_argument("--mixed_precision", action="store_true", help="Keras mixed_bfloat16")
    parser.add_argument("--logdir", default=None, help="where the trace goes (default: a temporary folder)")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    shape = SHAPES[args.shape]
    step = TFStep(args, shape, args.batch)
    for _ in range(2):
        step()
    timed = [step() for _ in range(args.repeats)]
    step_s = statistics.median(timed)

    logdir = args.logdir or tempfile.mkdtemp(prefix="asc_tf_profile_")
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
        step()
    tf.profiler.experimental.stop()
    events = host_op_events(logdir)
    total = sum(seconds for _, _, seconds in events)
    by_type, by_part = {}, {}
    for op_name, op_type, seconds in events:
        by_type[op_type] = by_type.get(op_type, 0.0) + seconds
        part = part_of(op_name)
        by_part[part] = by_part.get(part, 0.0) + seconds
    top = sorted(by_type.items(), key=lambda item: -item[1])[: args.top]
    print(json.dumps({
        "bench": "profile_step",
        "backbone": args.backbone,
        "shape": args.shape,
        "batch": args.batch,
        "clip": [shape.frames, shape.size, shape.size],
        "precision": "bfloat16" if args.mixed_precision else "float32",
        "step_median_s": round(step_s, 4),
        "op_cpu_s_per_step": round(total / args.steps, 4),
        "top_op_types": [
            {"op": op, "cpu_s_per_step": round(s / args.steps, 4), "share": round(s / total, 4)} for op, s in top
        ],
        "parts": {
            part: {"cpu_s_per_step": round(s / args.steps, 4), "share": round(s / total, 4)}
            for part, s in sorted(by_part.items(), key=lambda item: -item[1])
        },
        "trace": logdir,
        "note": "CPU time of op events summed over threads, per step",
        **cpu.describe(),
    }), flush=True)

    clip_shape = (shape.frames, shape.size, shape.size, 3)
    forward = forward_flops(step.model.online_encoder, clip_shape)
    step_flops = 5 * forward * args.batch
    achieved = step_flops / step_s / 1e9
    matmul = matmul_gflops()
    print(json.dumps({
        "bench": "step_flops",
        "backbone": args.backbone,
        "batch": args.batch,
        "forward_gflops_per_clip": round(forward / 1e9, 2),
        "step_gflops": round(step_flops / 1e9, 1),
        "step_median_s": round(step_s, 4),
        "achieved_gflops": round(achieved, 1),
        "matmul_gflops": round(matmul, 1),
        "fraction_of_matmul": round(achieved / matmul, 3),
        "threads": os.cpu_count(),
        "note": "step FLOPs = 5 x forward x batch (online fwd + 2x bwd, target fwd on 2 clips)",
        **cpu.describe(),
    }), flush=True)


if __name__ == "__main__":
    main()
