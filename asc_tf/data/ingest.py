"""Ingest: videos on disk (or the synthetic set) -> TFRecord shards of SequenceExamples.

Stages, each a function of its own:

  list_ucf101 / list_hmdb51 / list_kinetics / list_folder / list_synthetic
      -> Listing: the class index, the videos to ingest (video id = position
         in the listing, sorted by path), the videos a split file or CSV
         names but the disk lacks ("missing"), the files on disk a CSV does
         not name ("unlisted") and files that are not videos by extension
         ("ignored").
  subset
      -> the listing restricted to named paths (`--only`: one split of a
         folder that has no split file of its own).
  decode_video
      -> one video's frames, resized and resampled, as JPEG bytes (PyAV).
  ingest
      -> shards, rejects.tsv, manifest.json in an output directory.

Decisions:

- Process model. The main process never decodes: it lists, plans, writes
  the shards and keeps the clock. `workers` processes (at least one, started
  with the 'spawn' context, never fork, because TensorFlow is imported)
  each decode one video at a time and return its JPEG frames. A video that
  runs past `video_timeout` seconds has its worker killed and replaced, and
  is rejected ("timeout"); a worker that dies (a crash inside FFmpeg) costs
  only its video ("decoder died"). So even with one worker a pathological
  file cannot hang or crash the ingest. The synthetic set is rendered in the
  main process: it is generated code, not an untrusted file.
- JPEG: tf.io.encode_jpeg in the workers (quality is libjpeg's 1..100; RGB in,
  RGB out). Resizing: FFmpeg's swscale with area averaging, through PyAV, in
  the same step that converts YUV to RGB using the frame's own colour space.
- Size: the shorter side becomes `short_side`, the longer one keeps the
  aspect ratio (rounded, at least 1); a video already that small or smaller
  is never upsampled (that adds bytes, not information); 0 keeps every size.
  Whatever `short_side`, a video whose first frame has a shorter side under
  MIN_SIDE (16 px: "too small: 2x2, ...") or a longer side over MAX_ASPECT (4)
  times the shorter ("aspect ratio 250:1 (4000x16) exceeds 4:1") is rejected:
  it holds no usable picture, and the evaluation pipeline, which scales the
  short side to 128 px, would make a 4000x16 clip 32000 px wide.
  Real formats stay well inside (21:9 is 2.4:1, 32:9 is 3.6:1, portrait 9:16
  is 1.8:1). A one-frame video is kept: it is a valid (static) video and the
  input pipeline loops short videos, so it gives a static clip.
- Orientation: the display matrix (the rotation metadata of phone videos,
  read as FFmpeg's per-frame side data) is applied, as a player does: a
  phone video stored 1920x1080 with "rotate=90" is stored upright as
  1080x1920 (resized to 128x228), the short-side rule applying to the upright
  frame. The eight right-angle orientations (rotations by multiples of 90
  degrees, mirrored or not) are applied; another angle is left as stored.
  The matrix of the first frame holds for the whole video.
- Frame rate: `fps` > 0 resamples by timestamp; output frame k shows the last
  source frame whose time (from the first frame) is <= k / fps, so
  downsampling drops frames and upsampling repeats them. `fps` = 0 keeps
  every decoded frame and stores the container's average rate.
- Damaged input is rejected, never fatal, and listed in rejects.tsv: cannot
  open (empty, text or garbage named .mp4, an MP4/MOV cut before its index),
  not a video (an image or text format FFmpeg happens to read), no video
  stream, no frames, too small, extreme aspect ratio, a damaged packet (the
  demuxer's flag; this is how a cut MP4 or AVI shows), a last frame the
  decoder flags as damaged (how a cut MPEG-1/2 program stream shows) or a
  decode error after some frames ("truncated": a broken download stores a
  different video than its label describes; the list says which files to
  fetch again), too large for one record, timeout, decoder died. A file that
  ends early without any sign of damage (an AVI cut at a packet boundary, a
  Matroska/WebM file cut anywhere: its demuxer drops the partial block
  silently) is kept but listed under "short" in the manifest when it decoded
  under 90 % of the frames its header declares (its frame count, or for
  Matroska/WebM its duration times the frame rate). Streams with no length in
  their header (Ogg, MPEG program and transport streams) cut at a packet
  boundary are valid shorter videos: they are kept, and cannot be listed.
- Missing videos (named by a split file or CSV, absent on disk) are listed
  in the manifest's "missing" list AND in rejects.tsv with reason "missing",
  so rejects.tsv alone lists every named video that is not in the shards.
- Shards: video i (its id) goes to shard i % num_shards; shards are written
  one after the other (shard-major order) to `<final>.tmp-<pid>`, then a
  sidecar JSON (`ingest_state/<shard>.json`: its videos, rejects, and a
  fingerprint of the settings and the videos it holds) is written, then the
  shard is renamed. Re-running the same command keeps every shard whose
  final file and sidecar exist with the expected fingerprint (its videos are
  not decoded again), deletes stale temporary files, and refuses an output
  directory holding shards of other settings. The manifest is built from the
  listing and the sidecars only, so it is the same whether or not the run was
  interrupted, except its "run" section (timing). One dataset per output
  directory; a lock file keeps two runs from writing it at once.
"""

