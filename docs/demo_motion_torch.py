"""Does a small PyTorch 3D CNN find the synthetic set's motion? A check of the set outside TensorFlow.

    python docs/demo_motion_torch.py [--classes=2] [--background_contrast=90] [--background_pan=0]
        [--background_cycles=4] [--background_mean=GREY] [--demean] [--center] [--steps=600]

Renders the demo's synthetic videos (`asc_tf.data.synthetic`, "pattern" motions,
48 frames of 48 px, the set's constants unless a flag changes them), keeps the
videos of the first `--classes` classes (2: right and left), and trains a
4-layer 3D CNN (3x3x3 convolutions, BatchNorm, ReLU, global average pool;
Adam, one-cycle rate) on random 8-frame 32x32 crops, batch 16, one thread.
Prints the training loss and the accuracy on the centre crops of the
validation videos every 100 steps, one JSON line each. `--demean` subtracts
each clip's mean over time (the static picture) before the network: a
diagnosis of what stops the network, not a recipe; `--center` subtracts each
clip's mean colour (over time and space), another. The `--background_*` flags
set the set's constants of the same names. Needs `torch` (not in
requirements.txt).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--train_videos", type=int, default=1024, help="before keeping --classes")
    parser.add_argument("--val_videos", type=int, default=192)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--pattern_speed", type=float, default=None)
    parser.add_argument("--background_contrast", type=float, default=None)
    parser.add_argument("--background_pan", type=float, default=None,
                        help="the background's displacement as a fraction of the object's")
    parser.add_argument("--background_cycles", type=int, default=None)
    parser.add_argument("--background_mean", type=float, default=None,
                        help="the grey level of every video's mean background colour (default: drawn)")
    parser.add_argument("--demean", action="store_true")
    parser.add_argument("--center", action="store_true", help="subtract each clip's mean colour (over time and space)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import torch.nn as nn

    from asc_tf.data import synthetic

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    if args.pattern_speed is not None:
        synthetic.PATTERN_SPEED = args.pattern_speed
    if args.background_contrast is not None:
        synthetic.BACKGROUND_CONTRAST = args.background_contrast
    if args.background_pan is not None:
        synthetic.BACKGROUND_PAN = args.background_pan
    if args.background_mean is not None:
        synthetic.BACKGROUND_MEAN = args.background_mean
    if args.background_cycles is not None:
        synthetic.BACKGROUND_CYCLES = args.background_cycles

    def load(count, split):
        videos = [synthetic.make_video(i, split, 0, 48, 48, motion="pattern") for i in range(count)]
        frames = np.stack([v.frames for v in videos])
        labels = np.array([v.label for v in videos])
        keep = labels < args.classes
        return frames[keep], labels[keep]

    train_x, train_y = load(args.train_videos, "train")
    val_x, val_y = load(args.val_videos, "val")
    rng = np.random.default_rng(args.seed)

    def batch(x, y, train):
        index = rng.integers(0, len(x), args.batch_size) if train else np.arange(len(x))
        clips = []
        for i in index:
            t = rng.integers(0, 48 - args.frames + 1) if train else (48 - args.frames) // 2
            top, left = rng.integers(0, 17, 2) if train else (8, 8)
            clips.append(x[i, t:t + args.frames, top:top + 32, left:left + 32])
        clips = torch.tensor(np.stack(clips), dtype=torch.float32).permute(0, 4, 1, 2, 3) / 127.5 - 1.0
        if args.demean:
            clips = clips - clips.mean(dim=2, keepdim=True)
        if args.center:
            clips = clips - clips.mean(dim=(2, 3, 4), keepdim=True)
        return clips, torch.tensor(y[index])

    def block(inputs, outputs, stride):
        return nn.Sequential(nn.Conv3d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm3d(outputs), nn.ReLU())

    net = nn.Sequential(block(3, 16, 1), block(16, 32, (1, 2, 2)), block(32, 64, 2), block(64, 64, 2),
                        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, args.classes))
    optimizer = torch.optim.Adam(net.parameters(), args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.1)
    started = time.monotonic()
    for step in range(1, args.steps + 1):
        clips, labels = batch(train_x, train_y, train=True)
        loss = nn.functional.cross_entropy(net(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps:
            net.eval()
            with torch.no_grad():
                clips, labels = batch(val_x, val_y, train=False)
                accuracy = (net(clips).argmax(1) == labels).float().mean().item()
            net.train()
            print(json.dumps({"step": step, "loss": round(loss.item(), 3), "val_accuracy": round(100 * accuracy, 1),
                              "chance": round(100 / args.classes, 1), "seconds": round(time.monotonic() - started)}),
                  flush=True)


if __name__ == "__main__":
    main()
