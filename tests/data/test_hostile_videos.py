"""Hostile videos: a corpus built here (PyAV and by hand) is ingested once, in decoder processes.

Every bad file must be in rejects.tsv with its reason, every decodable one in
the shards with the right frames (count, size, colours in order), and the
ingest must return: no crash, no hang (a FIFO that never opens meets the
per-video timeout). A codec this PyAV build cannot encode skips its own case
only.
"""

import glob
import os
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import tensorflow as tf

from asc_tf.data import ingest, records

FPS = 25
SHORT_SIDE = 32
OPTIONS = ingest.EncodeOptions(short_side=SHORT_SIDE, fps=float(FPS), max_frames=0, jpeg_quality=90)
VIDEO_TIMEOUT = 10.0
# Frame k of a good video is flat PALETTE[k]: decoded colours give the count and the order.
PALETTE = np.array([[230, 30, 30], [30, 200, 40], [40, 60, 220], [240, 220, 40], [200, 40, 200],
                    [40, 210, 210], [250, 250, 250], [20, 20, 20], [128, 128, 128], [250, 140, 30],
                    [110, 40, 160], [120, 200, 120]], np.uint8)
NUM_FRAMES = len(PALETTE)
RED, BLUE = (255, 0, 0), (0, 0, 255)
# The variable-rate clip: frame k shows PALETTE[k] from VFR_TIMES_MS[k].
VFR_TIMES_MS = [0, 40, 200, 240, 280, 600, 640, 680]


# ----------------------------------------------------------------------------- writing


def _flat(index, width, height):
    return np.broadcast_to(PALETTE[index], (height, width, 3)).copy()


