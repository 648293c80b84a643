"""The whole system on the embedded synthetic set, in minutes: build, pretrain, evaluate, export, report.

    python -m tools.demo                       # one seed, 22 minutes on 2 CPU cores (AVX-512; README)
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

    python -m tools.demo --videos=../shared/ucf6 --output_dir=runs/ucf6

runs the same variants on a labelled video folder instead: UCF-101's layout
(ROOT/UCF-101/<Class>/*.avi, ROOT/ucfTrainTestlist/classInd.txt and
--split_file), Kinetics' (class folders and --videos_csv) or plain class
folders. It ingests the folder once with tools.build_tfrecords (cached in
--data_dir), splits it into training and validation videos by whole groups
(asc_tf/data/splits.py), pretrains on the training videos without their
labels, and measures every encoder on the validation videos with the ordinary
tools as well: tools.retrieve --flagfile=--retrieve_flagfile and, from each
initialisation, tools.finetune --flagfile=--finetune_flagfile.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from absl import flags as absl_flags

import flags
from asc_tf.choices import BACKBONE_NAMES, CLASSIFIER_OPTIMIZERS, OPTIMIZERS
from asc_tf.data import splits  # no TensorFlow at import
from asc_tf.demo import DEFAULT_VARIANTS, VARIANTS, VIDEO_DEFAULTS, DemoConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every default is DemoConfig's: one place says what the demo runs.
DEFAULTS = DemoConfig()

absl_flags.DEFINE_string("output_dir", DEFAULTS.output_dir, "Everything the demo writes goes here.")
absl_flags.DEFINE_string("data_dir", "", "Cache of the synthetic TFRecords; default <output_dir>/data.")
absl_flags.DEFINE_integer("seeds", 1, "Number of seeds (0, 1, ...); each runs every variant.")
absl_flags.DEFINE_list("variants", list(DEFAULT_VARIANTS), "Variants to run: random, acp_only, asc, supervised, "
                       "and, not run by default, asc_random (ASCNet with a random SCP partner) and "
                       "infonce (a contrastive reference: acp_only with InfoNCE for ACP's regression).")
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
                        "Supervised learning rate at batch 128, scaled linearly (0.008: Adam at 1e-3 for batch 16).")
absl_flags.DEFINE_enum("supervised_optimizer", DEFAULTS.supervised_optimizer, list(CLASSIFIER_OPTIMIZERS),
                       "Supervised optimiser (SGD with momentum 0.9, or Adam).")
absl_flags.DEFINE_list("supervised_crop_scale", [str(s) for s in DEFAULTS.supervised_crop_scale],
                       "Supervised training crops: min,max fraction of the frame's area.")
absl_flags.DEFINE_enum("optimizer", DEFAULTS.optimizer, OPTIMIZERS,
                       "Pretraining optimiser (the paper's LARS barely moves the weights at batch 16; README).")
absl_flags.DEFINE_enum("projection", DEFAULTS.projection, ["linear", "mlp"],
                       "Projection heads of the self-supervised variants: one Dense layer, or BYOL's MLP.")
absl_flags.DEFINE_float("weight_decay", DEFAULTS.weight_decay, "Self-supervised variants: weight decay, never on "
                        "biases and BatchNorm (decoupled for adam and sgd: AdamW; coupled for lars).")
absl_flags.DEFINE_float("tau", DEFAULTS.tau, "EMA decay of the target network (self-supervised variants).")
absl_flags.DEFINE_bool("color_jitter", DEFAULTS.color_jitter, "Self-supervised views: colour jitter (p 0.8).")
absl_flags.DEFINE_bool("blur", DEFAULTS.blur, "Self-supervised views: Gaussian blur.")
absl_flags.DEFINE_bool("grayscale", DEFAULTS.grayscale, "Self-supervised views: grayscale (p 0.2).")
absl_flags.DEFINE_bool("solarize", DEFAULTS.solarize, "Self-supervised views: solarisation (view j, p 0.2).")
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
absl_flags.DEFINE_float("background_mean", DEFAULTS.background_mean,
                        "Every synthetic video's mean background colour, a grey level in [0, 255] (a colour drawn "
                        "per video hides the motion from a small network; docs/experiments.md).")
absl_flags.DEFINE_integer("eval_clips", DEFAULTS.eval_clips,
                          "Clips per video for retrieval and the linear probe (the paper's 10, scaled down).")
absl_flags.DEFINE_integer("probe_clips", DEFAULTS.probe_clips, "Clips per video and speed for the speed probe.")
absl_flags.DEFINE_integer("same_video_draws", DEFAULTS.same_video_draws,
                          "Augmentation draws averaged by the same-video measure.")
# --videos: a labelled video folder instead of the synthetic set.
absl_flags.DEFINE_string("videos", "", "A labelled video folder to run the demo on instead of the synthetic set: "
                         "UCF-101's layout (ROOT/UCF-101/<Class>/*.avi beside ROOT/ucfTrainTestlist/), or class "
                         "folders (ROOT/<class>/<video>; with --videos_csv, Kinetics' layout). Changes the defaults "
                         "of " + ", ".join(f"--{name}=" + (",".join(map(str, value)) if isinstance(value, tuple) else str(value))
                                           for name, value in VIDEO_DEFAULTS.items()) + ".")
absl_flags.DEFINE_string("videos_csv", "", "--videos in Kinetics' layout: its official CSV (the videos and labels).")
absl_flags.DEFINE_string("split_file", "trainlist01.txt", "--videos in UCF-101's layout: the split file in "
                         "ucfTrainTestlist/ whose videos are split into training and validation groups.")
absl_flags.DEFINE_string("val_groups", "8-11", "--videos in UCF-101's layout: the groups (gNN) that validate, e.g. "
                         "8-11 or 8,9,10; the split file's other groups train. Folders without groups validate on "
                         "the last fifth of each class's sorted videos.")
absl_flags.DEFINE_string("retrieve_flagfile", os.path.join(REPO_ROOT, "flags", "ucf6_retrieve.cfg"),
                         "--videos: the clip protocol of the retrieval measure (tools.retrieve --flagfile).")
absl_flags.DEFINE_string("finetune_flagfile", os.path.join(REPO_ROOT, "flags", "ucf6_finetune.cfg"),
                         "--videos: the protocol of the fine-tuning measure (tools.finetune --flagfile).")
absl_flags.DEFINE_integer("workers", max(1, os.cpu_count() or 1), "--videos: decoder processes of the ingest.")
FLAGS = flags.FLAGS
# Flags that shape the synthetic set, and so mean nothing with --videos.
SYNTHETIC_ONLY = ("motion", "train_videos", "test_videos", "video_frames", "video_size", "data_seed",
                  "background_mean")
VIDEO_ONLY = ("videos_csv", "split_file", "val_groups", "retrieve_flagfile", "finetune_flagfile", "workers")


def _validate():
    """Every check that needs no data; returns (speeds, the video layout or None for the synthetic set)."""
    from asc_tf.data import synthetic

    if FLAGS.videos:
        for name, value in VIDEO_DEFAULTS.items():
            if not FLAGS[name].present:
                FLAGS[name].value = [str(v) for v in value] if isinstance(value, tuple) else value
    flags.require_positive("seeds", "steps", "batch_size", "frames", "crop_size", "eval_clips", "probe_clips",
                           "same_video_draws")
    unknown = [v for v in FLAGS.variants if v not in VARIANTS]
    if unknown or not FLAGS.variants:
        flags.fail("variants", f"must name some of {', '.join(VARIANTS)}, got {','.join(FLAGS.variants) or 'none'}")
    try:
        speeds = [int(s) for s in FLAGS.speeds]
    except ValueError:
        flags.fail("speeds", f"must be integers, got {','.join(FLAGS.speeds)}")
    if len(speeds) != 2 or min(speeds) < 1 or speeds[0] == speeds[1]:
        flags.fail("speeds", f"must be two different positive strides, got {','.join(FLAGS.speeds)}")
    if FLAGS.width <= 0:
        flags.fail("width", f"must be positive, got {FLAGS.width}")
    if not 0.0 <= FLAGS.tau <= 1.0:  # as tools.pretrain: 1 freezes the target network
        flags.fail("tau", f"must be in [0, 1], got {FLAGS.tau}")
    if FLAGS.weight_decay < 0:
        flags.fail("weight_decay", f"must be >= 0, got {FLAGS.weight_decay}")
    for name in ("base_lr", "supervised_lr"):
        if getattr(FLAGS, name) <= 0:
            flags.fail(name, f"must be positive, got {getattr(FLAGS, name)}")
    try:
        crop_scale = tuple(float(s) for s in FLAGS.supervised_crop_scale)
    except ValueError:
        flags.fail("supervised_crop_scale", f"must be two numbers, got {','.join(FLAGS.supervised_crop_scale)}")
    if len(crop_scale) != 2 or not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
        flags.fail("supervised_crop_scale", f"must be min,max with 0 < min <= max <= 1, got "
                                            f"{','.join(FLAGS.supervised_crop_scale)}")
    if FLAGS.videos:
        return speeds, crop_scale, _validate_videos()

    for name in VIDEO_ONLY:
        if FLAGS[name].present:
            flags.fail(name, "only with --videos")
    flags.require_positive("train_videos", "test_videos", "video_frames", "video_size")
    if FLAGS.motion not in synthetic.MOTIONS:
        flags.fail("motion", f"must be one of {', '.join(synthetic.MOTIONS)}, got {FLAGS.motion!r}")
    if not 0.0 <= FLAGS.background_mean <= 255.0:
        flags.fail("background_mean", f"must be a grey level in [0, 255], got {FLAGS.background_mean}")
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
    return speeds, crop_scale, None


def _ucf_lists(root):
    return os.path.join(root, "ucfTrainTestlist")


def _validate_videos():
    """The checks of --videos and its flags; returns the layout: ucf101, kinetics or folder."""
    for name in SYNTHETIC_ONLY + ("eval_split",):
        if FLAGS[name].present:
            flags.fail(name, "shapes the synthetic set; not with --videos")
    root = FLAGS.videos
    if not os.path.isdir(root):
        flags.fail("videos", f"no such folder: {root}")
    if os.path.isdir(os.path.join(root, "UCF-101")):
        lists = _ucf_lists(root)
        for name in ("classInd.txt", FLAGS.split_file):
            if not os.path.isfile(os.path.join(lists, name)):
                flags.fail("videos" if name == "classInd.txt" else "split_file",
                           f"UCF-101's layout needs {os.path.join(lists, name)}")
        try:
            splits.parse_groups(FLAGS.val_groups)
        except ValueError as error:
            flags.fail("val_groups", str(error))
        layout = "ucf101"
    else:
        if FLAGS.videos_csv and not os.path.isfile(FLAGS.videos_csv):
            flags.fail("videos_csv", f"no such file: {FLAGS.videos_csv}")
        classes = [d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d))]
        if not FLAGS.videos_csv and len(classes) < 2:
            flags.fail("videos", f"{root} is neither UCF-101's layout (UCF-101/ and ucfTrainTestlist/) nor a "
                                 f"folder of at least two class folders")
        layout = "kinetics" if FLAGS.videos_csv else "folder"
    for name in ("retrieve_flagfile", "finetune_flagfile"):
        if not os.path.isfile(getattr(FLAGS, name)):
            flags.fail(name, f"no such file: {getattr(FLAGS, name)}")
    if FLAGS.workers < 1:
        flags.fail("workers", f"must be >= 1, got {FLAGS.workers}")
    return layout


def _build_split(data_dir, split, count, stream):
    """Builds one split with tools.build_tfrecords unless the cache holds it with these settings."""
    output = os.path.join(data_dir, split)
    settings = {"motion": FLAGS.motion, "num_videos": count, "seed": FLAGS.data_seed,
                "frames": FLAGS.video_frames, "size": FLAGS.video_size, "background_mean": FLAGS.background_mean}
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
        f"--synthetic_background_mean={FLAGS.background_mean}", f"--output_dir={output}", "--short_side=0",
    ]
    print("building the synthetic " + split + " set: " + " ".join(command[1:]), file=stream)
    subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=stream)  # the demo's stdout is its table
    with open(stamp, "w") as fh:
        json.dump(settings, fh)
    return os.path.join(output, f"{split}-*.tfrecord")


def _video_inputs(layout):
    """The listing's inputs of tools.build_tfrecords for --videos: [flag=value]."""
    root = os.path.abspath(FLAGS.videos)
    if layout == "ucf101":
        lists = _ucf_lists(root)
        return [f"--root={os.path.join(root, 'UCF-101')}", f"--split_file={os.path.join(lists, FLAGS.split_file)}",
                f"--class_index={os.path.join(lists, 'classInd.txt')}"]
    return [f"--root={root}"] + ([f"--csv={os.path.abspath(FLAGS.videos_csv)}"] if layout == "kinetics" else [])


