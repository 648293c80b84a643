r"""Nearest-neighbour video retrieval with a frozen encoder (the paper's section 4.5).

    python -m tools.retrieve --model_dir=runs/k400_r3d18 \
        --train_data='records/ucf101_train1/*.tfrecord' --test_data='records/ucf101_test1/*.tfrecord' \
        --output_dir=results/retrieval_ucf101
    python -m tools.retrieve --init=random --backbone=r3d_18 ...   # the w/o-pretraining baseline

With --model_dir the architecture comes from the run's config.json; --backbone
and --width only matter for --init=random. --frames and --crop_size set the
clips in every case. Writes <output_dir>/retrieval.json (top-k in percent),
<output_dir>/retrieval.png (queries and their nearest training videos) and
TensorBoard logs in <output_dir>/tensorboard. See asc_tf/evaluation/retrieval.py.
"""

import json
import os
import sys

from absl import flags as absl_flags

import flags
from flags.evaluation import define_data_flags, define_encoder_flags, validate_data_flags, validate_encoder_flags

define_encoder_flags()
define_data_flags()
absl_flags.DEFINE_integer("num_clips", 10, "Clips per video, uniformly spaced; their features are averaged.")
absl_flags.DEFINE_integer("stride", 1, "Playback speed (frame stride) of the clips.")
absl_flags.DEFINE_integer("resize_short", 128, "Short side of the frames before the centre crop.")
absl_flags.DEFINE_integer("picture_rows", 8, "Queries shown in retrieval.png.")
FLAGS = flags.FLAGS

RECORDED_FLAGS = ("train_data", "test_data", "init", "model_dir", "saved_model", "backbone", "width", "frames",
                  "crop_size", "seed", "num_clips", "stride", "resize_short", "picture_rows", "output_dir")


def validate_flags():
    validate_encoder_flags()
    validate_data_flags("train_data", "test_data")
    flags.require_positive("num_clips", "stride", "picture_rows")
    if FLAGS.resize_short < FLAGS.crop_size:
        flags.fail("resize_short", f"must be at least --crop_size ({FLAGS.crop_size}), got {FLAGS.resize_short}")


def main(argv):
    del argv
    validate_flags()
    flags.require_writable("output_dir")
    import numpy as np
    import tensorflow as tf

    from asc_tf.data import pipeline
    from asc_tf.evaluation import encoders, retrieval
    from asc_tf.progress import Progress
    from flags.pretrain import count_videos

    encoder = encoders.load_encoder(
        init=FLAGS.init, model_dir=FLAGS.model_dir, saved_model=FLAGS.saved_model, backbone=FLAGS.backbone,
        width=FLAGS.width, clip_shape=(FLAGS.frames, FLAGS.crop_size, FLAGS.crop_size, 3), seed=FLAGS.seed,
    )

    stats = pipeline.InputStats()

    def features(flag, desc):
        pattern, before = FLAGS[flag].value, stats.as_dict()
        dataset = pipeline.eval_dataset(
            pattern, num_clips=FLAGS.num_clips, num_frames=FLAGS.frames, stride=FLAGS.stride,
            resize_short=FLAGS.resize_short, crop_size=FLAGS.crop_size, stats=stats,
        )
        progress = Progress(total=count_videos(pattern), desc=desc, unit="videos")
        try:
            return retrieval.extract_features(encoder, dataset, progress=progress,
                                              names=retrieval.video_names(pattern))
        except pipeline.NoUsableClips:
            counts = {name: value - before[name] for name, value in stats.as_dict().items()}
            print(f"retrieve: error: --{flag}: {pipeline.NoUsableClips(pattern, counts)}", file=sys.stderr)
            sys.exit(1)

    gallery = features("train_data", "gallery (train)")
    queries = features("test_data", "queries (test)")
    for flag, videos in (("test_data", queries), ("train_data", gallery)):
        unlabelled = int(np.sum(videos.labels < 0))
        if unlabelled:
            print(f"retrieve: error: --{flag}: {unlabelled} of {len(videos)} videos have no label; top-k needs "
                  "labels (tools.search ranks unlabelled videos)", file=sys.stderr)
            return 1
    overlap = retrieval.queries_in_gallery(queries, gallery)
    if overlap:
        print(f"retrieve: warning: {overlap} of {len(queries)} queries are also in the gallery (the same path): "
              "each one's nearest neighbour is itself, so top-k overstates", file=sys.stderr)
    accuracy = retrieval.topk_accuracy(queries.features, queries.labels, gallery.features, gallery.labels)
    picture = retrieval.retrieval_picture(
        queries, gallery, rows=FLAGS.picture_rows,
        title=f"{encoder.source}: test queries (white) and their nearest training videos by cosine; "
              f"green = same class. Retrieval top-1 {accuracy['top1']:.1f} %")

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    results = {
        **accuracy,
        "units": "percent",
        "num_queries": len(queries),
        "num_gallery": len(gallery),
        "queries_in_gallery": overlap,
        "num_clips": FLAGS.num_clips,
        "encoder": encoder.source,
        "input": stats.as_dict(),
        "flags": {name: FLAGS[name].value for name in RECORDED_FLAGS},
    }
    # The architecture used, not the flags' defaults: a run's comes from its config.json; a SavedModel
    # does not name its own.
    if FLAGS.model_dir:
        run = encoders.pretrain_config(FLAGS.model_dir)
        results["flags"].update(backbone=run.backbone, width=run.width)
    elif FLAGS.saved_model:
        results["flags"].update(backbone=None, width=None)
    with open(os.path.join(FLAGS.output_dir, "retrieval.json"), "w") as f:
        json.dump(results, f, indent=2)
    tf.io.write_file(os.path.join(FLAGS.output_dir, "retrieval.png"), tf.io.encode_png(picture))
    writer = tf.summary.create_file_writer(os.path.join(FLAGS.output_dir, "tensorboard"))
    with writer.as_default():
        for name, value in accuracy.items():
            tf.summary.scalar(f"retrieval/{name}", value, step=0)
        tf.summary.image("retrieval/query_then_nearest_train_videos", picture[np.newaxis], step=0)
    writer.close()

    topk = " ".join(f"{name} {value:.2f}" for name, value in accuracy.items())
    print(f"retrieval top-k (%), {len(queries)} queries, {len(gallery)} gallery videos, {FLAGS.num_clips} clips: "
          f"{topk}  [{encoder.source}]")
    skipped = pipeline.describe_skipped(results["input"])
    if skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    flags.run(main)