def _halves(width, height):
    """Left half red, right half blue."""
    image = np.empty((height, width, 3), np.uint8)
    image[:, : width // 2] = RED
    image[:, width // 2:] = BLUE
    return image


def write_video(path, codec, images, pix_fmt="yuv420p", times_ms=None, rotation=None,
                container_options=None):
    """Encodes [H, W, 3] uint8 images with PyAV at FPS (or at `times_ms`, in milliseconds).

    `rotation` is the display matrix's counter-clockwise angle (PyAV's
    VideoFrame.rotation); a phone's "rotate=90" tag is rotation=-90.
    """
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[k], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _noise(count, width=64, height=48):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _palette_clip(width=64, height=48, count=NUM_FRAMES):
    return [_flat(k, width, height) for k in range(count)]


def _cut(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _write_audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for k in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# path: (encoder, pix_fmt). Each holds the palette clip at 64x48, stored as 43x32.
CODECS = {
    "codecs/h264.mp4": ("libx264", "yuv420p"),
    "codecs/h264.mkv": ("libx264", "yuv420p"),
    "codecs/mpeg1.mpg": ("mpeg1video", "yuv420p"),
    "codecs/mpeg2.mpg": ("mpeg2video", "yuv420p"),
    "codecs/mpeg2.ts": ("mpeg2video", "yuv420p"),
    "codecs/theora.ogv": ("libtheora", "yuv420p"),
    "codecs/vp8.ogv": ("libvpx", "yuv420p"),
    "codecs/vp9.webm": ("libvpx-vp9", "yuv420p"),
    "codecs/vp9.avi": ("libvpx-vp9", "yuv420p"),
    "codecs/mjpeg.avi": ("mjpeg", "yuvj420p"),
    "codecs/mjpeg.mov": ("mjpeg", "yuvj420p"),
    "codecs/prores.mov": ("prores_ks", "yuv422p10le"),
    "codecs/mpeg4.avi": ("mpeg4", "yuv420p"),
}

# path: (encoder needed or None, how to write it at that path, reason prefix in rejects.tsv).
BAD = {
    "broken/empty.mp4": (None, lambda p: p.write_bytes(b""), "cannot open: "),
    "broken/text.mp4": (None, lambda p: p.write_text("this is not a video\n"), "cannot open: "),
    "broken/garbage.mkv": (
        None, lambda p: p.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes()),
        "cannot open: "),
    "broken/image.mp4": (
        None, lambda p: p.write_bytes(tf.io.encode_png(_flat(0, 8, 8)).numpy()),
        "not a video: FFmpeg reads it as png_pipe"),
    "broken/audio_only.mp4": ("aac", _write_audio_only, "no video stream"),
    # The index (moov) is written last: half a file has none.
    "cut/index_at_end.mp4": (
        "libx264", lambda p: (write_video(p, "libx264", _noise(24)), _cut(p)), "cannot open: "),
    # Index first: the cut shows as a damaged packet.
    "cut/faststart.mp4": (
        "libx264", lambda p: (write_video(p, "libx264", _noise(24),
                                          container_options={"movflags": "faststart"}), _cut(p)),
        "truncated: damaged data after "),
    "cut/mjpeg.avi": (
        "mjpeg", lambda p: (write_video(p, "mjpeg", _noise(24), "yuvj420p"), _cut(p)),
        "truncated: damaged data after "),
    "cut/prores.mov": (
        "prores_ks", lambda p: (write_video(p, "prores_ks", _noise(24), "yuv422p10le"), _cut(p)),
        "cannot open: "),
    # MPEG-PS has no index or length: the cut shows as a last frame the decoder flags damaged.
    "cut/mpeg1.mpg": (
        "mpeg1video", lambda p: (write_video(p, "mpeg1video", _noise(24)), _cut(p)),
        "truncated: damaged last frame after "),
    "shape/tiny_2x2.mp4": (
        "libx264", lambda p: write_video(p, "libx264", _palette_clip(2, 2, 4)),
        "too small: 2x2, the shorter side must be at least 16 px"),
    "shape/wide_4000x16.mp4": (
        "libx264", lambda p: write_video(p, "libx264", _palette_clip(4000, 16, 3)),
        "aspect ratio 250:1 (4000x16) exceeds 4:1"),
    "shape/tall_16x72.mp4": (
        "libx264", lambda p: write_video(p, "libx264", _palette_clip(16, 72, 3)),
        "aspect ratio 4.5:1 (16x72) exceeds 4:1"),
    # Sorted last, so the other videos decode while it waits out the timeout.
    "wait/fifo.mp4": (None, os.mkfifo, f"timeout: not decoded within {VIDEO_TIMEOUT:g} s"),
}

# path: (encoder, images, expected (height, width) stored, expected palette indices).
SHAPES = {
    "shape/one_frame.mp4": ("libx264", _palette_clip(64, 48, 1), (32, 43), [0]),
    "shape/portrait.mp4": ("libx264", _palette_clip(48, 64, 4), (43, 32), [0, 1, 2, 3]),
    # At the limits: a 16 px short side and 4:1 are kept, and never upsampled.
    "shape/small_16x24.mp4": ("libx264", _palette_clip(16, 24, 4), (24, 16), [0, 1, 2, 3]),
    "shape/wide_64x16.mp4": ("libx264", _palette_clip(64, 16, 4), (16, 64), [0, 1, 2, 3]),
}

# path: (encoder, rotation (counter-clockwise degrees), expected (top/left colour, bottom/right colour)).
# Stored 128x64, left half red, right half blue; stored upright at 32 px on the short side.
ROTATED = {
    "rotated/phone_rotate90.mp4": ("libx264", -90, "vertical", (RED, BLUE)),  # turned clockwise
    "rotated/rotate270.mov": ("libx264", 90, "vertical", (BLUE, RED)),  # turned counter-clockwise
    "rotated/upside_down.mkv": ("libx264", 180, "horizontal", (BLUE, RED)),
}


def _has_encoder(name):
    return name is None or name in av.codecs_available


def build_corpus(root):
    """Writes every case under root -> {path: missing encoder} of the cases it could not write."""
    skipped = {}

    def add(path, encoder, write):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _has_encoder(encoder):
            skipped[path] = encoder
            return
        write(target)

    for path, (encoder, pix_fmt) in CODECS.items():
        add(path, encoder, lambda p, e=encoder, f=pix_fmt: write_video(p, e, _palette_clip(), f))
    for path, (encoder, write, _) in BAD.items():
        add(path, encoder, write)
    for path, (encoder, images, _, _) in SHAPES.items():
        add(path, encoder, lambda p, e=encoder, i=images: write_video(p, e, i))
    for path, (encoder, rotation, _, _) in ROTATED.items():
        add(path, encoder, lambda p, e=encoder, r=rotation: write_video(p, e, [_halves(128, 64)] * 4,
                                                                         rotation=r))
    # A cut WebM: Matroska drops the partial block silently, so it is kept and listed as short.
    add("cut/vp9.webm", "libvpx-vp9",
        lambda p: (write_video(p, "libvpx-vp9", _noise(24)), _cut(p)))
    add("timing/vfr.mp4", "libx264",
        lambda p: write_video(p, "libx264", _palette_clip(count=len(VFR_TIMES_MS)),
                              times_ms=VFR_TIMES_MS))
    return skipped


# ----------------------------------------------------------------------------- the ingest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Builds the corpus and ingests it once: a dict of what came out."""
    base = tmp_path_factory.mktemp("hostile")
    root, output_dir = base / "videos", base / "out"
    skipped = build_corpus(root)
    listing = ingest.list_folder(str(root))
    outcome = {}

    def run():
        try:
            outcome["manifest"] = ingest.ingest(listing, str(output_dir), num_shards=2,
                                                options=OPTIONS, workers=2,
                                                video_timeout=VIDEO_TIMEOUT, command=["test"])
        except BaseException as error:  # reported by the test, not lost in the thread
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=240.0)
    if thread.is_alive():
        pytest.fail("the ingest hung: no return within 240 s")
    if "error" in outcome:
        raise outcome["error"]

    with open(output_dir / "rejects.tsv", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "path\treason"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 2 for row in rows)
    files = sorted(glob.glob(str(output_dir / "*.tfrecord")))
    found = {}
    for serialized in tf.data.TFRecordDataset(files):
        record = {k: v.numpy() for k, v in records.parse_sequence_example(serialized).items()}
        found[record["path"].decode()] = record
    return {"listing": listing, "manifest": outcome["manifest"], "rejects": dict(rows),
            "records": found, "skipped": skipped, "seconds": time.monotonic() - started}


def _skip_if_unwritten(corpus, path):
    if path in corpus["skipped"]:
        pytest.skip(f"this PyAV build has no {corpus['skipped'][path]} encoder; {path} not written")


def _frames(record):
    return [tf.io.decode_jpeg(jpeg).numpy() for jpeg in record["frames"]]


def _palette_index(frame):
    mean = frame.reshape(-1, 3).astype(float).mean(axis=0)
    errors = np.abs(PALETTE.astype(float) - mean).sum(axis=1)
    assert errors.min() < 40, f"frame colour {mean} is none of the palette"
    return int(errors.argmin())


def test_every_file_is_ingested_or_rejected_and_the_ingest_returns(corpus):
    manifest, rejects, found = corpus["manifest"], corpus["rejects"], corpus["records"]
    listed = [entry.path for entry in corpus["listing"].entries]
    assert sorted(set(rejects) | set(found)) == sorted(listed)
    assert not set(rejects) & set(found)
    assert manifest["totals"]["rejected"] == len(rejects)
    assert manifest["totals"]["ingested"] == len(found)
    # No crash: no decoder died, no unexpected exception in one.
    assert not [r for r in rejects.values() if r.startswith(("decoder died", "decode failed"))]
    # Only the FIFO meets the timeout; the rest is quick.
    assert [p for p, r in rejects.items() if r.startswith("timeout")] == ["wait/fifo.mp4"]
    assert corpus["seconds"] < 120.0
    for record in found.values():
        assert record["fps"] == FPS and record["num_frames"] == len(record["frames"])


@pytest.mark.parametrize("path", sorted(BAD))
def test_bad_file_is_rejected_with_its_reason(corpus, path):
    _skip_if_unwritten(corpus, path)
    assert path in corpus["rejects"], f"{path} was not rejected"
    assert corpus["rejects"][path].startswith(BAD[path][2]), corpus["rejects"][path]
    assert "\n" not in corpus["rejects"][path] and str(corpus["listing"].root) not in corpus["rejects"][path]


@pytest.mark.parametrize("path", sorted(CODECS))
def test_codec_is_ingested_with_every_frame_in_order(corpus, path):
    _skip_if_unwritten(corpus, path)
    assert path in corpus["records"], f"{path} rejected: {corpus['rejects'].get(path)}"
    frames = _frames(corpus["records"][path])
    assert [_palette_index(frame) for frame in frames] == list(range(NUM_FRAMES))
    assert {frame.shape for frame in frames} == {(32, 43, 3)}  # 64x48: short side 32, 42.7 -> 43


@pytest.mark.parametrize("path", sorted(SHAPES))
def test_odd_shapes_within_limits_are_kept(corpus, path):
    _skip_if_unwritten(corpus, path)
    _, _, (height, width), colours = SHAPES[path]
    assert path in corpus["records"], f"{path} rejected: {corpus['rejects'].get(path)}"
    frames = _frames(corpus["records"][path])
    assert [_palette_index(frame) for frame in frames] == colours
    assert {frame.shape for frame in frames} == {(height, width, 3)}


@pytest.mark.parametrize("path", sorted(ROTATED))
def test_rotation_metadata_is_applied(corpus, path):
    _skip_if_unwritten(corpus, path)
    _, _, direction, (first, second) = ROTATED[path]
    assert path in corpus["records"], f"{path} rejected: {corpus['rejects'].get(path)}"
    frames = _frames(corpus["records"][path])
    assert len(frames) == 4
    for frame in frames:
        if direction == "vertical":  # turned a quarter: stored 128x64 shows as 64x128 -> 32x64
            assert frame.shape == (64, 32, 3)
            halves = frame[8:24], frame[40:56]  # top, bottom (away from the edge)
        else:
            assert frame.shape == (32, 64, 3)
            halves = frame[:, 8:24], frame[:, 40:56]  # left, right
        for half, colour in zip(halves, (first, second)):
            assert np.abs(half.reshape(-1, 3).mean(axis=0) - colour).max() < 30


def test_variable_frame_rate_is_resampled_by_timestamp(corpus):
    path = "timing/vfr.mp4"
    _skip_if_unwritten(corpus, path)
    colours = [_palette_index(frame) for frame in _frames(corpus["records"][path])]
    # Output k shows the last frame at or before k / 25 s: targets 0, 40, 80, ... ms.
    expected = [0, 1, 1, 1, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 6, 7]
    assert colours[: len(expected)] == expected
    # The last frame lasts one average frame interval (here 0.105 s): shown once or more.
    tail = colours[len(expected) - 1:]
    assert set(tail) == {7} and 1 <= len(tail) <= 4


def test_a_cut_webm_is_kept_and_listed_as_short(corpus):
    path = "cut/vp9.webm"
    _skip_if_unwritten(corpus, path)
    assert path in corpus["records"], corpus["rejects"].get(path)
    (short,) = [s for s in corpus["manifest"]["short"] if s["path"] == path]
    assert short["declared_frames"] == 24 and 0 < short["decoded_frames"] < 0.9 * 24
    assert corpus["records"][path]["num_frames"] == short["decoded_frames"]  # 25 fps in and out


def test_display_matrix_gives_the_eight_right_angle_orientations():
    def matrix(a, b, c, d):  # FFmpeg's layout, 16.16 fixed point
        return [int(a * 65536), int(b * 65536), 0, int(c * 65536), int(d * 65536), 0, 0, 0, 1 << 30]

    image = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    expected = {
        (1, 0, 0, 1): image,
        (0, 1, -1, 0): np.rot90(image, -1),  # clockwise: a phone's rotate=90
        (0, -1, 1, 0): np.rot90(image, 1),  # counter-clockwise
        (-1, 0, 0, -1): np.rot90(image, 2),
        (-1, 0, 0, 1): image[:, ::-1],  # mirrored left-right
        (1, 0, 0, -1): image[::-1],  # upside down, mirrored
        (0, 1, 1, 0): image.transpose(1, 0, 2),
        (0, -1, -1, 0): image.transpose(1, 0, 2)[::-1, ::-1],
    }
    for abcd, upright in expected.items():
        assert np.array_equal(ingest._orient(image, ingest.orientation(matrix(*abcd))), upright), abcd
    assert ingest.orientation(matrix(1, 0, 0, 1)) is None
    assert ingest.orientation(matrix(0.7071, 0.7071, -0.7071, 0.7071)) is None  # 45 degrees: as stored
    assert ingest.orientation([0] * 9) is None
