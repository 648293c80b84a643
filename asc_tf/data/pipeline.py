"""The tf.data pipelines: pretraining (two views), fine-tuning, evaluation.

Every pipeline reads TFRecord shards of SequenceExamples (ours or Model
Garden's, see `records`), samples frame indices on the still-encoded frames,
gathers only those JPEG strings and decodes them late (pretraining and
fine-tuning decode only the crop box), then augments and normalises
(`augment.normalize`). Elements are dicts of float32 clips ready for the model.

Reading order and sharding. Files are listed in sorted order. With a
`tf.distribute.InputContext`, each input pipeline (one per worker) takes every
n-th file; when there are fewer files than pipelines, every pipeline reads all
files and takes every n-th record instead (slower, since all bytes are read
everywhere, but never an error and never a lost or doubled record), with a
warning. Shuffling happens after sharding, so pipelines never overlap: each
epoch the file order is permuted, up to 8 files are read interleaved, and
the records are shuffled in blocks of `shuffle_buffer` (each block in a
random order of its own). Batches are per replica:
`ctx.get_per_replica_batch_size`.

Determinism and positions. Every random choice is stateless, drawn from
(seed, epoch) for the orders and from (seed, pipeline, position) for a
record's clips and augmentation, where a record's position is
epoch · EPOCH_STRIDE + its index in that epoch's order. So the same seed gives
the same tensors, whatever the parallelism and TensorFlow's global seed, and
epochs differ from each other. `start_position` rebuilds the stream from
there (the records before it are skipped unparsed), which is how a resumed
pretraining run continues exactly where it stopped (`with_position` puts the
position in each element). With `seed=None` a random seed is drawn per call
and files are read in whatever order they arrive (faster).

Robustness. A record that fails to parse, decode or sample (bad protobuf, bad
JPEG, no frames, frames of different sizes) is skipped, tf.data logs one
warning line for it ("Error raised with error message ...", from
`ignore_errors`), and `InputStats.records_skipped` counts it. Corrupt TFRecord
framing is different: the CRC check of the damaged record fails and
TensorFlow's reader cannot resynchronise inside that file, so the rest of
THAT file is skipped, the file is named on stderr and
`InputStats.shards_cut_short` counts it (the byte count read falls short of
the file size); the other files go on. Neither case crashes or hangs: a
repeated dataset whose records are all unusable ends instead of looping.
"""

import functools
import random
import sys

import tensorflow as tf
from absl import logging

from asc_tf.data import augment as augment_lib
from asc_tf.data import records, sampling

AUTOTUNE = tf.data.AUTOTUNE

# Records held for shuffling; a 10 s Kinetics video at short side 128 is ~1 MB
# of JPEGs, so the default buffer costs ~256 MB at most.
DEFAULT_SHUFFLE_BUFFER = 256
_READ_PARALLELISM = 8


