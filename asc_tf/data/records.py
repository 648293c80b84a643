"""The on-disk format: TFRecord shards of `tf.train.SequenceExample`.

The layout is TF Model Garden's video layout (official/vision/dataloaders/
video_input.py), so records written by its tools are readable here and ours by
it:

  sequence feature  image/encoded     bytes, one JPEG per frame
  context           clip/label/index  int64 (Model Garden allows several; we read the first)
  context           clip/label/text   bytes

plus keys of our own, all optional when parsing:

  context           clip/video_id     int64, unique per video within a dataset
  context           clip/num_frames   int64, number of frames stored
  context           clip/fps          float, frames per second of the stored frames
  context           clip/path         bytes, source path relative to the ingest root

A record without our keys (a Model Garden record) parses with `video_id`
a hash of the whole serialized record (distinct records, distinct ids), `num_frames` counted from the frames,
`fps` 0.0 and `path` empty. Labels absent from a record read as -1
(unlabelled video).
"""

import tensorflow as tf

IMAGE_KEY = "image/encoded"
LABEL_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
VIDEO_ID_KEY = "clip/video_id"
NUM_FRAMES_KEY = "clip/num_frames"
FPS_KEY = "clip/fps"
PATH_KEY = "clip/path"

UNLABELLED = -1


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _float(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def make_sequence_example(jpeg_frames, label, label_text, video_id, fps, path):
    """Builds one record.

    Args:
      jpeg_frames: list of `bytes`, one JPEG-encoded frame each, in time order.
      label: int class index, or -1 for an unlabelled video.
      label_text: str class name ("" when unlabelled).
      video_id: int, unique per video within the dataset.
      fps: float, frame rate of the stored frames.
      path: str, the source video path (relative to the ingest root).

    Returns:
      `tf.train.SequenceExample`.
    """
    context = tf.train.Features(
        feature={
            LABEL_KEY: _int64([label]),
            LABEL_TEXT_KEY: _bytes([label_text.encode("utf-8")]),
            VIDEO_ID_KEY: _int64([video_id]),
            NUM_FRAMES_KEY: _int64([len(jpeg_frames)]),
            FPS_KEY: _float([fps]),
            PATH_KEY: _bytes([path.encode("utf-8")]),
        }
    )
    frames = tf.train.FeatureList(feature=[_bytes([frame]) for frame in jpeg_frames])
    return tf.train.SequenceExample(
        context=context, feature_lists=tf.train.FeatureLists(feature_list={IMAGE_KEY: frames})
    )


_CONTEXT_FEATURES = {
    LABEL_KEY: tf.io.VarLenFeature(tf.int64),
    LABEL_TEXT_KEY: tf.io.VarLenFeature(tf.string),
    VIDEO_ID_KEY: tf.io.VarLenFeature(tf.int64),
    FPS_KEY: tf.io.VarLenFeature(tf.float32),
    PATH_KEY: tf.io.VarLenFeature(tf.string),
}
_SEQUENCE_FEATURES = {IMAGE_KEY: tf.io.FixedLenSequenceFeature([], dtype=tf.string)}


def _first_or(sparse, default):
    dense = tf.sparse.to_dense(sparse)
    return tf.cond(tf.size(dense) > 0, lambda: dense[0], lambda: tf.constant(default, dense.dtype))


def parse_sequence_example(serialized):
    """Parses one serialized record (ours or Model Garden's).

    Args:
      serialized: scalar `tf.string`.

    Returns:
      dict with
        'frames':     [F] tf.string, JPEG bytes per frame (still encoded: decode late)
        'num_frames': scalar int32, F
        'label':      scalar int64 (-1 when absent)
        'label_text': scalar tf.string
        'video_id':   scalar int64 (a hash of the whole record when absent)
        'fps':        scalar float32 (0.0 when absent)
        'path':       scalar tf.string
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_CONTEXT_FEATURES, sequence_features=_SEQUENCE_FEATURES
    )
    frames = sequence[IMAGE_KEY]
    num_frames = tf.shape(frames, out_type=tf.int32)[0]
    # The whole record's hash: videos that open on the same frame (a black one, say) are still two videos.
    hashed_id = tf.strings.to_hash_bucket_fast(serialized, 2**62)
    video_id = tf.sparse.to_dense(context[VIDEO_ID_KEY])
    video_id = tf.cond(tf.size(video_id) > 0, lambda: video_id[0], lambda: hashed_id)
    return {
        "frames": frames,
        "num_frames": num_frames,
        "label": _first_or(context[LABEL_KEY], UNLABELLED),
        "label_text": _first_or(context[LABEL_TEXT_KEY], ""),
        "video_id": video_id,
        "fps": _first_or(context[FPS_KEY], 0.0),
        "path": _first_or(context[PATH_KEY], ""),
    }
