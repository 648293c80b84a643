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
warning. Shuffling (files, then records) happens after sharding, so pipelines
never overlap. Batches are per replica: `ctx.get_per_replica_batch_size`.

Determinism. With `seed` set, file order, record shuffle and every
augmentation draw are fixed, and parallel stages keep their order: the same
seed gives the same tensors. Each element gets its own stateless seed from a
seeded `Dataset.random` stream zipped after the shuffle, re-drawn every
epoch, so epochs differ from each other and the result does not depend on
parallelism. With `seed=None` the order is free (faster) and the draws differ
per run.

Robustness. A record that fails to parse, decode or sample (bad protobuf, bad
JPEG, no frames, frames of different sizes) is skipped and tf.data logs one
warning line per skipped record ("Error raised with error message ...", from
`ignore_errors`). Corrupt TFRecord framing is different: the CRC check of the
damaged record fails and the reader cannot resynchronise inside that file, so
the rest of THAT shard is skipped (one warning), and the other shards go on.
Neither case crashes or hangs: a repeated dataset whose records are all
unusable ends instead of looping. Warnings are C++ log lines, hidden when
TF_CPP_MIN_LOG_LEVEL >= 2.
"""

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

    Returns:
      tf.data.Dataset of dicts (B = per-replica batch, remainder dropped):
        'view_i', 'view_j' (and 'view_k'): [B, T, crop, crop, 3] float32, normalised
        'speed_i', 'speed_j': [B] int32
        'video_id': [B] int64
        'label': [B] int64, -1 when unlabelled (diagnostics only)
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
):
    """One augmented clip per video with its label, for supervised training.

    Unlabelled videos (label -1) are left out.

    Args:
      file_pattern, batch_size, num_frames, crop_size, seed, input_context,
      shuffle_buffer, repeat: as in `pretrain_dataset`.
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
):
    """Files -> records -> (serialized, element seed) -> elements -> batches.

    `make_element(serialized, element_seed)` maps one record ([] tf.string,
    [2] int64) to a dict of tensors; any error in it skips the record.
    """
    files = _list_files(file_pattern)
    shard_records = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) >= pipelines:
            files = files[index::pipelines]
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
    shuffle = shuffle_buffer > 0
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle and not shard_records:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # A corrupt record ends its file's reader (the CRC check cannot resync);
    # ignore_errors here keeps that from ending the whole pipeline.
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path).ignore_errors(log_warning=True),
        cycle_length=min(len(files), _READ_PARALLELISM),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        # Record sharding needs the same record order in every pipeline.
        deterministic=deterministic or shard_records,
    )
    if shard_records:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    element_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(dataset, element_seeds)
    dataset = dataset.map(make_element, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset = dataset.ignore_errors(log_warning=True)
    if keep is not None:
        dataset = dataset.filter(keep)
    if repeat:
        # Repeat last: an epoch with no usable record then ends the dataset
        # instead of looping forever, and each epoch re-draws shuffle and seeds.
        dataset = dataset.repeat()
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    dataset = dataset.with_options(options)
    return dataset.prefetch(AUTOTUNE)
