"""Clip-consistent augmentation, its test-time counterparts, and normalisation.

One random draw per clip, applied to every frame: a per-frame draw would make
a static scene flicker, which is itself a motion signal and would corrupt the
speed task. The recipe is BYOL's (Grill et al. 2020, table 6), per clip:

  random resized crop  one box; area fraction in `crop_scale`, aspect ratio
                       (w/h) log-uniform in 3/4..4/3, up to 10 tries, else a
                       centre crop (torchvision's RandomResizedCrop rule).
                       Scale (0.2, 1.0) rather than BYOL's 0.08: our frames are
                       stored at short side 128, and 8 % of that is a 36-pixel
                       source blown up 3x to 112.
  horizontal flip      p = 0.5
  colour jitter        p = 0.8; brightness 0.4, contrast 0.4, saturation 0.2,
                       hue 0.1, in torchvision's meaning (a factor in
                       [1 - x, 1 + x], hue a shift in [-x, x] of a turn),
                       applied in a random order per clip as BYOL does, values
                       clipped to [0, 1] after each. Contrast pivots on the mean
                       grey level of the whole clip, so one factor means one
                       transform for all frames.
  grayscale            p = 0.2
  Gaussian blur        view i p = 1.0, view j p = 0.1; sigma in [0.1, 2.0];
                       kernel 10 % of the crop size (odd), reflect padding.
  solarisation         view i p = 0.0, view j p = 0.2; invert values >= 0.5.

Every step is a probability in `AugmentConfig`, so switching one off is
setting it to 0 (`byol_views` does that for the paper's Table 1e).

All randomness is stateless (`tf.random.stateless_*`) from one [2] seed per
clip, split inside, so a seed fixes the clip. No Keras layers: they cannot be
built inside `Dataset.map`, and `RandomColorJitter` draws per frame.
"""

import dataclasses
import math

import tensorflow as tf

# Kinetics-400 per-channel RGB statistics on [0, 1] values, as torchvision's
# video models (r3d_18, r2plus1d_18, s3d) use them, so their weights could be
# ported without changing the input.
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_CROP_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """One view's augmentation; every `*_prob` = 0 switches that step off."""

    crop_scale: tuple = (0.2, 1.0)
    crop_ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple = (0.1, 2.0)
    solarize_prob: float = 0.0


# BYOL's asymmetric pair: view i always blurred, never solarised; view j rarely
# blurred, sometimes solarised.
VIEW_I = AugmentConfig(blur_prob=1.0, solarize_prob=0.0)
VIEW_J = AugmentConfig(blur_prob=0.1, solarize_prob=0.2)

# Fine-tuning: crop and flip as in pretraining but a milder crop, lighter colour
# jitter, no grayscale, blur or solarisation; labelled training wants the class
# evidence intact, not invariances.
FINETUNE = AugmentConfig(
    crop_scale=(0.3, 1.0),
    brightness=0.2,
    contrast=0.2,
    saturation=0.2,
    hue=0.05,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)


def byol_views(color_jitter=True, blur=True, grayscale=True, solarize=True, flip=True, crop_scale=None):
    """The pretraining view pair (VIEW_I, VIEW_J) with whole steps switched off.

    The paper's Table 1e stacks colour jitter, + blur, + grayscale,
    + solarisation; e.g. its first row is
    `byol_views(blur=False, grayscale=False, solarize=False)`. `flip=False`
    is for data whose classes a mirror image changes (the synthetic set's
    "left" and "right"): the views are flipped independently, so ACP would
    teach the encoder that left and right are the same. `crop_scale`
    (min, max area fraction) replaces both views' (0.2, 1.0).

    Returns:
      (AugmentConfig for view i, AugmentConfig for view j).
    """

    def switch(config):
        return dataclasses.replace(
            config,
            jitter_prob=config.jitter_prob if color_jitter else 0.0,
            blur_prob=config.blur_prob if blur else 0.0,
            grayscale_prob=config.grayscale_prob if grayscale else 0.0,
            solarize_prob=config.solarize_prob if solarize else 0.0,
            flip_prob=config.flip_prob if flip else 0.0,
            crop_scale=tuple(crop_scale) if crop_scale else config.crop_scale,
        )

    return switch(VIEW_I), switch(VIEW_J)


def normalize(clip):
    """The model's input normalisation; the only place it is defined.

    Args:
      clip: [..., 3] uint8, or float with values in [0, 255].

    Returns:
      [..., 3] float32, (clip / 255 - MEAN) / STD.
    """
    clip = tf.cast(clip, tf.float32) / 255.0
    return (clip - tf.constant(MEAN, tf.float32)) / tf.constant(STD, tf.float32)


def denormalize(clip):
    """Inverse of `normalize`, for pictures.

    Args:
      clip: [..., 3] float32, normalised.

    Returns:
      [..., 3] uint8.
    """
    clip = clip * tf.constant(STD, tf.float32) + tf.constant(MEAN, tf.float32)
    return tf.cast(tf.round(tf.clip_by_value(clip, 0.0, 1.0) * 255.0), tf.uint8)