import csv
import dataclasses
import fcntl
import glob
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import time
from typing import NamedTuple

import av
import numpy as np
import tensorflow as tf
from absl import logging

from asc_tf.data import records, synthetic
from asc_tf.progress import Progress

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ogv", ".ts", ".mts")
MANIFEST = "manifest.json"
REJECTS = "rejects.tsv"
STATE_DIR = "ingest_state"
MISSING_REASON = "missing"
# Short of this fraction of the header's frame count, a cleanly ending video is listed as short.
SHORT_FRACTION = 0.9
# A serialized protobuf cannot exceed 2 GiB; stay well below.
MAX_RECORD_BYTES = 1 << 30
# FFmpeg demuxers that read still images or text, which are not videos.
_NOT_VIDEO_FORMATS = ("image2", "tty")
# Containers whose header records the duration (written when the file is finished); the others'
# duration is FFmpeg's estimate from the file itself, or absent.
_DURATION_IN_HEADER = ("matroska,webm",)
# Smallest shorter side, in pixels, of a video worth storing.
MIN_SIDE = 16
# Largest longer side : shorter side of a video worth storing.
MAX_ASPECT = 4.0
_WORKER_START_SECONDS = 300.0


class VideoEntry(NamedTuple):
    path: str  # relative to the listing's root, '/'-separated
    label: int  # class index, -1 when unlabelled
    label_text: str  # class name, "" when unlabelled


@dataclasses.dataclass
class Listing:
    """What an ingest will do: the class index and the videos, with their ids = positions."""

    layout: str
    root: str  # videos are root/<entry.path>; "" for the synthetic set
    class_names: list
    entries: list  # [VideoEntry], the videos to ingest; video id = index
    missing: list = dataclasses.field(default_factory=list)  # [VideoEntry] named, not on disk
    unlisted: list = dataclasses.field(default_factory=list)  # [str] on disk, not named by the CSV
    ignored: list = dataclasses.field(default_factory=list)  # [str] files without a video extension
    synthetic: dict = None  # keyword arguments of synthetic.videos, for layout "synthetic"


class VideoRejected(Exception):
    """A video that cannot be ingested; the message is the reason."""


class DecodedVideo(NamedTuple):
    jpegs: list  # [F] bytes, one JPEG per stored frame
    fps: float  # frame rate of the stored frames (0.0 when unknown)
    width: int
    height: int
    source_frames: int  # frames decoded from the source
    declared_frames: int  # frames the header declares: its count, or a Matroska duration x rate
    # (0 when it declares neither)
    reached_end: bool  # decoding ran to the end of the stream (not cut by max_frames)


class EncodeOptions(NamedTuple):
    short_side: int = 128
    fps: float = 0.0
    max_frames: int = 0
    jpeg_quality: int = 90


# ----------------------------------------------------------------------------- listing


def _is_video_file(name):
    return name.lower().endswith(VIDEO_EXTENSIONS)


def _read_lines(path):
    """Non-empty lines of a text file, stripped (CRLF and trailing blanks included)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.strip() for line in handle if line.strip()]


def _walk_files(root):
    """Relative '/'-separated paths of the non-hidden files under root, sorted."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        relative = os.path.relpath(directory, root)
        for name in files:
            if not name.startswith("."):
                found.append(name if relative == "." else f"{relative}/{name}".replace(os.sep, "/"))
    return sorted(found)


def _split_on_disk(root, named):
    """Splits [VideoEntry] named by a split file into (on disk, missing), each sorted, unique."""
    unique = {entry.path: entry for entry in named}
    present, missing = [], []
    for path in sorted(unique):
        (present if os.path.isfile(os.path.join(root, path)) else missing).append(unique[path])
    return present, missing


def list_ucf101(root, split_file, class_index):
    """UCF-101: `classInd.txt` ("1 ApplyEyeMakeup") and a split file.

    Train lines read "Class/v_Class_gXX_cYY.avi 1" (1-based label), test lines
    "Class/v_Class_gXX_cYY.avi" (label from the class folder). Labels are
    0-based in the records.
    """
    numbered = {}
    for line in _read_lines(class_index):
        number, name = line.split(maxsplit=1)
        numbered[int(number)] = name.strip()
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise ValueError(f"{class_index}: class numbers are not 1..{len(numbered)}")
    class_names = [numbered[i] for i in range(1, len(numbered) + 1)]
    by_name = {name: index for index, name in enumerate(class_names)}
    named = []
    for line in _read_lines(split_file):
        parts = line.split()
        path = parts[0].replace("\\", "/")
        if len(parts) > 1:
            label = int(parts[1]) - 1
            if not 0 <= label < len(class_names):
                raise ValueError(f"{split_file}: label {parts[1]} of {path} is not in 1..{len(class_names)}")
        else:
            folder = path.split("/")[0]
            if folder not in by_name:
                raise ValueError(f"{split_file}: class folder {folder!r} of {path} is not in {class_index}")
            label = by_name[folder]
        named.append(VideoEntry(path, label, class_names[label]))
    present, missing = _split_on_disk(root, named)
    return Listing("ucf101", root, class_names, present, missing)


