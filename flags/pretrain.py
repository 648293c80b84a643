"""Pretraining flags → `asc_tf.pretraining.PretrainConfig`, validated before any work."""

import glob
import json
import os

from absl import flags as absl_flags

import flags as asc_flags
from flags.model import define_model_flags, validate_model_flags

from asc_tf.choices import APPEARANCE_LOSSES, OPTIMIZERS, SCP_MODES, SPEED_TASKS, STRATEGIES, TAU_SCHEDULES


def define_pretrain_flags():
    define_model_flags()
    f = absl_flags
    f.DEFINE_string("train_data", None, "File pattern of TFRecord shards (tools.build_tfrecords).")
    f.DEFINE_bool("synthetic", False, "Train on the embedded synthetic set (built into <model_dir>/synthetic_data).")
    f.DEFINE_integer("synthetic_videos", 600, "With --synthetic: number of videos.")
    f.DEFINE_string("synthetic_motion", "pattern", "With --synthetic: motion family (pattern, direction_speed).")
    f.DEFINE_integer("synthetic_frames", 64, "With --synthetic: frames per video.")
    f.DEFINE_integer("synthetic_size", 64, "With --synthetic: frame size.")
    f.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard logs and the exported encoder go here.")
    f.DEFINE_integer("speed_i", 4, "S1: speed (frame stride) of clip i with --speed_mode=fixed.")
    f.DEFINE_integer("speed_j", 8, "S2: speed of clip j with --speed_mode=fixed.")
    f.DEFINE_list("speed_set", ["4", "8"], "Speeds drawn per video with --speed_mode=random.")
    f.DEFINE_enum("speed_mode", "random", ["random", "fixed"], "random: s_i, s_j drawn per video; fixed: S1, S2.")
    f.DEFINE_bool("color_jitter", True, "Augmentation: colour jitter (p 0.8).")
    f.DEFINE_bool("blur", True, "Augmentation: Gaussian blur.")
    f.DEFINE_bool("grayscale", True, "Augmentation: grayscale (p 0.2).")
    f.DEFINE_bool("solarize", True, "Augmentation: solarisation (view j, p 0.2).")
    f.DEFINE_float("min_crop_scale", 0.2, "Augmentation: smallest area fraction of the random resized crop.")
    f.DEFINE_bool("flip", True, "Augmentation: horizontal flip (p 0.5, per view); off for direction labels.")
    f.DEFINE_float("gamma", 0.5, "Weight of the speed task: L = gamma·L_m + (1 − gamma)·L_a.")
    f.DEFINE_enum("scp_mode", "similar", SCP_MODES, "SCP partner: appearance-nearest, random, or same video.")
    f.DEFINE_enum("speed_task", "scp", SPEED_TASKS, "scp (speed consistency) or sp (speed classification).")
    f.DEFINE_bool("symmetric", False, "Also swap the roles of the two clips.")
    f.DEFINE_enum("appearance_loss", "regression", APPEARANCE_LOSSES, "regression: the paper's ACP; infonce: "
                  "a contrastive reference (not the paper's), the batch's other videos as negatives.")
    f.DEFINE_float("temperature", 0.1, "InfoNCE's temperature (--appearance_loss=infonce).")
    f.DEFINE_enum("projection", "linear", ["linear", "mlp"], "Projection heads: one Dense layer, or BYOL's MLP "
                  "(hidden width --predictor_hidden, 4096 when that is 0).")
    f.DEFINE_integer("dim", 256, "Size of the appearance and speed features.")
    f.DEFINE_integer("predictor_hidden", 4096, "Hidden size of the predictors (0: one Dense layer).")
    f.DEFINE_integer("queue_size", 65536, "Feature queue rows; must exceed the global batch.")
    f.DEFINE_float("tau", 0.99, "EMA decay of the target network (base value of the cosine schedule).")
    f.DEFINE_enum("tau_schedule", "constant", TAU_SCHEDULES, "constant, or BYOL's cosine rise to 1.")
    f.DEFINE_enum("optimizer", "lars", OPTIMIZERS, "Optimiser.")
    f.DEFINE_float("base_lr", 0.3, "Learning rate at batch 128; scaled linearly with the global batch.")
    f.DEFINE_float("weight_decay", 1e-6, "Weight decay, never on biases and BatchNorm: LARS's coupled decay (the "
                   "paper's 1e-6); for sgd and adam Keras's decoupled decay, w -= lr*wd*w (adam becomes AdamW).")
    f.DEFINE_integer("global_batch_size", 256, "Clips pairs per step, over all replicas.")
    f.DEFINE_integer("train_steps", 0, "Training steps; 0 = use --epochs. Exactly one of the two is positive.")
    f.DEFINE_float("epochs", 0.0, "Epochs (needs manifest.json beside the shards to count videos); 0 = use --train_steps.")
    f.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up, in epochs (needs the video count) ...")
    f.DEFINE_integer("warmup_steps", None, "... or in steps.")
    f.DEFINE_integer("seed", 0, "Seed of the initialisation, data order, augmentations and random SCP partners.")
    f.DEFINE_enum("strategy", "auto", STRATEGIES, "tf.distribute strategy.")
    f.DEFINE_integer("cpu_replicas", 0, "Split the CPU into this many logical devices (mirrored on CPU; tests).")
    f.DEFINE_bool("jit_compile", False, "XLA-compile the train step (slower on CPU; try it on GPU).")
    f.DEFINE_bool("mixed_precision", False, "Keras mixed_bfloat16 policy (heads and losses stay float32).")
    f.DEFINE_integer("checkpoint_every", 1000, "Save a checkpoint every N steps (and at the end).")
    f.DEFINE_integer("keep_checkpoints", 3, "Keep the newest N checkpoints.")
    f.DEFINE_integer("log_every", 10, "Write TensorBoard scalars every N steps.")
    f.DEFINE_integer("shuffle_buffer", 256, "Records held for shuffling.")
    f.DEFINE_string("monitor_train_data", None, "Retrieval monitor: labelled gallery shards (e.g. UCF-101 train).")
    f.DEFINE_string("monitor_test_data", None, "Retrieval monitor: labelled query shards (e.g. UCF-101 test).")
    f.DEFINE_integer("monitor_every", 0, "Run the retrieval monitor every N steps and at the end; 0 = off.")
    f.DEFINE_integer("monitor_clips", 2, "Retrieval monitor: clips per video (the paper's protocol: 10).")
    f.DEFINE_integer("monitor_resize_short", 0, "Retrieval monitor: short side before the centre crop; "
                     "0 = crop_size * 128 / 112, the paper's ratio.")


