"""Test-wide setup: the repo root on sys.path, and where the shared real clips live."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Real videos in the Kinetics / UCF-101 layouts, beside the checkout (never committed).
REALCLIPS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "realclips")
