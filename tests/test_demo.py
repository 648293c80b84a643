"""tools.demo end to end at a minutes scale: the files, finite numbers, losses that went down.

No ordering of the variants is asserted: which objective learns what on the
synthetic set is the question the demo answers, not a property of the code.
"""

import dataclasses
import glob
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT

from asc_tf import demo
from asc_tf.evaluation import probes

SMALL = [
    "--steps=40", "--batch_size=8", "--width=0.125", "--train_videos=24", "--test_videos=12",
    "--video_frames=24", "--video_size=32", "--frames=8", "--crop_size=32", "--eval_clips=2",
    "--probe_clips=1", "--speeds=1,2",
]


def _demo(output_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "tools.demo", f"--output_dir={output_dir}", *SMALL, *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    result = _demo(output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result


def test_demo_writes_every_file(small_demo):
    output_dir, result = small_demo
    for split in ("train", "test"):
        assert glob.glob(str(output_dir / "data" / split / f"{split}-*.tfrecord")), split
    assert (output_dir / "results.json").is_file()
    assert (output_dir / "retrieval.png").stat().st_size > 1000
    assert (output_dir / "seed0" / "asc" / "encoder" / "saved_model.pb").is_file()
    for variant in ("acp_only", "asc", "supervised"):
        assert glob.glob(str(output_dir / "seed0" / variant / "train" / "events.out.tfevents.*")), variant
        assert (output_dir / "seed0" / variant / "measures.json").is_file()
    # The printed table has a row per variant.
    for variant in demo.DEFAULT_VARIANTS:
        assert f"| {variant} |" in result.stdout
    assert "| asc_random |" not in result.stdout  # on request only
    assert f"encoder SavedModel: {output_dir / 'seed0' / 'asc' / 'encoder'}" in result.stdout


def test_demo_numbers_are_finite_and_losses_went_down(small_demo):
    output_dir, _ = small_demo
    results = json.loads((output_dir / "results.json").read_text())
    assert set(results["variants"]) == set(demo.DEFAULT_VARIANTS)
    assert results["chance"]["same_video_top1"] == pytest.approx(100.0 / 12)
    for variant, entry in results["variants"].items():
        measures = entry["seeds"]["0"]
        for name in ("retrieval_top1", "retrieval_top5", "linear_probe", "speed_probe", "same_video_top1",
                     "same_video_crops_top1"):
            assert 0.0 <= measures[name] <= 100.0, (variant, name, measures[name])
        assert measures["retrieval_top1"] <= measures["retrieval_top5"], variant
        assert 1.0 <= measures["effective_rank"] <= 12.0, (variant, measures["effective_rank"])
        assert entry["mean"]["retrieval_top1"] == measures["retrieval_top1"]
        if variant == "random":
            assert measures["first_loss"] is None and measures["last_loss"] is None
            continue
        assert math.isfinite(measures["first_loss"]) and math.isfinite(measures["last_loss"]), variant
        assert measures["last_loss"] < measures["first_loss"], (variant, measures["first_loss"], measures["last_loss"])
    for variant in ("acp_only", "asc"):
        assert 0.0 < results["variants"][variant]["seeds"]["0"]["projection_std"] < 1.0
    assert 0.0 <= results["variants"]["asc"]["seeds"]["0"]["neighbour_same_label"] <= 1.0
    assert results["variants"]["acp_only"]["seeds"]["0"]["neighbour_same_label"] is None


def test_demo_run_again_reuses_what_is_done(small_demo):
    """And a measure added since (here: removed from three variants' files) is taken on the trained encoders,
    read back from their run folders, with the numbers the first run had, and nothing is trained again."""
    output_dir, _ = small_demo
    before = json.loads((output_dir / "results.json").read_text())
    for variant in ("random", "asc", "supervised"):
        path = output_dir / "seed0" / variant / "measures.json"
        saved = json.loads(path.read_text())
        del saved["measures"]["same_video_crops_top1"]
        path.write_text(json.dumps(saved))
    result = _demo(output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cached in" in result.stderr
    assert result.stderr.count("measured before") == len(demo.DEFAULT_VARIANTS)
    assert result.stderr.count("measuring same_video_crops_top1 (added since)") == 3
    assert "pretrain " not in result.stderr and "training with labels" not in result.stderr
    assert json.loads((output_dir / "results.json").read_text())["variants"] == before["variants"]


def test_demo_with_other_settings_measures_again(small_demo):
    """Runs last on the shared folder: it replaces the random variant's measures."""
    output_dir, _ = small_demo
    result = _demo(output_dir, "--variants=random", "--eval_clips=1", "--eval_split=val")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "random init, no training" in result.stderr and "measured before" not in result.stderr
    saved = json.loads((output_dir / "seed0" / "random" / "measures.json").read_text())
    assert saved["settings"]["eval_clips"] == 1 and saved["settings"]["eval_split"] == "val"
    # The queries are the validation split's own videos: its shards are built beside the others.
    assert glob.glob(str(output_dir / "data" / "val" / "val-*.tfrecord"))
    manifest = json.loads((output_dir / "data" / "val" / "manifest.json").read_text())
    assert "--split=val" in " ".join(manifest.get("command", []))
    assert set(json.loads((output_dir / "results.json").read_text())["variants"]) == {"random"}


def test_demo_killed_during_pretraining_resumes_it(tmp_path):
    output_dir = tmp_path / "demo"
    # 80 steps, a checkpoint every 20: the kill lands after the first and long before the last step.
    args = [sys.executable, "-m", "tools.demo", f"--output_dir={output_dir}", *SMALL, "--steps=80",
            "--variants=acp_only", "--same_video_draws=1"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = output_dir / "seed0" / "acp_only" / "checkpoints"
    deadline = time.monotonic() + 600
    # The checkpoint counts once the `checkpoint` state file names it (TensorFlow writes that last);
    # a kill between the shard files and that file leaves no checkpoint to resume, rightly.
    while not tf.train.latest_checkpoint(str(checkpoints)):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 600 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output_dir / "seed0" / "acp_only" / "measures.json").exists()

    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr and "ckpt-" in result.stderr
    measures = json.loads((output_dir / "results.json").read_text())["variants"]["acp_only"]["seeds"]["0"]
    assert math.isfinite(measures["same_video_top1"])


def test_each_self_supervised_variant_pretrains_with_its_objective():
    config = demo.DemoConfig(variants=demo.VARIANTS)
    settings = {
        variant: demo.pretrain_config(config, variant, seed=0, train_data="x-*.tfrecord")
        for variant in ("acp_only", "asc", "asc_random", "infonce")
    }
    assert settings["acp_only"].gamma == 0.0
    assert all(settings[v].appearance_loss == "regression" for v in ("acp_only", "asc", "asc_random"))
    # The contrastive reference is acp_only with InfoNCE for ACP's regression, nothing else changed.
    assert settings["infonce"].appearance_loss == "infonce"
    assert dataclasses.replace(settings["infonce"], appearance_loss="regression", model_dir="") == \
        dataclasses.replace(settings["acp_only"], model_dir="")
    assert (settings["asc"].gamma, settings["asc"].scp_mode) == (0.5, "similar")
    assert (settings["asc_random"].gamma, settings["asc_random"].scp_mode) == (0.5, "random")
    # Everything else is the same budget and recipe.
    assert dataclasses.replace(settings["asc_random"], scp_mode="similar", model_dir="") == dataclasses.replace(
        settings["asc"], model_dir=""
    )


def test_the_picture_is_of_asc_else_of_the_first_known_variant_else_of_the_first():
    assert demo._picture_variant(("random", "acp_only", "asc", "infonce")) == "asc"
    assert demo._picture_variant(("random", "acp_only")) == "acp_only"
    # A run of one variant the list does not name (tools.demo --variants=infonce) draws that one.
    assert demo._picture_variant(("infonce",)) == "infonce"


def test_the_views_augmentations_reach_the_pretraining():
    from asc_tf import pretraining

    paper = pretraining._views(demo.pretrain_config(demo.DemoConfig(), "asc", seed=0, train_data="x"))
    assert all(view.jitter_prob > 0 and view.grayscale_prob > 0 for view in paper)
    config = demo.DemoConfig(color_jitter=False, grayscale=False, solarize=False)
    views = pretraining._views(demo.pretrain_config(config, "asc", seed=0, train_data="x"))
    assert [(v.jitter_prob, v.grayscale_prob, v.solarize_prob) for v in views] == [(0.0, 0.0, 0.0)] * 2
    assert [v.blur_prob for v in views] == [v.blur_prob for v in paper]
    assert [v.blur_prob for v in views] != [0.0, 0.0]


@pytest.mark.parametrize("flag, message", [
    ("--variants=random,bogus", "--variants"),
    ("--speeds=2,2", "--speeds"),
    ("--steps=0", "--steps"),
    ("--crop_size=64", "--crop_size"),
    ("--frames=30", "--video_frames"),
    ("--tau=1.5", "--tau"),
])
def test_demo_bad_flags_fail_before_any_work(tmp_path, flag, message):
    result = _demo(tmp_path / "out", flag)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"demo: error: {message}")
    assert not (tmp_path / "out").exists()


def test_ridge_probe_reads_a_linear_label_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8))
    y = (x[:, 2] > 0).astype(np.int64)
    assert probes.probe_accuracy(x[:300], y[:300], x[300:], y[300:]) >= 90.0  # measured 95.0
    noise = rng.integers(0, 2, 400)
    assert 35.0 < probes.probe_accuracy(x[:300], noise[:300], x[300:], noise[300:]) < 65.0


