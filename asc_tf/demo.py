"""The demo: every part of the system on the embedded synthetic set, and what each objective learned.

`run(config, train_data, test_data)` trains and measures each variant, for
each seed, with the same budget (steps × batch):

  random      no training: a randomly initialised encoder;
  acp_only    ASCNet with γ = 0 (appearance consistency alone, i.e. BYOL on clips);
  asc         ASCNet with γ = 0.5 and the appearance-nearest SCP partner;
  supervised  the same backbone trained with the labels (cross-entropy): the positive control,
              whose own classifier's test accuracy (`test_top1`) shows what learning the
              motion classes looks like at this budget;
  asc_random  (on request, not in the default list) ASCNet with γ = 0.5 and a uniformly
              random SCP partner at the same speed: the paper's "random" instance
              sampling, which isolates what the appearance-nearest choice does;
  infonce     (on request) not ASCNet: acp_only with ACP's regression replaced by InfoNCE
              against the batch's other videos (`ASCNet(appearance_loss="infonce")`), a
              contrastive reference that tells a budget too small to learn anything from
              a negative-free objective that does not learn at this budget.

and measures each encoder, frozen (features of the backbone, before any head):

  retrieval_top1/top5  test videos query the training videos (the paper's
                       protocol with `eval_clips` clips per video instead of 10);
  linear_probe         test accuracy of a ridge classifier (probes.py) on the
                       training videos' features;
  speed_probe          can the features tell a clip's playback stride? A ridge
                       classifier on single clips at each stride of `speeds`
                       (training videos), tested on the test videos' clips;
  same_video_top1      two clips of each test video at the two speeds, each
                       with its own strong augmentation (the pretraining
                       views: crops, colour jitter, grayscale, blur,
                       solarisation): how often the nearest of all clips at
                       the other speed is the same video's, both ways,
                       averaged over `same_video_draws` draws of the
                       augmentation (one draw of 192 videos moves it by
                       several points). What ACP trains for; without the colour
                       augmentation, colour alone would solve it even for a
                       random encoder;
  same_video_crops_top1
                       the same with views of crops alone (no colour jitter,
                       grayscale, blur or solarisation): instance
                       discrimination where the clips keep their colours;
  effective_rank       of the test videos' features (1 = collapsed);
  projection_std, neighbour_same_label
                       the pretraining's own diagnostics at its last step.

On a labelled video folder (`tools.demo --videos`), `run` is also given an
`evaluate` callable: there the ordinary tools measure each encoder on the
validation videos, as anyone would measure it again (tools/demo.py):

  retrieval_top1 ... retrieval_top50
                       tools.retrieve with the protocol's flagfile (10 clips
                       per video): these replace the in-process retrieval;
  finetune_top1/top5   tools.finetune from each initialisation (not from the
                       supervised variant, trained with the labels already),
                       video-level accuracy over the protocol's clips.

Every measure of every variant sees the same clips (fixed evaluation seed).
`results.json` holds every seed's numbers and their mean and standard
deviation; `table(results)` prints them.
"""

import dataclasses
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from asc_tf.choices import CLASSIFIER_OPTIMIZERS  # imports nothing: DemoConfig stays free of TensorFlow

VARIANTS = ("random", "acp_only", "asc", "supervised", "asc_random", "infonce")
DEFAULT_VARIANTS = VARIANTS[:4]
GAMMAS = {"acp_only": 0.0, "asc": 0.5, "asc_random": 0.5, "infonce": 0.0}
SCP_MODES = {"asc": "similar", "asc_random": "random"}  # acp_only (γ = 0) never chooses a partner
MEASURES = (
    "retrieval_top1", "retrieval_top5", "linear_probe", "speed_probe", "same_video_top1", "same_video_crops_top1",
    "effective_rank",
    "projection_std", "neighbour_same_label",
)
# What `measure` returns for every encoder (the rest of MEASURES come from training).
FROZEN_MEASURES = ("retrieval_top1", "retrieval_top5", "linear_probe", "speed_probe", "same_video_top1",
                   "same_video_crops_top1", "effective_rank")
