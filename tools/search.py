r"""Video similarity search with an exported encoder: index a folder, then query it with a video.

    python -m tools.search index --saved_model=exports/k400_r3d18_encoder --videos=my_videos \
        --index=my_videos.npz --num_clips=10
    python -m tools.search query --saved_model=exports/k400_r3d18_encoder --index=my_videos.npz \
        --video=some_video.mp4 --k=5

Needs only the SavedModel written by tools.export (not the pretraining run).
A video's embedding is the mean of the encoder's features over `num_clips`
clips of the SavedModel's `frames` consecutive frames, their starts spread
evenly over the video (the evaluation protocol, `sampling.uniform_starts`),
L2-normalised; scores are cosine similarities. Frames are decoded with PyAV
and resized to the SavedModel's `resize_short` while decoding; the centre
crop and normalisation happen inside the SavedModel. Videos that cannot be
decoded are skipped and listed.

The index (.npz) holds `paths` (absolute), `features` [V, D] float32
(unit rows), `skipped` ("path<TAB>reason"), and the settings it was built
with (`frames`, `crop_size`, `resize_short`, `output_dim`, `num_clips`,
`saved_model`, and `fingerprint`, the sha256 of the SavedModel's weights);
a query refuses a SavedModel with other settings, and one with other weights
unless --allow_other_encoder (its scores would compare features of two
different encoders).
"""

import os
import sys

from absl import flags as absl_flags

import flags

COMMANDS = ("index", "query")

absl_flags.DEFINE_string("saved_model", None, "An encoder SavedModel exported by tools.export.")
absl_flags.DEFINE_string("videos", None, "index: folder of videos, searched recursively.")
absl_flags.DEFINE_string("index", None, "The index file (.npz): written by index, read by query.")
absl_flags.DEFINE_integer("num_clips", 10, "index: clips per video whose features are averaged.")
absl_flags.DEFINE_string("video", None, "query: the video to search with.")
absl_flags.DEFINE_integer("k", 5, "query: how many of the most similar videos to print.")
absl_flags.DEFINE_bool("allow_other_encoder", False, "query: accept a SavedModel whose weights differ from those "
                       "the index was built with (its scores then compare two encoders' features).")
FLAGS = flags.FLAGS

SETTINGS = ("frames", "crop_size", "resize_short", "output_dim")


def _validate(argv):
    """The sub-command, after every flag it uses is checked."""
    if len(argv) != 2 or argv[1] not in COMMANDS:
        got = " ".join(argv[1:]) or "nothing"
        sys.stderr.write(f"search: error: the sub-command must be one of {', '.join(COMMANDS)}, got {got}\n")
        sys.exit(flags.EXIT_BAD_FLAG)
    command = argv[1]
    if not FLAGS.saved_model:
        flags.fail("saved_model", "is required")
    if not os.path.isfile(os.path.join(FLAGS.saved_model, "saved_model.pb")):
        flags.fail("saved_model", f"no saved_model.pb in {FLAGS.saved_model}")
    if not FLAGS.index:
        flags.fail("index", "is required")
    if command == "index":
        if not FLAGS.videos or not os.path.isdir(FLAGS.videos):
            flags.fail("videos", f"must be a folder, got {FLAGS.videos}")
        if not FLAGS.index.endswith(".npz"):
            flags.fail("index", f"must end in .npz, got {FLAGS.index}")
        if os.path.isdir(FLAGS.index):
            flags.fail("index", f"is a folder: {FLAGS.index}")
        if FLAGS.num_clips < 1:
            flags.fail("num_clips", f"must be at least 1, got {FLAGS.num_clips}")
        flags.require_writable("index", os.path.dirname(FLAGS.index) or ".")
        from asc_tf.data import ingest

        if not ingest.list_folder(FLAGS.videos).entries:
            flags.fail("videos", f"no video files under {FLAGS.videos}")
    else:
        if not os.path.isfile(FLAGS.index):
            flags.fail("index", f"no such file: {FLAGS.index}")
        if not FLAGS.video or not os.path.isfile(FLAGS.video):
            flags.fail("video", f"no such file: {FLAGS.video}")
        if FLAGS.k < 1:
            flags.fail("k", f"must be at least 1, got {FLAGS.k}")
    return command


def _load_encoder():
    """The SavedModel's serving function and its settings {frames, crop_size, resize_short, output_dim}."""
    import tensorflow as tf

    model = tf.saved_model.load(FLAGS.saved_model)
    if "serving_default" not in model.signatures or not all(hasattr(model, name) for name in SETTINGS):
        flags.fail("saved_model", f"not an encoder exported by tools.export: {FLAGS.saved_model}")
    settings = {name: int(getattr(model, name).numpy()) for name in SETTINGS}
    return model.signatures["serving_default"], settings


