"""The whole system on the embedded synthetic set, in minutes: build, pretrain, evaluate, export, report.

    python -m tools.demo                       # one seed, about 8 minutes on 2 CPU cores
    python -m tools.demo --seeds=3 --output_dir=runs/demo3

Builds the synthetic set once (through tools.build_tfrecords --layout=synthetic,
cached in --data_dir), then for each seed trains and measures the variants
random, acp_only, asc and supervised with the same budget (asc_tf/demo.py says
what each measure is), and writes into --output_dir:

  results.json        every measure of every variant and seed, mean and std
  retrieval.png       test queries and their nearest training videos (asc, first seed)
  seed<N>/<variant>/  TensorBoard logs (train/), checkpoints, measures.json
  seed<first>/asc/encoder/   the exported encoder SavedModel

and prints the table. Re-running the same command reuses what is done.
"""

import json
import os
import shutil
import subprocess
import sys

from absl import flags as absl_flags

import flags
from asc_tf.choices import BACKBONE_NAMES, OPTIMIZERS
from asc_tf.demo import DEFAULT_VARIANTS, VARIANTS, DemoConfig  # no TensorFlow at import

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every default is DemoConfig's: one place says what the demo runs.
DEFAULTS = DemoConfig()

absl_flags.DEFINE_string("output_dir", DEFAULTS.output_dir, "Everything the demo writes goes here.")
absl_flags.DEFINE_string("data_dir", "", "Cache of the synthetic TFRecords; default <output_dir>/data.")
absl_flags.DEFINE_integer("seeds", 1, "Number of seeds (0, 1, ...); each runs every variant.")
absl_flags.DEFINE_list("variants", list(DEFAULT_VARIANTS), "Variants to run: random, acp_only, asc, supervised, "
                       "and asc_random (ASCNet with a random SCP partner; not run by default).")
absl_flags.DEFINE_integer("steps", DEFAULTS.steps, "Training steps of every trained variant (the budget).")
absl_flags.DEFINE_integer("batch_size", DEFAULTS.batch_size, "Videos per step.")
absl_flags.DEFINE_enum("backbone", DEFAULTS.backbone, sorted(BACKBONE_NAMES), "Encoder backbone.")
absl_flags.DEFINE_float("width", DEFAULTS.width, "Channel width multiplier of the backbone.")
absl_flags.DEFINE_integer("frames", DEFAULTS.frames, "Frames per clip.")
absl_flags.DEFINE_integer("crop_size", DEFAULTS.crop_size, "Clip height and width.")
absl_flags.DEFINE_list("speeds", [str(s) for s in DEFAULTS.speeds], "The two playback speeds (frame strides).")
absl_flags.DEFINE_float("base_lr", DEFAULTS.base_lr, "Pretraining learning rate at batch 128, scaled linearly "
                        "(0.008: Adam at 1e-3 for batch 16).")
absl_flags.DEFINE_float("supervised_lr", DEFAULTS.supervised_lr,
                        "Supervised learning rate at batch 128 (SGD), scaled linearly.")
absl_flags.DEFINE_enum("optimizer", DEFAULTS.optimizer, OPTIMIZERS,
                       "Pretraining optimiser (the paper's LARS barely moves the weights at batch 16; README).")
absl_flags.DEFINE_enum("projection", DEFAULTS.projection, ["linear", "mlp"],
                       "Projection heads of the self-supervised variants: one Dense layer, or BYOL's MLP.")
absl_flags.DEFINE_float("tau", DEFAULTS.tau, "EMA decay of the target network (self-supervised variants).")
absl_flags.DEFINE_bool("symmetric", DEFAULTS.symmetric,
                       "Self-supervised variants: each clip of a pair is also the online one.")
absl_flags.DEFINE_string("motion", DEFAULTS.motion, "Synthetic motion family: pattern or direction_speed.")
absl_flags.DEFINE_integer("train_videos", DEFAULTS.train_videos,
                          "Synthetic training videos (the gallery, and the pretraining data).")
