"""The synthetic set: deterministic, balanced, and its label lives in the motion, not in any frame.

The classifiers are ridge regressions onto one-hot labels (closed form, NumPy),
fitted on the train split and scored on held-out test videos.

Raw frame differences are not linearly separable by direction: the object sits
anywhere, so the same motion lights up different pixels. The motion features
are therefore a fixed, label-agnostic transform of frame differences: the
correlation-type (Reichardt) motion detector, the correlation of consecutive
differences d_t = f_{t+1} - f_t at small shifts,
    C(delta) = sum_t sum_x d_t(x) d_{t+1}(x + delta),
which peaks at delta = the displacement per frame. The single-frame control
gets the same transform of one frame (its spatial autocorrelation at the same
shifts) plus its pixels at 8 x 8, so both sides have the same classifier and a
comparable number of features.
"""

import functools

import numpy as np
import pytest

from asc_tf.data import synthetic
from asc_tf.evaluation import probes


def _shift_correlation(a, b, reach):
    """Sum over n and x of a[n](x) b[n](x + delta) for |delta| <= reach, shifts wrapping around.

    a, b: [N, H, W] float. Returns [(2 reach + 1)^2], scaled to unit norm.
    """
    c = np.fft.irfft2(np.conj(np.fft.rfft2(a)) * np.fft.rfft2(b), s=a.shape[1:]).sum(0)
    c = np.roll(c, (reach, reach), axis=(0, 1))[:2 * reach + 1, :2 * reach + 1].ravel()
    return c / np.linalg.norm(c)


def _motion_energy(clip, reach=4):
    """Features of a clip [T, H, W, 3] uint8 from its frame differences: [(2 reach + 1)^2]."""
    differences = np.diff(clip.astype(np.float32).sum(-1), axis=0)
    return _shift_correlation(differences[:-1], differences[1:], reach)