def test_effective_rank_of_collapsed_and_spread_features():
    rng = np.random.default_rng(0)
    line = rng.standard_normal((100, 1)) * np.ones((1, 16))
    assert probes.effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    spread = rng.standard_normal((5000, 16))
    assert 15.0 < probes.effective_rank(spread) <= 16.0


def test_same_item_top1_counts_the_paired_index():
    gallery = np.eye(4)
    assert probes.same_item_top1(gallery, gallery) == 100.0
    assert probes.same_item_top1(gallery[[1, 0, 2, 3]], gallery) == 50.0


def test_the_table_leaves_out_columns_no_variant_has():
    chance = {"retrieval_top1": 50.0, "speed_probe": 50.0, "same_video_top1": 10.0, "finetune_top1": 50.0}
    synthetic = {"seeds": [0], "chance": chance,
                 "variants": {"random": {"mean": {"retrieval_top1": 40.0}, "std": {}}}}
    lines = demo.table(synthetic).splitlines()
    assert lines[0] == "| variant | retr@1 |" and lines[2] == "| random | 40.00 |"
    assert lines[3] == "1 seed(s). Legend:"
    assert lines[4].split() [:3] == ["retr@1", "retrieval", "top-1"] and lines[4].endswith("chance 50.0")
    assert len(lines) == 6 and "fine-tuned" not in demo.table(synthetic)
    assert "test videos query" in lines[4]  # the legend names the queries' split
    validation = demo.table({**synthetic, "settings": {"eval_split": "val"}}).splitlines()
    assert "validation videos query" in validation[4] and "test" not in validation[4]
    videos = {"seeds": [0, 1], "chance": chance, "variants": {
        "random": {"mean": {"retrieval_top1": 40.0, "finetune_top1": 55.0}, "std": {"retrieval_top1": 1.0,
                                                                                   "finetune_top1": 2.5}},
        "supervised": {"mean": {"retrieval_top1": 60.0, "finetune_top1": None}, "std": {"retrieval_top1": 0.5}}}}
    lines = demo.table(videos).splitlines()
    assert lines[0] == "| variant | retr@1 | fine-tuned@1 |"
    assert lines[2:4] == ["| random | 40.00 ± 1.00 | 55.00 ± 2.50 |", "| supervised | 60.00 ± 0.50 | – |"]
    assert lines[4] == "2 seed(s), mean ± standard deviation. Legend:"
    assert lines[6].split()[0] == "fine-tuned@1" and lines[6].endswith("chance 50.0")


