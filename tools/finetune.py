r"""Action recognition from a learned encoder: end-to-end fine-tuning, or the linear probe.

    python -m tools.finetune --flagfile=flags/finetune_ucf101_r3d18.cfg --model_dir=runs/k400_r3d18 \
        --train_data='records/ucf101_train1/*.tfrecord' --test_data='records/ucf101_test1/*.tfrecord' \
        --output_dir=runs/k400_r3d18/ucf101_split1
    python -m tools.finetune --flagfile=flags/linear_ucf101_r3d18.cfg --model_dir=runs/k400_r3d18 ...
    python -m tools.finetune --init=random --backbone=r3d_18 ...      # the w/o-pretraining baseline

With --model_dir the architecture (--backbone, --width) is the pretraining
run's. See asc_tf/evaluation/finetune.py for the protocol and what
--output_dir receives (results.json, classifier.json + classifier.weights.h5,
tensorboard/).
"""

import sys

from absl import flags as absl_flags

import flags
from flags.evaluation import define_data_flags, define_encoder_flags, validate_data_flags, validate_encoder_flags
from flags.pretrain import count_videos, validate_steps_or_epochs

define_encoder_flags()
define_data_flags()
absl_flags.DEFINE_integer("train_steps", 0, "Training steps; 0 = use --epochs. Exactly one of the two is positive.")
absl_flags.DEFINE_float("epochs", 0.0, "Epochs over --train_data (needs manifest.json beside the shards); 0 = use "
                        "--train_steps.")
absl_flags.DEFINE_integer("warmup_steps", 0, "Linear learning-rate warm-up from 0, in steps.")
absl_flags.DEFINE_integer("batch_size", 32, "Clips per training step.")
absl_flags.DEFINE_float("base_lr", 0.2, "Learning rate at batch 128, scaled linearly with --batch_size (as in "
                        "pretraining); cosine-decayed to 0.01x by the last step.")
absl_flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
absl_flags.DEFINE_float("weight_decay", 0.0, "Keras's decoupled weight decay (w -= lr*wd*w per step; ~10x a "
                        "PyTorch SGD weight_decay at momentum 0.9); not on biases and BatchNorm.")
absl_flags.DEFINE_float("dropout", 0.5, "Dropout before the classifier's Dense layer.")
absl_flags.DEFINE_bool("freeze_backbone", False, "Linear probe: the backbone is frozen (BatchNorm in inference "
                       "mode); only the classifier trains.")
absl_flags.DEFINE_bool("flip", True, "Random horizontal flip in training (--noflip for classes a mirror changes, "
                       "e.g. the synthetic set's left/right).")
absl_flags.DEFINE_integer("stride", 1, "Frame stride of training and test clips (1 = consecutive frames).")
absl_flags.DEFINE_integer("resize_short", 128, "Test: short side of the frames before the crop(s).")
absl_flags.DEFINE_integer("eval_clips", 10, "Test: clips per video, uniformly spread.")
absl_flags.DEFINE_enum("eval_crops", "1", ["1", "3"], "Test: 1 = centre crop, 3 = three crops along the long side.")
absl_flags.DEFINE_integer("eval_batch_size", 1, "Test: videos per forward pass.")
absl_flags.DEFINE_integer("num_classes", None, "Classes; default: the class_names of the manifest.json beside "
                          "--train_data, else the largest label + 1.")
absl_flags.DEFINE_integer("log_every", 10, "Write TensorBoard scalars every N steps.")
absl_flags.DEFINE_integer("shuffle_buffer", 256, "Records held for shuffling.")
FLAGS = flags.FLAGS


def validate_finetune_flags():
    """Every check that needs no data; exit code 2 on the first bad flag."""
    fail = flags.fail
    if FLAGS.saved_model:
        fail("saved_model", "fine-tuning needs the Keras backbone, which a SavedModel does not hold; "
                            "give the pretraining run with --model_dir")
    if FLAGS.init == "random" and FLAGS.model_dir:
        fail("model_dir", "--init=random starts from random weights; drop --model_dir")
    validate_encoder_flags()
    validate_data_flags("train_data", "test_data")
    validate_steps_or_epochs()
    flags.require_positive("batch_size", "stride", "eval_clips", "eval_batch_size", "log_every", "shuffle_buffer")
    if FLAGS.warmup_steps < 0:
        fail("warmup_steps", f"must be >= 0, got {FLAGS.warmup_steps}")
    if FLAGS.base_lr <= 0:
        fail("base_lr", f"must be positive, got {FLAGS.base_lr}")
    if not 0.0 <= FLAGS.momentum < 1.0:
        fail("momentum", f"must be in [0, 1), got {FLAGS.momentum}")
    if FLAGS.weight_decay < 0:
        fail("weight_decay", f"must be >= 0, got {FLAGS.weight_decay}")
    if not 0.0 <= FLAGS.dropout < 1.0:
        fail("dropout", f"must be in [0, 1), got {FLAGS.dropout}")
    if FLAGS.resize_short < FLAGS.crop_size:
        fail("resize_short", f"must be at least --crop_size ({FLAGS.crop_size}), got {FLAGS.resize_short}")
    if FLAGS.num_classes is not None and FLAGS.num_classes < 2:
        fail("num_classes", f"must be at least 2, got {FLAGS.num_classes}")


