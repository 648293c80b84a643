"""The embedded synthetic video set: the label is in the motion; the appearance is drawn apart.

Every video is a static background and one moving object, with fresh pixel noise
in every frame:

  background  smooth periodic low-frequency noise, mixed between two random
              colours that differ by at most BACKGROUND_CONTRAST per channel;
  object      a disc, square, diamond or triangle, randomly rotated, 10-20 px
              across (on 64 px), of a random colour at least OBJECT_CONTRAST
              away (RGB distance) from every background colour, so the object
              is always visible; drawn with anti-aliased edges at sub-pixel
              positions;
  noise       Gaussian, NOISE_STD grey levels, independent per pixel and frame.

Two switches, off by default (the set as it was): `background_mean=` (or the
module's BACKGROUND_MEAN) gives every video's background the same mean colour
(its texture keeps the video's two colours' difference), and BACKGROUND_PAN
moves the background with the object (0 still, 1 the whole scene moves with
it). With the mean colour drawn per video, a small 3D CNN does not find the
motion at all; with it fixed, it does (docs/experiments.md, "The cause: each
video's mean colour"). The demo (tools.demo) renders the set at
background_mean=128.

The appearance (background, shape, size, colour, start position) is drawn from
its own random stream, before and independently of the motion, and the label is
`index % num_classes`: a single frame says nothing about the label; only motion
does. Every length is given for 64 px frames and scales with `size`.

Two motion families (`motion=`):

  "direction_speed"  4 directions x 3 speeds = 12 classes, "right_slow" ...
                     "down_fast"; DIRECTION_SPEEDS pixels per frame. The
                     requested default. Its speed classes are confounded with
                     the playback stride: "slow" at stride 2 is "medium" at
                     stride 1.
  "pattern"          6 classes: right, left, up, down, circle (radius 10-16 px,
                     either sense), oscillation (back and forth along a
                     horizontal or vertical axis, turning every 6-10 frames);
                     every object moves at the one natural speed
                     PATTERN_SPEED, so the apparent speed of a clip tells its
                     playback stride, as in real video. The demo's family.
                     (Small runs on it, supervised ones included, found no
                     motion: each video's mean colour, drawn anywhere,
                     hides it from a network at initialisation, unless
                     BACKGROUND_MEAN fixes it; docs/experiments.md, "The
                     synthetic demo: experiment log" and "The positive
                     control".)

The same (seed, split, index) gives the same appearance in both families.

Borders wrap around (the frame is a torus); objects do not bounce. A bounce
reverses the direction, so a clip taken after the bounce of a "right" video
would show a "left" motion and the label would not be recoverable from a clip.
With wrap-around every clip (16 frames at strides 1-4 included) shows its
video's labelled motion at a constant speed. Oscillations turn every 6-10
frames so that every 16-frame clip at stride 1 contains a turn and cannot be
mistaken for a straight motion.

PATTERN_SPEED = 2 px/frame: strides 1, 2, 3, 4 give 2, 4, 6, 8 px per sampled
frame, each apart from the next by more than a pixel; even at stride 4 the
step stays below the object's size (10-20 px) on most shapes, so a 16-frame clip
at stride 4 (61 frames, about two laps of the frame) still shows one continuous
motion.
"""

from typing import Iterator, NamedTuple

import numpy as np

FPS = 25.0
REFERENCE_SIZE = 64  # every length below is in pixels of a 64 x 64 frame

DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
DIRECTION_SPEEDS = {"slow": 1.0, "medium": 2.0, "fast": 3.0}  # pixels per frame
PATTERNS = ("right", "left", "up", "down", "circle", "oscillation")
PATTERN_SPEED = 2.0  # pixels per frame, for every object of the "pattern" family
CIRCLE_RADIUS = (10.0, 16.0)
# Half the path of an oscillation: a turn every 2 * amplitude / PATTERN_SPEED = 6-10 frames.
OSCILLATION_AMPLITUDE = (6.0, 10.0)
OBJECT_SIZE = (10.0, 20.0)
SHAPES = ("disc", "square", "diamond", "triangle")
# None: the background's colours are drawn anywhere in the RGB cube; a grey level: the
# background is shifted so that its mean colour is that grey in every video.
BACKGROUND_MEAN = None
BACKGROUND_CONTRAST = 90.0  # grey levels, largest per-channel gap of the two background colours
OBJECT_CONTRAST = 80.0  # grey levels, smallest RGB distance of the object to the background colours
NOISE_STD = 4.0  # grey levels
BACKGROUND_CYCLES = 4  # the background holds frequencies below this many cycles per frame
# The background's displacement as a fraction of the object's: 0 a static background,
# 1 the whole scene moves with the object (a camera following the labelled motion).
BACKGROUND_PAN = 0.0
SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
MOTIONS = ("direction_speed", "pattern")

