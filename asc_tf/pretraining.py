"""The pretraining run: strategy, data, model, optimiser, TensorBoard, checkpoints, resume, export.

`run(config)` is what `python -m tools.pretrain` calls. The loop is a
compiled train function (`make_train_function`: ASCNet's `train_step` under
`strategy.run`, as Keras builds it) driven step by step, so that checkpoints,
summaries and the NaN check happen at exact step boundaries:

  model_dir/
    checkpoints/ckpt-<step>.*   every `checkpoint_every` steps and at the end (the last `keep_checkpoints`)
    train/                      TensorBoard: every metric each `log_every` steps; the two views at the start;
                                retrieval top-1/top-5 when a `monitor` is given
    encoder/                    SavedModel of the online encoder (at the end)
    encoder.weights.h5          its Keras weights
    config.json                 the run's settings

A checkpoint holds everything needed to continue: online and target networks,
heads and predictors (the model), the optimiser with its step counter and
slots, and the feature queue (features, ids, speeds, labels, pointer), all as
variables of the model, and where each input pipeline stands in its record
stream (`ASCNet.data_position`). The stream is a function of the seed alone
(`pipeline.pretrain_dataset`), so a resumed run rebuilds it, skips the records
already trained on without decoding them, and continues with exactly the
batches, clips and augmentations an uninterrupted run would have had: the
final state equals that of an uninterrupted run (tests/test_preemption.py).
Re-running the same command resumes from the newest checkpoint.

Skipped input: `pipeline.InputStats` counts records that failed to parse or
decode and TFRecord files with damaged framing; both go to TensorBoard
(input/records_skipped, input/shards_cut_short) and the run's summary.

TensorFlow writes a checkpoint to temporary files and renames them, and
updates the `checkpoint` index last, so a process killed while saving leaves
the previous checkpoint as the newest readable one; the next run deletes the
temporary folder (ckpt-<step>_temp) the killed one left.
"""

import contextlib
import dataclasses
import glob
import json
import math
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from asc_tf import cpu, distribute, optim
from asc_tf.ascnet import ASCNet
from asc_tf.choices import OPTIMIZERS
from asc_tf.data import augment, pipeline
from asc_tf.models.heads import BYOL_HIDDEN
from asc_tf.progress import Progress


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; no checkpoint was written for that step."""


class CheckpointWriteFailed(RuntimeError):
    """A checkpoint could not be written (a full disk, say); the newest good one is intact and resumes."""


class CollapseAlarm:
    """Goes off when the projections' `projection_std` stays under `fraction` / sqrt(dim) for `steps` steps.

    L2-normalised outputs of dimension d spread over the sphere have a
    per-dimension std across the batch near 1/sqrt(d); collapsed ones (every
    clip the same output) have 0 (SimSiam, section 4.1).
    """

    def __init__(self, dim, fraction=0.2, steps=20):
        self.dim, self.steps, self.fraction = dim, steps, fraction
        self.threshold = fraction / math.sqrt(dim)
        self.low = 0
        self.raised = False

    @property
    def on(self):
        return self.low >= self.steps

    def update(self, std, step):
        """Returns the warning line the first time the alarm goes off, else None."""
        self.low = self.low + 1 if std < self.threshold else 0
        if not self.on or self.raised:
            return None
        self.raised = True
        return (f"pretrain: warning: the projections look collapsed at step {step}: projection_std {std:.4f}, "
                f"under {self.threshold:.4f} ({self.fraction}/sqrt({self.dim})) for {self.low} steps in a row")


class UnsupportedPrecision(RuntimeError):
    """--mixed_precision where TensorFlow has no bfloat16 convolution (oneDNN's kernels below AVX-512)."""


@dataclasses.dataclass
class PretrainConfig:
    """Every setting of a pretraining run. Defaults are the paper's (3D ResNet-18, Kinetics-400)."""

    train_data: str = ""
    model_dir: str = "runs/pretrain"
    # encoder and heads
    backbone: str = "r3d_18"
    width: float = 1.0
    projection: str = "linear"
    dim: int = 256
    predictor_hidden: int = BYOL_HIDDEN
    # clips
    frames: int = 16
    crop_size: int = 112
    speed_i: int = 4
    speed_j: int = 8
    speed_set: tuple = (4, 8)
    speed_mode: str = "random"
    color_jitter: bool = True
    blur: bool = True
    grayscale: bool = True
    solarize: bool = True
    flip: bool = True
    crop_scale: tuple = (0.2, 1.0)
    # objective
    gamma: float = 0.5
    scp_mode: str = "similar"
    speed_task: str = "scp"
    symmetric: bool = False
    appearance_loss: str = "regression"
    temperature: float = 0.1
    queue_size: int = 65536
    tau: float = 0.99
    tau_schedule: str = "constant"
    # optimisation
    optimizer: str = "lars"
    base_lr: float = 0.3
    weight_decay: float = 1e-6
    global_batch_size: int = 256
    train_steps: int = 1000
    warmup_steps: int = 0
    # machinery
    seed: int = 0
    strategy: str = "auto"
    jit_compile: bool = False
    mixed_precision: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    shuffle_buffer: int = pipeline.DEFAULT_SHUFFLE_BUFFER
    export: bool = True

    def speeds(self):
        """The speed set the data draws from: (S1, S2) for fixed speeds, else `speed_set`."""
        return (self.speed_i, self.speed_j) if self.speed_mode == "fixed" else tuple(self.speed_set)


def make_optimizer(config, variables=()):
    """LARS (paper), SGD with momentum, or Adam, with the linear-scaled warm-up + cosine learning rate.

    `weight_decay` is LARS's coupled decay (g + wd·w, the paper's 1e-6); for SGD and Adam it is
    Keras's decoupled decay (w ← w − lr·wd·w: AdamW for Adam). None of them decays the biases and
    BatchNorm's γ/β among `variables` (the variables the optimiser will train).
    """
    peak = optim.scaled_learning_rate(config.base_lr, config.global_batch_size)
    schedule = optim.WarmupCosine(peak, config.warmup_steps, config.train_steps)
    if config.optimizer == "lars":
        return optim.LARS(schedule, momentum=0.9, weight_decay_rate=config.weight_decay)
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=decay)
    elif config.optimizer == "adam":
        optimizer = (keras.optimizers.AdamW(schedule, weight_decay=decay) if decay
                     else keras.optimizers.Adam(schedule))
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if decay:
        optimizer.exclude_from_weight_decay(var_list=[v for v in variables if optim.is_bias_or_norm(v)])
    return optimizer


