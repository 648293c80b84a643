"""Test-wide setup: the repo root on sys.path, and where the shared real clips live."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before any test module imports TensorFlow: `import asc_tf` turns oneDNN on (asc_tf/cpu.py), as in every binary.
import asc_tf  # noqa: E402,F401

# Real videos in the Kinetics / UCF-101 layouts, beside the checkout (never committed).
REALCLIPS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "realclips")

# tools.pretrain at the smallest shapes that still run every part (thin R3D-18, 4 frames of 16 px, batch 4).
TINY_PRETRAIN = [
    "--backbone=r3d_18", "--width=0.125", "--frames=4", "--crop_size=16", "--speed_set=1,2",
    "--global_batch_size=4", "--queue_size=32", "--dim=8", "--predictor_hidden=16", "--log_every=1",
    "--shuffle_buffer=8",
]


def synthetic_records(output, num_videos, split="train", num_shards=0):
    """Ingests a tiny synthetic set (12 frames of 20 px, pattern motions) into `output`; returns its file pattern."""
    from asc_tf.data import ingest

    listing = ingest.list_synthetic(num_videos, split=split, seed=0, num_frames=12, size=20, motion="pattern")
    ingest.ingest(listing, str(output), name=split, num_shards=num_shards,
                  options=ingest.EncodeOptions(short_side=0), command=["test"])
    return os.path.join(str(output), f"{split}-*.tfrecord")
