"""Input speed: two-view pretraining samples/s, TFRecord pipeline vs on-the-fly decoding.

A sample is what pretraining consumes: two 16×112×112 clips of one video at
strides 4 and 8, fully augmented (byol_views), normalised.

  tfdata      `pipeline.pretrain_dataset` over TFRecords built at the start
              from the real clips beside the checkout (short side 128, JPEG
              q90, through `ingest.decode_video`).
  onthefly    what the PyTorch codebases do per sample: PyAV opens the source
              video, seeks to a random start for each clip, decodes up to the
              clip's last frame, keeps every s-th frame resized to short side
              128 (swscale), then the same augmentation (`augment.augment_clip`,
              one compiled function) per clip. Samples come from a pool of as
              many threads as cores, as a DataLoader's workers would run.

Both run in one process, interleaved (tfdata, onthefly, tfdata, ...) for
`--rounds` rounds; each round starts a fresh iterator or pool, discards
`--warmup` samples, then times the rest. Medians are reported as one JSON line.
Never run in CI.

    python -m bench.input_pipeline
"""

import argparse
import concurrent.futures
import glob
import json
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import asc_tf  # noqa: E402,F401  (before TensorFlow: oneDNN on)

import av  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from asc_tf.data import augment, ingest, pipeline, records  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REALCLIPS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "realclips")
SPEEDS = (4, 8)


def find_videos(root):
    paths = glob.glob(os.path.join(root, "**", "*.mp4"), recursive=True)
    paths += glob.glob(os.path.join(root, "**", "*.avi"), recursive=True)
    return sorted(paths)


def build_records(paths, output_dir, short_side, num_shards=4):
    """Writes the videos into `num_shards` TFRecord shards; returns the glob."""
    options = ingest.EncodeOptions(short_side=short_side, jpeg_quality=90)
    names = [os.path.join(output_dir, f"bench-{k}.tfrecord") for k in range(num_shards)]
    writers = [tf.io.TFRecordWriter(name) for name in names]
    for video_id, path in enumerate(paths):
        video = ingest.decode_video(path, options)
        name = os.path.basename(path)
        example = records.make_sequence_example(video.jpegs, 0, "", video_id, video.fps, name)
        writers[video_id % num_shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return os.path.join(output_dir, "bench-*.tfrecord")


def time_tfdata(dataset, batch_size, warmup, samples):
    iterator = iter(dataset)
    for _ in range(max(1, warmup // batch_size)):
        next(iterator)
    batches = max(1, samples // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    _ = batch["view_i"].numpy()
    elapsed = time.perf_counter() - start
    del iterator
    return batches * batch_size / elapsed


def decode_clip(path, num_frames, stride, short_side, rng):
    """PyAV: seek to a random start, decode to the clip's end, keep every stride-th frame.

    Returns:
      [num_frames, H, W, 3] uint8, short side `short_side`; a video shorter
      than the span loops, as in the TFRecord pipeline.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        total = stream.frames or int(float(stream.duration * stream.time_base) * fps)
        span = (num_frames - 1) * stride + 1
        start = rng.randrange(0, max(total - span, 0) + 1)
        width, height = stream.codec_context.width, stream.codec_context.height
        scale = short_side / min(width, height)
        size = dict(width=round(width * scale), height=round(height * scale))
        target = int(start / fps / stream.time_base) + (stream.start_time or 0)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        kept = []
        for frame in container.decode(stream):
            index = round((frame.time - float((stream.start_time or 0) * stream.time_base)) * fps)
            if index < start:
                continue
            if (index - start) % stride == 0:
                kept.append(frame.to_ndarray(format="rgb24", **size))
            if index >= start + span - 1 or len(kept) == num_frames:
                break
    if not kept:
        raise RuntimeError(f"no frames decoded from {path}")
    return np.stack([kept[t % len(kept)] for t in range(num_frames)])


def time_onthefly(paths, augment_fn, num_frames, short_side, workers, warmup, samples, seed):
    view_i_config, view_j_config = augment.byol_views()
    rng = random.Random(seed)
    tasks = [(rng.choice(paths), rng.randrange(2**31)) for _ in range(warmup + samples)]

    def sample(task):
        path, task_seed = task
        task_rng = random.Random(task_seed)
        clip_i = decode_clip(path, num_frames, SPEEDS[0], short_side, task_rng)
        clip_j = decode_clip(path, num_frames, SPEEDS[1], short_side, task_rng)
        view_i = augment_fn(clip_i, view_i_config, tf.constant([task_seed, 0], tf.int64))
        view_j = augment_fn(clip_j, view_j_config, tf.constant([task_seed, 1], tf.int64))
        return view_i.numpy(), view_j.numpy()

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(sample, tasks[:warmup]))
        start = time.perf_counter()
        list(pool.map(sample, tasks[warmup:]))
        elapsed = time.perf_counter() - start
    return samples / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=REALCLIPS, help="folder searched for .mp4/.avi")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--tfdata_samples", type=int, default=96)
    parser.add_argument("--onthefly_samples", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--crop_size", type=int, default=112)
    parser.add_argument("--short_side", type=int, default=128)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    paths = find_videos(args.videos)
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        pattern = build_records(paths, output_dir, args.short_side)
        build_seconds = time.perf_counter() - start
        record_bytes = sum(os.path.getsize(p) for p in glob.glob(pattern))
        dataset = pipeline.pretrain_dataset(
            pattern,
            args.batch_size,
            num_frames=args.num_frames,
            crop_size=args.crop_size,
            speeds=SPEEDS,
            speed_mode="fixed",
            shuffle_buffer=len(paths),
        )
        clip_spec = tf.TensorSpec([args.num_frames, None, None, 3], tf.uint8)
        seed_spec = tf.TensorSpec([2], tf.int64)
        compiled = {
            config: tf.function(
                lambda clip, seed, config=config: augment.augment_clip(clip, config, args.crop_size, seed),
                input_signature=[clip_spec, seed_spec],
            )
            for config in augment.byol_views()
        }

        def augment_fn(clip, config, seed):
            return compiled[config](clip, seed)

        tfdata_rates, onthefly_rates = [], []
        for round_index in range(args.rounds):
            tfdata_rates.append(time_tfdata(dataset, args.batch_size, args.warmup, args.tfdata_samples))
            onthefly_rates.append(
                time_onthefly(
                    paths,
                    augment_fn,
                    args.num_frames,
                    args.short_side,
                    args.workers,
                    args.warmup,
                    args.onthefly_samples,
                    seed=round_index,
                )
            )

    tfdata = statistics.median(tfdata_rates)
    onthefly = statistics.median(onthefly_rates)
    print(
        json.dumps(
            {
                "bench": "input_pipeline",
                "tfdata_samples_per_s": round(tfdata, 2),
                "onthefly_samples_per_s": round(onthefly, 2),
                "ratio": round(tfdata / onthefly, 2),
                "tfdata_rounds": [round(r, 2) for r in tfdata_rates],
                "onthefly_rounds": [round(r, 2) for r in onthefly_rates],
                "videos": len(paths),
                "record_mb": round(record_bytes / 2**20, 1),
                "build_records_s": round(build_seconds, 1),
                "clip": [args.num_frames, args.crop_size, args.crop_size, 3],
                "speeds": list(SPEEDS),
                "batch_size": args.batch_size,
                "workers": args.workers,
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
