"""Prints the losses of ASCNet's first training steps as one JSON line, for a fixed seed and fixed data.

tests/test_onednn.py runs it with TF_ENABLE_ONEDNN_OPTS=0 and =1 (both given
explicitly, so `import asc_tf` leaves them alone) and compares the two lines.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import asc_tf  # noqa: E402,F401  (first: the environment's TF_ENABLE_ONEDNN_OPTS is kept)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow.python.util import _pywrap_util_port  # noqa: E402

from asc_tf.ascnet import ASCNet  # noqa: E402

CLIP = (8, 32, 32, 3)
STEPS = 3


def main():
    keras.utils.set_random_seed(0)
    model = ASCNet(backbone="r3d_18", width=0.125, dim=8, predictor_hidden=16, queue_size=32, speed_set=(1, 2),
                   tau=0.9)
    model.build_networks(CLIP)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    rng = np.random.default_rng(0)
    losses = []
    for step in range(STEPS):
        batch = {
            "view_i": rng.normal(size=(4, *CLIP)).astype(np.float32),
            "view_j": rng.normal(size=(4, *CLIP)).astype(np.float32),
            "video_id": np.arange(4, dtype=np.int64) + 10 * step,
            "speed_i": np.array([1, 2, 1, 2], np.int32),
            "speed_j": np.array([2, 2, 1, 1], np.int32),
            "label": np.zeros(4, np.int64),
        }
        logs = model.train_on_batch(batch, return_dict=True)
        losses.append({name: float(logs[name]) for name in ("loss", "loss_a", "loss_m")})
    print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()), "losses": losses}))


if __name__ == "__main__":
    main()