def fingerprint(saved_model):
    """The sha256 of a SavedModel's weights (its variables/ files): two exports of one encoder agree."""
    import glob
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(saved_model, "variables", "variables.*"))):
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def embed(serve, path, frames, resize_short, num_clips):
    """One video's unit-length embedding.

    Args:
      serve: the SavedModel's serving signature, clips [N, frames, H, W, 3] uint8 -> {"features": [N, D]}.
      path: a video file.
      frames: int, T.
      resize_short: int, the short side frames are decoded at.
      num_clips: int, N.

    Returns:
      [D] float32, L2 norm 1.

    Raises:
      ingest.VideoRejected: the video cannot be decoded.
    """
    import numpy as np
    import tensorflow as tf

    from asc_tf.data import ingest, sampling

    video = ingest.decode_video(path, ingest.EncodeOptions(short_side=resize_short, jpeg_quality=95))
    count = len(video.jpegs)
    starts = sampling.uniform_starts(count, frames, 1, num_clips)
    indices = np.stack([sampling.clip_indices(count, frames, 1, start).numpy() for start in starts])
    unique, position = np.unique(indices, return_inverse=True)
    decoded = np.stack([tf.io.decode_jpeg(video.jpegs[i], channels=3).numpy() for i in unique])
    clips = decoded[position.reshape(indices.shape)]  # [num_clips, frames, H, W, 3] uint8
    features = serve(clips=tf.constant(clips))["features"].numpy().mean(axis=0)
    return (features / max(float(np.linalg.norm(features)), 1e-12)).astype(np.float32)


def _index(serve, settings):
    import numpy as np
    import tensorflow as tf

    from asc_tf.data import ingest
    from asc_tf.progress import Progress

    root = os.path.abspath(FLAGS.videos)
    listing = ingest.list_folder(root)
    paths, features, skipped = [], [], []
    progress = Progress(total=len(listing.entries), desc="index", unit="videos")
    for entry in listing.entries:
        path = os.path.join(root, entry.path)
        try:
            features.append(embed(serve, path, settings["frames"], settings["resize_short"], FLAGS.num_clips))
            paths.append(path)
        except (ingest.VideoRejected, tf.errors.OpError) as error:
            skipped.append(f"{path}\t{' '.join(str(error).split())}")
        progress.update(1, extra=f"skipped {len(skipped)}")
    progress.close()
    if os.path.dirname(FLAGS.index):
        os.makedirs(os.path.dirname(FLAGS.index), exist_ok=True)
    features = np.stack(features) if features else np.zeros((0, settings["output_dim"]), np.float32)
    np.savez(FLAGS.index, paths=np.array(paths, dtype=str), features=features,
             skipped=np.array(skipped, dtype=str), num_clips=FLAGS.num_clips,
             saved_model=os.path.abspath(FLAGS.saved_model), fingerprint=fingerprint(FLAGS.saved_model),
             **settings)
    print(f"indexed {len(paths)} videos from {root} into {FLAGS.index} ({features.shape[1]}-d, "
          f"{FLAGS.num_clips} clips of {settings['frames']} frames each); skipped {len(skipped)}")
    for line in skipped:
        print(f"  skipped {line}")
    return 0


def _query(serve, settings):
    import numpy as np
    import tensorflow as tf

    from asc_tf.data import ingest

    try:
        index = np.load(FLAGS.index)
        missing = {"paths", "features", "num_clips", *SETTINGS} - set(index.files)
    except (OSError, ValueError, AttributeError):  # not an .npz at all
        missing = True
    if missing:
        flags.fail("index", f"not an index written by tools.search index: {FLAGS.index}")
    built_with = {name: int(index[name]) for name in SETTINGS}
    if built_with != settings:
        flags.fail("saved_model", f"its settings {settings} differ from those the index was built with {built_with}")
    if "fingerprint" not in index.files:
        print(f"search: warning: {FLAGS.index} predates encoder fingerprints; cannot check that "
              f"{FLAGS.saved_model} is the encoder it was built with", file=sys.stderr)
    elif str(index["fingerprint"]) != fingerprint(FLAGS.saved_model) and not FLAGS.allow_other_encoder:
        flags.fail("saved_model", f"is not the encoder {FLAGS.index} was built with ({index['saved_model']}): "
                                  "its weights differ; --allow_other_encoder compares them anyway")
    try:
        query = embed(serve, FLAGS.video, settings["frames"], settings["resize_short"], int(index["num_clips"]))
    except (ingest.VideoRejected, tf.errors.OpError) as error:
        print(f"search: cannot read {FLAGS.video}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    scores = index["features"] @ query
    order = np.argsort(-scores, kind="stable")[: FLAGS.k]
    print(f"{len(order)} most similar of {len(scores)} videos to {FLAGS.video}:")
    for rank, i in enumerate(order, start=1):
        print(f"{rank:3d}  {scores[i]:.4f}  {index['paths'][i]}")
    return 0


def main(argv):
    command = _validate(argv)
    serve, settings = _load_encoder()
    return _index(serve, settings) if command == "index" else _query(serve, settings)


if __name__ == "__main__":
    flags.run(main)