def pretrain_dataset(
    file_pattern,
    batch_size,
    num_frames=16,
    crop_size=112,
    speeds=(4, 8),
    speed_mode="random",
    augment=None,
    third_view=False,
    seed=None,
    input_context=None,
    shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
    repeat=True,
    stats=None,
    start_position=0,
    with_position=False,
):
    """Two clips of each video at playback speeds s_i, s_j, augmented independently.

    Args:
      file_pattern: str glob, or list of globs / paths, of TFRecord shards.
      batch_size: int, global batch size (per replica when `input_context`
        is given: ctx.get_per_replica_batch_size(batch_size)).
      num_frames: int, T, frames per clip.
      crop_size: int, output height and width.
      speeds: ints, the speed set (frame strides); see `sampling.draw_speeds`.
      speed_mode: 'random' (s_i, s_j drawn independently per video from
        `speeds`) or 'fixed' (s_i = speeds[0], s_j = speeds[1]).
      augment: (AugmentConfig for view i, AugmentConfig for view j); default
        `augment.byol_views()`.
      third_view: also give 'view_k', a third clip of the same video at speed
        s_i with its own draws of view j's augmentation (it plays c_j's role, a
        target-network input): SCP's "same instance" ablation.
      seed: int or None; see the module docstring.
      input_context: tf.distribute.InputContext or None.
      shuffle_buffer: int, records held for shuffling.
      repeat: bool, loop over the data forever.
      stats: InputStats counting what is skipped, or None.
      start_position: int, start the stream at this record position (one
        past the last position a run consumed), for an exact resume.
      with_position: bool, add 'position' to every element.

    Returns:
      tf.data.Dataset of dicts (B = per-replica batch, remainder dropped):
        'view_i', 'view_j' (and 'view_k'): [B, T, crop, crop, 3] float32, normalised
        'speed_i', 'speed_j': [B] int32
        'video_id': [B] int64
        'label': [B] int64, -1 when unlabelled (diagnostics only)
        'position': [B] int64, with `with_position`: each record's place in
                    the stream (epoch · EPOCH_STRIDE + index; see `split_position`)
    """
    view_i_config, view_j_config = augment if augment is not None else augment_lib.byol_views()

    def make_element(serialized, element_seed):
        video = records.parse_sequence_example(serialized)
        seeds = tf.unstack(tf.random.experimental.stateless_split(element_seed, 4))
        speed_i, speed_j = sampling.draw_speeds(speeds, speed_mode, seeds[0])
        element = {
            "view_i": _train_clip(video, num_frames, speed_i, view_i_config, crop_size, seeds[1]),
            "view_j": _train_clip(video, num_frames, speed_j, view_j_config, crop_size, seeds[2]),
            "speed_i": speed_i,
            "speed_j": speed_j,
            "video_id": video["video_id"],
            "label": video["label"],
        }
        if third_view:
            element["view_k"] = _train_clip(video, num_frames, speed_i, view_j_config, crop_size, seeds[3])
        return element

    return _build(
        file_pattern,
        make_element,
        batch_size,
        seed=seed,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        repeat=repeat,
        drop_remainder=True,
        stats=stats,
        start_position=start_position,
        with_position=with_position,
    )


def finetune_dataset(
    file_pattern,
    batch_size,
    num_frames=16,
    crop_size=112,
    stride=1,
    augment=augment_lib.FINETUNE,
    seed=None,
    input_context=None,
    shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
    repeat=True,
    drop_remainder=True,
    stats=None,
):
    """One augmented clip per video with its label, for supervised training.

    Unlabelled videos (label -1) are left out.

    Args:
      file_pattern, batch_size, num_frames, crop_size, seed, input_context,
      shuffle_buffer, repeat, stats: as in `pretrain_dataset`.
      stride: int, fixed playback speed of the clip.
      augment: AugmentConfig; default `augment.FINETUNE` (crop, flip, light
        colour jitter).
      drop_remainder: bool, drop the last incomplete batch.

    Returns:
      tf.data.Dataset of dicts:
        'clip': [B, T, crop, crop, 3] float32, normalised
        'label': [B] int64
        'video_id': [B] int64
    """

    def make_element(serialized, element_seed):
        video = records.parse_sequence_example(serialized)
        return {
            "clip": _train_clip(video, num_frames, tf.constant(stride), augment, crop_size, element_seed),
            "label": video["label"],
            "video_id": video["video_id"],
        }

    return _build(
        file_pattern,
        make_element,
        batch_size,
        seed=seed,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        repeat=repeat,
        drop_remainder=drop_remainder,
        keep=lambda element: element["label"] >= 0,
        stats=stats,
    )


