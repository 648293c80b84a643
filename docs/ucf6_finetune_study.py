"""Fine-tuning schedules on the six UCF-101 classes: every initialisation and seed, by tools.finetune.

    python docs/ucf6_finetune_study.py --output_dir=runs/ft_explore/s900lr01 \
        --train_steps=900 --warmup_steps=60 --base_lr=0.1 [--variants=random,asc] [--seeds=0,1,2]

Runs, for each (variant, seed), the command `tools.demo --videos=../shared/ucf6`
runs for its fine-tuning measure — `python -m tools.finetune
--flagfile=flags/ucf6_finetune.cfg` with the encoder of `--runs`'s
`seed<N>/<variant>` (random init: `--init=random --backbone=r3d_18
--width=0.25`), `--seed=N` and the ingested splits of `--data_dir` — with the
schedule flags given here after the flagfile, into
`<output_dir>/<variant>-s<seed>`. A finished cell (its results.json) is read
back, not run again. Prints one line per cell, then the issue's gate for each
pretrained variant: its worst seed against random init's best.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--runs", default="runs/ucf6_nocolour", help="tools.demo --videos output folder")
    parser.add_argument("--data_dir", default="runs/ucf6/data", help="its ingested train/ and val/ splits")
    parser.add_argument("--variants", default="random,asc,acp_only,infonce")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train_steps", type=int, required=True)
    parser.add_argument("--warmup_steps", type=int, required=True)
    parser.add_argument("--base_lr", type=float, required=True)
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    variants = [variant for variant in args.variants.split(",") if variant]
    data = os.path.abspath(args.data_dir)
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(data, split)):
            parser.error(f"--data_dir: no {split}/ in {data} (run tools.demo --videos=../shared/ucf6 first)")
    top1 = {variant: {} for variant in variants}
    for variant in variants:
        for seed in seeds:
            output = os.path.abspath(os.path.join(args.output_dir, f"{variant}-s{seed}"))
            results = os.path.join(output, "results.json")
            if not os.path.isfile(results):
                if variant == "random":
                    encoder = ["--init=random", "--backbone=r3d_18", "--width=0.25"]
                else:
                    run = os.path.abspath(os.path.join(args.runs, f"seed{seed}", variant))
                    if not os.path.isdir(run):
                        parser.error(f"--runs: no pretraining run {run}")
                    encoder = [f"--model_dir={run}"]
                os.makedirs(output, exist_ok=True)
                command = [sys.executable, "-m", "tools.finetune", "--flagfile=flags/ucf6_finetune.cfg", *encoder,
                           f"--seed={seed}", f"--train_data={data}/train/train-*.tfrecord",
                           f"--test_data={data}/val/val-*.tfrecord", f"--output_dir={output}",
                           f"--train_steps={args.train_steps}", f"--warmup_steps={args.warmup_steps}",
                           f"--base_lr={args.base_lr}"]
                started = time.monotonic()
                with open(output + ".log", "w") as log:
                    subprocess.run(command, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
                print(f"{variant} seed {seed}: {time.monotonic() - started:.0f} s", file=sys.stderr)
            with open(results) as fh:
                finetuned = json.load(fh)
            top1[variant][seed] = 100.0 * finetuned["top1"]
            print(json.dumps({"variant": variant, "seed": seed, "top1": round(top1[variant][seed], 2),
                              "train_accuracy": round(finetuned["final_train"]["accuracy"], 3),
                              "train_seconds": finetuned.get("train_seconds")}))
    for variant, values in top1.items():
        values = list(values.values())
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        print(f"{variant}: fine-tuned top-1 {statistics.mean(values):.2f}{spread} over {len(values)} seed(s)")
    if "random" in top1 and len(seeds) > 1:
        best = max(top1["random"].values())
        for variant in variants:
            if variant != "random":
                worst = min(top1[variant].values())
                print(f"{variant}: worst seed {worst:.2f} vs random init's best {best:.2f}: "
                      f"{'holds' if worst > best else 'does not hold'}")


if __name__ == "__main__":
    main()
