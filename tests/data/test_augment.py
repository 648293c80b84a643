import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from asc_tf.data import augment

# Every step on, so that consistency is checked for each of them.
EVERYTHING = augment.AugmentConfig(
    flip_prob=1.0, jitter_prob=1.0, grayscale_prob=0.0, blur_prob=1.0, solarize_prob=1.0
)
NOTHING = augment.AugmentConfig(
    crop_scale=(1.0, 1.0),
    crop_ratio=(4.0 / 3.0, 4.0 / 3.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)


def _seed(n):
    return tf.constant([n, 3], tf.int64)


def _texture(height=48, width=64, seed=0):
    """A smooth random picture, [H, W, 3] uint8 (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.float32)
    return tf.cast(tf.image.resize(coarse[None], [height, width])[0], tf.uint8).numpy()


def _static_clip(frames=6, **kwargs):
    return np.repeat(_texture(**kwargs)[None], frames, axis=0)


def test_normalize_uses_the_module_statistics():
    clip = tf.constant([[[[0, 128, 255]]]], tf.uint8)
    expected = (np.array([0, 128, 255]) / 255.0 - np.array(augment.MEAN)) / np.array(augment.STD)
    np.testing.assert_allclose(augment.normalize(clip).numpy()[0, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(augment.normalize(tf.cast(clip, tf.float32)), augment.normalize(clip))
    assert augment.normalize(clip).dtype == tf.float32


def test_denormalize_inverts_normalize():
    clip = tf.constant(_static_clip(2))
    np.testing.assert_array_equal(augment.denormalize(augment.normalize(clip)).numpy(), clip.numpy())


@pytest.mark.parametrize("config", [EVERYTHING, augment.VIEW_I, augment.VIEW_J, augment.FINETUNE])
def test_static_clip_stays_static_after_augmentation(config):
    for n in range(4):
        out = augment.augment_clip(tf.constant(_static_clip()), config, 32, _seed(n)).numpy()
        assert out.shape == (6, 32, 32, 3)
        np.testing.assert_allclose(out, np.repeat(out[:1], 6, axis=0), atol=1e-5)


def test_grayscale_gives_equal_channels_on_every_frame():
    config = dataclasses.replace(EVERYTHING, grayscale_prob=1.0, solarize_prob=0.0)
    out = augment.augment_clip(tf.constant(_static_clip()), config, 32, _seed(0)).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-3)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-3)


def test_two_views_of_one_clip_differ():
    clip = tf.constant(_static_clip())
    view_i = augment.augment_clip(clip, augment.VIEW_I, 32, _seed(1)).numpy()
    view_j = augment.augment_clip(clip, augment.VIEW_J, 32, _seed(2)).numpy()
    assert np.abs(view_i - view_j).mean() > 5.0


def test_same_seed_same_clip_other_seed_other_clip():
    clip = tf.constant(_static_clip())
    a = augment.augment_clip(clip, augment.VIEW_J, 32, _seed(5)).numpy()
    b = augment.augment_clip(clip, augment.VIEW_J, 32, _seed(5)).numpy()
    c = augment.augment_clip(clip, augment.VIEW_J, 32, _seed(6)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0


def test_jpeg_input_matches_decoded_input():
    # Decoding only the crop box gives the same pixels as cropping after decode.
    frames = np.stack([_texture(seed=k) for k in range(4)])
    jpegs = tf.stack([tf.io.encode_jpeg(f, quality=90) for f in frames])
    decoded = augment.decode(jpegs)
    for n in range(3):
        from_jpeg = augment.augment_clip(jpegs, augment.VIEW_J, 32, _seed(n))
        from_frames = augment.augment_clip(decoded, augment.VIEW_J, 32, _seed(n))
        np.testing.assert_allclose(from_jpeg.numpy(), from_frames.numpy(), atol=1e-3)


def test_nothing_config_only_resizes():
    clip = tf.constant(_static_clip(2))
    out = augment.augment_clip(clip, NOTHING, 32, _seed(0))
    expected = tf.image.resize(clip, [32, 32], antialias=True)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-3)


def test_flip_mirrors_the_clip():
    clip = tf.constant(_static_clip(2))
    out = augment.augment_clip(clip, dataclasses.replace(NOTHING, flip_prob=1.0), 32, _seed(0))
    expected = tf.image.resize(clip, [32, 32], antialias=True)[:, :, ::-1]
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-3)


def test_solarize_inverts_the_bright_half():
    clip = tf.constant(np.full((2, 40, 40, 3), [40, 200, 128], np.uint8))
    out = augment.augment_clip(clip, dataclasses.replace(NOTHING, solarize_prob=1.0), 32, _seed(0))
    np.testing.assert_allclose(out.numpy()[0, 0, 0], [40, 55, 127], atol=1e-3)


def test_probabilities_are_per_clip_rates():
    # Flip at p = 0.5 over many clips: about half are mirrored.
    clip = tf.constant(_static_clip(1))
    plain = tf.image.resize(clip, [32, 32], antialias=True).numpy()
    config = dataclasses.replace(NOTHING, flip_prob=0.5)
    flipped = [
        not np.allclose(augment.augment_clip(clip, config, 32, _seed(n)).numpy(), plain, atol=1e-3)
        for n in range(100)
    ]
    assert 35 <= sum(flipped) <= 65


def test_crop_windows_fit_and_follow_scale_and_ratio():
    for n in range(200):
        window = augment.random_crop_window(tf.constant([120, 160]), (0.2, 1.0), (0.75, 4 / 3), _seed(n))
        y, x, h, w = window.numpy()
        assert 0 <= y and y + h <= 120 and 0 <= x and x + w <= 160
        assert 0.19 <= h * w / (120 * 160) <= 1.0
        assert 0.74 <= w / h <= 1.35


def test_crop_window_falls_back_to_a_centred_box():
    # No 2:1 box of the full area fits a square image: fall back to the
    # whole width, height trimmed to the ratio, centred.
    window = augment.random_crop_window(tf.constant([100, 100]), (1.0, 1.0), (2.0, 2.0), _seed(0))
    np.testing.assert_array_equal(window.numpy(), [25, 0, 50, 100])


def test_byol_views_switch_whole_steps_off_in_both_views():
    view_i, view_j = augment.byol_views(blur=False, solarize=False)
    assert (view_i.blur_prob, view_j.blur_prob, view_i.solarize_prob, view_j.solarize_prob) == (0, 0, 0, 0)
    assert (view_i.jitter_prob, view_j.grayscale_prob) == (0.8, 0.2)
    view_i, view_j = augment.byol_views()
    probs = (view_i.blur_prob, view_j.blur_prob, view_i.solarize_prob, view_j.solarize_prob)
    assert probs == (1.0, 0.1, 0.0, 0.2)
    assert (view_i.flip_prob, view_j.flip_prob, view_i.crop_scale) == (0.5, 0.5, (0.2, 1.0))
    view_i, view_j = augment.byol_views(flip=False, crop_scale=[0.5, 1.0])
    assert (view_i.flip_prob, view_j.flip_prob) == (0.0, 0.0)
    assert view_i.crop_scale == view_j.crop_scale == (0.5, 1.0)


def test_resize_short_side_keeps_aspect():
    out = augment.resize_short_side(tf.zeros([2, 60, 80, 3], tf.uint8), 30)
    assert out.shape == (2, 30, 40, 3)
    out = augment.resize_short_side(tf.zeros([2, 80, 60, 3], tf.uint8), 30)
    assert out.shape == (2, 40, 30, 3)


@pytest.mark.parametrize("height, width", [(4, 10), (10, 4)])
def test_three_crops_run_along_the_longer_side(height, width):
    # Pixel value = its position along the longer side.
    ramp = np.arange(max(height, width), dtype=np.float32)
    picture = np.broadcast_to(ramp[None, :] if width > height else ramp[:, None], (height, width))
    clip = tf.constant(np.repeat(picture[None, :, :, None], 3, axis=3))
    crops = augment.spatial_crops(clip, 4, 3).numpy()
    assert crops.shape == (3, 1, 4, 4, 3)
    firsts = [c[0, 0, 0, 0] for c in crops]
    assert firsts == [0.0, 3.0, 6.0]
    centre = augment.spatial_crops(clip, 4, 1).numpy()
    np.testing.assert_array_equal(centre[0], crops[1])