def _split_videos(layout):
    """(train paths, validation paths), relative to the listing's root: whole groups, or per class (splits.py)."""
    from asc_tf.data import ingest

    inputs = dict(arg[2:].split("=", 1) for arg in _video_inputs(layout))
    try:
        if layout == "ucf101":
            listing = ingest.list_ucf101(inputs["root"], inputs["split_file"], inputs["class_index"])
        elif layout == "kinetics":
            listing = ingest.list_kinetics(inputs["root"], inputs["csv"])
        else:
            listing = ingest.list_folder(inputs["root"])
    except (ValueError, KeyError) as error:
        flags.fail("split_file" if layout == "ucf101" else "videos_csv" if layout == "kinetics" else "videos",
                   str(error))
    labelled = [(entry.path, entry.label) for entry in listing.entries if entry.label >= 0]
    if layout == "ucf101":
        try:
            train, val = splits.split_by_group([path for path, _ in labelled], splits.parse_groups(FLAGS.val_groups))
        except ValueError as error:
            flags.fail("split_file", str(error))
    else:
        train, val = splits.split_per_class(labelled)
    rule = f"groups {FLAGS.val_groups}" if layout == "ucf101" else "the last fifth of each class"
    if not val:
        flags.fail("val_groups" if layout == "ucf101" else "videos", f"no validation video ({rule}) in {FLAGS.videos}")
    if len(train) < FLAGS.batch_size:
        flags.fail("batch_size", f"{FLAGS.batch_size} exceeds the {len(train)} training videos of {FLAGS.videos}")
    return train, val