def _results(per_seed, chance=None):
    """A results dict of demo.run's form from {variant: {measure: [value per seed]}}."""
    seeds = len(next(iter(next(iter(per_seed.values())).values())))
    variants = {}
    for variant, measures in per_seed.items():
        variants[variant] = {
            "seeds": {str(seed): {name: values[seed] for name, values in measures.items()} for seed in range(seeds)},
            "mean": {name: float(np.mean(values)) for name, values in measures.items()},
            "std": {name: float(np.std(values, ddof=1)) if seeds > 1 else 0.0 for name, values in measures.items()},
        }
    return {"seeds": list(range(seeds)), "variants": variants,
            "chance": chance or {"retrieval_top1": 16.7, "linear_probe": 16.7, "speed_probe": 50.0,
                                 "same_video_top1": 0.5, "finetune_top1": 16.7}}


def test_the_verdict_names_only_what_beats_random_init_on_every_seed():
    results = _results({
        "random": {"same_video_top1": [6.0, 7.0, 6.5], "retrieval_top1": [20.0, 21.0, 19.0]},
        "acp_only": {"same_video_top1": [9.0, 6.5, 12.0], "retrieval_top1": [22.0, 23.0, 24.0]},
        "asc": {"same_video_top1": [12.0, 13.0, 11.0], "retrieval_top1": [22.0, 18.0, 20.0]},
        "supervised": {"test_top1": [90.0, 92.0, 94.0], "retrieval_top1": [80.0, 82.0, 84.0]},
    })
    line = demo.verdict(results)
    assert line.startswith("verdict: the supervised control reaches 92.0 ± 2.0 % on the test videos (chance 16.7 %)")
    # asc on same-video (worst 11 > random's best 7) and acp_only on retrieval (worst 22 > 21); nothing else.
    assert "asc on same-video@1 by +5.5 ± 0.9 points" in line
    assert "acp_only on retr@1 by +3.0 ± 1.7 points" in line
    assert "acp_only on same-video" not in line and "asc on retr@1" not in line and "supervised on" not in line
    assert demo.verdict(results) == demo.table(results).splitlines()[-1]

    nothing = _results({"random": {"retrieval_top1": [20.0, 21.0]}, "asc": {"retrieval_top1": [20.5, 30.0]}})
    assert "no trained variant beats random init beyond the spread of 2 seeds" in demo.verdict(nothing)
    one = _results({"random": {"retrieval_top1": [20.0], "same_video_top1": [6.0]},
                    "asc": {"retrieval_top1": [18.0], "same_video_top1": [9.5]}})
    assert demo.verdict(one) == ("verdict: one seed, so no spread to judge by (--seeds=3); asc − random init on "
                                 "same-video@1: +3.5 points; asc − random init on retr@1: -2.0 points.")