def count_videos(pattern):
    """Videos in the shards matched by `pattern`, from the manifest.json beside them."""
    total = 0
    for directory in sorted({os.path.dirname(path) for path in glob.glob(pattern)}):
        manifest = os.path.join(directory, "manifest.json")
        if not os.path.isfile(manifest):
            return None
        with open(manifest) as f:
            total += json.load(f)["totals"]["ingested"]
    return total


def validate_steps_or_epochs():
    """--train_steps and --epochs: both >= 0, exactly one positive (0 turns one off)."""
    values = asc_flags.FLAGS
    if values.train_steps < 0:
        asc_flags.fail("train_steps", f"must be >= 0, got {values.train_steps}")
    if values.epochs < 0:
        asc_flags.fail("epochs", f"must be >= 0, got {values.epochs}")
    if (values.train_steps > 0) == (values.epochs > 0):
        asc_flags.fail("train_steps", "give exactly one of --train_steps and --epochs a positive value (0 turns one off)")


def validate_pretrain_flags(num_replicas=None):
    """Checks every flag that can be checked without data; exit code 2 on the first bad one."""
    values = asc_flags.FLAGS
    validate_model_flags()
    fail = asc_flags.fail
    if not values.model_dir:
        fail("model_dir", "is required")
    if os.path.exists(values.model_dir) and not os.path.isdir(values.model_dir):
        fail("model_dir", f"exists and is not a directory: {values.model_dir}")
    if values.synthetic == bool(values.train_data):
        fail("train_data", "give exactly one of --train_data and --synthetic")
    if values.train_data and not glob.glob(values.train_data):
        fail("train_data", f"no files match {values.train_data}")
    for name in ("speed_i", "speed_j"):
        if getattr(values, name) < 1:
            fail(name, f"speeds are frame strides and must be positive, got {getattr(values, name)}")
    try:
        speeds = [int(s) for s in values.speed_set]
    except ValueError:
        fail("speed_set", f"must be integers, got {values.speed_set}")
    if not speeds or min(speeds) < 1:
        fail("speed_set", f"speeds must be positive integers, got {values.speed_set}")
    if not 0.0 <= values.gamma <= 1.0:
        fail("gamma", f"must be in [0, 1], got {values.gamma}")
    if not 0.0 <= values.tau <= 1.0:
        fail("tau", f"must be in [0, 1], got {values.tau}")
    if values.temperature <= 0:
        fail("temperature", f"must be positive, got {values.temperature}")
    if not 0.0 < values.min_crop_scale <= 1.0:
        fail("min_crop_scale", f"must be in (0, 1], got {values.min_crop_scale}")
    asc_flags.require_positive(
        "dim", "global_batch_size", "checkpoint_every", "keep_checkpoints", "log_every", "shuffle_buffer",
        "synthetic_videos", "synthetic_frames", "synthetic_size",
    )
    if values.predictor_hidden < 0:
        fail("predictor_hidden", f"must be >= 0, got {values.predictor_hidden}")
    if values.base_lr <= 0:
        fail("base_lr", f"must be positive, got {values.base_lr}")
    if values.weight_decay < 0:
        fail("weight_decay", f"must be >= 0, got {values.weight_decay}")
    if values.queue_size <= values.global_batch_size:
        fail("queue_size", f"must exceed the global batch ({values.global_batch_size}), got {values.queue_size}")
    if values.synthetic_motion not in ("pattern", "direction_speed"):
        fail("synthetic_motion", f"must be pattern or direction_speed, got {values.synthetic_motion}")
    if values.scp_mode == "same" and values.speed_task == "sp":
        fail("scp_mode", "'same' is an SCP partner; it has no meaning with --speed_task=sp")
    if values.scp_mode == "same" and values.symmetric:
        fail("symmetric", "not supported with --scp_mode=same (the swapped anchor would need a fourth clip)")
    if values.cpu_replicas < 0:
        fail("cpu_replicas", f"must be >= 0, got {values.cpu_replicas}")
    if num_replicas and values.global_batch_size % num_replicas:
        fail("global_batch_size", f"{values.global_batch_size} is not divisible by the {num_replicas} replicas")
    validate_steps_or_epochs()
    if values.warmup_steps is not None and values.warmup_steps < 0:
        fail("warmup_steps", f"must be >= 0, got {values.warmup_steps}")
    if values.warmup_epochs < 0:
        fail("warmup_epochs", f"must be >= 0, got {values.warmup_epochs}")
    validate_monitor_flags()
    return speeds