def list_hmdb51(root, split_dir, split=1, subset="train"):
    """HMDB-51: `<class>_test_split<split>.txt` files, lines "<video> <n>" (1 train, 2 test, 0 unused).

    Classes sorted alphabetically give the labels; videos are root/<class>/<video>.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be train or test, got {subset!r}")
    wanted = "1" if subset == "train" else "2"
    suffix = f"_test_split{split}.txt"
    split_files = sorted(name for name in os.listdir(split_dir) if name.endswith(suffix))
    if not split_files:
        raise ValueError(f"{split_dir}: no *{suffix} files")
    class_names = [name[: -len(suffix)] for name in split_files]
    named = []
    for label, (name, split_file) in enumerate(zip(class_names, split_files)):
        for line in _read_lines(os.path.join(split_dir, split_file)):
            parts = line.split()
            if len(parts) >= 2 and parts[1] == wanted:
                named.append(VideoEntry(f"{name}/{parts[0]}", label, name))
    present, missing = _split_on_disk(root, named)
    return Listing("hmdb51", root, class_names, present, missing)


def class_key(name):
    """Kinetics class name as compared between CSV and folders.

    "arm wrestling", "arm_wrestling" and "Arm-Wrestling" agree, and so do
    "massaging person's head" / "massaging_persons_head" and
    "passing American football (in game)" / "passing_American_football_in_game".
    """
    name = name.lower().replace("'", "")
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name).split())


def list_folder(root, layout="folder"):
    """Class sub-folders (labels = sorted folder names) or a flat folder of unlabelled videos.

    Videos are the files with a video extension, at any depth; the first path
    component names the class. Files at the top level of a class layout, and
    every file of a flat folder, are unlabelled (-1, "").
    """
    class_names = sorted(d for d in os.listdir(root) if not d.startswith(".")
                         and os.path.isdir(os.path.join(root, d)))
    by_name = {name: index for index, name in enumerate(class_names)}
    entries, ignored = [], []
    for path in _walk_files(root):
        if not _is_video_file(path):
            ignored.append(path)
            continue
        folder = path.split("/")[0] if "/" in path else None
        label = by_name.get(folder, records.UNLABELLED)
        entries.append(VideoEntry(path, label, folder if folder is not None else ""))
    return Listing(layout, root, class_names, entries, ignored=ignored)


def list_kinetics(root, csv_path=None):
    """Kinetics: root/<class>/<youtube_id>_<start:06d>_<end:06d>.mp4, optionally with the official CSV.

    Without a CSV this is `list_folder`. With one (label,youtube_id,time_start,
    time_end,split), only the videos it names are ingested, labelled by its
    label (classes = its sorted labels); folder names match labels with spaces
    or underscores (`class_key`), and a file is found by its name stem with
    any video extension (or by the bare youtube id) in its class folder, else
    anywhere under root. Named videos not found are missing; video files the
    CSV does not name are unlisted. The split column is not used.
    """
    if not csv_path:
        return list_folder(root, layout="kinetics")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "youtube_id" not in rows[0]:
        raise ValueError(f"{csv_path}: no youtube_id column")
    class_names = sorted({row["label"].strip() for row in rows if row.get("label")})
    by_name = {name: index for index, name in enumerate(class_names)}

    folders = {}  # class_key -> folder name on disk
    for name in os.listdir(root):
        if os.path.isdir(os.path.join(root, name)) and not name.startswith("."):
            folders.setdefault(class_key(name), name)
    by_stem = {}  # file stem -> [relative paths]
    ignored = []
    on_disk = []
    for path in _walk_files(root):
        if not _is_video_file(path):
            ignored.append(path)
            continue
        on_disk.append(path)
        by_stem.setdefault(os.path.splitext(path.split("/")[-1])[0], []).append(path)

    named, claimed = {}, set()
    for row in rows:
        youtube_id = row["youtube_id"].strip()
        start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        stem = f"{youtube_id}_{start:06d}_{end:06d}"
        text = (row.get("label") or "").strip()
        label = by_name[text] if text else records.UNLABELLED
        folder = folders.get(class_key(text)) if text else None
        candidates = by_stem.get(stem, []) + by_stem.get(youtube_id, [])
        in_folder = [p for p in candidates if folder is not None and p.split("/")[0] == folder]
        found = (in_folder or candidates or [None])[0]
        if found is None:
            expected = f"{folder or text.replace(' ', '_')}/{stem}.mp4" if text else f"{stem}.mp4"
            named.setdefault(expected, (VideoEntry(expected, label, text), False))
        else:
            claimed.add(found)
            named.setdefault(found, (VideoEntry(found, label, text), True))
    entries = [named[path][0] for path in sorted(named) if named[path][1]]
    missing = [named[path][0] for path in sorted(named) if not named[path][1]]
    unlisted = [path for path in on_disk if path not in claimed]
    return Listing("kinetics", root, class_names, entries, missing, unlisted, ignored)


def subset(listing, paths):
    """The listing restricted to `paths` (relative to its root, '/'-separated), as `--only` asks.

    Videos of the listing that `paths` does not name are left out, silently (they are
    another split's); a named path the listing lacks, on disk or not, is missing. Files
    the listing found unlisted or ignored are other videos' business and are dropped.
    """
    wanted = {path.replace("\\", "/") for path in paths}
    entries = [entry for entry in listing.entries if entry.path in wanted]
    missing = [entry for entry in listing.missing if entry.path in wanted]
    known = {entry.path for entry in entries + missing}
    missing += [VideoEntry(path, records.UNLABELLED, "") for path in sorted(wanted - known)]
    return dataclasses.replace(listing, entries=entries, missing=sorted(missing), unlisted=[], ignored=[])


def list_synthetic(num_videos, split="train", seed=0, num_frames=64, size=64,
                   motion="direction_speed", background_mean=None):
    """The seeded synthetic set of asc_tf.data.synthetic; paths and labels come from the set itself."""
    kwargs = dict(num_videos=num_videos, split=split, seed=seed, num_frames=num_frames, size=size,
                  motion=motion, background_mean=background_mean)
    # Paths and labels do not depend on the frames: list them from 1-frame, 8-pixel renders.
    entries = [VideoEntry(v.path, v.label, v.label_text)
               for v in synthetic.videos(num_videos, split=split, seed=seed, num_frames=1, size=8,
                                         motion=motion)]
    return Listing("synthetic", "", list(synthetic.class_names(motion)), entries, synthetic=kwargs)


# ----------------------------------------------------------------------------- decoding


def output_size(width, height, short_side):
    """(width, height) after scaling the shorter side to `short_side`; never upsamples; 0 keeps."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    scale = short_side / short
    if width <= height:
        return short_side, max(1, int(height * scale + 0.5))
    return max(1, int(width * scale + 0.5)), short_side


def select_by_time(timed_frames, fps, frame_duration=0.0):
    """Resamples (time in seconds, frame) pairs to `fps`: yields frames at times k / fps.

    Output k is the last input frame at or before k / fps (times from the
    first frame). The last frame lasts `frame_duration` (0: it is shown once
    if a target falls on it). The same frame object is yielded again when
    upsampling.
    """
    step = 1.0 / fps
    eps = 1e-6 * step
    k, held, held_time, start = 0, None, 0.0, None
    for t, frame in timed_frames:
        start = t if start is None else start
        t = max(t - start, held_time)
        if held is not None:
            while k * step < t - eps:
                yield held
                k += 1
        held, held_time = frame, t
    if held is not None:
        end = held_time + max(frame_duration, 0.0)
        while k * step < end - eps or (k * step <= held_time + eps):
            yield held
            k += 1


def _rgb(frame, width, height):
    """PyAV frame (or [H, W, 3] uint8) -> [height, width, 3] uint8 RGB, area-resampled."""
    if isinstance(frame, np.ndarray):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")


class Orientation(NamedTuple):
    """How to show a stored frame upright: transpose first, then flip rows and/or columns."""

    transpose: bool
    flip_rows: bool
    flip_columns: bool


def orientation(matrix):
    """A display matrix (FFmpeg's 9 int32, 16.16 fixed point) -> Orientation, None if upright.

    FFmpeg maps a stored pixel (x, y) to the displayed (a x + c y, b x + d y)
    with a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4] (x to the
    right, y down). Only the eight right-angle orientations (rotations by a
    multiple of 90 degrees, possibly mirrored) are handled; any other matrix
    (an arbitrary angle, all zeros) gives None: the frame is kept as stored.
    """
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    if abs(b) + abs(c) < 0.01 * (abs(a) + abs(d)):  # 0 or 180 degrees, maybe mirrored
        result = Orientation(False, d < 0, a < 0)
    elif abs(a) + abs(d) < 0.01 * (abs(b) + abs(c)):  # 90 or 270 degrees, maybe mirrored
        result = Orientation(True, b < 0, c < 0)
    else:
        return None
    return result if any(result) else None


def _frame_orientation(frame):
    """The Orientation of a PyAV frame's display matrix side data; None for arrays or none."""
    if isinstance(frame, np.ndarray):
        return None
    try:
        for data in frame.side_data:
            if getattr(data.type, "name", "") == "DISPLAYMATRIX":
                return orientation(np.frombuffer(bytes(data), np.int32)[:9])
    except Exception:  # side data this PyAV cannot read: keep the frame as stored
        return None
    return None


def _orient(array, turn):
    """[H, W, 3] as stored -> as displayed, by an Orientation (None: unchanged)."""
    if turn is None:
        return array
    if turn.transpose:
        array = array.transpose(1, 0, 2)
    if turn.flip_rows:
        array = array[::-1]
    if turn.flip_columns:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


def _encode_stream(frames, short_side, max_frames, jpeg_quality):
    """Frames (PyAV or [H, W, 3] uint8) -> (list of JPEG bytes, (width, height), cut by max_frames).

    A PyAV frame's display matrix (rotation metadata) is applied: the size
    returned and the JPEGs are upright, as a player shows the video.
    """
    jpegs, size, previous, total = [], None, None, 0
    for frame in frames:
        if frame is previous:  # repeated by upsampling: reuse its bytes
            jpegs.append(jpegs[-1])
        else:
            if size is None:
                height, width = (frame.shape[:2] if isinstance(frame, np.ndarray)
                                 else (frame.height, frame.width))
                turn = _frame_orientation(frame)
                if turn is not None and turn.transpose:
                    width, height = height, width
                size = output_size(width, height, short_side)  # as displayed
                stored = size[::-1] if turn is not None and turn.transpose else size
            pixels = _orient(_rgb(frame, *stored), turn)
            jpegs.append(tf.io.encode_jpeg(pixels, quality=jpeg_quality).numpy())
            previous = frame
        total += len(jpegs[-1])
        if total > MAX_RECORD_BYTES:
            raise VideoRejected(f"too large: over {MAX_RECORD_BYTES >> 20} MiB of JPEG after "
                                f"{len(jpegs)} frames; lower max_frames, fps or short_side")
        if max_frames and len(jpegs) >= max_frames:
            return jpegs, size, True
    return jpegs, size or (0, 0), False


def encode_frames(frames, fps, options=EncodeOptions()):
    """An in-memory video -> DecodedVideo, with the same resizing, resampling and JPEG as decode_video.

    Args:
      frames: [T, H, W, 3] uint8 RGB.
      fps: float, frame rate of `frames`.
    """
    timed = ((i / fps, frame) for i, frame in enumerate(frames))
    selected = (select_by_time(timed, options.fps, 1.0 / fps) if options.fps > 0
                else (frame for _, frame in timed))
    jpegs, (width, height), cut = _encode_stream(selected, options.short_side, options.max_frames,
                                                 options.jpeg_quality)
    return DecodedVideo(jpegs, options.fps if options.fps > 0 else float(fps), width, height,
                        len(frames), len(frames), not cut)


def _one_line(text):
    return " ".join(str(text).split())


def decode_video(path, options=EncodeOptions()):
    """Decodes the first video stream of a file with PyAV -> DecodedVideo.

    Raises:
      VideoRejected: with the reason, for anything that is not a decodable video.
    """
    try:
        container = av.open(path)
    except Exception as error:  # FFmpeg reports damaged input through many exception types
        raise VideoRejected(f"cannot open: {_one_line(error)}") from None
    with container:
        format_name = container.format.name
        if format_name in _NOT_VIDEO_FORMATS or format_name.endswith("_pipe"):
            raise VideoRejected(f"not a video: FFmpeg reads it as {format_name}")
        if not container.streams.video:
            raise VideoRejected("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        source_fps = float(rate) if rate else 0.0
        frame_duration = 1.0 / source_fps if source_fps > 0 else 0.0
        decoded, last_damaged = 0, False

        def timed():
            nonlocal decoded, last_damaged
            for packet in container.demux(stream):  # ends with an empty packet: the flush
                # The demuxer flags the partial packet at a cut; frame-threaded decoding
                # would swallow the error it causes, so look at the flag itself.
                if packet.is_corrupt:
                    raise VideoRejected(f"truncated: damaged data after {decoded} frames")
                for frame in packet.decode():
                    if not decoded:
                        check_geometry(frame.width, frame.height)
                    decoded += 1
                    # The decoder's own flag: a frame decoded from damaged data (concealed).
                    last_damaged = bool(getattr(frame, "is_corrupt", False))
                    t = frame.time if frame.time is not None else (decoded - 1) * frame_duration
                    yield t, frame

        source = timed()
        selected = (select_by_time(source, options.fps, frame_duration) if options.fps > 0
                    else (frame for _, frame in source))
        try:
            jpegs, (width, height), cut = _encode_stream(selected, options.short_side,
                                                         options.max_frames, options.jpeg_quality)
        except VideoRejected:
            raise
        except Exception as error:
            if decoded:
                raise VideoRejected(f"truncated: decode error after {decoded} frames: "
                                    f"{_one_line(error)}") from None
            raise VideoRejected(f"cannot decode: {_one_line(error)}") from None
        finally:
            source.close()  # stop decoding (max_frames) while the container is still open
        if not jpegs:
            raise VideoRejected("no frames decoded")
        if not cut and last_damaged:  # a stream cut inside its last frame
            raise VideoRejected(f"truncated: damaged last frame after {decoded - 1} frames")
        fps = options.fps if options.fps > 0 else source_fps
        declared = stream.frames or 0
        if not declared and format_name in _DURATION_IN_HEADER and container.duration and source_fps:
            declared = int(container.duration / av.time_base * source_fps + 0.5)
        return DecodedVideo(jpegs, fps, width, height, decoded, declared, not cut)


def check_geometry(width, height):
    """Raises VideoRejected for a frame too small or too elongated to be worth storing."""
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE:
        raise VideoRejected(f"too small: {width}x{height}, the shorter side must be at least "
                            f"{MIN_SIDE} px")
    if long > MAX_ASPECT * short:
        raise VideoRejected(f"aspect ratio {long / short:.3g}:1 ({width}x{height}) exceeds "
                            f"{MAX_ASPECT:g}:1")


# ----------------------------------------------------------------------------- decoder processes


def _worker_main(connection, options):
    """A decoder process: receives (seq, path), answers (seq, DecodedVideo | reason str)."""
    # Ctrl-C reaches the whole process group; the main process decides, and kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One thread each: the parallelism is in the number of workers.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    connection.send(("ready",))
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):  # the main process is gone
            return
        if task is None:
            return
        seq, path = task
        try:
            result = decode_video(path, options)
        except VideoRejected as error:
            result = _one_line(error)
        except Exception as error:  # a bug or resource error costs this video only
            result = _one_line(f"decode failed: {type(error).__name__}: {error}")
        try:
            connection.send((seq, result))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, context, options):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, options), daemon=True)
        self.process.start()
        child.close()
        self.task = None  # (seq, deadline) while busy

    def wait_ready(self):
        if not self.connection.poll(_WORKER_START_SECONDS):
            raise RuntimeError("a decoder process did not start")
        try:
            self.connection.recv()
        except EOFError:
            raise RuntimeError(f"a decoder process exited at start "
                               f"(code {self.process.exitcode})") from None

    def kill(self):
        self.process.kill()
        self.process.join()
        self.connection.close()


