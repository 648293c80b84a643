"""Backbone speed: forward and forward+backward+SGD step, plain graph vs XLA.

For each backbone at width 1.0, batch 2, 16×112×112 float32: median of
`--repeats` timed calls after one warm-up (which also compiles). One JSON line
per configuration, with the CPU's instruction sets and oneDNN's state (`asc_tf.cpu.describe()`;
`ONEDNN_MAX_CPU_ISA=AVX2` gives the AVX2 class on an AVX-512 machine). Never run in CI.

    python -m bench.backbones                      # all five, both modes, both compilers
    python -m bench.backbones --backbones r3d_18 --modes forward --no-xla
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import asc_tf  # noqa: E402,F401  (before TensorFlow: oneDNN on)
from asc_tf import cpu  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from asc_tf.models import BACKBONES, build_backbone  # noqa: E402


def make_step(model, mode, jit_compile):
    if mode == "forward":

        def forward(clips):
            return model(clips, training=False)

        return tf.function(forward, jit_compile=jit_compile)

    optimizer = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    optimizer.build(model.trainable_variables)

    def train_step(clips):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(clips, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return tf.function(train_step, jit_compile=jit_compile)


def time_calls(step, clips, repeats):
    start = time.perf_counter()
    _ = [t.numpy() for t in tf.nest.flatten(step(clips))]  # warm-up, includes tracing and compiling
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _ = [t.numpy() for t in tf.nest.flatten(step(clips))]
        times.append(time.perf_counter() - start)
    return warmup, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=sorted(BACKBONES), choices=sorted(BACKBONES))
    parser.add_argument("--modes", nargs="+", default=["forward", "train_step"], choices=["forward", "train_step"])
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()

    clips = tf.random.stateless_uniform((args.batch, args.frames, args.size, args.size, 3), seed=(0, 1))
    compilers = [False] if args.no_xla else [False, True]
    for name in args.backbones:
        for mode in args.modes:
            for jit in compilers:
                model = build_backbone(name)
                model(clips[:1])
                warmup, times = time_calls(make_step(model, mode, jit), clips, args.repeats)
                median = statistics.median(times)
                print(
                    json.dumps(
                        {
                            "bench": "backbones",
                            "backbone": name,
                            "mode": mode,
                            "jit_compile": jit,
                            "batch": args.batch,
                            "clip": [args.frames, args.size, args.size],
                            "median_s": round(median, 4),
                            "min_s": round(min(times), 4),
                            "max_s": round(max(times), 4),
                            "warmup_s": round(warmup, 2),
                            "clips_per_s": round(args.batch / median, 3),
                            "repeats": args.repeats,
                            "threads": os.cpu_count(),
                            **cpu.describe(),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