@contextlib.contextmanager
def precision_policy(mixed_precision):
    """Layers created inside take Keras's mixed_bfloat16 policy (else float32); the previous global policy after.

    A layer keeps the policy it was created under, so the model stays mixed
    once built while nothing built later in the process (the demo's next
    variant, the next test, an evaluation encoder) inherits it. Under
    mixed_bfloat16 the convolutions compute in bfloat16; every variable stays
    float32, BatchNorm computes in float32 (Keras upcasts its input), and the
    heads, losses, queue and EMA are float32 by construction (`asc_tf.ascnet`).
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed_precision else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def check_bf16_convolutions():
    """Raises UnsupportedPrecision where this process cannot run a bfloat16 Conv3D.

    oneDNN (which `import asc_tf` turns on) has no bfloat16 convolution on
    AVX2-only CPUs, or under ONEDNN_MAX_CPU_ISA=AVX2: without this check the
    run would stop at the model's first convolution with oneDNN's "could not
    create a primitive descriptor".
    """
    try:
        tf.nn.conv3d(tf.zeros((1, 1, 1, 1, 1), tf.bfloat16), tf.zeros((1, 1, 1, 1, 1), tf.bfloat16), [1] * 5, "VALID")
    except tf.errors.OpError as error:
        limit = cpu.isa_limit()
        raise UnsupportedPrecision(
            "--mixed_precision: TensorFlow has no bfloat16 convolution on this CPU"
            + (f" under {cpu.ISA_LIMIT_ENV}={limit}" if limit else "")
            + " (oneDNN's bfloat16 convolutions need AVX-512); train in float32, or set TF_ENABLE_ONEDNN_OPTS=0"
            " for Eigen's bfloat16 kernels, several times slower than float32"
        ) from error


def build_model(config, strategy, total_steps=None):
    """ASCNet with every variable created and ξ ← θ, compiled with its optimiser (inside `strategy.scope()`).

    The model computes in bfloat16 where `config.mixed_precision` is set (`precision_policy`), also when it is
    rebuilt to restore a checkpoint: the checkpoint holds float32 variables either way.

    Raises:
      UnsupportedPrecision: mixed precision where bfloat16 convolutions cannot run (`check_bf16_convolutions`).
    """
    if config.mixed_precision:
        check_bf16_convolutions()
    with strategy.scope(), precision_policy(config.mixed_precision):
        model = ASCNet(
            backbone=config.backbone,
            width=config.width,
            sync_bn=strategy.num_replicas_in_sync > 1,
            projection=config.projection,
            dim=config.dim,
            predictor_hidden=config.predictor_hidden,
            gamma=config.gamma,
            scp_mode=config.scp_mode,
            speed_task=config.speed_task,
            symmetric=config.symmetric,
            appearance_loss=config.appearance_loss,
            temperature=config.temperature,
            queue_size=config.queue_size,
            tau=config.tau,
            tau_schedule=config.tau_schedule,
            total_steps=total_steps or config.train_steps,
            speed_set=config.speeds(),
            seed=config.seed,
        )
        model.build_networks((config.frames, config.crop_size, config.crop_size, 3))
        optimizer = make_optimizer(config, model.online_variables)
        model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
        # Slots for the online variables only: the target is not the optimiser's.
        optimizer.build(model.online_variables)
    return model


def _views(config):
    return augment.byol_views(
        color_jitter=config.color_jitter, blur=config.blur, grayscale=config.grayscale, solarize=config.solarize,
        flip=config.flip, crop_scale=config.crop_scale,
    )


def make_dataset(config, strategy, positions=None, stats=None):
    """The distributed two-view dataset; each input pipeline starts after the positions its replicas reached.

    `positions` is the model's `data_position` (one per replica; -1: nothing
    read yet). Replicas are numbered worker by worker, so pipeline w serves
    replicas w·L ... w·L + L − 1, and starts one past the furthest of them.
    """
    views = _views(config)
    replicas = strategy.num_replicas_in_sync
    positions = np.full([replicas], -1) if positions is None else np.asarray(positions)
    saved = int(np.sum(positions >= 0))  # after a step, every replica of the saving run has a position
    if saved and saved != replicas:
        # Saved under another replica count: the streams were sharded otherwise. Start every
        # pipeline at the next epoch of the furthest one.
        epoch, _ = pipeline.split_position(int(positions.max()))
        logging.warning("the checkpoint was written by %d replicas, this run has %d: the data restarts at epoch %d",
                        saved, replicas, epoch + 1)
        positions = np.full([replicas], (epoch + 1) * pipeline.EPOCH_STRIDE - 1)

    def dataset_fn(context):
        per_pipeline = replicas // context.num_input_pipelines
        mine = positions[context.input_pipeline_id * per_pipeline : (context.input_pipeline_id + 1) * per_pipeline]
        return pipeline.pretrain_dataset(
            config.train_data,
            config.global_batch_size,
            num_frames=config.frames,
            crop_size=config.crop_size,
            speeds=config.speeds(),
            speed_mode=config.speed_mode,
            augment=views,
            third_view=config.scp_mode == "same",
            seed=config.seed,
            input_context=context,
            shuffle_buffer=config.shuffle_buffer,
            stats=stats,
            start_position=int(mine.max()) + 1,
            with_position=True,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def view_grid(batch, samples=4):
    """Both augmented views of a few samples as one image: [1, rows·H, T·W, 3] uint8.

    Rows alternate view i and view j of each sample; columns are the frames.
    """
    rows = [augment.denormalize(batch[name][:samples]) for name in ("view_i", "view_j")]
    stacked = tf.reshape(tf.stack(rows, axis=1), [-1, *rows[0].shape[1:]])  # [2S, T, H, W, 3]
    count, frames, height, width, _ = stacked.shape
    grid = tf.transpose(stacked, [0, 2, 1, 3, 4])  # [2S, H, T, W, 3]
    return tf.reshape(grid, [1, count * height, frames * width, 3])


def _write_view_grid(config, writer):
    stats = pipeline.InputStats()
    try:
        sample = next(iter(pipeline.pretrain_dataset(
            config.train_data, min(4, config.global_batch_size), num_frames=config.frames,
            crop_size=config.crop_size, speeds=config.speeds(), speed_mode=config.speed_mode,
            augment=_views(config), seed=config.seed, shuffle_buffer=8, repeat=False, stats=stats,
        )))
    except StopIteration:
        raise pipeline.NoUsableClips(config.train_data, stats.as_dict()) from None
    with writer.as_default():
        tf.summary.image("views/rows_alternate_view_i_view_j", view_grid(sample), step=0)


def _scalars(logs):
    return {name: float(np.asarray(value)) for name, value in logs.items()}


def export_encoder(model, model_dir, config):
    """The online encoder as asc_tf.export's SavedModel at model_dir/encoder, and its Keras weights."""
    from asc_tf import export

    encoder = model.online_encoder
    export.export_encoder(encoder, os.path.join(model_dir, "encoder"), config.frames, config.crop_size)
    encoder.save_weights(os.path.join(model_dir, "encoder.weights.h5"))


