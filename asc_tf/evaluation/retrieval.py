"""Nearest-neighbour video retrieval (the paper's section 4.5) and its picture (Figure 3).

The protocol: `num_clips` = 10 uniformly spaced clips per video
(`pipeline.eval_dataset`), features from the frozen encoder, averaged over the
clips of each video and L2-normalised. Every test video queries the training
set by cosine similarity; a query is a hit at k when any of its k nearest
training videos has its class. Accuracies are in percent, as in the paper's
Table 5.

Ties. Neighbours are ranked by a stable sort on descending similarity
(computed in float64), so gallery items with equal similarity keep their
gallery order. The ranking, and so the accuracy, does not depend on
floating-point luck in the sort.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from asc_tf.data import augment, pipeline, records

KS = (1, 5, 10, 20, 50)
# Thumbnails kept per video for pictures: the whole UCF-101 split 1 at 64 px is
# 160 MB of uint8, at the 112 px crop it would be 500 MB.
THUMBNAIL_SIZE = 64
# Queries per similarity block: bounds the [block, G] float64 similarity matrix.
_QUERY_BLOCK = 1024


@dataclasses.dataclass
class VideoFeatures:
    """One entry per video, in the order the dataset gave them.

    features: [V, D] float32, L2-normalised mean of the video's clip features
    labels: [V] int64 (-1 when unlabelled)
    video_ids: [V] int64
    paths: [V] str ("" when the video is not in `names`)
    class_names: [V] str (the record's label text; "" when unknown)
    frames: [V, S, h, w, 3] uint8, S = STRIP_FRAMES frames spread evenly over the
      middle clip (its first and last included), for pictures that show motion; or None
    """

    features: np.ndarray
    labels: np.ndarray
    video_ids: np.ndarray
    paths: list
    class_names: list
    frames: np.ndarray = None

    def __len__(self):
        return len(self.labels)


def video_names(file_pattern):
    """{video_id: (path, label text)} of every record matched by `file_pattern`.

    `eval_dataset` elements carry neither, and skip unreadable records, so
    they are joined on the video id rather than on position.
    """
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise ValueError(f"no files match {file_pattern!r}")

    def context(serialized):
        video = records.parse_sequence_example(serialized)
        return video["video_id"], video["path"], video["label_text"]

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).ignore_errors()
    dataset = dataset.map(context, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    return {
        int(video_id): (path.decode("utf-8"), text.decode("utf-8"))
        for video_id, path, text in dataset.as_numpy_iterator()
    }


STRIP_FRAMES = 4  # frames kept per video for the pictures


def strip_indices(num_frames, count=STRIP_FRAMES):
    """`count` frame indices spread evenly over a clip of `num_frames`, its first and last included."""
    return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64))


def _thumbnails(frames, size):
    """[B, H, W, 3] normalised float32 → [B, h, w, 3] uint8, shrunk so the longer side is at most `size`."""
    frames = augment.denormalize(frames)
    longer = max(frames.shape[1], frames.shape[2])
    if longer <= size:
        return frames.numpy()
    scale = size / longer
    shape = [max(1, round(frames.shape[1] * scale)), max(1, round(frames.shape[2] * scale))]
    resized = tf.image.resize(tf.cast(frames, tf.float32), shape, antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8).numpy()


def extract_features(encoder, dataset, progress=None, names=None, keep_frames=True,
                     thumbnail_size=THUMBNAIL_SIZE):
    """Video-level features of every video of an evaluation dataset.

    Args:
      encoder: callable, clips [N, T, H, W, 3] float32 normalised → [N, D]
        float32 (an `encoders.Encoder`).
      dataset: `pipeline.eval_dataset(...)`: elements {'clips': [C, T, H, W, 3]
        (or [B, C, T, H, W, 3] with a batch_size), 'label', 'video_id'}.
      progress: a `Progress` counting videos (closed at the end), or None.
      names: {video_id: (path, label text)} from `video_names`, or None.
      keep_frames: keep STRIP_FRAMES frames of each video's middle clip for pictures.
      thumbnail_size: longer side of the kept frames (never enlarged).

    Returns:
      VideoFeatures.
    """
    names = names or {}
    features, labels, video_ids, frames = [], [], [], []
    for element in dataset:
        clips, label, video_id = element["clips"], element["label"], element["video_id"]
        if clips.shape.rank == 5:  # one video per element
            clips, label, video_id = clips[None], label[None], video_id[None]
        videos, num_clips = clips.shape[0], clips.shape[1]
        clip_features = encoder(tf.reshape(clips, [videos * num_clips, *clips.shape[2:]]))
        features.append(tf.reduce_mean(tf.reshape(clip_features, [videos, num_clips, -1]), axis=1).numpy())
        labels.append(label.numpy())
        video_ids.append(video_id.numpy())
        if keep_frames:
            strip = tf.gather(clips[:, num_clips // 2], strip_indices(clips.shape[2]), axis=1)  # [B, S, H, W, 3]
            flat = _thumbnails(tf.reshape(strip, [-1, *strip.shape[2:]]), thumbnail_size)
            frames.append(flat.reshape(videos, strip.shape[1], *flat.shape[1:]))
        if progress is not None:
            progress.update(videos)
    if progress is not None:
        progress.close()
    if not features:
        raise pipeline.NoUsableClips()
    features = np.concatenate(features).astype(np.float32)
    video_ids = np.concatenate(video_ids).astype(np.int64)
    unknown = ("", "")
    return VideoFeatures(
        features=_l2_normalize(features).astype(np.float32),
        labels=np.concatenate(labels).astype(np.int64),
        video_ids=video_ids,
        paths=[names.get(int(i), unknown)[0] for i in video_ids],
        class_names=[names.get(int(i), unknown)[1] for i in video_ids],
        frames=np.concatenate(frames) if keep_frames else None,
    )


def _l2_normalize(features):
    features = np.asarray(features, np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    # A zero feature stays zero: similarity 0 to everything rather than NaN.
    return features / np.maximum(norms, 1e-12)


def nearest_neighbours(query_features, gallery_features, k):
    """Indices of the k most cosine-similar gallery items of each query, nearest first.

    Args:
      query_features: [Q, D] float.
      gallery_features: [G, D] float.
      k: int; more than G gives all G.

    Returns:
      [Q, min(k, G)] int64 gallery indices; equal similarities in gallery order.
    """
    queries = _l2_normalize(query_features)
    gallery = _l2_normalize(gallery_features)
    k = min(k, len(gallery))
    blocks = []
    for start in range(0, len(queries), _QUERY_BLOCK):
        similarity = queries[start:start + _QUERY_BLOCK] @ gallery.T
        blocks.append(np.argsort(-similarity, axis=1, kind="stable")[:, :k])
    return np.concatenate(blocks) if blocks else np.zeros((0, k), np.int64)


def queries_in_gallery(queries, gallery):
    """How many queries are also in the gallery, by path: hits that prove nothing.

    By path, not by video id: an ingest numbers its own videos 0, 1, ..., so
    the ids of two splits ingested apart coincide. Records without a path are
    not counted.
    """
    paths = {path for path in gallery.paths if path}
    return sum(1 for path in queries.paths if path and path in paths)


def topk_accuracy(query_features, query_labels, gallery_features, gallery_labels, ks=KS):
    """Retrieval top-k accuracy, in percent.

    A query is a hit at k when any of its k nearest gallery items (cosine
    similarity, ties in gallery order) has the query's label; k larger than
    the gallery means the whole gallery.

    Args:
      query_features: [Q, D] float; query_labels: [Q] int.
      gallery_features: [G, D] float; gallery_labels: [G] int.
      ks: ints.

    Returns:
      {'top1': float percent, 'top5': ..., ...}, one key per k.
    """
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    if len(query_labels) == 0 or len(gallery_labels) == 0:
        raise ValueError("retrieval needs at least one query and one gallery item")
    neighbours = nearest_neighbours(query_features, gallery_features, max(ks))
    same = gallery_labels[neighbours] == query_labels[:, None]  # [Q, min(max k, G)]
    return {f"top{k}": float(100.0 * np.mean(np.any(same[:, :k], axis=1))) for k in ks}


# ----------------------------------------------------------------------------- the picture

PICTURE_FRAME_SIZE = 96
BORDER = 4
TEXT_HEIGHT = 16
ROW_GAP = 6
_QUERY_GAP = 16
_CELL_GAP = 4
_STRIP_GAP = 1  # between the frames of one video's strip
TITLE_HEIGHT = 20
_BACKGROUND = (24, 24, 24)
_QUERY_COLOUR = (255, 255, 255)
_HIT_COLOUR = (40, 200, 60)
_MISS_COLOUR = (230, 40, 40)


def row_height(frame_size=PICTURE_FRAME_SIZE):
    """Pixel height of one row of `retrieval_picture`."""
    return frame_size + 2 * BORDER + TEXT_HEIGHT + ROW_GAP


def picture_queries(num_queries, rows):
    """Indices of the queries shown: `rows` spread evenly over the query set (all when fewer)."""
    if num_queries <= rows:
        return np.arange(num_queries)
    return np.unique(np.round(np.linspace(0, num_queries - 1, rows)).astype(np.int64))


def retrieval_picture(queries, gallery, rows=8, neighbours=3, frame_size=PICTURE_FRAME_SIZE, title=None):
    """The paper's Figure 3: each row a query and its nearest training videos.

    Each cell is a strip of the video's kept frames (`VideoFeatures.frames`,
    first to last, so that its motion shows) with its class name
    underneath. The query has a white border; a neighbour of the query's
    class a green one (hit), any other a red one (miss). Queries are spread
    evenly over the test set (`picture_queries`).

    Args:
      queries, gallery: VideoFeatures with frames ([V, S, h, w, 3]; [V, h, w, 3] is a strip of one).
      rows: int, queries shown (fewer when there are fewer queries).
      neighbours: int, neighbours per query.
      frame_size: int, every frame is shown at frame_size × frame_size.
      title: str or None: a line drawn above the rows (TITLE_HEIGHT pixels).

    Returns:
      [(TITLE_HEIGHT if title) + R · row_height(frame_size), W, 3] uint8, R = the number of rows drawn.
    """
    # Pillow only for pictures: pretraining and the accuracies do not need it.
    from PIL import Image, ImageDraw, ImageFont

    if queries.frames is None or gallery.frames is None:
        raise ValueError("retrieval_picture needs VideoFeatures extracted with keep_frames=True")

    def strips(frames):
        frames = np.asarray(frames)
        return frames[:, None] if frames.ndim == 4 else frames

    query_frames, gallery_frames = strips(queries.frames), strips(gallery.frames)
    length = max(query_frames.shape[1], gallery_frames.shape[1])
    chosen = picture_queries(len(queries), rows)
    nearest = nearest_neighbours(queries.features[chosen], gallery.features, neighbours)
    cell = length * frame_size + (length - 1) * _STRIP_GAP + 2 * BORDER
    height = frame_size + 2 * BORDER
    top = TITLE_HEIGHT if title else 0
    width = cell + _QUERY_GAP + nearest.shape[1] * (cell + _CELL_GAP) - _CELL_GAP
    image = Image.new("RGB", (width, top + len(chosen) * row_height(frame_size)), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    if title:
        draw.text((BORDER, TITLE_HEIGHT / 2), title, fill=_QUERY_COLOUR, font=font, anchor="lm")

    def put(x, y, strip, colour, text):
        draw.rectangle([x, y, x + cell - 1, y + height - 1], fill=colour)
        for k, frame in enumerate(strip):
            thumbnail = Image.fromarray(frame).resize((frame_size, frame_size), Image.BILINEAR)
            image.paste(thumbnail, (x + BORDER + k * (frame_size + _STRIP_GAP), y + BORDER))
        while text and draw.textlength(text, font=font) > cell:
            text = text[:-2] + "…" if len(text) > 1 else ""
        draw.text((x + cell / 2, y + height + TEXT_HEIGHT / 2), text, fill=colour, font=font, anchor="mm")

    for row, (query, found) in enumerate(zip(chosen, nearest)):
        y = top + row * row_height(frame_size)
        put(0, y, query_frames[query], _QUERY_COLOUR, queries.class_names[query] or str(queries.labels[query]))
        for column, index in enumerate(found):
            hit = gallery.labels[index] == queries.labels[query]
            put(cell + _QUERY_GAP + column * (cell + _CELL_GAP), y, gallery_frames[index],
                _HIT_COLOUR if hit else _MISS_COLOUR, gallery.class_names[index] or str(gallery.labels[index]))
    return np.asarray(image, dtype=np.uint8)