def _build_video_split(layout, data_dir, split, paths, stream):
    """Ingests one split with tools.build_tfrecords --only (resumable, cached); returns (pattern, manifest)."""
    output = os.path.join(data_dir, split)
    os.makedirs(data_dir, exist_ok=True)
    only = os.path.join(data_dir, f"{split}.txt")
    text = "".join(path + "\n" for path in paths)
    command = [sys.executable, "-m", "tools.build_tfrecords", f"--layout={layout}", *_video_inputs(layout),
               f"--only={only}", f"--output_dir={output}", f"--name={split}", f"--workers={FLAGS.workers}"]
    # What the records depend on (not the number of decoder processes).
    settings = {"command": [arg for arg in command[3:] if not arg.startswith("--workers=")],
                "videos": hashlib.sha256(text.encode()).hexdigest()}
    stamp = os.path.join(output, "demo_data.json")  # written before the ingest, completed after it
    saved = _read_json(stamp)
    if saved == {**settings, "complete": True}:
        print(f"{split} videos ({len(paths)}): cached in {output}", file=stream)
    else:
        if os.path.isdir(output) and os.listdir(output):
            if saved is None:
                raise FileExistsError(f"{output} holds files the demo did not write; choose another --data_dir")
            if saved != {**settings, "complete": False}:
                shutil.rmtree(output)  # another split of the folder: ingest it anew
        os.makedirs(output, exist_ok=True)
        with open(only, "w") as fh:
            fh.write(text)
        _write_json(stamp, {**settings, "complete": False})
        print(f"{split} videos ({len(paths)}): " + " ".join(command[1:]), file=stream)
        # An interrupted ingest resumes. Exit 1 with a manifest: no usable video, said below.
        returncode = subprocess.run(command, cwd=REPO_ROOT, stdout=stream).returncode
        if returncode == 0:
            _write_json(stamp, {**settings, "complete": True})
        elif not os.path.isfile(os.path.join(output, "manifest.json")):
            raise SystemExit(f"demo: the ingest of the {split} videos stopped with exit code {returncode} (above)")
    with open(os.path.join(output, "manifest.json")) as fh:
        manifest = json.load(fh)
    if manifest["totals"]["ingested"] == 0:
        raise SystemExit(f"demo: no {split} video of {FLAGS.videos} could be read; see {output}/rejects.tsv")
    return os.path.join(output, f"{split}-*.tfrecord"), manifest


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _write_json(path, value):
    with open(path, "w") as fh:
        json.dump(value, fh)