def _single_frame_features(frame, reach=4):
    """Features of one frame [H, W, 3] uint8: its autocorrelation and its pixels at 8 x 8."""
    grey = frame.astype(np.float32).sum(-1)
    texture = _shift_correlation((grey - grey.mean())[None], (grey - grey.mean())[None], reach)
    h, w, _ = frame.shape
    pixels = frame.astype(np.float32).reshape(8, h // 8, 8, w // 8, 3).mean((1, 3)) / 255.0
    return np.concatenate([texture, pixels.ravel()])


@functools.lru_cache(maxsize=None)
def _videos(num_videos, split, num_frames, motion):
    return tuple(synthetic.videos(num_videos, split=split, seed=0, num_frames=num_frames,
                                  motion=motion))


def test_same_arguments_give_identical_bytes():
    first = synthetic.make_video(7, "train", 3, 8, 32, "pattern")
    second = synthetic.make_video(7, "train", 3, 8, 32, "pattern")
    assert first.frames.tobytes() == second.frames.tobytes()
    assert first._replace(frames=None) == second._replace(frames=None)


def test_video_does_not_depend_on_how_many_are_generated():
    alone = synthetic.make_video(5, "test", 1, 8, 32, "direction_speed")
    in_a_run = list(synthetic.videos(9, split="test", seed=1, num_frames=8, size=32))[5]
    np.testing.assert_array_equal(alone.frames, in_a_run.frames)
    assert alone.path == in_a_run.path == "synthetic/test/000005"


def test_shapes_dtypes_and_fields():
    video = synthetic.make_video(13, "train", 0, 12, 32, "direction_speed")
    assert video.frames.shape == (12, 32, 32, 3)
    assert video.frames.dtype == np.uint8
    assert video.label == 13 % 12 and video.label_text == "right_medium"
    assert video.fps == synthetic.FPS == 25.0
    default = next(synthetic.videos(1))
    assert default.frames.shape == (64, 64, 64, 3) and default.label_text == "right_slow"


def test_class_names_of_each_family():
    names = synthetic.class_names("direction_speed")
    assert len(names) == len(set(names)) == 12
    assert names[:3] == ["right_slow", "right_medium", "right_fast"] and names[-1] == "down_fast"
    assert synthetic.class_names() == names
    assert synthetic.class_names("pattern") == [
        "right", "left", "up", "down", "circle", "oscillation"]


@pytest.mark.parametrize("motion", synthetic.MOTIONS)
def test_labels_are_balanced_and_in_range(motion):
    names = synthetic.class_names(motion)
    run = list(synthetic.videos(3 * len(names), num_frames=2, size=16, motion=motion))
    labels = np.array([v.label for v in run])
    np.testing.assert_array_equal(np.bincount(labels, minlength=len(names)), 3)
    assert all(names[v.label] == v.label_text for v in run)


def test_splits_and_seeds_give_different_videos():
    train = synthetic.make_video(0, "train", 0, 4, 32, "pattern")
    test = synthetic.make_video(0, "test", 0, 4, 32, "pattern")
    other_seed = synthetic.make_video(0, "train", 1, 4, 32, "pattern")
    assert train.path != test.path
    # Not only the noise: the backgrounds (mean colours) differ by many grey levels.
    assert np.abs(train.frames.mean((0, 1, 2)) - test.frames.mean((0, 1, 2))).max() > 10
    assert np.abs(train.frames.mean((0, 1, 2)) - other_seed.frames.mean((0, 1, 2))).max() > 10


def test_unknown_split_or_motion_is_refused():
    with pytest.raises(ValueError, match="split"):
        synthetic.make_video(0, "training", 0, 2, 16, "pattern")
    with pytest.raises(ValueError, match="motion"):
        synthetic.class_names("zigzag")


@pytest.mark.parametrize("motion", synthetic.MOTIONS)
def test_label_is_in_the_motion_not_in_single_frames(motion):
    """Single random frames: chance. Frame differences of the same 16 frames: far above.

    240 train and 240 test videos. A classifier independent of the label is
    right with probability 1/C, so the bound is chance + 3 binomial standard
    deviations (13.7 % for 12 classes, 23.9 % for 6). Measured with seed 0:
    direction_speed single frames 8.8 %, frame differences 95.0 % (chance
    8.3 %); pattern single frames 16.3 %, frame differences 89.6 % (chance
    16.7 %; oscillation is the class it confuses). Seeds 1 and 2: 6.3-7.9 % vs
    97.5-98.3 %, and 13.8-19.6 % vs 92.5-94.6 %.
    """
    num_classes = len(synthetic.class_names(motion))
    features = {}
    for split in ("train", "test"):
        run = _videos(240, split, 16, motion)
        which = np.random.default_rng(7).integers(16, size=len(run))
        features[split] = (
            np.stack([_single_frame_features(v.frames[t]) for v, t in zip(run, which)]),
            np.stack([_motion_energy(v.frames) for v in run]),
            np.array([v.label for v in run]))
    labels = features["test"][2]
    accuracy = []
    for kind in (0, 1):
        predict = probes.ridge_classifier(features["train"][kind], features["train"][2], num_classes)
        accuracy.append(np.mean(predict(features["test"][kind]) == labels))
    chance = 1.0 / num_classes
    assert accuracy[0] < chance + 3.0 * np.sqrt(chance * (1.0 - chance) / len(labels)), accuracy
    assert accuracy[1] > 0.6, accuracy


@pytest.mark.parametrize("strides, at_least", [((1, 2), 0.85), ((1, 2, 3, 4), 0.7)])
def test_pattern_playback_stride_is_linearly_readable(strides, at_least):
    """The stride of a 16-frame clip (random start) is told by its motion energy (held-out videos).

    Every pattern object moves at PATTERN_SPEED, so the displacement per
    sampled frame is PATTERN_SPEED x stride; the demo's speed probe relies on
    it. 60 train and 60 test videos of 64 frames, one clip per stride each.
    Measured (seeds 0 and 1): strides 1 vs 2 96.7-97.5 %, strides 1-4
    90.8-92.1 % (chance 50 %, 25 %); strides 1 vs 4 98.3-99.2 %.
    """
    reach = int(np.ceil(synthetic.PATTERN_SPEED * max(strides))) + 1
    features = {}
    for split in ("train", "test"):
        starts = np.random.default_rng(3)
        x, y = [], []
        for video in _videos(60, split, 64, "pattern"):
            for k, stride in enumerate(strides):
                start = starts.integers(64 - 15 * stride)
                x.append(_motion_energy(video.frames[start:start + 15 * stride + 1:stride], reach))
                y.append(k)
        features[split] = (np.stack(x), np.array(y))
    predict = probes.ridge_classifier(*features["train"], len(strides))
    accuracy = np.mean(predict(features["test"][0]) == features["test"][1])
    assert accuracy >= at_least, accuracy


def test_background_pan_moves_the_whole_background_with_the_object(monkeypatch):
    """BACKGROUND_PAN = 1: frame t's background is frame 0's shifted by the object's path (exact on a torus)."""
    monkeypatch.setattr(synthetic, "NOISE_STD", 0.0)
    monkeypatch.setattr(synthetic, "BACKGROUND_PAN", 1.0)
    video = synthetic.make_video(0, "train", 0, 5, 32, "pattern")  # label 0: right, 2 px/frame of 64 = 1 px here
    assert video.label_text == "right"
    frames = video.frames.astype(np.float32)
    for t in range(1, 5):
        # a shift of t pixels to the right: every pixel equals frame 0's pixel t columns to the left
        error = np.abs(frames[t] - np.roll(frames[0], t, axis=1))
        assert np.median(error) <= 1.0, t
    monkeypatch.setattr(synthetic, "BACKGROUND_PAN", 0.0)
    still = synthetic.make_video(0, "train", 0, 5, 32, "pattern").frames.astype(np.float32)
    assert np.median(np.abs(still[4] - np.roll(still[0], 4, axis=1))) > 1.0  # the static background does not move


def test_background_mean_gives_every_video_the_same_mean_colour(monkeypatch):
    monkeypatch.setattr(synthetic, "NOISE_STD", 0.0)
    means = lambda mean=None: np.array([synthetic.make_video(i, "train", 0, 2, 64, "pattern", mean).frames[0]
                                        .mean((0, 1)) for i in range(12)])
    drawn = means()
    fixed = means(128.0)
    monkeypatch.setattr(synthetic, "BACKGROUND_MEAN", 128.0)  # the module's default, as the argument
    np.testing.assert_array_equal(means(), fixed)
    assert drawn.std(0).min() > 20.0  # drawn colours: the mean colour varies from video to video
    # fixed: only the object (10-20 px of 64, at least 80 grey levels away) moves the frame's mean
    assert np.abs(fixed - 128.0).max() < 20.0 and fixed.std(0).max() < 8.0
    # and the object keeps its contrast against the shifted background: where it was and has moved
    # away from, a pixel changes by at least OBJECT_CONTRAST (RGB distance)
    for i in range(12):
        frames = synthetic.make_video(i, "train", 0, 12, 64, "pattern", 128.0).frames.astype(np.float32)
        change = np.linalg.norm(frames[0] - frames[11], axis=-1).max()
        assert change >= 0.95 * synthetic.OBJECT_CONTRAST, (i, change)
