"""Builds a backbone, runs it on a random clip batch and prints what it is.

    python -m tools.inspect_backbone --backbone=r3d_18 --frames=16 --crop_size=112
    python -m tools.inspect_backbone --backbone=r3d_18 --torch_state=r3d_18_kinetics.npz

With --torch_state (an .npz of a PyTorch state_dict, see asc_tf/models/port.py)
the torchvision weights are loaded first, and the keys it did not use are listed.
"""

import os
import time

from absl import flags as absl_flags

import flags
from flags.model import define_model_flags, validate_model_flags

define_model_flags()
absl_flags.DEFINE_integer("batch_size", 2, "Clips in the random batch.")
absl_flags.DEFINE_string("torch_state", None, "Optional .npz of PyTorch state_dict arrays to load first.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    validate_model_flags()
    if FLAGS.batch_size < 1:
        flags.fail("batch_size", f"must be at least 1, got {FLAGS.batch_size}")
    if FLAGS.torch_state and not os.path.isfile(FLAGS.torch_state):
        flags.fail("torch_state", f"no such file: {FLAGS.torch_state}")

    import numpy as np
    import tensorflow as tf

    from asc_tf.models import build_backbone, load_torchvision_state

    model = build_backbone(FLAGS.backbone, width=FLAGS.width)
    clips = tf.random.uniform((FLAGS.batch_size, FLAGS.frames, FLAGS.crop_size, FLAGS.crop_size, 3))
    model(clips[:1])
    if FLAGS.torch_state:
        missing, unused = load_torchvision_state(model, dict(np.load(FLAGS.torch_state)), strict=False)
        print(f"loaded {FLAGS.torch_state}: missing {len(missing)} keys, unused {len(unused)} {unused[:8]}")
    forward = tf.function(lambda x: model(x, training=False))
    forward(clips)
    start = time.perf_counter()
    features = forward(clips).numpy()
    elapsed = time.perf_counter() - start
    params = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    print(f"backbone      {FLAGS.backbone} (width {FLAGS.width})")
    print(f"parameters    {params:,}")
    print(f"input         {tuple(clips.shape)} float32 [N, T, H, W, C]")
    print(f"features      {features.shape} float32, mean {features.mean():.4f}, std {features.std():.4f}")
    print(f"forward       {elapsed:.3f} s for the batch (graph mode, after one warm-up call)")


if __name__ == "__main__":
    flags.run(main)