class DecoderPool:
    """`workers` spawn processes decoding one video each, with a per-video deadline."""

    def __init__(self, workers, options, video_timeout):
        self._context = multiprocessing.get_context("spawn")
        self._options = options
        self._timeout = video_timeout
        self._workers = [_Worker(self._context, options) for _ in range(workers)]
        for worker in self._workers:
            worker.wait_ready()

    @property
    def idle(self):
        return sum(worker.task is None for worker in self._workers)

    @property
    def busy_seqs(self):
        return [worker.task[0] for worker in self._workers if worker.task is not None]

    def submit(self, seq, path):
        worker = next(worker for worker in self._workers if worker.task is None)
        try:
            worker.connection.send((seq, path))
        except OSError:  # it died while idle
            worker = self._replace(worker)
            worker.connection.send((seq, path))
        worker.task = (seq, time.monotonic() + self._timeout)

    def _replace(self, worker):
        worker.kill()
        fresh = _Worker(self._context, self._options)
        fresh.wait_ready()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def collect(self):
        """Waits for at least one busy video to finish: [(seq, DecodedVideo | reason str)]."""
        busy = [worker for worker in self._workers if worker.task is not None]
        if not busy:
            return []
        deadline = min(worker.task[1] for worker in busy)
        waitables = [w.connection for w in busy] + [w.process.sentinel for w in busy]
        ready = multiprocessing.connection.wait(waitables, max(0.0, deadline - time.monotonic()))
        results = []
        for worker in busy:
            seq = worker.task[0]
            if worker.connection in ready or worker.connection.poll():
                try:
                    results.append(worker.connection.recv())
                    worker.task = None
                    continue
                except (EOFError, OSError):
                    pass
            if not worker.process.is_alive():
                results.append((seq, f"decoder died (exit code {worker.process.exitcode})"))
                self._replace(worker)
            elif time.monotonic() >= worker.task[1]:
                results.append((seq, f"timeout: not decoded within {self._timeout:g} s"))
                self._replace(worker)
        return results

    def close(self):
        """Stops idle workers and kills busy ones (left busy only by an error or an interrupt)."""
        for worker in self._workers:
            if worker.task is None:
                try:
                    worker.connection.send(None)
                except OSError:
                    worker.process.kill()
            else:
                worker.process.kill()
        for worker in self._workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()


