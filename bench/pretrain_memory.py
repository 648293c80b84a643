"""Peak resident memory of a real pretraining run: `tools.pretrain` in a child process.

    python -m bench.pretrain_memory                    # R3D-18, 16×112×112, global batch 4, 3 steps
    python -m bench.pretrain_memory --batch 2 --steps 2

Builds a small synthetic set at 128 px (so 112-px crops are real crops),
runs `python -m tools.pretrain` on it with the paper's model settings
(R3D-18 at width 1.0, 256-d linear heads, 4096-wide predictors, queue of
65,536, speeds {4, 8}, LARS, full augmentation, checkpoint and export at the
end), and reports the child's peak resident set size (`ru_maxrss` of the
waited-for children): the whole run — TensorFlow, the model and its EMA
target, optimiser slots, queue, input pipeline buffers, the checkpoint and
SavedModel export. One JSON line; never run in CI.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="asc_tf_memory_") as model_dir:
        command = [
            sys.executable, "-m", "tools.pretrain", "--synthetic", "--synthetic_videos=16",
            "--synthetic_size=128", "--synthetic_frames=64", f"--model_dir={model_dir}",
            "--backbone=r3d_18", f"--frames={args.frames}", f"--crop_size={args.size}", "--speed_set=4,8",
            f"--global_batch_size={args.batch}", f"--train_steps={args.steps}", "--log_every=1",
        ]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        start = time.monotonic()
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        if result.returncode != 0:
            raise SystemExit(f"tools.pretrain failed ({result.returncode}):\n{result.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps({
        "bench": "pretrain_memory",
        "backbone": "r3d_18",
        "batch": args.batch,
        "clip": [args.frames, args.size, args.size],
        "steps": args.steps,
        "peak_rss_mb": round(peak_mb, 1),
        "wall_s": round(seconds, 1),
        "last_line": result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "",
    }), flush=True)


if __name__ == "__main__":
    main()
