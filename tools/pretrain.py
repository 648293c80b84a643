r"""ASCNet self-supervised pretraining.

    python -m tools.pretrain --flagfile=flags/pretrain_k400_r3d18.cfg \
        --train_data='records/k400_train/*.tfrecord' --model_dir=runs/k400_r3d18
    python -m tools.pretrain --flagfile=flags/demo.cfg --model_dir=runs/demo

Re-running the same command resumes from the newest checkpoint in --model_dir.
See asc_tf/pretraining.py for what a run writes.
"""

import os
import sys

import flags
from flags.pretrain import (
    config_from_flags, count_videos, define_pretrain_flags, steps_from_flags, validate_pretrain_flags,
)

define_pretrain_flags()
FLAGS = flags.FLAGS


def _synthetic_records():
    """Builds the synthetic set once into <model_dir>/synthetic_data; returns its file pattern."""
    from asc_tf.data import ingest

    output = os.path.join(FLAGS.model_dir, "synthetic_data")
    listing = ingest.list_synthetic(
        FLAGS.synthetic_videos, split="train", seed=FLAGS.seed, num_frames=FLAGS.synthetic_frames,
        size=FLAGS.synthetic_size, motion=FLAGS.synthetic_motion,
    )
    ingest.ingest(listing, output, name="train", options=ingest.EncodeOptions(short_side=0))
    return os.path.join(output, "train-*.tfrecord")


def _monitor():
    """The retrieval monitor the --monitor_* flags ask for, or None."""
    if not FLAGS.monitor_every:
        return None
    from asc_tf.evaluation.monitor import RetrievalMonitor

    return RetrievalMonitor(
        FLAGS.monitor_train_data, FLAGS.monitor_test_data, num_clips=FLAGS.monitor_clips, num_frames=FLAGS.frames,
        crop_size=FLAGS.crop_size, resize_short=FLAGS.monitor_resize_short or None, every=FLAGS.monitor_every,
    )


def main(argv):
    del argv
    speeds = validate_pretrain_flags()
    # Shards named by --train_data are counted before TensorFlow loads, so that --epochs without their
    # manifest.json fails at once; the synthetic set can only be counted once built (after the strategy).
    steps = None if FLAGS.synthetic else steps_from_flags(count_videos(FLAGS.train_data))
    flags.require_writable("model_dir")
    from asc_tf import distribute, pretraining
    from asc_tf.data import pipeline

    if FLAGS.cpu_replicas:
        distribute.split_cpu(FLAGS.cpu_replicas)

    strategy = distribute.make_strategy(FLAGS.strategy)
    validate_pretrain_flags(num_replicas=strategy.num_replicas_in_sync)
    train_data = FLAGS.train_data
    if FLAGS.synthetic:
        train_data = _synthetic_records()
        steps = steps_from_flags(count_videos(train_data))
    train_steps, warmup_steps = steps
    config = config_from_flags(train_data, speeds, train_steps, warmup_steps)
    print(f"pretraining {config.backbone} on {train_data}: {train_steps} steps, global batch "
          f"{config.global_batch_size} on {strategy.num_replicas_in_sync} replica(s); writing to {config.model_dir}",
          file=sys.stderr)
    try:
        summary = pretraining.run(config, strategy, monitor=_monitor())
    except pipeline.NoUsableClips as error:
        print(f"pretrain: error: --train_data: {error}", file=sys.stderr)
        return 1
    except (pretraining.NonFiniteLoss, pretraining.CheckpointWriteFailed) as error:
        print(f"pretrain: stopped: {error}", file=sys.stderr)
        return 1
    except pretraining.UnsupportedPrecision as error:
        # Raised before the model is built: nothing was trained, as for any other rejected flag.
        print(f"pretrain: error: {error}", file=sys.stderr)
        return flags.EXIT_BAD_FLAG
    first, last = summary["first_logs"], summary["last_logs"]
    if first and last:
        print(f"steps {summary['start_step']}→{summary['end_step']}: loss {first['loss']:.4f} → {last['loss']:.4f} "
              f"(loss_a {first['loss_a']:.4f} → {last['loss_a']:.4f}, loss_m {first['loss_m']:.4f} → "
              f"{last['loss_m']:.4f}); checkpoint {summary['checkpoint']}")
        skipped = pipeline.describe_skipped(summary["input"])
        if skipped:
            print(f"input: skipped {skipped}, counted as read")
    else:
        print(f"nothing to do: {config.model_dir} is already at step {summary['end_step']}")
    return 0


if __name__ == "__main__":
    flags.run(main)