absl_flags.DEFINE_integer("test_videos", DEFAULTS.test_videos, "Synthetic test videos (the queries).")
absl_flags.DEFINE_enum("eval_split", DEFAULTS.eval_split, ["test", "val"],
                       "The split of the queries: test, or val (the same size, its own videos) to choose "
                       "settings without looking at the test split.")
absl_flags.DEFINE_integer("video_frames", DEFAULTS.video_frames, "Frames per synthetic video.")
absl_flags.DEFINE_integer("video_size", DEFAULTS.video_size, "Synthetic frame height and width.")
absl_flags.DEFINE_integer("data_seed", DEFAULTS.data_seed,
                          "Seed of the synthetic set (the same for every training seed).")
absl_flags.DEFINE_integer("eval_clips", DEFAULTS.eval_clips,
                          "Clips per video for retrieval and the linear probe (the paper's 10, scaled down).")
absl_flags.DEFINE_integer("probe_clips", DEFAULTS.probe_clips, "Clips per video and speed for the speed probe.")
absl_flags.DEFINE_integer("same_video_draws", DEFAULTS.same_video_draws,
                          "Augmentation draws averaged by the same-video measure.")
FLAGS = flags.FLAGS


def _validate():
    from asc_tf.data import synthetic

    flags.require_positive("seeds", "steps", "batch_size", "frames", "crop_size", "train_videos", "test_videos",
                           "video_frames", "video_size", "eval_clips", "probe_clips", "same_video_draws")
    unknown = [v for v in FLAGS.variants if v not in VARIANTS]
    if unknown or not FLAGS.variants:
        flags.fail("variants", f"must name some of {', '.join(VARIANTS)}, got {','.join(FLAGS.variants) or 'none'}")
    try:
        speeds = [int(s) for s in FLAGS.speeds]
    except ValueError:
        flags.fail("speeds", f"must be integers, got {','.join(FLAGS.speeds)}")
    if len(speeds) != 2 or min(speeds) < 1 or speeds[0] == speeds[1]:
        flags.fail("speeds", f"must be two different positive strides, got {','.join(FLAGS.speeds)}")
    if FLAGS.motion not in synthetic.MOTIONS:
        flags.fail("motion", f"must be one of {', '.join(synthetic.MOTIONS)}, got {FLAGS.motion!r}")
    if FLAGS.width <= 0:
        flags.fail("width", f"must be positive, got {FLAGS.width}")
    if not 0.0 <= FLAGS.tau <= 1.0:  # as tools.pretrain: 1 freezes the target network
        flags.fail("tau", f"must be in [0, 1], got {FLAGS.tau}")
    for name in ("base_lr", "supervised_lr"):
        if getattr(FLAGS, name) <= 0:
            flags.fail(name, f"must be positive, got {getattr(FLAGS, name)}")
    if FLAGS.crop_size > FLAGS.video_size:
        flags.fail("crop_size", f"{FLAGS.crop_size} exceeds --video_size={FLAGS.video_size}")
    longest = (FLAGS.frames - 1) * max(speeds) + 1
    if longest > FLAGS.video_frames:
        flags.fail("video_frames", f"{FLAGS.video_frames} frames cannot hold a clip of {FLAGS.frames} frames at "
                                   f"stride {max(speeds)} ({longest} frames)")
    for name in ("train_videos", "test_videos"):
        if getattr(FLAGS, name) < len(synthetic.class_names(FLAGS.motion)):
            flags.fail(name, f"needs at least one video per class ({len(synthetic.class_names(FLAGS.motion))})")
    if FLAGS.train_videos < FLAGS.batch_size:
        flags.fail("batch_size", f"{FLAGS.batch_size} exceeds --train_videos={FLAGS.train_videos}")
    for name in ("output_dir", "data_dir"):
        path = getattr(FLAGS, name)
        if path and os.path.exists(path) and not os.path.isdir(path):
            flags.fail(name, f"{path} exists and is not a folder")
    return speeds