# One seed for every evaluation clip: every encoder is measured on the same clips.
EVAL_SEED = 20261128
# The defaults that --videos changes: real frames, stored at short side 128, hold more than 32x32 pixels show.
# The budget on real video (tools.demo --videos), chosen on ucf6's validation groups (docs/experiments.md):
# without the colour augmentations, which erase the colour that tells these scenes apart; speeds {1, 2}.
VIDEO_DEFAULTS = {"frames": 8, "crop_size": 64, "speeds": (1, 2), "steps": 500, "color_jitter": False,
                  "grayscale": False, "solarize": False}
# Measured by the tools on a video folder (`evaluate`), beside MEASURES.
TOOL_MEASURES = ("retrieval_top10", "retrieval_top20", "retrieval_top50", "finetune_top1", "finetune_top5",
                 "finetune_seconds")
# DemoConfig fields that shape the synthetic set and mean nothing on a video folder.
SYNTHETIC_FIELDS = ("motion", "video_frames", "video_size", "data_seed", "background_mean")
# The empty file that marks a run folder as the demo's own (and so removable when its settings change).
RUN_MARK = ".demo_run"


@dataclasses.dataclass
class DemoConfig:
    """Every setting of a demo run (its time: README, The demo)."""

    output_dir: str = "runs/demo"
    # a labelled video folder (tools.demo --videos); "" for the synthetic set
    videos: str = ""
    flip: bool = False  # left and right are different classes of the synthetic set; real videos flip
    # the synthetic set (tools.build_tfrecords --layout=synthetic)
    motion: str = "pattern"
    train_videos: int = 3072  # with 384 the supervised control learns their looks: 55.7 % against 69.8 % (val)
    test_videos: int = 192
    eval_split: str = "test"  # the queries' split; "val" to choose settings without the test split
    video_frames: int = 48
    video_size: int = 48
    data_seed: int = 0
    # every video's mean background colour (synthetic.make_video): drawn per video, the colour hides the motion
    background_mean: float = 128.0
    # the encoder and its clips
    backbone: str = "r3d_18"
    width: float = 0.25
    frames: int = 8
    crop_size: int = 32
    # strides: the supervised and frozen-feature clips are at the first (3 px of motion per frame after the
    # crop at stride 2; at stride 1 the control reached 69.8 % instead of 93.2 %, docs/experiments.md)
    speeds: tuple = (2, 4)
    # the budget, the same for every trained variant
    steps: int = 1000
    batch_size: int = 16
    # self-supervised variants (pretraining.PretrainConfig)
    optimizer: str = "adam"
    base_lr: float = 0.008  # × batch / 128: Adam at 1e-3 for batch 16
    projection: str = "mlp"
    symmetric: bool = True
    dim: int = 64
    predictor_hidden: int = 256
    queue_size: int = 1024
    tau: float = 0.99
    # the views' augmentations beside crops and flips (augment.byol_views; the paper uses all four)
    color_jitter: bool = True
    blur: bool = True
    grayscale: bool = True
    solarize: bool = True
    weight_decay: float = 1e-6  # as tools.pretrain: coupled for LARS, decoupled (AdamW) for Adam; make_optimizer
    # the supervised variant (finetune.compile_classifier, cosine): Adam at 1e-3 for batch 16, crops of 70-100 %
    supervised_optimizer: str = "adam"
    supervised_lr: float = 0.008  # × batch / 128, as base_lr
    supervised_crop_scale: tuple = (0.7, 1.0)
    # the runs
    seeds: tuple = (0,)
    variants: tuple = DEFAULT_VARIANTS
    # evaluation
    eval_clips: int = 4
    probe_clips: int = 2
    same_video_draws: int = 5

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
        if len(self.speeds) != 2 or min(self.speeds) < 1 or self.speeds[0] == self.speeds[1]:
            raise ValueError(f"speeds must be two different positive strides, got {self.speeds}")
        if self.supervised_optimizer not in CLASSIFIER_OPTIMIZERS:
            raise ValueError(f"supervised_optimizer must be one of {CLASSIFIER_OPTIMIZERS}, "
                             f"got {self.supervised_optimizer!r}")
        low, high = self.supervised_crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"supervised_crop_scale must be 0 < min <= max <= 1, got {self.supervised_crop_scale}")

    @property
    def warmup_steps(self):
        return self.steps // 10

    @property
    def resize_short(self):
        from asc_tf.data import augment

        return augment.protocol_resize_short(self.crop_size)

    def run_dir(self, seed, variant):
        return os.path.join(self.output_dir, f"seed{seed}", variant)


