"""Per-seed numbers of a `tools.demo --videos=...` run and the gate of the real-video study.

    python docs/ucf6_gate.py runs/ucf6_nocolour/results.json

Prints, for each variant and seed, retrieval top-1 and fine-tuned top-1 (video
level, percent) with the pretraining and fine-tuning seconds, then the gate
of docs/experiments.md for each pretrained variant (asc first, the issue's
gate; acp_only, asc_random and the infonce reference beside it): fine-tuning
from it above random init on every seed (its worst seed above random init's
best), and its mean retrieval top-1 above random init's. Reads results.json
only (no TensorFlow).
"""

import json
import statistics
import sys

MEASURES = ("retrieval_top1", "finetune_top1", "train_seconds", "finetune_seconds")


def main(path):
    with open(path) as fh:
        results = json.load(fh)
    per_variant = {}
    print("| variant | seed | retrieval top-1 | fine-tuned top-1 | pretraining s | fine-tuning s |")
    print("|---|---|---|---|---|---|")
    for variant, entry in results["variants"].items():
        for seed, measures in sorted(entry["seeds"].items(), key=lambda item: int(item[0])):
            cells = ["–" if measures.get(name) is None else f"{measures[name]:.2f}" if name.endswith("top1")
                     else f"{measures[name]:.0f}" for name in MEASURES]
            print(f"| {variant} | {seed} | " + " | ".join(cells) + " |")
            per_variant.setdefault(variant, []).append(measures)
    if "random" not in per_variant:
        return
    random = per_variant["random"]
    best_random = max(m["finetune_top1"] for m in random)
    random_retrieval = statistics.mean(m["retrieval_top1"] for m in random)
    for variant in ("asc", "acp_only", "asc_random", "infonce"):
        if variant not in per_variant:
            continue
        runs = per_variant[variant]
        worst = min(m["finetune_top1"] for m in runs)
        retrieval = statistics.mean(m["retrieval_top1"] for m in runs)
        print(f"{variant}: fine-tuning: worst seed {worst:.2f} vs random init's best {best_random:.2f}: "
              f"{'holds' if worst > best_random else 'does not hold'}; "
              f"retrieval top-1: mean {retrieval:.2f} vs random init's mean {random_retrieval:.2f}: "
              f"{'holds' if retrieval > random_retrieval else 'does not hold'}")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/results.json")