def _build_split(data_dir, split, count, stream):
    """Builds one split with tools.build_tfrecords unless the cache holds it with these settings."""
    output = os.path.join(data_dir, split)
    settings = {"motion": FLAGS.motion, "num_videos": count, "seed": FLAGS.data_seed,
                "frames": FLAGS.video_frames, "size": FLAGS.video_size}
    stamp = os.path.join(output, "demo_data.json")
    if os.path.isfile(stamp):
        with open(stamp) as fh:
            if json.load(fh) == settings:
                print(f"synthetic {split} set: cached in {output}", file=stream)
                return os.path.join(output, f"{split}-*.tfrecord")
    if os.path.isdir(output):
        if not (os.path.isfile(stamp) or os.path.isfile(os.path.join(output, "manifest.json"))):
            raise FileExistsError(f"{output} holds files the demo did not write; choose another --data_dir")
        shutil.rmtree(output)
    command = [
        sys.executable, "-m", "tools.build_tfrecords", "--layout=synthetic", f"--split={split}",
        f"--num_videos={count}", f"--seed={FLAGS.data_seed}", f"--synthetic_motion={FLAGS.motion}",
        f"--synthetic_frames={FLAGS.video_frames}", f"--synthetic_size={FLAGS.video_size}",
        f"--output_dir={output}", "--short_side=0",
    ]
    print("building the synthetic " + split + " set: " + " ".join(command[1:]), file=stream)
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    with open(stamp, "w") as fh:
        json.dump(settings, fh)
    return os.path.join(output, f"{split}-*.tfrecord")


def main(argv):
    del argv
    speeds = _validate()
    from asc_tf import demo
    from asc_tf.data import synthetic

    stream = sys.stderr
    output_dir = os.path.abspath(FLAGS.output_dir)
    data_dir = os.path.abspath(FLAGS.data_dir or os.path.join(output_dir, "data"))
    config = demo.DemoConfig(
        output_dir=output_dir, motion=FLAGS.motion, train_videos=FLAGS.train_videos, test_videos=FLAGS.test_videos,
        eval_split=FLAGS.eval_split, video_frames=FLAGS.video_frames, video_size=FLAGS.video_size,
        data_seed=FLAGS.data_seed, backbone=FLAGS.backbone, width=FLAGS.width, frames=FLAGS.frames,
        crop_size=FLAGS.crop_size, speeds=tuple(speeds), steps=FLAGS.steps, batch_size=FLAGS.batch_size,
        optimizer=FLAGS.optimizer, base_lr=FLAGS.base_lr, projection=FLAGS.projection, symmetric=FLAGS.symmetric,
        tau=FLAGS.tau, supervised_lr=FLAGS.supervised_lr, seeds=tuple(range(FLAGS.seeds)),
        variants=tuple(FLAGS.variants), eval_clips=FLAGS.eval_clips, probe_clips=FLAGS.probe_clips,
        same_video_draws=FLAGS.same_video_draws,
    )
    print(f"demo: writing to {output_dir}", file=stream)
    train_data = _build_split(data_dir, "train", FLAGS.train_videos, stream)
    test_data = _build_split(data_dir, FLAGS.eval_split, FLAGS.test_videos, stream)
    results = demo.run(config, train_data, test_data, len(synthetic.class_names(FLAGS.motion)), stream=stream)
    print(demo.table(results))
    files = results["files"]
    print(f"\nresults: {os.path.join(output_dir, 'results.json')}\npicture: {files['retrieval_png']}\n"
          f"encoder SavedModel: {files['encoder_saved_model'] or '(no asc variant run)'}\n"
          f"TensorBoard: tensorboard --logdir {files['tensorboard']}")
    return 0


if __name__ == "__main__":
    flags.run(main)