def eval_dataset(
    file_pattern,
    num_clips=10,
    crops=1,
    num_frames=16,
    stride=1,
    resize_short=128,
    crop_size=112,
    batch_size=None,
    input_context=None,
    stats=None,
):
    """Every clip of the test protocol, grouped by video.

    The paper's protocol: `num_clips` = 10 clips with starts spread uniformly
    over the video (`sampling.uniform_starts`), short side resized to
    `resize_short`, one centre crop (`crops=1`) or the three-crop protocol
    (`crops=3`). One element is one whole video, so a video-level prediction is
    a mean over the element's first axis, and no video is split across batches.
    Frames shared by several clips are decoded once.

    Args:
      file_pattern: as in `pretrain_dataset`.
      num_clips: int, N.
      crops: 1 or 3, C.
      num_frames, stride: T and the fixed playback speed.
      resize_short: int, short side before cropping (>= crop_size).
      crop_size: int.
      batch_size: None (one video per element) or int (videos per element; the
        last batch may be smaller).
      input_context: tf.distribute.InputContext or None.
      stats: InputStats counting what is skipped, or None.

    Returns:
      tf.data.Dataset of dicts, in file order, each video once:
        'clips': [N·C, T, crop, crop, 3] float32, normalised; clip n, crop c at
                 index n·C + c
        'label': scalar int64
        'video_id': scalar int64
      (with a leading batch axis when `batch_size` is set).
    """
    if crop_size > resize_short:
        raise ValueError(f"crop_size {crop_size} exceeds resize_short {resize_short}")
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")

    def make_element(serialized, _):
        video = records.parse_sequence_example(serialized)
        starts = sampling.uniform_starts(video["num_frames"], num_frames, stride, num_clips)
        indices = tf.map_fn(
            lambda start: sampling.clip_indices(video["num_frames"], num_frames, stride, start),
            starts,
        )
        unique, position = tf.unique(tf.reshape(indices, [-1]))
        frames = augment_lib.decode(tf.gather(video["frames"], unique))
        frames = augment_lib.resize_short_side(frames, resize_short)
        frames = augment_lib.spatial_crops(frames, crop_size, crops)  # [C, unique, h, w, 3]
        clips = tf.gather(frames, tf.reshape(position, [num_clips, num_frames]), axis=1)  # [C, N, T, ...]
        clips = tf.transpose(clips, [1, 0, 2, 3, 4, 5])
        clips = tf.reshape(clips, [num_clips * crops, num_frames, crop_size, crop_size, 3])
        return {
            "clips": augment_lib.normalize(clips),
            "label": video["label"],
            "video_id": video["video_id"],
        }

    return _build(
        file_pattern,
        make_element,
        batch_size,
        seed=0,
        input_context=input_context,
        shuffle_buffer=0,
        repeat=False,
        drop_remainder=False,
        stats=stats,
    )


def _train_clip(video, num_frames, stride, config, crop_size, seed):
    """One randomly placed, augmented, normalised clip: [T, crop, crop, 3] float32."""
    start_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    start = sampling.random_start(video["num_frames"], num_frames, stride, start_seed)
    indices = sampling.clip_indices(video["num_frames"], num_frames, stride, start)
    clip = augment_lib.augment_clip(tf.gather(video["frames"], indices), config, crop_size, augment_seed)
    clip = augment_lib.normalize(clip)
    clip.set_shape([num_frames, crop_size, crop_size, 3])
    return clip


class InputStats:
    """What an input pipeline skipped, counted as it reads: int64 variables on the host.

    `records_skipped`: records that failed to parse, decode or sample (each
    one skipped, the next one read). `shards_cut_short`: TFRecord files whose
    framing is damaged (a CRC mismatch: flipped bytes, a cut copy); TensorFlow's
    reader cannot resynchronise inside a file, so the rest of that file is
    skipped; the file is named on stderr. Counts are of records *read* by the
    pipeline, which runs a few batches ahead of the model. Create it outside
    any strategy scope and pass it to every dataset it should count.
    """

    def __init__(self):
        with tf.device("/cpu:0"):
            self.records_skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="records_skipped")
            self.shards_cut_short = tf.Variable(0, dtype=tf.int64, trainable=False, name="shards_cut_short")

    def as_dict(self):
        return {"records_skipped": int(self.records_skipped.numpy()),
                "shards_cut_short": int(self.shards_cut_short.numpy())}


class NoUsableClips(ValueError):
    """An input file pattern gave no clip at all: no records, or every record unreadable.

    `pattern` is the file pattern (None where only a dataset was seen), `counts`
    the `InputStats.as_dict()` of what was skipped (None where not counted).
    """

    def __init__(self, pattern=None, counts=None):
        skipped = describe_skipped(counts) if counts else ""
        where = pattern if pattern is not None else "the dataset"
        super().__init__(f"no usable clip in {where}" + (
            f": skipped {skipped}" if skipped else ": no records" if counts is not None else ""))
        self.pattern, self.counts = pattern, counts