def test_measures_of_earlier_versions_keep_their_tool_protocols(tmp_path):
    """measures.json once kept the tools' flagfiles in settings["evaluate"]: read as the same stamps.
    A file without a measure added since is measured again."""
    settings = {"steps": 500, "videos": "ucf6"}
    measures = {name: 50.0 for name in demo.FROZEN_MEASURES}
    path = tmp_path / "measures.json"
    path.write_text(json.dumps({"settings": {**settings, "evaluate": {"retrieve_flagfile": "R", "finetune_flagfile": "F"}},
                                "measures": measures}))
    assert demo._saved_measures(str(path), settings) == {"measures": measures, "missing": [],
                                                         "tools": {"retrieve": "R", "finetune": "F"}}
    assert demo._saved_measures(str(path), {**settings, "steps": 400}) is None
    path.write_text(json.dumps({"settings": settings, "tools": {"retrieve": "R2"}, "measures": measures}))
    assert demo._saved_measures(str(path), settings)["tools"] == {"retrieve": "R2"}
    assert demo._saved_measures(str(tmp_path / "absent.json"), settings) is None
    earlier = {k: v for k, v in measures.items() if k != "same_video_crops_top1"}
    path.write_text(json.dumps({"settings": settings, "tools": {}, "measures": earlier}))
    assert demo._saved_measures(str(path), settings)["missing"] == ["same_video_crops_top1"]
