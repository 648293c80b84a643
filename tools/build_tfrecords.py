r"""Builds TFRecord shards of SequenceExamples from a video dataset, or from the synthetic set.

    python -m tools.build_tfrecords --layout=kinetics --root=data/kinetics400/train \
        --csv=data/kinetics400/kinetics400_train.csv --output_dir=records/k400_train --workers=8
    python -m tools.build_tfrecords --layout=ucf101 --root=data/UCF-101 \
        --split_file=data/ucfTrainTestlist/trainlist01.txt \
        --class_index=data/ucfTrainTestlist/classInd.txt --output_dir=records/ucf101_train1

Re-running the same command after an interruption resumes. The output
directory receives the shards, rejects.tsv (path, reason) and manifest.json;
see asc_tf/data/ingest.py for the decisions behind them.
"""

import os
import sys

from absl import app
from absl import flags as absl_flags

import flags

LAYOUTS = ("ucf101", "hmdb51", "kinetics", "folder", "synthetic")

absl_flags.DEFINE_string("layout", None, f"Dataset layout: one of {', '.join(LAYOUTS)}.")
absl_flags.DEFINE_string("root", None, "Dataset root (class folders below it); not for synthetic.")
absl_flags.DEFINE_string("split_file", None, "ucf101: trainlistNN.txt or testlistNN.txt.")
absl_flags.DEFINE_string("class_index", None, "ucf101: classInd.txt.")
absl_flags.DEFINE_string("split_dir", None, "hmdb51: the testTrainMulti_7030_splits folder.")
absl_flags.DEFINE_string("split", None, "hmdb51: split number 1..3 (default 1); "
                         "synthetic: train, val or test (default train).")
absl_flags.DEFINE_string("subset", "train", "hmdb51: train or test.")
absl_flags.DEFINE_string("csv", None, "kinetics: the official CSV (label,youtube_id,time_start,"
                         "time_end,split); only its videos are ingested.")
absl_flags.DEFINE_string("only", None, "A text file of video paths relative to --root, one per line: ingest only "
                         "these of the layout's videos (one split of a folder without split files); a "
                         "named path the layout does not list is reported missing. Not for synthetic.")
absl_flags.DEFINE_integer("num_videos", 0, "synthetic: number of videos.")
absl_flags.DEFINE_integer("seed", 0, "synthetic: seed of the set.")
absl_flags.DEFINE_integer("synthetic_frames", 64, "synthetic: frames per video.")
absl_flags.DEFINE_integer("synthetic_size", 64, "synthetic: frame height and width.")
absl_flags.DEFINE_string("synthetic_motion", "direction_speed", "synthetic: motion family.")
absl_flags.DEFINE_float("synthetic_background_mean", None, "synthetic: every video's mean background colour, a "
                        "grey level in [0, 255]; unset: drawn per video (the demo uses 128).")
absl_flags.DEFINE_string("output_dir", None, "Where shards, rejects.tsv and manifest.json go.")
absl_flags.DEFINE_string("name", None, "Shard prefix. Default: the split file's stem (ucf101), "
                         "subset + split (hmdb51), the root's folder name (kinetics, folder), "
                         "the split (synthetic).")
absl_flags.DEFINE_integer("short_side", 128, "Shorter side after resizing (never upsampled); 0 keeps.")
absl_flags.DEFINE_float("fps", 0.0, "Resample to this frame rate by timestamp; 0 keeps every frame.")
absl_flags.DEFINE_integer("max_frames", 0, "Keep at most this many frames per video; 0 keeps all.")
absl_flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality, 1..100.")
absl_flags.DEFINE_integer("num_shards", 0, "Number of shards; 0 = one per 100 videos.")
absl_flags.DEFINE_integer("workers", 1, "Decoder processes.")
absl_flags.DEFINE_float("video_timeout", 600.0, "Seconds one video may take before it is rejected.")

FLAGS = absl_flags.FLAGS


def _require(flag, exists=os.path.isfile, kind="file"):
    """The flag is set and names an existing file (or directory: exists=os.path.isdir)."""
    value = FLAGS[flag].value
    if not value:
        flags.fail(flag, f"required for --layout={FLAGS.layout}")
    if not exists(value):
        flags.fail(flag, f"no such {kind}: {value}")


