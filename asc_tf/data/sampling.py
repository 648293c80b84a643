"""Speed sampling: which frames of a video make a clip at playback speed s.

Playback speed is a frame stride. A clip of `num_frames` frames at speed s
starting at frame `start` holds frames

    start, start + s, start + 2s, ..., start + (num_frames - 1)·s

so it covers a span of (num_frames - 1)·s + 1 stored frames. The paper uses
speeds {1, 2, 4, 8} and pairs {S1, S2} of them (its Table 1c; {4, 8} is its
best).

Short videos loop: every index is taken modulo the video's frame count F, so a
video shorter than the span wraps around to its first frame instead of failing,
and a 1-frame video gives a static clip. Looping keeps the stride (the apparent
speed) exact at the cost of a jump at the wrap; repeating the last frame would
instead show a frozen tail, i.e. a clip slower than its label.

Every random draw here is stateless: the caller passes a `seed` ([2] int32 or
int64 tensor, as `tf.random.stateless_*` take it), so the same seed gives the
same frames.
"""

import tensorflow as tf

SPEED_MODES = ("random", "fixed")


def clip_span(num_frames, stride):
    """Number of stored frames a clip covers: (num_frames - 1)·stride + 1.

    Args:
      num_frames: int or scalar int32 tensor, T.
      stride: int or scalar int32 tensor, s >= 1.

    Returns:
      Same type as the inputs.
    """
    return (num_frames - 1) * stride + 1


def clip_indices(num_video_frames, num_frames, stride, start):
    """Frame indices of one clip, looping over short videos.

    Args:
      num_video_frames: scalar int32, F >= 1, frames stored for the video.
      num_frames: int, T, frames in the clip.
      stride: scalar int32, s >= 1, the playback speed.
      start: scalar int32, index of the clip's first frame.

    Returns:
      [T] int32: (start + s·t) mod F for t = 0..T-1.
    """
    steps = tf.range(num_frames, dtype=tf.int32) * tf.cast(stride, tf.int32)
    return tf.math.floormod(tf.cast(start, tf.int32) + steps, tf.cast(num_video_frames, tf.int32))


def random_start(num_video_frames, num_frames, stride, seed):
    """Uniform random first frame of a clip.

    When the video holds the whole span, start is uniform over [0, F - span],
    so the clip never wraps. When it is shorter, start is uniform over
    [0, F - 1] and the clip loops (see `clip_indices`): every frame is equally
    likely to open it.

    Args:
      num_video_frames: scalar int32, F >= 1.
      num_frames: int, T.
      stride: scalar int32, s.
      seed: [2] int32/int64, stateless seed.

    Returns:
      scalar int32.
    """
    num_video_frames = tf.cast(num_video_frames, tf.int32)
    room = num_video_frames - clip_span(num_frames, tf.cast(stride, tf.int32))
    high = tf.where(room >= 0, room + 1, num_video_frames)
    return tf.random.stateless_uniform([], seed=seed, minval=0, maxval=high, dtype=tf.int32)


def draw_speeds(speeds, mode, seed):
    """Playback speeds (s_i, s_j) of the two clips of one pretraining video.

    Args:
      speeds: sequence of ints, the speed set, e.g. (4, 8) for {S1, S2}.
      mode: 'random' draws s_i and s_j independently and uniformly from
        `speeds` per video, so s_i equals s_j or not (the paper, 3.1: "we also
        randomize the playback speed so that s_i can be equal or not to s_j").
        Anchors of several speeds in every batch are what make SCP's target
        depend on speed. 'fixed' gives s_i = speeds[0], s_j = speeds[1] always
        (an ablation; `speeds` must then have exactly two entries).
      seed: [2] int32/int64, stateless seed.

    Returns:
      (s_i, s_j), scalar int32 each.
    """
    speeds = [int(s) for s in speeds]
    if not speeds or min(speeds) < 1:
        raise ValueError(f"speeds must be positive strides, got {speeds}")
    if mode == "fixed":
        if len(speeds) != 2:
            raise ValueError(f"speed_mode='fixed' needs exactly two speeds (S1, S2), got {speeds}")
        return tf.constant(speeds[0], tf.int32), tf.constant(speeds[1], tf.int32)
    if mode != "random":
        raise ValueError(f"speed_mode must be one of {SPEED_MODES}, got {mode!r}")
    picks = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=len(speeds), dtype=tf.int32)
    chosen = tf.gather(tf.constant(speeds, tf.int32), picks)
    return chosen[0], chosen[1]


def uniform_starts(num_video_frames, num_frames, stride, num_clips):
    """Evaluation clip starts, spread evenly over the video.

    Starts are linspace(0, F - span, num_clips) rounded to the nearest frame, so
    the first clip opens the video and the last one closes it. One clip is
    centred. A video shorter than the span gives every clip start 0 (the clips
    then loop, see `clip_indices`).

    Args:
      num_video_frames: scalar int32, F >= 1.
      num_frames: int, T.
      stride: int, s.
      num_clips: int, N >= 1.

    Returns:
      [N] int32.
    """
    room = tf.maximum(tf.cast(num_video_frames, tf.int32) - clip_span(num_frames, stride), 0)
    room = tf.cast(room, tf.float32)
    if num_clips == 1:
        starts = tf.reshape(room / 2.0, [1])
    else:
        starts = tf.linspace(0.0, room, num_clips)
    return tf.cast(tf.floor(starts + 0.5), tf.int32)
