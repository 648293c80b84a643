"""bfloat16 against float32 on the demo's pretraining: loss curves over seeds, and wall time.

    python -m bench.precision_curves --output_dir=/tmp/precision             # 500 steps, seeds 0-2, both
    python -m bench.precision_curves --output_dir=/tmp/precision --steps=100 --seeds=0

The demo's `asc` recipe (`asc_tf.demo.pretrain_config`: thin R3D-18 at width
0.25, 8×32×32 clips at speeds {1, 2}, Adam at 1e-3, MLP heads, the loss both
ways, batch 16, queue 1,024, warm-up a tenth of the steps) on the demo's
synthetic train split (built into <output_dir>/data/train as tools.demo
builds it, unless there), once in float32 and once with --mixed_precision,
for each seed. Each run has its own model_dir (<output_dir>/<precision>/
seed<k>) and logs every step, so a finished run is read back instead of
trained again and an interrupted one resumes from its newest checkpoint
(`--checkpoint_every`); re-run the same command after an interruption.

Only the logging, checkpoint cadence and export differ from the demo's run,
none of which changes the training.

One JSON line per run: the loss at steps 1, 50, 100, 200, 300, 400 and the
last (each the mean of the `--window` steps ending there), its wall time
(TensorBoard event times, summed over the processes that ran it: the input
pipeline's start and the trace included, the model's build not) and steps
per second over it. Then one summary line: per precision the mean curve
over seeds at those steps; float32's seed spread (max − min) there; whether
bfloat16's mean is inside [min, max] of the float32 seeds at each of those
steps; and, as in tests/test_mixed_precision.py but on the seed means, the
mean |bf16 mean − float32 mean| of the curves smoothed over `--window`
steps against the mean float32 spread, with each seed's paired bf16 −
float32 gap beside it. Never run in CI.
"""

import argparse
import dataclasses
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import asc_tf  # noqa: E402,F401  (before TensorFlow: oneDNN on)
import keras  # noqa: E402

from asc_tf import cpu, demo, pretraining  # noqa: E402

PRECISIONS = {"float32": False, "bfloat16": True}
REPORT_STEPS = (1, 50, 100, 200, 300, 400, 500)


def train_records(output_dir, config):
    """The demo's synthetic train split under output_dir/data/train (built by tools.build_tfrecords unless there)."""
    output = os.path.join(output_dir, "data", "train")
    pattern = os.path.join(output, "train-*.tfrecord")
    if os.path.isfile(os.path.join(output, "manifest.json")) and glob.glob(pattern):
        return pattern
    command = [
        sys.executable, "-m", "tools.build_tfrecords", "--layout=synthetic", "--split=train",
        f"--num_videos={config.train_videos}", f"--seed={config.data_seed}", f"--synthetic_motion={config.motion}",
        f"--synthetic_frames={config.video_frames}", f"--synthetic_size={config.video_size}",
        f"--output_dir={output}", "--short_side=0",
    ]
    subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return pattern


def run_config(args, demo_config, precision, seed, train_data):
    """The demo's `asc` PretrainConfig, logging every step, in its own folder; only the precision differs."""
    return dataclasses.replace(
        demo.pretrain_config(demo_config, "asc", seed, train_data),
        model_dir=os.path.join(args.output_dir, precision, f"seed{seed}"),
        mixed_precision=PRECISIONS[precision],
        log_every=1,  # the logged loss is the mean since the last log: every step's own
        checkpoint_every=args.checkpoint_every,
        export=False,
    )


def wall_seconds(model_dir):
    """Seconds the run's processes spent from opening their TensorBoard writers to their last scalar, summed."""
    import tensorflow as tf

    total = 0.0
    for path in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        times = []
        try:
            for record in tf.data.TFRecordDataset(path):
                times.append(tf.compat.v1.Event.FromString(record.numpy()).wall_time)
        except tf.errors.DataLossError:
            pass  # a killed process's last record
        if times:
            total += max(times) - min(times)
    return total


def window_mean(losses, step, window):
    """Mean loss of the `window` steps ending at `step` (fewer at the start)."""
    return float(np.mean(losses[max(0, step - window) : step]))