# ----------------------------------------------------------------------------- training


def pretrain_config(config, variant, seed, train_data, export=False):
    """The PretrainConfig of a self-supervised variant."""
    from asc_tf.pretraining import PretrainConfig

    return PretrainConfig(
        train_data=train_data,
        model_dir=config.run_dir(seed, variant),
        backbone=config.backbone,
        width=config.width,
        dim=config.dim,
        predictor_hidden=config.predictor_hidden,
        frames=config.frames,
        crop_size=config.crop_size,
        speed_set=tuple(config.speeds),
        speed_mode="random",
        flip=config.flip,
        color_jitter=config.color_jitter,
        blur=config.blur,
        grayscale=config.grayscale,
        solarize=config.solarize,
        projection=config.projection,
        symmetric=config.symmetric,
        appearance_loss="infonce" if variant == "infonce" else "regression",
        gamma=GAMMAS[variant],
        scp_mode=SCP_MODES.get(variant, "similar"),
        queue_size=config.queue_size,
        tau=config.tau,
        optimizer=config.optimizer,
        base_lr=config.base_lr,
        weight_decay=config.weight_decay,
        global_batch_size=config.batch_size,
        train_steps=config.steps,
        warmup_steps=config.warmup_steps,
        seed=seed,
        checkpoint_every=max(1, config.steps // 4),
        log_every=10,
        shuffle_buffer=config.train_videos,
        export=export,
    )


def pretrain(config, variant, seed, train_data, export, stream):
    """Pretrains (or resumes) one self-supervised variant; returns (Encoder, training record)."""
    from asc_tf import pretraining
    from asc_tf.evaluation import encoders

    started = time.monotonic()
    summary = pretraining.run(pretrain_config(config, variant, seed, train_data, export), stream=stream)
    first, last = summary["first_logs"] or {}, summary["last_logs"] or {}
    record = {
        "first_loss": first.get("loss"),
        "last_loss": last.get("loss"),
        "projection_std": last.get("projection_std"),
        # Only SCP chooses neighbours: with γ = 0 the metric is not logged.
        "neighbour_same_label": last.get("neighbour_same_label"),
        "train_seconds": time.monotonic() - started,
    }
    return encoders.from_pretraining(config.run_dir(seed, variant)), record


def train_supervised(config, seed, train_data, test_data, num_classes, stream, export=False):
    """The supervised control: the backbone and a linear head trained with labels; returns (Encoder, record).

    The record's `test_top1` is its own classifier's video-level accuracy on
    `test_data` (percent; softmax averaged over `eval_clips` centre-cropped
    clips per video, `finetune.evaluate`): the positive control, what
    "learned the motion classes" looks like at this budget.

    `export`: the encoder also goes to <run>/encoder as a SavedModel (what tools.retrieve --saved_model reads).
    """
    import keras
    import tensorflow as tf

    from asc_tf import export as exporting
    from asc_tf.data import pipeline
    from asc_tf.evaluation import encoders, finetune

    started = time.monotonic()
    run_dir = config.run_dir(seed, "supervised")
    keras.utils.set_random_seed(seed)
    model = finetune.build_classifier(
        config.backbone, config.width, num_classes, dropout=0.0,
        clip_shape=(config.frames, config.crop_size, config.crop_size, 3),
    )
    finetune.compile_classifier(model, config.supervised_lr, config.batch_size, config.steps, config.warmup_steps,
                                optimizer=config.supervised_optimizer)
    dataset = finetune.train_dataset(
        train_data, config.batch_size, config.frames, config.crop_size, stride=min(config.speeds), flip=config.flip,
        seed=seed, shuffle_buffer=config.train_videos, crop_scale=config.supervised_crop_scale,
    )
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "train"))
    # The pretraining's tags (loss, lr), so that every variant's curves overlay in TensorBoard.
    logs = finetune.train(model, dataset, config.steps, writer=writer, stream=stream, prefix="")
    model.save_weights(os.path.join(run_dir, "classifier.weights.h5"))
    test = pipeline.eval_dataset(
        test_data, num_clips=config.eval_clips, num_frames=config.frames, stride=min(config.speeds),
        resize_short=config.resize_short, crop_size=config.crop_size, batch_size=16,
    )
    scores = finetune.evaluate(model, test, num_videos=config.test_videos, stream=stream)
    if export:
        exporting.export_encoder(model.encoder, os.path.join(run_dir, "encoder"), config.frames, config.crop_size,
                                 config.resize_short)
    record = {
        "first_loss": logs.get("first_loss"),
        "last_loss": logs.get("loss"),
        "train_accuracy": logs.get("accuracy"),
        "test_top1": 100.0 * scores["top1"],
        "train_seconds": time.monotonic() - started,
    }
    return encoders.from_keras(model.encoder, source=run_dir), record