def _tool(module, flagfile, args, stream):
    """Runs one of tools/ as a user would: `python -m tools.NAME --flagfile=... args`; returns its seconds."""
    command = [sys.executable, "-m", module, f"--flagfile={os.path.abspath(flagfile)}", *args]
    print("  " + " ".join(command[1:]), file=stream)
    started = time.monotonic()
    subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=stream)  # its results line among the progress
    return time.monotonic() - started


def tool_measures(config, train_data, test_data, stream):
    """The measures of --videos taken by tools.retrieve and tools.finetune; demo.run's `evaluate`."""

    def evaluate(variant, seed, run_dir, tools):
        if variant == "random":
            encoder = ["--init=random", f"--backbone={config.backbone}", f"--width={config.width}"]
        elif variant == "supervised":
            encoder = [f"--saved_model={os.path.join(run_dir, 'encoder')}"]
        else:
            encoder = [f"--model_dir={run_dir}"]
        data = [f"--train_data={train_data}", f"--test_data={test_data}", f"--seed={seed}"]
        measures = {}
        if "retrieve" in tools:
            output = os.path.join(run_dir, "retrieve")
            _tool("tools.retrieve", FLAGS.retrieve_flagfile, encoder + data + [f"--output_dir={output}"], stream)
            with open(os.path.join(output, "retrieval.json")) as fh:
                retrieval = json.load(fh)
            measures.update({f"retrieval_top{k}": retrieval[f"top{k}"] for k in (1, 5, 10, 20, 50)})
        # The supervised variant was trained with the labels already: nothing to fine-tune from.
        if "finetune" in tools and variant != "supervised":
            output = os.path.join(run_dir, "finetune")
            seconds = _tool("tools.finetune", FLAGS.finetune_flagfile, encoder + data + [f"--output_dir={output}"],
                            stream)
            with open(os.path.join(output, "results.json")) as fh:
                finetuned = json.load(fh)
            measures.update(finetune_top1=100.0 * finetuned["top1"], finetune_top5=100.0 * finetuned["top5"],
                            finetune_seconds=seconds)
        return measures

    evaluate.settings = {}  # {tool: its flagfile's text}: a changed protocol measures again with that tool
    for tool in ("retrieve", "finetune"):
        with open(getattr(FLAGS, f"{tool}_flagfile")) as fh:
            evaluate.settings[tool] = fh.read()
    return evaluate