def smoothed(curve, window):
    return np.convolve(curve, np.ones(window) / window, mode="valid")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/precision_curves")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--precisions", default="float32,bfloat16", help=f"any of {', '.join(PRECISIONS)}")
    parser.add_argument("--window", type=int, default=10, help="steps averaged per reported loss and in the criterion")
    parser.add_argument("--checkpoint_every", type=int, default=50)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    precisions = args.precisions.split(",")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or args.steps < 1 or args.window < 1 or not seeds:
        parser.error(f"bad --precisions {unknown}, --steps, --window or --seeds")

    args.output_dir = os.path.abspath(args.output_dir)
    demo_config = demo.DemoConfig(output_dir=args.output_dir, steps=args.steps)
    train_data = train_records(args.output_dir, demo_config)
    report_steps = sorted({s for s in REPORT_STEPS if s < args.steps} | {args.steps})
    curves = {precision: {} for precision in precisions}
    walls = {precision: [] for precision in precisions}
    for precision in precisions:
        for seed in seeds:
            config = run_config(args, demo_config, precision, seed, train_data)
            keras.backend.clear_session()  # as the demo between its runs; each run seeds itself
            started = time.monotonic()
            # Progress (and, for bfloat16 on a CPU without its units, bf16_warning) to stderr; stdout is JSON.
            summary = pretraining.run(config, stream=sys.stderr)
            this_process = time.monotonic() - started
            by_step = pretraining.read_scalars(config.model_dir, "loss")
            missing = [step for step in range(1, args.steps + 1) if step not in by_step]
            if missing:
                raise SystemExit(f"{config.model_dir}: no loss logged for {len(missing)} steps (first {missing[0]}); "
                                 "remove the folder and run again")
            losses = np.array([by_step[step] for step in range(1, args.steps + 1)])
            curves[precision][seed] = losses
            wall = wall_seconds(config.model_dir)
            walls[precision].append(round(wall, 1))
            print(json.dumps({
                "bench": "precision_curves",
                "precision": precision,
                "seed": seed,
                "steps": args.steps,
                "window": args.window,
                "loss_at": {str(step): round(window_mean(losses, step, args.window), 4) for step in report_steps},
                "wall_s": round(wall, 1),
                "steps_per_second": round(args.steps / wall, 2) if wall else None,
                "this_process_s": round(this_process, 1),
                "resumed_from": summary["resumed_from"],
                "model_dir": config.model_dir,
                **cpu.describe(),
            }), flush=True)

    line = {"bench": "precision_curves", "summary": True, "steps": args.steps, "seeds": seeds,
            "window": args.window, "mean_loss_at": {}}
    for precision in precisions:
        stacked = np.stack([curves[precision][seed] for seed in seeds])
        line["mean_loss_at"][precision] = {
            str(step): round(float(np.mean([window_mean(c, step, args.window) for c in stacked])), 4)
            for step in report_steps
        }
        line[f"{precision}_wall_s"] = walls[precision]
    if {"float32", "bfloat16"} <= set(precisions):
        f32 = np.stack([[window_mean(curves["float32"][s], step, args.window) for step in report_steps]
                        for s in seeds])
        bf16 = np.array([line["mean_loss_at"]["bfloat16"][str(step)] for step in report_steps])
        line["float32_spread_at"] = {str(step): round(float(f32[:, i].max() - f32[:, i].min()), 4)
                                     for i, step in enumerate(report_steps)}
        line["bfloat16_mean_inside_float32_range_at"] = {
            str(step): bool(f32[:, i].min() <= bf16[i] <= f32[:, i].max()) for i, step in enumerate(report_steps)
        }
        window = min(args.window, args.steps)
        f32_curves = np.stack([smoothed(curves["float32"][s], window) for s in seeds])
        bf16_mean = np.mean([smoothed(curves["bfloat16"][s], window) for s in seeds], axis=0)
        gap = float(np.mean(np.abs(bf16_mean - f32_curves.mean(axis=0))))
        spread = float(np.mean(f32_curves.max(axis=0) - f32_curves.min(axis=0)))
        paired = [
            float(np.mean(np.abs(smoothed(curves["bfloat16"][s], window) - smoothed(curves["float32"][s], window))))
            for s in seeds
        ]
        line.update(criterion_gap=round(gap, 4), criterion_float32_spread=round(spread, 4),
                    bfloat16_inside=gap < spread, paired_gap_per_seed=[round(g, 4) for g in paired])
    line.update(cpu.describe())
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