def decode(jpegs, window=None):
    """Decodes a clip's frames, optionally only inside a crop window.

    Args:
      jpegs: [T] tf.string, one JPEG per frame.
      window: None, or [4] int32 (y, x, height, width): decode only this box
        (`decode_and_crop_jpeg` skips the rest of the image).

    Returns:
      [T, H, W, 3] uint8 (H, W the window's size when given), the same pixels
      as a full decode followed by the crop.
    """
    if window is None:
        fn = lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3)
        return tf.map_fn(fn, jpegs, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    # libjpeg upsamples subsampled chroma from the neighbouring column; at a
    # cropped edge it has none and the edge column's colour drifts (up to ~15
    # levels). A one-column margin each side, cut off after, makes the pixels exact.
    y, x, height, width = tf.unstack(window)
    image_width = tf.io.extract_jpeg_shape(jpegs[0])[1]
    left = tf.maximum(x - 1, 0)
    right = tf.minimum(x + width + 1, image_width)
    wide = tf.stack([y, left, height, right - left])
    fn = lambda jpeg: tf.io.decode_and_crop_jpeg(jpeg, wide, channels=3)
    frames = tf.map_fn(fn, jpegs, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return frames[:, :, x - left : x - left + width]


def random_crop_window(image_size, scale, ratio, seed):
    """Random resized crop box, torchvision's rule.

    Up to 10 tries of area fraction ~ U(scale), aspect ratio w/h log-uniform in
    `ratio`; the first box that fits is placed uniformly in the image. If none
    fits, the largest centred box with the ratio clamped into `ratio`.

    Args:
      image_size: [2] int32 (height, width).
      scale: (min, max) fraction of the image area.
      ratio: (min, max) width / height.
      seed: [2] int32/int64, stateless seed.

    Returns:
      [4] int32 (y, x, height, width).
    """
    area_seed, ratio_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    height = tf.cast(image_size[0], tf.float32)
    width = tf.cast(image_size[1], tf.float32)
    area = height * width * tf.random.stateless_uniform([_CROP_ATTEMPTS], area_seed, scale[0], scale[1])
    log_ratio = tf.random.stateless_uniform(
        [_CROP_ATTEMPTS], ratio_seed, math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = tf.exp(log_ratio)
    box_w = tf.round(tf.sqrt(area * aspect))
    box_h = tf.round(tf.sqrt(area / aspect))
    fits = (box_w >= 1) & (box_h >= 1) & (box_w <= width) & (box_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    # The fallback when no try fits: the whole image, trimmed to the ratio range.
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fallback_h = tf.where(image_ratio < ratio[0], tf.round(width / ratio[0]), height)
    any_fits = tf.reduce_any(fits)
    box_h = tf.where(any_fits, box_h[first], fallback_h)
    box_w = tf.where(any_fits, box_w[first], fallback_w)

    y_room = height - box_h + 1.0
    x_room = width - box_w + 1.0
    y_random = tf.floor(tf.random.stateless_uniform([], y_seed) * y_room)
    x_random = tf.floor(tf.random.stateless_uniform([], x_seed) * x_room)
    y = tf.where(any_fits, y_random, tf.floor((y_room - 1.0) / 2))
    x = tf.where(any_fits, x_random, tf.floor((x_room - 1.0) / 2))
    return tf.cast(tf.stack([y, x, box_h, box_w]), tf.int32)


def augment_clip(clip, config, crop_size, seed):
    """Clip-consistent augmentation: one draw, every frame.

    Args:
      clip: either [T] tf.string, one JPEG per frame (decoded here, and only
        inside the crop box), or [T, H, W, 3] uint8 frames already decoded.
      config: AugmentConfig.
      crop_size: int, output height and width.
      seed: [2] int32/int64, stateless seed for this clip.

    Returns:
      [T, crop_size, crop_size, 3] float32 with values in [0, 255].
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    crop_seed, flip_seed, jitter_seed, gray_seed, blur_seed, solarize_seed = seeds
    if clip.dtype == tf.string:
        window = random_crop_window(
            tf.io.extract_jpeg_shape(clip[0])[:2], config.crop_scale, config.crop_ratio, crop_seed
        )
        frames = decode(clip, window)
    else:
        window = random_crop_window(tf.shape(clip)[1:3], config.crop_scale, config.crop_ratio, crop_seed)
        frames = clip[:, window[0] : window[0] + window[2], window[1] : window[1] + window[3]]
    frames = tf.image.resize(frames, [crop_size, crop_size], method="bilinear", antialias=True)
    frames = tf.clip_by_value(frames / 255.0, 0.0, 1.0)

    frames = _maybe(config.flip_prob, flip_seed, lambda x, _: tf.reverse(x, axis=[2]), frames)
    frames = _maybe(config.jitter_prob, jitter_seed, lambda x, s: _color_jitter(x, config, s), frames)
    frames = _maybe(config.grayscale_prob, gray_seed, lambda x, _: _grayscale(x), frames)
    frames = _maybe(
        config.blur_prob, blur_seed, lambda x, s: _blur(x, config.blur_sigma, crop_size, s), frames
    )
    frames = _maybe(config.solarize_prob, solarize_seed, lambda x, _: tf.where(x < 0.5, x, 1.0 - x), frames)
    frames = frames * 255.0
    frames.set_shape([None, crop_size, crop_size, 3])
    return frames


def _maybe(prob, seed, transform, clip):
    """Applies `transform(clip, seed)` with probability `prob` (one coin per clip)."""
    if prob <= 0.0:
        return clip
    coin_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if prob >= 1.0:
        return transform(clip, op_seed)
    apply = tf.random.stateless_uniform([], coin_seed) < prob
    return tf.cond(apply, lambda: transform(clip, op_seed), lambda: clip)


def _gray(clip):
    """[..., 3] float -> [..., 1] luma."""
    return tf.reduce_sum(clip * tf.constant(_GRAY_WEIGHTS, clip.dtype), axis=-1, keepdims=True)


def _grayscale(clip):
    return tf.tile(_gray(clip), [1] * (clip.shape.rank - 1) + [3])


def _color_jitter(clip, config, seed):
    """Brightness, contrast, saturation, hue with one factor each, random order."""
    factor_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    spreads = (config.brightness, config.contrast, config.saturation)
    low = tf.constant([max(0.0, 1.0 - spread) for spread in spreads] + [-config.hue])
    high = tf.constant([1.0 + spread for spread in spreads] + [config.hue])
    factors = low + (high - low) * tf.random.stateless_uniform([4], factor_seed)
    order = tf.argsort(tf.random.stateless_uniform([4], order_seed))

    def brightness(x):
        return x * factors[0]

    def contrast(x):
        mean = tf.reduce_mean(_gray(x))
        return (x - mean) * factors[1] + mean

    def saturation(x):
        gray = _gray(x)
        return gray + (x - gray) * factors[2]

    def hue(x):
        return tf.image.adjust_hue(x, factors[3])

    ops = (brightness, contrast, saturation, hue)
    for step in range(4):
        branches = [lambda op=op, x=clip: tf.clip_by_value(op(x), 0.0, 1.0) for op in ops]
        clip = tf.switch_case(order[step], branches)
    return clip


def _blur(clip, sigma_range, crop_size, seed):
    """Separable Gaussian blur, kernel ~10 % of the crop, reflect-padded."""
    radius = max(1, int(round(0.1 * crop_size)) // 2)
    sigma = tf.random.stateless_uniform([], seed, sigma_range[0], sigma_range[1])
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = kernel / tf.reduce_sum(kernel)
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    padded = tf.pad(clip, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], "VALID")


def protocol_resize_short(crop_size):
    """The short side evaluation resizes to before a `crop_size` centre crop: the paper's 128 for 112, in that ratio."""
    return int(round(crop_size * 128 / 112))


def resize_short_side(clip, size):
    """Test-time resize keeping the aspect ratio.

    Args:
      clip: [T, H, W, 3] uint8 or float.
      size: int, the new length of the shorter side.

    Returns:
      [T, H', W', 3] float32 in the input's value range, min(H', W') = size.
    """
    shape = tf.cast(tf.shape(clip)[1:3], tf.float32)
    new_shape = tf.cast(tf.round(shape * (size / tf.reduce_min(shape))), tf.int32)
    new_shape = tf.maximum(new_shape, size)
    return tf.image.resize(clip, new_shape, method="bilinear", antialias=True)


def spatial_crops(clip, crop_size, num_crops):
    """Test-time crops: the centre, or the three-crop protocol.

    Three crops are square boxes at the start, centre and end of the longer
    side, centred on the shorter side (left/centre/right for landscape video,
    top/centre/bottom for portrait).

    Args:
      clip: [T, H, W, 3], H and W >= crop_size.
      crop_size: int.
      num_crops: 1 or 3.

    Returns:
      [num_crops, T, crop_size, crop_size, 3], same dtype.
    """
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    height, width = tf.shape(clip)[1], tf.shape(clip)[2]
    centre_y = (height - crop_size) // 2
    centre_x = (width - crop_size) // 2
    if num_crops == 1:
        boxes = [(centre_y, centre_x)]
    else:
        landscape = width >= height
        starts_y = (0, centre_y, height - crop_size)
        starts_x = (0, centre_x, width - crop_size)
        boxes = [
            (tf.where(landscape, centre_y, y), tf.where(landscape, x, centre_x))
            for y, x in zip(starts_y, starts_x)
        ]
    crops = [clip[:, y : y + crop_size, x : x + crop_size] for y, x in boxes]
    return tf.stack(crops)