def make_checkpoint(model):
    """A tf.train.Checkpoint of every variable of `model` and of its optimiser, keyed by variable path.

    Not `tf.train.Checkpoint(model=model)`: TensorFlow's object graph does not
    see Keras 3 layers kept in Python lists (a backbone's blocks, a head's
    hidden layers), so such a checkpoint silently leaves out the target
    network and every BatchNorm statistic; the online weights came back only
    through the optimiser's references. Paths are unique within a model
    (Keras names every layer), and a changed architecture fails loudly on
    restore instead of loading by position.

    The optimiser's variables are keyed under its class name ("lars/...",
    "adam/..."), not under its Keras name: Keras numbers a second optimiser of
    a class in one process ("adam_1"), so a run restored in the process that
    trained it would otherwise find none of its slots.
    """
    variables, slots = tf.Module(), tf.Module()
    variables.by_path = _by_path(model.variables, "model")
    optimizer = model.optimizer
    canonical = type(optimizer).__name__.lower()
    slots.by_path = _by_path(optimizer.variables, "optimizer", rename=(optimizer.name + "/", canonical + "/"))
    return tf.train.Checkpoint(variables=variables, optimizer=slots)


def _by_path(variables, owner, rename=None):
    """{path: variable}; `rename` (old, new) replaces a leading `old` of every path."""
    by_path = {}
    for variable in variables:
        path = variable.path
        if rename and path.startswith(rename[0]):
            path = rename[1] + path[len(rename[0]):]
        if path in by_path:
            raise ValueError(f"two {owner} variables share the path {path!r}; cannot checkpoint by path")
        by_path[path] = variable
    return by_path