# ----------------------------------------------------------------------------- measuring


def _clip_features(encoder, dataset):
    """Features of every clip of an eval_dataset (batched): [V·N, D] float32."""
    import tensorflow as tf

    features = []
    for element in dataset:
        clips = element["clips"]
        videos, num_clips = clips.shape[0], clips.shape[1]
        features.append(encoder(tf.reshape(clips, [videos * num_clips, *clips.shape[2:]])).numpy())
    return np.concatenate(features)


def _view_pairs(config, test_data, draw, crops_only=False):
    """Two strongly augmented clips of each test video, at the two speeds (the pretraining views).

    `draw` numbers independent draws of the augmentation; each is the same for every encoder.
    `crops_only`: the views' random crops alone, without their colour and blur steps.
    """
    import keras

    from asc_tf.data import augment, pipeline

    # The pipeline's draws are stateless in `seed` (the same clips for every variant and training
    # seed); the global seed is fixed too, so that what runs after a measure starts from one state.
    keras.utils.set_random_seed(EVAL_SEED + draw)
    strong = not crops_only
    views = augment.byol_views(color_jitter=strong, blur=strong, grayscale=strong, solarize=strong, flip=False)
    dataset = pipeline.pretrain_dataset(
        test_data, 1, num_frames=config.frames, crop_size=config.crop_size, speeds=tuple(config.speeds),
        speed_mode="fixed", augment=views, seed=EVAL_SEED + draw, shuffle_buffer=0, repeat=False,
    )
    return dataset.unbatch().batch(32)


def same_video_top1(encoder, config, test_data, crops_only=False):
    """The same-video measure (module docstring), in percent, averaged over `same_video_draws` draws."""
    from asc_tf.evaluation import probes

    scores = []
    for draw in range(config.same_video_draws):
        view_i, view_j = [], []
        for batch in _view_pairs(config, test_data, draw, crops_only):
            view_i.append(encoder(batch["view_i"]).numpy())
            view_j.append(encoder(batch["view_j"]).numpy())
        view_i, view_j = np.concatenate(view_i), np.concatenate(view_j)
        scores += [probes.same_item_top1(view_i, view_j), probes.same_item_top1(view_j, view_i)]
    return float(np.mean(scores))


def _video_names(*patterns):
    from asc_tf.evaluation import retrieval

    return {pattern: retrieval.video_names(pattern) for pattern in patterns}