def main(argv):
    del argv
    speeds, crop_scale, layout = _validate()
    flags.require_writable("output_dir")
    if FLAGS.data_dir:
        flags.require_writable("data_dir")
    from asc_tf import demo
    from asc_tf.data import synthetic

    stream = sys.stderr
    output_dir = os.path.abspath(FLAGS.output_dir)
    data_dir = os.path.abspath(FLAGS.data_dir or os.path.join(output_dir, "data"))
    evaluate = None
    if layout:
        train, val = _split_videos(layout)
        print(f"demo: writing to {output_dir}; {FLAGS.videos} ({layout}): {len(train)} training and {len(val)} "
              f"validation videos", file=stream)
        train_data, manifest = _build_video_split(layout, data_dir, "train", train, stream)
        test_data, val_manifest = _build_video_split(layout, data_dir, "val", val, stream)
        class_names = manifest["class_names"]
        counts = dict(train_videos=manifest["totals"]["ingested"], test_videos=val_manifest["totals"]["ingested"])
        data = dict(videos=os.path.abspath(FLAGS.videos), eval_split="val", flip=True, **counts)
    else:
        print(f"demo: writing to {output_dir}", file=stream)
        train_data = _build_split(data_dir, "train", FLAGS.train_videos, stream)
        test_data = _build_split(data_dir, FLAGS.eval_split, FLAGS.test_videos, stream)
        class_names = synthetic.class_names(FLAGS.motion)
        data = dict(motion=FLAGS.motion, train_videos=FLAGS.train_videos, test_videos=FLAGS.test_videos,
                    eval_split=FLAGS.eval_split, video_frames=FLAGS.video_frames, video_size=FLAGS.video_size,
                    data_seed=FLAGS.data_seed, background_mean=FLAGS.background_mean)
    config = demo.DemoConfig(
        output_dir=output_dir, **data, backbone=FLAGS.backbone, width=FLAGS.width, frames=FLAGS.frames,
        crop_size=FLAGS.crop_size, speeds=tuple(speeds), steps=FLAGS.steps, batch_size=FLAGS.batch_size,
        optimizer=FLAGS.optimizer, base_lr=FLAGS.base_lr, projection=FLAGS.projection, symmetric=FLAGS.symmetric,
        tau=FLAGS.tau, color_jitter=FLAGS.color_jitter, blur=FLAGS.blur, grayscale=FLAGS.grayscale,
        solarize=FLAGS.solarize, weight_decay=FLAGS.weight_decay, supervised_lr=FLAGS.supervised_lr,
        supervised_optimizer=FLAGS.supervised_optimizer, supervised_crop_scale=crop_scale,
        seeds=tuple(range(FLAGS.seeds)), variants=tuple(FLAGS.variants), eval_clips=FLAGS.eval_clips,
        probe_clips=FLAGS.probe_clips, same_video_draws=FLAGS.same_video_draws,
    )
    if layout:
        evaluate = tool_measures(config, train_data, test_data, stream)
    results = demo.run(config, train_data, test_data, len(class_names), stream=stream, evaluate=evaluate)
    print(demo.table(results))
    files = results["files"]
    print(f"\nresults: {os.path.join(output_dir, 'results.json')}\npicture: {files['retrieval_png']}\n"
          f"encoder SavedModel: {files['encoder_saved_model'] or '(no asc variant run)'}\n"
          f"TensorBoard: tensorboard --logdir {files['tensorboard']}")
    return 0


if __name__ == "__main__":
    flags.run(main)