# ----------------------------------------------------------------------------- shards


def default_num_shards(num_videos):
    """About 100 videos per shard."""
    return max(1, math.ceil(num_videos / 100))


def shard_names(name, num_shards):
    return [f"{name}-{k:05d}-of-{num_shards:05d}.tfrecord" for k in range(num_shards)]


def _fingerprint(settings, shard_entries):
    """Hex digest of everything a shard's content depends on."""
    blob = json.dumps([settings, [list(e) for e in shard_entries]], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _write_json(path, value):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, sort_keys=False)
        handle.write("\n")
    os.replace(temporary, path)


class _ShardWriter:
    """Writes results in plan order to temporary shards; a shard is renamed once all its videos are in."""

    def __init__(self, output_dir, names, fingerprints, order):
        self.output_dir = output_dir
        self.names = names
        self.order = order  # [(shard, video_id, VideoEntry)] in write order
        self.remaining = {k: 0 for k in range(len(names))}
        for shard, _, _ in order:
            self.remaining[shard] += 1
        self.sidecars = {k: {"shard": names[k], "fingerprint": fingerprints[k], "videos": [],
                             "rejects": [], "short": []} for k in self.remaining}
        self.writers = {}
        self.pending = {}
        self.next_seq = 0
        self.rejected = 0

    def start(self, shards_to_write):
        for shard in shards_to_write:
            if not self.remaining[shard]:  # nothing to decode: an empty shard
                self._open(shard)
                self._finish(shard)

    def _temporary(self, shard):
        return os.path.join(self.output_dir, f"{self.names[shard]}.tmp-{os.getpid()}")

    def _open(self, shard):
        if shard not in self.writers:
            self.writers[shard] = tf.io.TFRecordWriter(self._temporary(shard))
        return self.writers[shard]

    def add(self, seq, result):
        self.pending[seq] = result
        while self.next_seq in self.pending:
            self._write(self.order[self.next_seq], self.pending.pop(self.next_seq))
            self.next_seq += 1

    def _write(self, planned, result):
        shard, video_id, entry = planned
        sidecar = self.sidecars[shard]
        writer = self._open(shard)
        if isinstance(result, str):
            self.rejected += 1
            sidecar["rejects"].append({"video_id": video_id, "path": entry.path, "label": entry.label,
                                       "reason": result})
        else:
            example = records.make_sequence_example(result.jpegs, entry.label, entry.label_text,
                                                    video_id, result.fps, entry.path)
            writer.write(example.SerializeToString())
            sidecar["videos"].append({"video_id": video_id, "path": entry.path, "label": entry.label,
                                      "num_frames": len(result.jpegs), "fps": result.fps,
                                      "width": result.width, "height": result.height})
            if (result.reached_end and result.declared_frames
                    and result.source_frames < SHORT_FRACTION * result.declared_frames):
                sidecar["short"].append({"path": entry.path, "declared_frames": result.declared_frames,
                                         "decoded_frames": result.source_frames})
        self.remaining[shard] -= 1
        if not self.remaining[shard]:
            self._finish(shard)

    def _finish(self, shard):
        self.writers.pop(shard).close()
        final = os.path.join(self.output_dir, self.names[shard])
        # Sidecar first: a final shard file without its sidecar is never taken as complete.
        _write_json(_sidecar_path(self.output_dir, self.names[shard]), self.sidecars[shard])
        os.replace(self._temporary(shard), final)

    def abandon(self):
        for writer in self.writers.values():
            writer.close()