def measure(encoder, config, train_data, test_data, stream=None, names=None):
    """The frozen-feature measures of one encoder (module docstring).

    `names`: {file pattern: retrieval.video_names(pattern)} of both splits, read once per run; None reads them.

    Returns:
      (dict of measures, (queries, gallery) VideoFeatures with frames for the picture).
    """
    from asc_tf.data import pipeline
    from asc_tf.evaluation import probes, retrieval
    from asc_tf.progress import Progress

    names = names or _video_names(train_data, test_data)

    def video_features(pattern, count, desc):
        dataset = pipeline.eval_dataset(
            pattern, num_clips=config.eval_clips, num_frames=config.frames, stride=min(config.speeds),
            resize_short=config.resize_short, crop_size=config.crop_size, batch_size=16,
        )
        progress = Progress(total=count, desc=desc, unit="videos", stream=stream)
        return retrieval.extract_features(encoder, dataset, progress=progress, names=names[pattern])

    gallery = video_features(train_data, config.train_videos, "features (train)")
    queries = video_features(test_data, config.test_videos, f"features ({config.eval_split})")
    top = retrieval.topk_accuracy(queries.features, queries.labels, gallery.features, gallery.labels, ks=(1, 5))

    speed_sets = {}
    for split, pattern in (("train", train_data), ("test", test_data)):
        features, labels = [], []
        for index, stride in enumerate(config.speeds):
            dataset = pipeline.eval_dataset(
                pattern, num_clips=config.probe_clips, num_frames=config.frames, stride=stride,
                resize_short=config.resize_short, crop_size=config.crop_size, batch_size=16,
            )
            clip_features = _clip_features(encoder, dataset)
            features.append(clip_features)
            labels.append(np.full(len(clip_features), index))
        speed_sets[split] = (np.concatenate(features), np.concatenate(labels))


    measures = {
        "retrieval_top1": top["top1"],
        "retrieval_top5": top["top5"],
        "linear_probe": probes.probe_accuracy(gallery.features, gallery.labels, queries.features, queries.labels),
        "speed_probe": probes.probe_accuracy(*speed_sets["train"], *speed_sets["test"], num_classes=2),
        "same_video_top1": same_video_top1(encoder, config, test_data),
        "same_video_crops_top1": same_video_top1(encoder, config, test_data, crops_only=True),
        "effective_rank": probes.effective_rank(queries.features),
    }
    return measures, (queries, gallery)


# ----------------------------------------------------------------------------- the whole run


def _saved_measures(path, settings):
    """measures.json of these settings, as {"measures", "tools": {tool: protocol}, "missing"}; None when absent
    or other.

    Files of earlier versions kept the tools' protocols in settings["evaluate"]
    ({"retrieve_flagfile": ..., "finetune_flagfile": ...}): read as the same stamps,
    and may lack measures added since: "missing" names them (to measure on the trained encoder).
    """
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    recorded = dict(saved.get("settings") or {})
    tools = saved.get("tools")
    if tools is None:
        earlier = recorded.pop("evaluate", None) or {}
        tools = {name[:-len("_flagfile")]: text for name, text in earlier.items()}
    if recorded != settings:
        return None
    missing = [name for name in FROZEN_MEASURES if name not in saved["measures"]]
    return {"measures": saved["measures"], "tools": tools, "missing": missing}