def restore(config, strategy):
    """Builds the model and its checkpoint manager, and restores the newest checkpoint if there is one.

    Returns:
      (model, checkpoint, manager, path of the restored checkpoint or None).
    """
    model = build_model(config, strategy)
    checkpoint = make_checkpoint(model)
    checkpoint_dir = os.path.join(distribute.worker_dir(strategy, config.model_dir), "checkpoints")
    # A process killed while saving leaves its temporary folder; the checkpoint it was writing never counted.
    for stale in glob.glob(os.path.join(checkpoint_dir, "ckpt-*_temp")):
        shutil.rmtree(stale, ignore_errors=True)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=config.keep_checkpoints)
    # On a worker the scratch folder is empty: every task restores the chief's newest checkpoint.
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    return model, checkpoint, manager, latest


def read_scalars(model_dir, tag="loss"):
    """{step: value} of one TensorBoard scalar a run wrote to model_dir/train, over every process that ran it.

    A resumed run logs again the steps between its checkpoint and the kill;
    the newer event file's value is the one of the run that went on. A killed
    process may leave its last record cut short: reading that file stops there.
    """
    values = {}
    # Event file names start with their creation time in seconds: name order is write order.
    for path in sorted(glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag == tag:
                        values[int(event.step)] = float(tf.make_ndarray(value.tensor))
        except tf.errors.DataLossError:
            pass
    return values


def make_train_function(model, strategy, jit_compile=False):
    """iterator -> logs: one `model.train_step` on every replica, the logs averaged over replicas.

    What Keras's `make_train_function` builds, less what this loop does not
    use (steps_per_execution), and with a reduction that works under
    MultiWorkerMirroredStrategy: Keras 3 reduces scalar logs there with
    `strategy.reduce(MEAN, v, axis=0)`, which fails on 0-d tensors.
    """

    def one_step(data):
        return strategy.run(model.train_step, args=(data,))

    if jit_compile:
        one_step = tf.function(one_step, jit_compile=True, reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def train_function(iterator):
        logs = one_step(next(iterator))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None) for name, value in logs.items()}

    return train_function


def _drop_scratch(strategy, model_dir):
    """On a non-chief task: deletes what it just had to write (saves are collective); the chief's copy counts."""
    if not distribute.is_chief(strategy):
        shutil.rmtree(distribute.worker_dir(strategy, model_dir), ignore_errors=True)