def validate_monitor_flags():
    """--monitor_*: the monitor is off with --monitor_every=0; when on, both data patterns must match files."""
    values = asc_flags.FLAGS
    fail = asc_flags.fail
    if values.monitor_every < 0:
        fail("monitor_every", f"must be >= 0 (0 = off), got {values.monitor_every}")
    if values.monitor_clips < 1:
        fail("monitor_clips", f"must be positive, got {values.monitor_clips}")
    if values.monitor_resize_short and values.monitor_resize_short < values.crop_size:
        fail("monitor_resize_short", f"must be at least --crop_size ({values.crop_size}), "
                                     f"got {values.monitor_resize_short}")
    for name in ("monitor_train_data", "monitor_test_data"):
        pattern = getattr(values, name)
        if values.monitor_every > 0 and not pattern:
            fail(name, "is required with --monitor_every > 0")
        if pattern and not glob.glob(pattern):
            fail(name, f"no files match {pattern}")


def steps_from_flags(num_videos):
    """(train_steps, warmup_steps) from --train_steps/--epochs and --warmup_steps/--warmup_epochs."""
    values = asc_flags.FLAGS
    per_epoch = None if num_videos is None else max(1, num_videos // values.global_batch_size)

    def need_count(flag):
        if per_epoch is None:
            asc_flags.fail(flag, "needs the number of videos: no manifest.json beside the shards; give steps")

    if values.train_steps > 0:
        train_steps = values.train_steps
    else:
        need_count("epochs")
        train_steps = max(1, round(values.epochs * per_epoch))
    if values.warmup_steps is not None:
        warmup = values.warmup_steps
    elif values.warmup_epochs:
        need_count("warmup_epochs")
        warmup = round(values.warmup_epochs * per_epoch)
    else:
        warmup = 0
    return train_steps, min(warmup, train_steps)


def config_from_flags(train_data, speeds, train_steps, warmup_steps):
    """The run's PretrainConfig: every field named like a flag takes the flag's value."""
    import dataclasses

    from asc_tf.pretraining import PretrainConfig

    values = asc_flags.FLAGS
    settings = {f.name: values[f.name].value for f in dataclasses.fields(PretrainConfig) if f.name in values}
    settings.update(
        train_data=train_data, speed_set=tuple(speeds), train_steps=train_steps, warmup_steps=warmup_steps,
        crop_scale=(values.min_crop_scale, 1.0),
    )
    return PretrainConfig(**settings)