def _summary(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _picture_variant(variants):
    """The variant whose retrieval.png the demo draws: asc, else the first of acp_only, supervised, random, else the first."""
    return next((v for v in ("asc", "acp_only", "supervised", "random") if v in variants), variants[0])


def run(config, train_data, test_data, num_classes, stream=None, evaluate=None):
    """Trains and measures every (seed, variant); writes results.json, retrieval.png and the encoder.

    `evaluate(variant, seed, run_dir, tools)`, when given, returns more measures of a trained
    variant, taken by the named tools (they update the in-process ones); its `settings`
    attribute is {tool: its protocol}.

    A variant whose run folder holds measures of the same settings is not run
    again (nor its picture drawn again), so an interrupted demo picks up where
    it stopped; a pretraining in progress resumes from its newest checkpoint.
    When only a tool's protocol changed, that tool alone measures again, from
    the run folder (the encoder is neither trained nor measured again); a
    measure added since the run is taken on its encoder, read back from the
    run folder (`_trained_encoder`), and nothing is trained again.

    Returns:
      the results dict (as written to results.json).
    """
    import keras
    from PIL import Image

    from asc_tf.evaluation import retrieval

    stream = stream or sys.stderr
    os.makedirs(config.output_dir, exist_ok=True)
    ignored = ("output_dir", "seeds", "variants") + (SYNTHETIC_FIELDS if config.videos else ())
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()
                if k not in ignored}
    tools = dict(getattr(evaluate, "settings", {})) if evaluate is not None else {}
    picture_variant = _picture_variant(config.variants)
    per_seed = {variant: {} for variant in config.variants}
    names = _video_names(train_data, test_data)
    encoder_path = os.path.join(config.run_dir(config.seeds[0], "asc"), "encoder") if "asc" in config.variants else None
    for seed in config.seeds:
        for variant in config.variants:
            run_dir = config.run_dir(seed, variant)
            saved = os.path.join(run_dir, "measures.json")
            picture = seed == config.seeds[0] and variant == picture_variant
            export = seed == config.seeds[0] and variant == "asc"
            before = _saved_measures(saved, settings)
            if before is not None:
                measures, stale = before["measures"], [tool for tool in tools if before["tools"].get(tool) != tools[tool]]
                missing = before["missing"]
                print(f"[seed {seed}] {variant}: measured before, {saved}"
                      + (f"; the protocol of {', '.join(stale)} changed: measuring with it again" if stale else "")
                      + (f"; measuring {', '.join(missing)} (added since)" if missing else ""),
                      file=stream)
                if missing:
                    keras.backend.clear_session()
                    added, _ = measure(_trained_encoder(config, variant, seed, num_classes), config, train_data,
                                       test_data, stream, names)
                    measures.update({name: added[name] for name in missing})
                if stale:
                    measures.update(evaluate(variant, seed, run_dir, stale))
                if stale or missing:
                    with open(saved, "w") as f:
                        json.dump({"settings": settings, "tools": tools, "measures": measures}, f, indent=2)
                per_seed[variant][seed] = measures
                continue
            if os.path.isdir(run_dir) and not _resumable(run_dir, config, variant, seed, train_data):
                _remove_run(run_dir)
            os.makedirs(run_dir, exist_ok=True)
            open(os.path.join(run_dir, RUN_MARK), "w").close()
            # Each variant seeds itself (random_init, train_supervised, pretraining.run).
            keras.backend.clear_session()
            print(f"[seed {seed}] {variant}: " + (
                "random init, no training" if variant == "random" else
                f"{'training with labels,' if variant == 'supervised' else 'pretraining'} "
                f"{config.steps} steps of batch {config.batch_size}"), file=stream)
            if variant == "random":
                encoder, record = _trained_encoder(config, variant, seed, num_classes), {}
            elif variant == "supervised":
                encoder, record = train_supervised(config, seed, train_data, test_data, num_classes, stream,
                                                   export=evaluate is not None)
            else:
                encoder, record = pretrain(config, variant, seed, train_data, export, stream)
            measures, (queries, gallery) = measure(encoder, config, train_data, test_data, stream, names)
            shown_top1 = measures["retrieval_top1"]  # of the picture's features (tools.retrieve may replace it)
            measures.update(record)
            if evaluate is not None:
                measures.update(evaluate(variant, seed, run_dir, list(tools)))
            for name in MEASURES + ("first_loss", "last_loss", "train_seconds") + (TOOL_MEASURES if evaluate else ()):
                measures.setdefault(name, None)
            per_seed[variant][seed] = measures
            with open(saved, "w") as f:
                json.dump({"settings": settings, "tools": tools, "measures": measures}, f, indent=2)
            print(f"[seed {seed}] {variant}: " + ", ".join(
                f"{name} {measures[name]:.2f}" for name in MEASURES if measures[name] is not None), file=stream)
            if picture:
                image = retrieval.retrieval_picture(
                    queries, gallery, rows=8, neighbours=5, frame_size=48,
                    title=f"{variant}, seed {seed}: {_split_name({'settings': settings})} queries (white) and their 5 nearest training "
                          f"videos; green = same class. Retrieval top-1 {shown_top1:.1f} %")
                Image.fromarray(image).save(os.path.join(config.output_dir, "retrieval.png"))

    results = {
        "settings": settings,
        "tools": tools,  # {tool: its flagfile} of the measures taken by tools/ (--videos)
        "seeds": list(config.seeds),
        "chance": {
            "retrieval_top1": 100.0 / num_classes,
            "linear_probe": 100.0 / num_classes,
            "speed_probe": 50.0,
            "same_video_top1": 100.0 / config.test_videos,
            "same_video_crops_top1": 100.0 / config.test_videos,
            "finetune_top1": 100.0 / num_classes,
        },
        "variants": {},
        "files": {
            "retrieval_png": os.path.join(config.output_dir, "retrieval.png"),
            "encoder_saved_model": encoder_path,
            "tensorboard": config.output_dir,
        },
    }
    for variant, seeds in per_seed.items():
        names = sorted({name for measures in seeds.values() for name in measures})
        entry = {"seeds": {str(seed): seeds[seed] for seed in config.seeds}, "mean": {}, "std": {}}
        for name in names:
            entry["mean"][name], entry["std"][name] = _summary([seeds[seed].get(name) for seed in config.seeds])
        results["variants"][variant] = entry
    with open(os.path.join(config.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def _resumable(run_dir, config, variant, seed, train_data):
    """True for an interrupted pretraining of these very settings (no measures yet, the same config.json)."""
    if variant not in GAMMAS or os.path.isfile(os.path.join(run_dir, "measures.json")):
        return False
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        saved = json.load(f)
    wanted = json.loads(json.dumps(dataclasses.asdict(pretrain_config(config, variant, seed, train_data))))
    return {k: v for k, v in saved.items() if k != "export"} == {k: v for k, v in wanted.items() if k != "export"}


def _trained_encoder(config, variant, seed, num_classes):
    """The encoder a finished variant trained, read back from its run folder (random init: drawn again)."""
    from asc_tf.evaluation import encoders, finetune

    clip_shape = (config.frames, config.crop_size, config.crop_size, 3)
    if variant == "random":
        return encoders.random_init(config.backbone, config.width, clip_shape, seed)
    run_dir = config.run_dir(seed, variant)
    if variant == "supervised":
        model = finetune.build_classifier(config.backbone, config.width, num_classes, dropout=0.0,
                                          clip_shape=clip_shape)
        model.load_weights(os.path.join(run_dir, "classifier.weights.h5"))
        return encoders.from_keras(model.encoder, source=run_dir)
    return encoders.from_pretraining(run_dir)


def _remove_run(run_dir):
    """Removes an earlier or interrupted run of other settings: only folders this module wrote (marked)."""
    if os.path.isfile(os.path.join(run_dir, RUN_MARK)):
        shutil.rmtree(run_dir)
    elif os.listdir(run_dir):
        raise FileExistsError(f"{run_dir} holds files the demo did not write; choose another --output_dir")


# (measure, column title, what it is: the legend printed under the table). Chance levels: results["chance"].
TABLE_COLUMNS = (
    ("test_top1", "control@1", "the supervised control's own classifier, test videos, video-level top-1 %"),
    ("retrieval_top1", "retr@1", "retrieval top-1 %: test videos query the training videos, class of the nearest"),
    ("retrieval_top5", "retr@5", "retrieval top-5 %"),
    ("retrieval_top10", "retr@10", "retrieval top-10 %"),
    ("retrieval_top20", "retr@20", "retrieval top-20 %"),
    ("retrieval_top50", "retr@50", "retrieval top-50 %"),
    ("finetune_top1", "fine-tuned@1", "fine-tuned from this initialisation (tools.finetune), video-level top-1 %"),
    ("linear_probe", "linear", "linear probe on the frozen features, test top-1 %"),
    ("speed_probe", "speed", "speed probe: single clips' playback stride told from the features, %"),
    ("same_video_top1", "same-video@1", "two augmented clips of a test video at the two speeds find each other, top-1 %"),
    ("same_video_crops_top1", "same-video crops@1", "the same with views of random crops alone, top-1 %"),
    ("effective_rank", "eff.rank", "effective rank of the test features (1 = collapsed)"),
    ("projection_std", "proj.std", "pretraining: std of the normalised projections (0 = collapsed)"),
    ("neighbour_same_label", "nbr.same", "pretraining: fraction of SCP partners of the anchor's class"),
    ("first_loss", "loss first", "training loss at the first step"),
    ("last_loss", "loss last", "training loss at the last step"),
)
# The measures a verdict compares with random init: what the encoder learned (the diagnostics are not).
VERDICT_MEASURES = ("same_video_top1", "same_video_crops_top1", "retrieval_top1", "linear_probe", "speed_probe",
                    "finetune_top1")
_CHANCE_KEYS = {"test_top1": "finetune_top1", "retrieval_top5": None, "retrieval_top10": None,
                "retrieval_top20": None, "retrieval_top50": None}


def _columns(results):
    return [(name, title, text) for name, title, text in TABLE_COLUMNS
            if any(entry["mean"].get(name) is not None for entry in results["variants"].values())]


def table(results):
    """The results as a Markdown table, mean ± standard deviation over the seeds, then a legend and the verdict.

    Columns no variant has are left out. The legend names every column and
    its chance level; the last line is `verdict(results)`.
    """
    seeds = len(results["seeds"])
    columns = _columns(results)
    header = "| variant | " + " | ".join(title for _, title, _ in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for variant, entry in results["variants"].items():
        cells = []
        for name, _, _ in columns:
            mean, std = entry["mean"].get(name), entry["std"].get(name)
            if mean is None:
                cells.append("–")
            elif seeds > 1:
                cells.append(f"{mean:.2f} ± {std:.2f}")
            else:
                cells.append(f"{mean:.2f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append(f"{seeds} seed(s){', mean ± standard deviation' if seeds > 1 else ''}. Legend:")
    chance = results["chance"]
    width = max(len(title) for _, title, _ in columns)
    split = _split_name(results)  # the queries' split: "test" in the texts, or "validation"
    for name, title, text in columns:
        key = _CHANCE_KEYS.get(name, name)
        level = chance.get(key) if key else None
        text = text.replace("test ", f"{split} ")
        lines.append(f"  {title:<{width}} {text}" + (f"; chance {level:.{2 if level < 1 else 1}f}" if level else ""))
    lines.append(verdict(results))
    return "\n".join(lines)


def _per_seed(results, variant, name):
    seeds = results["variants"][variant]["seeds"]
    values = [seeds[str(seed)].get(name) for seed in results["seeds"]]
    return None if any(v is None for v in values) else np.asarray(values, dtype=np.float64)


def _split_name(results):
    return {"val": "validation"}.get(results.get("settings", {}).get("eval_split"), "test")


def verdict(results):
    """One line computed from the numbers: which variant beats random init, on what, by how much.

    A variant beats random init on a measure when its worst seed is above
    random init's best seed (so never with one seed, where the line gives
    the largest differences instead). The difference is the mean ± standard
    deviation over the seeds of (variant − random init), seed by seed.
    """
    variants = results["variants"]
    parts = []
    control = variants.get("supervised", {}).get("mean", {}).get("test_top1")
    if control is not None:
        chance = results["chance"].get("finetune_top1")
        std = variants["supervised"]["std"].get("test_top1") or 0.0
        parts.append(f"the supervised control reaches {control:.1f}"
                     + (f" ± {std:.1f}" if len(results["seeds"]) > 1 else "")
                     + f" % on the {_split_name(results)} videos" + (f" (chance {chance:.1f} %)" if chance else ""))
    if "random" not in variants:
        return "verdict: " + ("; ".join(parts) or "no random init to compare with") + "."
    titles = {name: title for name, title, _ in TABLE_COLUMNS}
    trained = [v for v in variants if v not in ("random", "supervised")]
    wins, gaps = [], []
    for variant in trained:
        for name in VERDICT_MEASURES:
            ours, baseline = _per_seed(results, variant, name), _per_seed(results, "random", name)
            if ours is None or baseline is None:
                continue
            difference = ours - baseline
            gaps.append((float(difference.mean()), variant, name))
            if len(ours) > 1 and ours.min() > baseline.max():
                wins.append(f"{variant} on {titles[name]} by {difference.mean():+.1f} ± {difference.std(ddof=1):.1f} "
                            "points")
    if len(results["seeds"]) < 2:
        best = sorted(gaps, reverse=True)[:2]
        parts.append("one seed, so no spread to judge by (--seeds=3)" + "".join(
            f"; {variant} − random init on {titles[name]}: {gap:+.1f} points" for gap, variant, name in best))
    elif wins:
        parts.append(f"beating random init beyond the spread of {len(results['seeds'])} seeds (worst seed above "
                     "its best seed): " + ", ".join(wins) + "; no other variant or measure does")
    elif trained:
        parts.append(f"no trained variant beats random init beyond the spread of {len(results['seeds'])} seeds "
                     "on any measure")
    return "verdict: " + "; ".join(parts) + "."