def _sidecar_path(output_dir, shard_name):
    return os.path.join(output_dir, STATE_DIR, shard_name + ".json")


def _load_sidecar(output_dir, shard_name):
    try:
        with open(_sidecar_path(output_dir, shard_name), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _check_and_clean(output_dir, names, fingerprints):
    """Shards already complete -> set of shard indices; removes temporaries; refuses foreign state."""
    for path in glob.glob(os.path.join(output_dir, "*.tfrecord.tmp-*")) + glob.glob(
            os.path.join(output_dir, STATE_DIR, "*.json.tmp-*")):
        os.remove(path)
    expected = {name: k for k, name in enumerate(names)}
    for path in glob.glob(os.path.join(output_dir, STATE_DIR, "*.json")):
        shard_name = os.path.basename(path)[: -len(".json")]
        sidecar = _load_sidecar(output_dir, shard_name)
        k = expected.get(shard_name)
        if k is None or sidecar is None or sidecar.get("fingerprint") != fingerprints[k]:
            raise ValueError(f"{output_dir} holds shards written with other settings or videos "
                             f"({shard_name}); use another output directory or empty this one")
    for path in glob.glob(os.path.join(output_dir, "*.tfrecord")):
        if os.path.basename(path) not in expected:
            raise ValueError(f"{output_dir} holds shards of another ingest "
                             f"({os.path.basename(path)}); use another output directory or empty this one")
    complete = set()
    for name, k in expected.items():
        if os.path.isfile(os.path.join(output_dir, name)) and _load_sidecar(output_dir, name):
            complete.add(k)
    return complete


# ----------------------------------------------------------------------------- manifest


def _tsv_field(text):
    return _one_line(text).replace("\t", " ")


def _manifest(listing, names, sidecars, settings, command, run):
    """The manifest dict, a function of the listing and the sidecars (plus the `run` timing)."""
    videos = [v for s in sidecars for v in s["videos"]]
    rejects = sorted((r for s in sidecars for r in s["rejects"]), key=lambda r: r["video_id"])
    short = sorted((x for s in sidecars for x in s["short"]), key=lambda x: x["path"])
    labels = sorted({e.label for e in listing.entries} | {e.label for e in listing.missing}
                    | set(range(len(listing.class_names))))
    per_class = {label: {"label": label,
                         "name": listing.class_names[label] if label >= 0 else "",
                         "listed": 0, "ingested": 0, "rejected": 0, "missing": 0, "frames": 0}
                 for label in labels}
    for entry in listing.entries + listing.missing:
        per_class[entry.label]["listed"] += 1
    for video in videos:
        per_class[video["label"]]["ingested"] += 1
        per_class[video["label"]]["frames"] += video["num_frames"]
    for reject in rejects:
        per_class[reject["label"]]["rejected"] += 1
    for entry in listing.missing:
        per_class[entry.label]["missing"] += 1
    return {
        "layout": listing.layout,
        "root": listing.root,
        "command": list(command),
        "options": settings,
        "class_names": list(listing.class_names),
        "totals": {
            "listed": len(listing.entries) + len(listing.missing),
            "ingested": len(videos),
            "rejected": len(rejects),
            "missing": len(listing.missing),
            "unlisted": len(listing.unlisted),
            "ignored": len(listing.ignored),
            "short": len(short),
            "frames": sum(v["num_frames"] for v in videos),
        },
        "per_class": [per_class[label] for label in labels],
        "shards": names,
        "rejects": [{"path": r["path"], "reason": r["reason"]} for r in rejects],
        "missing": [e.path for e in listing.missing],
        "unlisted": list(listing.unlisted),
        "ignored": list(listing.ignored),
        "short": short,
        "run": run,
    }


def _write_rejects(path, manifest):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("path\treason\n")
        for reject in manifest["rejects"]:
            handle.write(f"{_tsv_field(reject['path'])}\t{_tsv_field(reject['reason'])}\n")
        for path_missing in manifest["missing"]:
            handle.write(f"{_tsv_field(path_missing)}\t{MISSING_REASON}\n")
    os.replace(temporary, path)


# ----------------------------------------------------------------------------- ingest


def _synthetic_results(listing, options, wanted):
    """Renders the synthetic videos whose ids are in `wanted`, in id order: (video_id, DecodedVideo)."""
    kwargs = dict(listing.synthetic)
    for video_id, video in enumerate(synthetic.videos(kwargs.pop("num_videos"), **kwargs)):
        if video_id in wanted:
            entry = listing.entries[video_id]
            if (video.path, video.label) != (entry.path, entry.label):
                raise RuntimeError(f"synthetic video {video_id} changed between listing and rendering")
            yield video_id, encode_frames(video.frames, video.fps, options)


def ingest(listing, output_dir, name="train", num_shards=0, options=EncodeOptions(), workers=1,
           video_timeout=600.0, command=None, settings=None, progress_stream=None):
    """Writes the listing's videos as TFRecord shards, rejects.tsv and manifest.json; resumes.

    Args:
      listing: a Listing from one of the list_* functions.
      output_dir: created if absent.
      name: shard file prefix: <name>-00000-of-00010.tfrecord.
      num_shards: 0 = default_num_shards(number of videos).
      options: EncodeOptions (short_side, fps, max_frames, jpeg_quality).
      workers: decoder processes (>= 1).
      video_timeout: seconds one video may take before it is rejected.
      command: recorded in the manifest (default sys.argv).
      settings: extra options recorded in the manifest (the layout's inputs).

    Returns:
      The manifest dict (also written to output_dir/manifest.json).
    """
    started = time.monotonic()
    num_shards = num_shards or default_num_shards(len(listing.entries))
    names = shard_names(name, num_shards)
    content = {"name": name, "num_shards": num_shards, **options._asdict(),
               "synthetic": listing.synthetic}
    shards = {k: [] for k in range(num_shards)}
    for video_id, entry in enumerate(listing.entries):
        shards[video_id % num_shards].append((video_id, entry))
    fingerprints = [_fingerprint(content, shards[k]) for k in range(num_shards)]

    os.makedirs(os.path.join(output_dir, STATE_DIR), exist_ok=True)
    lock = open(os.path.join(output_dir, STATE_DIR, "lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ValueError(f"another ingest is writing to {output_dir}") from None
    try:
        complete = _check_and_clean(output_dir, names, fingerprints)
        todo = [k for k in range(num_shards) if k not in complete]
        if complete:
            logging.info("resuming: %d of %d shards already complete", len(complete), num_shards)
        # Videos go shard after shard so that shards complete (and survive a kill) one by one;
        # the synthetic set is rendered in id order instead, all its shards open at once.
        if listing.synthetic is None:
            order = [(k, video_id, entry) for k in todo for video_id, entry in shards[k]]
        else:
            todo_set = set(todo)
            order = [(video_id % num_shards, video_id, entry)
                     for video_id, entry in enumerate(listing.entries)
                     if video_id % num_shards in todo_set]
        writer = _ShardWriter(output_dir, names, fingerprints, order)
        decoding = listing.synthetic is None and order
        pool = DecoderPool(min(workers, len(order)), options, video_timeout) if decoding else None
        # Started after the decoder processes, so the rate shown is the decoding rate.
        progress = Progress(total=len(order), desc=f"ingest {name}", unit="videos",
                            stream=progress_stream)
        try:
            writer.start(todo)
            if listing.synthetic is not None:
                wanted = {video_id for _, video_id, _ in order}
                for seq, (_, decoded) in enumerate(_synthetic_results(listing, options, wanted)):
                    writer.add(seq, decoded)
                    progress.update(1, extra=f"rejects={writer.rejected}")
            elif order:
                _decode_all(pool, listing.root, order, writer, progress, workers)
            decode_seconds = time.monotonic() - progress.start
            if order:  # a finished folder decodes nothing: no "0 videos 0.00 videos/s" line
                progress.close()
        except BaseException:
            writer.abandon()
            raise
        finally:
            if pool is not None:
                pool.close()
        sidecars = [_load_sidecar(output_dir, shard_name) for shard_name in names]
        run = {"elapsed_seconds": round(time.monotonic() - started, 3),
               "videos_decoded": len(order), "shards_resumed": len(complete),
               "videos_per_second": round(len(order) / max(decode_seconds, 1e-9), 3)}
        settings = {**(settings or {}), **content, "workers": workers,
                    "video_timeout": video_timeout}
        settings.pop("synthetic")
        if listing.synthetic is not None:
            settings.update(listing.synthetic)
        manifest = _manifest(listing, names, sidecars, settings,
                             sys.argv if command is None else command, run)
        _write_rejects(os.path.join(output_dir, REJECTS), manifest)
        _write_json(os.path.join(output_dir, MANIFEST), manifest)
        return manifest
    finally:
        lock.close()


def _decode_all(pool, root, order, writer, progress, workers):
    """Feeds `order` to the decoder processes and the results to `writer`, in order."""
    # Bounds the results held back while an earlier video is still decoding.
    max_ahead = 4 * workers
    seq = 0
    while seq < len(order) or pool.busy_seqs:
        while pool.idle and seq < len(order) and seq < writer.next_seq + max_ahead:
            pool.submit(seq, os.path.join(root, order[seq][2].path))
            seq += 1
        for done, result in pool.collect():
            if isinstance(result, str):
                # FFmpeg's messages name the path as opened; the manifest names it relative to root.
                result = result.replace(os.path.join(root, order[done][2].path), order[done][2].path)
            writer.add(done, result)
            progress.update(1, extra=f"rejects={writer.rejected}")