def describe_skipped(counts):
    """`InputStats.as_dict()` -> one phrase for a log line, or "" when nothing was skipped."""
    if not any(counts.values()):
        return ""
    return (f"{counts['records_skipped']} unreadable records, {counts['shards_cut_short']} TFRecord files "
            "with damaged framing (the rest of each file skipped)")


# A record's position: epoch · EPOCH_STRIDE + its index in that epoch's (sharded, shuffled) record order.
EPOCH_STRIDE = 1 << 40


def split_position(position):
    """(epoch, index) of a position."""
    return position // EPOCH_STRIDE, position % EPOCH_STRIDE


@functools.cache
def _end_mark_record():
    """What an epoch's end mark is decoded as: a one-frame 16 x 16 video (built on first use, not at import)."""
    frame = bytes(tf.io.encode_jpeg(tf.zeros([16, 16, 3], tf.uint8)).numpy())
    return records.make_sequence_example([frame], -1, "", -1, 1.0, "").SerializeToString()


def _list_files(file_pattern):
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)})
    if not files:
        raise ValueError(f"no files match {file_pattern!r}")
    return files


def _build(
    file_pattern,
    make_element,
    batch_size,
    *,
    seed,
    input_context,
    shuffle_buffer,
    repeat,
    drop_remainder,
    keep=None,
    stats=None,
    start_position=0,
    with_position=False,
):
    """Files -> records (numbered, per epoch) -> elements -> batches.

    `make_element(serialized, element_seed)` maps one record ([] tf.string,
    [2] int64) to a dict of tensors with static shapes; any error in it skips
    the record (counted in `stats`).

    Every epoch is built from (seed, epoch), so the stream is a function of
    the seed alone, and `start_position` (a position from `with_position`
    elements, plus one) starts it exactly there: the epoch is rebuilt and the
    records before the position are skipped unparsed (their bytes are read
    once more, nothing is decoded).
    """
    files = _list_files(file_pattern)
    shard_records = False
    pipelines, pipeline_id = 1, 0
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) >= pipelines:
            files = files[pipeline_id::pipelines]
        else:
            logging.warning(
                "%d files for %d input pipelines: every pipeline reads all files "
                "and keeps every %d-th record",
                len(files),
                pipelines,
                pipelines,
            )
            shard_records = True
    if input_context is not None and batch_size is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    deterministic = seed is not None
    base_seed = seed if seed is not None else random.randrange(2**31)
    shuffle = shuffle_buffer > 0
    stats = stats if stats is not None else InputStats()
    # With record sharding every pipeline reads every file: one of them counts damaged files.
    count_cuts = not shard_records or pipeline_id == 0
    sizes = [tf.io.gfile.stat(path).length for path in files]
    start_epoch, start_index = split_position(int(start_position))
    element_seed_base = tf.constant([base_seed, pipeline_id], tf.int64)

    def seed_for(epoch, stage):
        """A stateless seed per (epoch, stage): Dataset.shuffle's seeds cannot be tensors under a global seed."""
        return tf.stack([tf.constant(base_seed, tf.int64), epoch * 4 + stage])

    def read_file(path, size):
        """(record, is_end, cut): the file's records, then one end mark saying whether bytes were left unread."""
        records = tf.data.TFRecordDataset(path).ignore_errors(log_warning=True).map(lambda r: (r, False))
        marked = records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True)))

        def count(read, item):
            record, is_end = item
            # A record on disk: 8-byte length, 4-byte CRC, data, 4-byte CRC.
            read = read + tf.where(is_end, tf.constant(0, tf.int64), tf.cast(tf.strings.length(record), tf.int64) + 16)
            return read, (record, is_end, is_end & (read != size), path)

        return marked.scan(tf.constant(0, tf.int64), count)

    def note_cut(record, is_end, cut, path):
        def report():
            with tf.control_dependencies([tf.print(
                "asc_tf: damaged TFRecord framing, rest of the file skipped:", path, output_stream=sys.stderr
            )]):
                return stats.shards_cut_short.assign_add(1)

        counted = tf.cond(cut & count_cuts, report, lambda: stats.shards_cut_short.read_value())
        with tf.control_dependencies([counted]):
            return tf.identity(record), is_end

    def epoch_records(epoch):
        """One epoch's records in order: (record, position, is_end), closed by an end mark."""
        order = tf.range(len(files))
        if shuffle and not shard_records:
            order = tf.random.experimental.stateless_shuffle(order, seed_for(epoch, 0))
        paths = tf.data.Dataset.from_tensor_slices(
            (tf.gather(tf.constant(files), order), tf.gather(tf.constant(sizes, tf.int64), order))
        )
        records = paths.interleave(
            read_file,
            cycle_length=min(len(files), _READ_PARALLELISM),
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            # Record sharding needs the same record order in every pipeline.
            deterministic=deterministic or shard_records,
        )
        records = records.map(note_cut).filter(lambda record, is_end: tf.logical_not(is_end))
        records = records.map(lambda record, is_end: record)
        if shard_records:
            records = records.shard(pipelines, pipeline_id)
        if shuffle:
            # Blocks of `shuffle_buffer` records, each in a random order of its own.
            records = records.batch(shuffle_buffer).enumerate().map(
                lambda block, chunk: tf.random.experimental.stateless_shuffle(
                    chunk, tf.random.experimental.stateless_fold_in(seed_for(epoch, 1), block)
                )
            ).unbatch()
        first = tf.where(epoch == start_epoch, tf.constant(start_index, tf.int64), tf.constant(0, tf.int64))
        records = records.skip(first).map(lambda record: (record, False))
        records = records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True)))

        def number(index, item):
            record, is_end = item
            position = epoch * EPOCH_STRIDE + index
            return index + tf.cast(tf.logical_not(is_end), tf.int64), (record, position, is_end)

        return records.scan(first, number)

    end_mark = tf.constant(_end_mark_record())

    def element(record, position, is_end):
        # An end mark goes through as a tiny valid record (its element is dropped below):
        # one code path, traced once.
        record = tf.where(is_end, end_mark, record)
        seed = tf.random.experimental.stateless_fold_in(element_seed_base, position)
        return make_element(record, seed), position, is_end

    def count_skipped(state, item):
        expected, kept, state_epoch = state
        made, position, is_end = item
        epoch, _ = split_position(position)
        new_epoch = epoch != state_epoch
        expected = tf.where(new_epoch, epoch * EPOCH_STRIDE, expected)
        kept = tf.where(new_epoch, tf.constant(0, tf.int64), kept)
        # Positions arrive in order: a gap is the records skipped just before this one.
        counted = stats.records_skipped.assign_add(position - expected)
        full_epoch = (epoch != start_epoch) | (start_index == 0)
        # An epoch without one usable record ends the stream instead of looping forever.
        stop = is_end & (kept == 0) & full_epoch
        with tf.control_dependencies([counted]):
            kept = kept + tf.cast(tf.logical_not(is_end), tf.int64)
        return (position + 1, kept, epoch), (made, position, is_end, stop)

    last_epoch = start_epoch + 1 if not repeat else 1 << 62
    dataset = tf.data.Dataset.range(start_epoch, last_epoch).flat_map(epoch_records)
    # Ordered even without a seed: the skip count above relies on it.
    dataset = dataset.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.ignore_errors(log_warning=True)
    start_state = (
        tf.constant(start_epoch * EPOCH_STRIDE + start_index, tf.int64),
        tf.constant(0, tf.int64),
        tf.constant(start_epoch, tf.int64),
    )
    dataset = dataset.scan(start_state, count_skipped)
    dataset = dataset.take_while(lambda made, position, is_end, stop: tf.logical_not(stop))
    dataset = dataset.filter(lambda made, position, is_end, stop: tf.logical_not(is_end))
    if with_position:
        dataset = dataset.map(lambda made, position, is_end, stop: {**made, "position": position})
    else:
        dataset = dataset.map(lambda made, position, is_end, stop: made)
    if keep is not None:
        dataset = dataset.filter(keep)
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    dataset = dataset.with_options(options)
    return dataset.prefetch(AUTOTUNE)