def architecture():
    """(backbone, width): the pretraining run's with --model_dir (explicit flags must agree), else the flags'."""
    if not FLAGS.model_dir:
        return FLAGS.backbone, FLAGS.width
    from asc_tf.evaluation.encoders import pretrain_config

    run = pretrain_config(FLAGS.model_dir)
    for name, value in (("backbone", run.backbone), ("width", run.width)):
        if FLAGS[name].present and FLAGS[name].value != value:
            flags.fail(name, f"{FLAGS[name].value} differs from the pretraining run's {value} in {FLAGS.model_dir}")
    return run.backbone, run.width


def class_names():
    """Class names (index = label) from the train manifest, or the labels; --num_classes may add to them."""
    from asc_tf.evaluation.finetune import dataset_class_names

    names = dataset_class_names(FLAGS.train_data)
    wanted = FLAGS.num_classes or len(names)
    if wanted < len(names):
        flags.fail("num_classes", f"{wanted} is fewer than the {len(names)} classes of --train_data")
    if wanted < 2:
        flags.fail("train_data", "has fewer than 2 labelled classes")
    return names + [f"class_{i}" for i in range(len(names), wanted)]


def train_steps():
    if FLAGS.train_steps > 0:
        return FLAGS.train_steps
    videos = count_videos(FLAGS.train_data)
    if videos is None:
        flags.fail("epochs", "needs the number of videos: no manifest.json beside --train_data; give --train_steps")
    return max(1, round(FLAGS.epochs * max(1, videos // FLAGS.batch_size)))


def main(argv):
    del argv
    validate_finetune_flags()
    steps = train_steps()  # before TensorFlow loads: the two below import it to read the run and the data
    flags.require_writable("output_dir")
    backbone, width = architecture()
    names = class_names()
    from asc_tf.data import pipeline
    from asc_tf.evaluation import encoders
    from asc_tf.evaluation.finetune import FinetuneConfig, run_finetune

    config = FinetuneConfig(
        train_data=FLAGS.train_data, test_data=FLAGS.test_data, output_dir=FLAGS.output_dir,
        backbone=backbone, width=width, frames=FLAGS.frames, crop_size=FLAGS.crop_size, stride=FLAGS.stride,
        flip=FLAGS.flip, resize_short=FLAGS.resize_short, eval_clips=FLAGS.eval_clips,
        eval_crops=int(FLAGS.eval_crops), num_classes=len(names), class_names=tuple(names), train_steps=steps,
        warmup_steps=min(FLAGS.warmup_steps, steps), batch_size=FLAGS.batch_size, base_lr=FLAGS.base_lr,
        momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay, dropout=FLAGS.dropout,
        freeze_backbone=FLAGS.freeze_backbone, seed=FLAGS.seed, log_every=FLAGS.log_every,
        eval_batch_size=FLAGS.eval_batch_size, shuffle_buffer=FLAGS.shuffle_buffer,
        test_videos=count_videos(FLAGS.test_data),
    )
    clip_shape = (FLAGS.frames, FLAGS.crop_size, FLAGS.crop_size, 3)
    encoder = encoders.load_encoder(FLAGS.init, FLAGS.model_dir, None, backbone, width, clip_shape, FLAGS.seed)
    mode = "linear probe" if FLAGS.freeze_backbone else "fine-tuning"
    print(f"{mode} {backbone} (width {width}) from {encoder.source}: {steps} steps, batch {FLAGS.batch_size}, "
          f"{len(names)} classes; writing to {FLAGS.output_dir}", file=sys.stderr)
    try:
        results = run_finetune(config, encoder)
    except pipeline.NoUsableClips as error:
        flag = "train_data" if error.pattern == FLAGS.train_data else "test_data"
        print(f"finetune: error: --{flag}: {error}", file=sys.stderr)
        return 1
    print(f"video-level ({results['num_videos']} videos, {FLAGS.eval_clips} clips x {FLAGS.eval_crops} crop(s), "
          f"mean softmax): top-1 {100 * results['top1']:.2f}%  top-5 {100 * results['top5']:.2f}%  |  "
          f"clip-level top-1 {100 * results['clip_top1']:.2f}% ({results['num_clips']} clips)")
    return 0


if __name__ == "__main__":
    flags.run(main)