# Independent random streams of one video.
_APPEARANCE, _MOTION, _NOISE = 0, 1, 2


class SyntheticVideo(NamedTuple):
    path: str  # "synthetic/train/000123": unique within a dataset, stable across runs
    frames: np.ndarray  # [T, H, W, 3] uint8
    label: int
    label_text: str
    fps: float


def class_names(motion: str = "direction_speed") -> list[str]:
    """The label texts of `motion`, indexed by label."""
    if motion == "direction_speed":
        return [f"{d}_{s}" for d in DIRECTIONS for s in DIRECTION_SPEEDS]
    if motion == "pattern":
        return list(PATTERNS)
    raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")


def videos(num_videos: int, split: str = "train", seed: int = 0, num_frames: int = 64,
           size: int = 64, motion: str = "direction_speed",
           background_mean: float | None = None) -> Iterator[SyntheticVideo]:
    """Videos 0 .. num_videos - 1 of a split; labels cycle through the classes (balanced)."""
    for index in range(num_videos):
        yield make_video(index, split, seed, num_frames, size, motion, background_mean)


def make_video(index: int, split: str, seed: int, num_frames: int, size: int,
               motion: str, background_mean: float | None = None) -> SyntheticVideo:
    """Video `index` of a split: a function of its arguments only.

    `background_mean`: a grey level, every video's mean background colour;
    None: the module's BACKGROUND_MEAN (None there: drawn per video).
    Returns a SyntheticVideo with frames [num_frames, size, size, 3] uint8.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
    names = class_names(motion)
    label = index % len(names)
    scale = size / REFERENCE_SIZE

    def stream(purpose):
        return np.random.default_rng([seed, SPLIT_IDS[split], index, purpose])

    appearance = stream(_APPEARANCE)
    first = appearance.uniform(0.0, 255.0, 3)
    gap = appearance.uniform(-BACKGROUND_CONTRAST, BACKGROUND_CONTRAST, 3)
    second = np.clip(first + gap, 0.0, 255.0)
    spectrum = _background_spectrum(appearance, size)
    mean = BACKGROUND_MEAN if background_mean is None else background_mean
    if mean is not None:  # the same mean colour in every video: no colour offset to learn
        offset = mean - (first + _unit_field(spectrum).mean() * (second - first))
        first, second = first + offset, second + offset  # within mean +- BACKGROUND_CONTRAST
    colour = _object_colour(appearance, first, second)
    shape = SHAPES[appearance.integers(len(SHAPES))]
    extent = appearance.uniform(*OBJECT_SIZE) * scale
    angle = appearance.uniform(0.0, 2.0 * np.pi)
    start = appearance.uniform(0.0, size, 2)

    path = _trajectory(stream(_MOTION), motion, names[label], start, num_frames, scale)
    field = _unit_field(spectrum, BACKGROUND_PAN * (path - start))
    background = (first + field[..., None] * (second - first)).astype(np.float32)
    alpha = _object_alpha(shape, extent, angle, path % size, size)

    frames = background + alpha[..., None] * (colour - background)
    frames += NOISE_STD * stream(_NOISE).standard_normal(frames.shape, dtype=np.float32)
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return SyntheticVideo(path=f"synthetic/{split}/{index:06d}", frames=frames, label=label,
                          label_text=names[label], fps=FPS)


def _background_spectrum(rng, size):
    """A smooth periodic random field, as its half spectrum [size, size // 2 + 1] complex."""
    spectrum = np.zeros((size, size // 2 + 1), np.complex64)
    k = BACKGROUND_CYCLES  # smooth, and periodic like the wrapping object
    ky = np.fft.fftfreq(size, 1.0 / size)[:, None]
    kx = np.arange(size // 2 + 1)[None, :]
    low = (np.abs(ky) < k) & (kx < k) & ((ky != 0) | (kx != 0))
    amplitude = 1.0 / np.hypot(ky, kx)[low]
    real = rng.standard_normal(low.sum())
    spectrum[low] = amplitude * (real + 1j * rng.standard_normal(low.sum()))
    return spectrum


def _unit_field(spectrum, shifts=None):
    """The field of `spectrum`, scaled to [0, 1] by its range: [size, size] float.

    With `shifts` [T, 2] (x, y) pixels: the field shifted by each, exactly and
    sub-pixel (a phase ramp; the field is periodic), scaled as the unshifted
    field is: [T, size, size].
    """
    size = spectrum.shape[0]
    field = np.fft.irfft2(spectrum, s=(size, size))
    low, span = field.min(), max(field.max() - field.min(), 1e-6)
    if shifts is None:
        return (field - low) / span
    if np.any(shifts):
        ky = np.fft.fftfreq(size, 1.0 / size)[None, :, None]
        kx = np.arange(size // 2 + 1)[None, None, :]
        ramp = np.exp(-2j * np.pi * (kx * shifts[:, 0, None, None] + ky * shifts[:, 1, None, None]) / size)
        field = np.fft.irfft2(spectrum[None] * ramp, s=(size, size))
    else:
        field = np.broadcast_to(field, (len(shifts), size, size))
    return np.clip((field - low) / span, 0.0, 1.0)


def _object_colour(rng, first, second):
    """A random colour [3] float32 at least OBJECT_CONTRAST from every background colour.

    The background colours are the segment from `first` to `second`.
    """
    span = second - first
    while True:
        colour = rng.uniform(0.0, 255.0, 3).astype(np.float32)
        t = np.clip(np.dot(colour - first, span) / max(np.dot(span, span), 1e-6), 0.0, 1.0)
        if np.linalg.norm(colour - (first + t * span)) >= OBJECT_CONTRAST:
            return colour


def _trajectory(rng, motion, label_text, start, num_frames, scale):
    """Object centres (x, y) in pixels, unwrapped: [num_frames, 2] float."""
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    if motion == "direction_speed":
        direction, speed = label_text.split("_")
        velocity = np.array(DIRECTIONS[direction]) * DIRECTION_SPEEDS[speed] * scale
        return start + t * velocity
    speed = PATTERN_SPEED * scale
    if label_text in DIRECTIONS:
        return start + t * np.array(DIRECTIONS[label_text]) * speed
    if label_text == "circle":
        radius = rng.uniform(*CIRCLE_RADIUS) * scale
        sense = rng.choice([-1.0, 1.0])
        phase = rng.uniform(0.0, 2.0 * np.pi) + sense * speed * t / radius
        return start + radius * np.concatenate([np.cos(phase), np.sin(phase)], axis=1)
    # Oscillation: a triangle wave along one axis, at constant speed between the turns.
    amplitude = rng.uniform(*OSCILLATION_AMPLITUDE) * scale
    axis = np.array([1.0, 0.0]) if rng.integers(2) == 0 else np.array([0.0, 1.0])
    travelled = rng.uniform(0.0, 4.0 * amplitude) + speed * t
    offset = np.abs(travelled % (4.0 * amplitude) - 2.0 * amplitude) - amplitude
    return start + offset * axis


def _object_alpha(shape, extent, angle, centres, size):
    """Coverage of the object in each frame: [T, size, size] float32 in [0, 1], edges anti-aliased.

    Signed distance (pixels, positive inside) to the shape, with the offsets
    from the centre wrapped around the frame.
    """
    grid = np.arange(size, dtype=np.float32)
    half = np.float32(size / 2.0)
    dx = (grid[None, None, :] - centres[:, 0, None, None].astype(np.float32) + half) % size - half
    dy = (grid[None, :, None] - centres[:, 1, None, None].astype(np.float32) + half) % size - half
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    radius = np.float32(extent / 2.0)
    if shape == "disc":
        inside = radius - np.sqrt(u * u + v * v)
    elif shape == "square":
        inside = radius - np.maximum(np.abs(u), np.abs(v))
    elif shape == "diamond":
        inside = radius - (np.abs(u) + np.abs(v))
    else:  # equilateral triangle with circumradius `radius`: inside all three edges
        inside = None
        for k in range(3):
            normal = 2.0 * np.pi * k / 3.0
            edge = radius / 2.0 - (np.float32(np.cos(normal)) * u + np.float32(np.sin(normal)) * v)
            inside = edge if inside is None else np.minimum(inside, edge)
    return np.clip(inside + 0.5, 0.0, 1.0)