def run(config, strategy=None, stream=None, monitor=None):
    """Pretrains (or resumes) and returns a summary dict (with the trained ASCNet under "model").

    `monitor` (an `evaluation.monitor.RetrievalMonitor`, or None) runs on the
    chief at the steps it is due, after that step's scalars, and writes into
    the same TensorBoard folder.

    Under `config.mixed_precision` on a CPU without bfloat16 units, the first
    line to `stream` (stderr by default) says that bfloat16 will be slower
    than float32 there and why (`cpu.bf16_warning`).

    Raises:
      NonFiniteLoss: the loss became NaN/inf; the newest checkpoint is the last good one.
      CheckpointWriteFailed: a checkpoint could not be written; the newest one is the last good one.
      UnsupportedPrecision: `config.mixed_precision` where bfloat16 convolutions cannot run.
      pipeline.NoUsableClips: `config.train_data` gave no clip (nothing trained).
    """
    stream = stream or sys.stderr
    if config.mixed_precision and (warning := cpu.bf16_warning()):
        print(warning, file=stream)
    # The initialisation follows config.seed (the input pipeline's draws are stateless in it).
    keras.utils.set_random_seed(config.seed)
    strategy = strategy or distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    os.makedirs(config.model_dir, exist_ok=True)
    if chief:
        with open(os.path.join(config.model_dir, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(config), f, indent=2, default=list)

    model, checkpoint, manager, latest = restore(config, strategy)
    if latest:
        print(f"resuming from {latest}", file=stream)
    start = int(model.optimizer.iterations.numpy())
    summary = {"start_step": start, "resumed_from": latest, "replicas": strategy.num_replicas_in_sync}
    if start >= config.train_steps:
        summary.update(end_step=start, first_logs=None, last_logs=None, model=model)
        return summary

    writer = (
        tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        if chief
        else tf.summary.create_noop_writer()
    )
    if chief and start == 0:
        _write_view_grid(config, writer)

    stats = pipeline.InputStats()
    iterator = iter(make_dataset(config, strategy, model.data_position.numpy(), stats))
    train_function = make_train_function(model, strategy, config.jit_compile)
    progress = Progress(total=config.train_steps - start, desc="pretrain", unit="steps", stream=stream)
    first_logs = last_logs = None
    alarm = CollapseAlarm(config.dim)
    step = start
    started = time.monotonic()
    while step < config.train_steps:
        try:
            logs = _scalars(train_function(iterator))
        except tf.errors.OutOfRangeError:
            # The data repeat: it ends only when an epoch gave no clip (on resume, or on a worker).
            raise pipeline.NoUsableClips(config.train_data, stats.as_dict()) from None
        step += 1
        if not math.isfinite(logs["loss"]):
            raise NonFiniteLoss(
                f"loss is {logs['loss']} at step {step}; stopped without saving. "
                f"Newest good checkpoint: {manager.latest_checkpoint or 'none'}"
            )
        first_logs = first_logs or logs
        last_logs = logs
        if "projection_std" in logs and (warning := alarm.update(logs["projection_std"], step)) and chief:
            print(warning, file=stream)
        if step % config.log_every == 0 or step == config.train_steps:
            with writer.as_default():
                for name, value in logs.items():
                    tf.summary.scalar(name, value, step=step)
                if "projection_std" in logs:
                    tf.summary.scalar("collapse_alarm", float(alarm.on), step=step)
                tf.summary.scalar("steps_per_second", (step - start) / (time.monotonic() - started), step=step)
                for name, value in stats.as_dict().items():
                    tf.summary.scalar(f"input/{name}", value, step=step)
            writer.flush()
            model.reset_metrics()
        if monitor is not None and chief and monitor.due(step, final=step == config.train_steps):
            monitor(model.online_encoder, step, writer)
        extra = f"loss={logs['loss']:.4f} loss_a={logs['loss_a']:.4f} loss_m={logs['loss_m']:.4f}"
        skipped = stats.as_dict()
        if any(skipped.values()):
            extra += f" skipped records={skipped['records_skipped']} cut shards={skipped['shards_cut_short']}"
        progress.update(1, extra=extra)
        if step % config.checkpoint_every == 0 or step == config.train_steps:
            try:
                manager.save(checkpoint_number=step)
            except (tf.errors.ResourceExhaustedError, tf.errors.UnavailableError, OSError) as error:
                reason = " ".join(str(getattr(error, "message", None) or error).split())
                raise CheckpointWriteFailed(
                    f"could not write the checkpoint of step {step} in {manager.directory} ({reason[-160:]}); "
                    f"newest good checkpoint: {manager.latest_checkpoint or 'none'}") from None
            _drop_scratch(strategy, config.model_dir)
    progress.close()
    writer.flush()
    if config.export:
        export_encoder(model, distribute.worker_dir(strategy, config.model_dir), config)
        _drop_scratch(strategy, config.model_dir)
    summary.update(end_step=step, first_logs=first_logs, last_logs=last_logs, checkpoint=manager.latest_checkpoint,
                   input=stats.as_dict(), model=model)
    return summary