def _validate():
    """Checks every flag before any work; returns (split, name)."""
    if FLAGS.layout not in LAYOUTS:
        flags.fail("layout", f"must be one of {', '.join(LAYOUTS)}, got {FLAGS.layout!r}")
    if not FLAGS.output_dir:
        flags.fail("output_dir", "required")
    for flag in ("short_side", "fps", "max_frames", "num_shards"):
        if FLAGS[flag].value < 0:
            flags.fail(flag, f"must be >= 0, got {FLAGS[flag].value}")
    if not 1 <= FLAGS.jpeg_quality <= 100:
        flags.fail("jpeg_quality", f"must be in 1..100, got {FLAGS.jpeg_quality}")
    if FLAGS.workers < 1:
        flags.fail("workers", f"must be >= 1, got {FLAGS.workers}")
    if FLAGS.video_timeout <= 0:
        flags.fail("video_timeout", f"must be > 0, got {FLAGS.video_timeout}")

    layout, split = FLAGS.layout, FLAGS.split
    if layout != "synthetic":
        _require("root", os.path.isdir, "directory")
    if FLAGS.only is not None:
        if layout == "synthetic":
            flags.fail("only", "not for --layout=synthetic")
        _require("only")
    if layout == "ucf101":
        _require("split_file")
        _require("class_index")
        name = os.path.splitext(os.path.basename(FLAGS.split_file))[0]
    elif layout == "hmdb51":
        _require("split_dir", os.path.isdir, "directory")
        if FLAGS.subset not in ("train", "test"):
            flags.fail("subset", f"must be train or test, got {FLAGS.subset!r}")
        split = split or "1"
        if not split.isdigit() or not any(
                n.endswith(f"_test_split{split}.txt") for n in os.listdir(FLAGS.split_dir)):
            flags.fail("split", f"no *_test_split{split}.txt files in {FLAGS.split_dir}")
        name = f"{FLAGS.subset}{split}"
    elif layout == "synthetic":
        from asc_tf.data import synthetic  # numpy only: cheap

        split = split or "train"
        if split not in synthetic.SPLIT_IDS:
            flags.fail("split", f"must be train, val or test for --layout=synthetic, got {split!r}")
        if FLAGS.num_videos < 1:
            flags.fail("num_videos", f"must be >= 1, got {FLAGS.num_videos}")
        if FLAGS.synthetic_frames < 1:
            flags.fail("synthetic_frames", f"must be >= 1, got {FLAGS.synthetic_frames}")
        if FLAGS.synthetic_size < 8:
            flags.fail("synthetic_size", f"must be >= 8, got {FLAGS.synthetic_size}")
        mean = FLAGS.synthetic_background_mean
        if mean is not None and not 0.0 <= mean <= 255.0:
            flags.fail("synthetic_background_mean", f"must be a grey level in [0, 255], got {mean}")
        try:
            synthetic.class_names(FLAGS.synthetic_motion)
        except ValueError as error:
            flags.fail("synthetic_motion", str(error))
        name = split
    else:
        if layout == "kinetics" and FLAGS.csv is not None:
            _require("csv")
        name = os.path.basename(os.path.normpath(FLAGS.root))
    name = FLAGS.name or name
    if not name or "/" in name or name.startswith("."):
        flags.fail("name", f"must be a plain file name prefix, got {name!r}")
    return split, name


def _listing(ingest, split):
    """The layout's listing; a malformed split file / CSV fails on the flag that named it."""
    layout = FLAGS.layout
    try:
        if layout == "ucf101":
            return ingest.list_ucf101(FLAGS.root, FLAGS.split_file, FLAGS.class_index)
        if layout == "hmdb51":
            return ingest.list_hmdb51(FLAGS.root, FLAGS.split_dir, int(split), FLAGS.subset)
        if layout == "kinetics":
            return ingest.list_kinetics(FLAGS.root, FLAGS.csv)
        if layout == "folder":
            return ingest.list_folder(FLAGS.root)
        return ingest.list_synthetic(FLAGS.num_videos, split, FLAGS.seed, FLAGS.synthetic_frames,
                                     FLAGS.synthetic_size, FLAGS.synthetic_motion,
                                     FLAGS.synthetic_background_mean)
    except (ValueError, KeyError) as error:
        flags.fail({"ucf101": "split_file", "hmdb51": "split_dir"}.get(layout, "csv"), str(error))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    split, name = _validate()
    flags.require_writable("output_dir")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the decoder processes
    from asc_tf.data import ingest  # imports TensorFlow: only once the flags are known good

    listing = _listing(ingest, split)
    inputs = {"ucf101": ("root", "split_file", "class_index"),
              "hmdb51": ("root", "split_dir", "subset"), "kinetics": ("root", "csv"),
              "folder": ("root",), "synthetic": ()}[FLAGS.layout]
    settings = {"layout": FLAGS.layout, **{key: FLAGS[key].value for key in inputs}}
    if FLAGS.only:
        with open(FLAGS.only, encoding="utf-8", errors="replace") as handle:
            paths = [line.strip() for line in handle if line.strip()]
        listing = ingest.subset(listing, paths)
        settings.update(only=FLAGS.only, only_videos=len(paths))
    if FLAGS.layout == "hmdb51":
        settings["split"] = int(split)
    options = ingest.EncodeOptions(FLAGS.short_side, FLAGS.fps, FLAGS.max_frames, FLAGS.jpeg_quality)
    try:
        manifest = ingest.ingest(listing, FLAGS.output_dir, name=name, num_shards=FLAGS.num_shards,
                                 options=options, workers=FLAGS.workers,
                                 video_timeout=FLAGS.video_timeout, settings=settings)
    except ValueError as error:  # the output directory holds another ingest
        flags.fail("output_dir", str(error))
    totals, run = manifest["totals"], manifest["run"]
    # A re-run into a finished folder decodes nothing: say so rather than "0.00 videos/s".
    done = ("already complete" if run["videos_decoded"] == 0 and run["shards_resumed"] == len(manifest["shards"])
            else f"{run['videos_per_second']:.2f} videos/s")
    print(f"{name}: {totals['ingested']} videos in {len(manifest['shards'])} shards, "
          f"{totals['rejected']} rejected, {totals['missing']} missing, "
          f"{totals['unlisted']} unlisted ({done}); "
          f"see {os.path.join(FLAGS.output_dir, 'manifest.json')}")
    if not totals["ingested"]:
        print(f"build_tfrecords: error: no usable video in the {name} split: {FLAGS.output_dir}'s shards are empty "
              f"(rejects, with reasons: {os.path.join(FLAGS.output_dir, 'rejects.tsv')})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    flags.run(main)
