"""Action recognition on top of a learned encoder: end-to-end fine-tuning and the linear probe.

Paper 4.2, "Supervised fine-tuning stage": the convolutional weights come from
the learned representation, the new fully connected layer is randomly
initialised, the whole network is trained with cross-entropy, and the
learning rate is "decayed by a factor of 0.01 over the course of training
using cosine annealing". "Evaluation": 10 clips sampled uniformly from each
test video, one centre crop each, softmax probabilities averaged over the
clips of a video.

`run_finetune(config, encoder)` is what `python -m tools.finetune` calls. It
runs on one device and writes:

  output_dir/
    results.json             video-level top1/top5, clip-level top1, counts, the settings
    classifier.weights.h5    the fine-tuned VideoClassifier
    classifier.json          what `build_classifier` needs to rebuild it (see `classifier_spec`)
    tensorboard/             train/loss, train/accuracy, train/lr every `log_every` steps; eval/* at the end

Rebuilding the classifier elsewhere (tools.export does exactly this):

    spec = json.load(open("classifier.json"))
    model = build_classifier(spec["backbone"], spec["width"], spec["num_classes"], spec["dropout"],
                             clip_shape=(spec["frames"], spec["crop_size"], spec["crop_size"], 3))
    model.load_weights("classifier.weights.h5")

Choices the paper leaves open:
- Optimiser: SGD, momentum 0.9, cross-entropy on logits. The learning rate is
  `base_lr × batch_size / 128` (the linear scaling rule, as in pretraining),
  an optional linear warm-up from 0, then a cosine from that peak down to
  0.01 × the peak at the last step (Keras's `CosineDecay` with alpha = 0.01).
- Weight decay is the optimiser's, and it is Keras's decoupled kind: every
  step w ← w − lr · wd · w, outside the momentum. PyTorch's `SGD(weight_decay=λ)`
  adds λw to the gradient instead, which momentum 0.9 amplifies about 10×, so
  `weight_decay = 10 λ` here shrinks weights about as much as λ there. As in
  pretraining, biases and BatchNorm scales/offsets get no decay
  (`optim.is_bias_or_norm`).
- Linear probe (`freeze_backbone=True`): the backbone's variables are not
  trainable and its BatchNorm layers run in inference mode (the pretrained
  moving statistics, never updated), so the backbone is a fixed feature
  extractor and only the head learns. Updating the statistics would change
  the features under the probe, which is no longer a linear evaluation of
  the representation.
"""

import dataclasses
import glob
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from asc_tf import optim
from asc_tf.choices import CLASSIFIER_OPTIMIZERS
from asc_tf.data import augment, pipeline, records
from asc_tf.models import build_backbone
from asc_tf.models.heads import ClassifierHead
from asc_tf.progress import Progress

# Paper 4.2: the learning rate ends at 0.01 × its starting value.
FINAL_LR_FRACTION = 0.01


@keras.saving.register_keras_serializable(package="asc_tf")
class VideoClassifier(keras.Model):
    """Backbone + `ClassifierHead`: clips `[N, T, H, W, 3]` float32 (normalised) → logits `[N, C]` float32.

    Args:
      backbone, width: the encoder (`asc_tf.models.build_backbone`).
      num_classes: C.
      dropout: dropout rate before the last Dense layer.
      freeze_backbone: the linear probe: the backbone's variables are not
        trainable and it always runs in inference mode (BatchNorm uses and
        keeps its moving statistics).
    """

    def __init__(self, backbone="r3d_18", width=1.0, num_classes=101, dropout=0.5, freeze_backbone=False, **kwargs):
        super().__init__(**kwargs)
        self.backbone_name = backbone
        self.width = float(width)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.freeze_backbone = bool(freeze_backbone)
        self.encoder = build_backbone(backbone, width=width)
        self.head = ClassifierHead(num_classes, dropout=dropout, name="classifier")
        if self.freeze_backbone:
            self.encoder.trainable = False

    def call(self, clips, training=None):
        features = self.encoder(clips, training=False if self.freeze_backbone else training)
        return self.head(features, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone_name, width=self.width, num_classes=self.num_classes,
                      dropout=self.dropout, freeze_backbone=self.freeze_backbone)
        return config


def build_classifier(backbone, width, num_classes, dropout=0.5, clip_shape=(16, 112, 112, 3), freeze_backbone=False):
    """A `VideoClassifier` with every variable created (one forward pass on zeros of `[1, *clip_shape]`)."""
    model = VideoClassifier(backbone, width, num_classes, dropout, freeze_backbone)
    model(tf.zeros((1, *clip_shape)), training=False)
    return model


def classifier_spec(config, class_names):
    """The contents of classifier.json: everything `build_classifier` and the test protocol need.

    Keys: backbone, width, frames, crop_size, resize_short, num_classes,
    class_names (list of num_classes strings), dropout.
    """
    return {
        "backbone": config.backbone,
        "width": config.width,
        "frames": config.frames,
        "crop_size": config.crop_size,
        "resize_short": config.resize_short,
        "num_classes": config.num_classes,
        "class_names": list(class_names),
        "dropout": config.dropout,
    }


# ----------------------------------------------------------------------------- classes


def dataset_class_names(file_pattern):
    """Class names of the shards matched by `file_pattern`.

    From the `class_names` of the manifest.json beside the shards when there is
    one; otherwise "class_<i>" for every label up to the largest one found in
    the records (which reads every record once).

    Returns:
      list of str, index = label.
    """
    for directory in sorted({os.path.dirname(path) for path in glob.glob(file_pattern)}):
        path = os.path.join(directory, "manifest.json")
        if os.path.isfile(path):
            with open(path) as f:
                names = json.load(f).get("class_names")
            if names:
                return list(names)
    return [f"class_{i}" for i in range(max_label(file_pattern) + 1)]


def max_label(file_pattern):
    """The largest label in the records (-1 when none is labelled); parses the context only."""
    context = {records.LABEL_KEY: tf.io.VarLenFeature(tf.int64)}

    def label(serialized):
        parsed, _ = tf.io.parse_single_sequence_example(serialized, context_features=context)
        return tf.reduce_max(tf.concat([tf.sparse.to_dense(parsed[records.LABEL_KEY]), [-1]], 0))

    files = sorted(glob.glob(file_pattern))
    labels = tf.data.TFRecordDataset(files).map(label, num_parallel_calls=tf.data.AUTOTUNE)
    return int(labels.reduce(tf.constant(-1, tf.int64), tf.maximum).numpy())


# ----------------------------------------------------------------------------- accuracy


def _check(clip_probabilities, video_index, labels):
    probabilities = np.asarray(clip_probabilities, dtype=np.float64)
    video_index = np.asarray(video_index, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.ndim != 2 or video_index.shape != probabilities.shape[:1]:
        raise ValueError(f"need probabilities [N, C] and video_index [N], got {probabilities.shape}, "
                         f"{video_index.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= probabilities.shape[1]):
        raise ValueError(f"labels must be in [0, {probabilities.shape[1]}), got {labels.min()}..{labels.max()}")
    if video_index.size and (video_index.min() < 0 or video_index.max() >= labels.size):
        raise ValueError(f"video_index must be in [0, {labels.size})")
    return probabilities, video_index, labels


def video_level_accuracy(clip_probabilities, video_index, labels):
    """Top-1 and top-5 accuracy of videos whose prediction is the mean softmax over their clips.

    The paper's protocol ("we average the softmax probabilities of all clips"),
    not a majority vote over the clips' top-1 classes. With fewer than 5
    classes top-5 counts the top C, so it is 1.

    Args:
      clip_probabilities: [N_clips, C] float, softmax of each clip.
      video_index: [N_clips] int, the video (row of `labels`) each clip comes from.
      labels: [V] int, the label of each video.

    Returns:
      (top1, top5) floats in [0, 1], over the V videos.
    """
    probabilities, video_index, labels = _check(clip_probabilities, video_index, labels)
    sums = np.zeros((labels.size, probabilities.shape[1]))
    np.add.at(sums, video_index, probabilities)
    counts = np.bincount(video_index, minlength=labels.size)[:, None]
    mean = sums / np.maximum(counts, 1)
    # Rank of the true class: how many classes score strictly higher.
    rank = (mean > mean[np.arange(labels.size), labels][:, None]).sum(axis=1)
    return float(np.mean(rank < 1)), float(np.mean(rank < 5))


def clip_level_accuracy(clip_probabilities, video_index, labels):
    """Top-1 accuracy of single clips (each clip judged alone, against its video's label); arguments as above."""
    probabilities, video_index, labels = _check(clip_probabilities, video_index, labels)
    return float(np.mean(np.argmax(probabilities, axis=1) == labels[video_index]))


def evaluate(model, dataset, num_videos=None, stream=None):
    """Runs the test protocol and scores it at the video and the clip level.

    Args:
      model: clips [M, T, H, W, 3] float32 → logits [M, C] (a VideoClassifier).
      dataset: `pipeline.eval_dataset(..., batch_size=B)` elements:
        'clips' [B, K, T, H, W, 3] float32 (K = clips × crops per video), 'label' [B] int64.
      num_videos: for the progress line's ETA (optional).
      stream: where the progress line goes (default stderr).

    Returns:
      dict: top1, top5 (video level, mean softmax over a video's K clips),
      clip_top1 (clip level), num_videos, num_clips.
    """
    probabilities_of = tf.function(
        lambda clips: tf.nn.softmax(model(clips, training=False), axis=-1), reduce_retracing=True
    )
    probabilities, video_index, labels = [], [], []
    progress = Progress(total=num_videos, desc="evaluate", unit="videos", stream=stream)
    for batch in dataset:
        clips = batch["clips"]
        videos, per_video = int(clips.shape[0]), int(clips.shape[1])
        flat = tf.reshape(clips, [videos * per_video, *clips.shape[2:]])
        probabilities.append(probabilities_of(flat).numpy())
        first = len(labels)
        video_index.append(np.repeat(np.arange(first, first + videos), per_video))
        labels.extend(batch["label"].numpy().tolist())
        progress.update(videos)
    progress.close()
    if not labels:
        raise pipeline.NoUsableClips()
    probabilities = np.concatenate(probabilities)
    video_index = np.concatenate(video_index)
    top1, top5 = video_level_accuracy(probabilities, video_index, labels)
    return {
        "top1": top1,
        "top5": top5,
        "clip_top1": clip_level_accuracy(probabilities, video_index, labels),
        "num_videos": len(labels),
        "num_clips": int(video_index.size),
    }


# ----------------------------------------------------------------------------- training


def learning_rate_schedule(peak, warmup_steps, total_steps, final_fraction=FINAL_LR_FRACTION):
    """Linear warm-up 0 → `peak` over `warmup_steps`, then cosine to `final_fraction × peak` at `total_steps`."""
    decay_steps = max(1, total_steps - warmup_steps)
    if warmup_steps > 0:
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps, alpha=final_fraction, warmup_target=peak, warmup_steps=warmup_steps
        )
    return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=final_fraction)


def compile_classifier(model, base_lr, batch_size, train_steps, warmup_steps=0, momentum=0.9, weight_decay=0.0,
                       optimizer="sgd"):
    """SGD with momentum (or Adam), the cosine schedule and decoupled weight decay; sparse cross-entropy on logits.

    `base_lr` is the rate at batch 128, scaled linearly for either optimiser
    (0.008: Adam at 1e-3 for batch 16). Only the model's trainable variables
    get optimiser slots (the head alone for a frozen backbone).
    """
    if optimizer not in CLASSIFIER_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {CLASSIFIER_OPTIMIZERS}, got {optimizer!r}")
    schedule = learning_rate_schedule(
        optim.scaled_learning_rate(base_lr, batch_size), warmup_steps, train_steps
    )
    if optimizer == "adam":
        optimizer = keras.optimizers.Adam(schedule, weight_decay=weight_decay or None)
    else:
        optimizer = keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay or None)
    if weight_decay:
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if optim.is_bias_or_norm(v)]
        )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=False,
    )
    optimizer.build(model.trainable_variables)
    return model


def train_dataset(file_pattern, batch_size, frames, crop_size, stride=1, flip=True, seed=0, shuffle_buffer=None,
                  stats=None, crop_scale=None):
    """(clip [B, T, crop, crop, 3] float32, label [B] int64) batches, augmented (`augment.FINETUNE`), repeated.

    flip=False turns the horizontal flip off, for classes that a mirror image
    changes (the synthetic set's "left" and "right"); `crop_scale` (min, max)
    replaces FINETUNE's area fractions of the random resized crop.
    """
    config = augment.FINETUNE if flip else dataclasses.replace(augment.FINETUNE, flip_prob=0.0)
    if crop_scale is not None:
        config = dataclasses.replace(config, crop_scale=tuple(crop_scale))
    dataset = pipeline.finetune_dataset(
        file_pattern, batch_size, num_frames=frames, crop_size=crop_size, stride=stride, augment=config,
        seed=seed, shuffle_buffer=shuffle_buffer or pipeline.DEFAULT_SHUFFLE_BUFFER, stats=stats,
    )
    return dataset.map(lambda element: (element["clip"], element["label"]))


def train(model, dataset, train_steps, writer=None, log_every=10, stream=None, prefix="train/"):
    """Runs `train_steps` compiled Keras train steps on a compiled model.

    Every `log_every` steps (and at the last) writes train/loss, train/accuracy
    (means since the previous write) and train/lr to `writer`; `prefix`
    replaces "train/" ("" gives the pretraining's own tags: loss, lr).

    Returns:
      dict of the last logged values (loss, accuracy, lr) and first_loss, the
      loss of the first step.
    """
    writer = writer or tf.summary.create_noop_writer()
    iterator = iter(dataset)
    model.make_train_function()
    train_function = model.train_function
    progress = Progress(total=train_steps, desc="finetune", unit="steps", stream=stream)
    logs = {}
    first_loss = None
    for step in range(1, train_steps + 1):
        logs = {name: float(value) for name, value in train_function(iterator).items()}
        first_loss = logs["loss"] if first_loss is None else first_loss
        logs["lr"] = float(model.optimizer.learning_rate)
        if not np.isfinite(logs["loss"]):
            raise FloatingPointError(f"loss is {logs['loss']} at step {step}")
        if step % log_every == 0 or step == train_steps:
            with writer.as_default():
                for name, value in logs.items():
                    tf.summary.scalar(f"{prefix}{name}", value, step=step)
            writer.flush()
            model.reset_metrics()
        progress.update(1, extra=f"loss={logs['loss']:.4f} accuracy={logs['accuracy']:.3f} lr={logs['lr']:.2e}")
    progress.close()
    return dict(logs, first_loss=first_loss)


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning (or linear probe) run. Clip defaults are the paper's (R3D-18, 16×112)."""

    train_data: str = ""
    test_data: str = ""
    output_dir: str = "runs/finetune"
    backbone: str = "r3d_18"
    width: float = 1.0
    # clips
    frames: int = 16
    crop_size: int = 112
    stride: int = 1
    flip: bool = True
    resize_short: int = 128
    eval_clips: int = 10
    eval_crops: int = 1
    # classes: names index = label; num_classes = len(class_names)
    num_classes: int = 101
    class_names: tuple = ()
    # optimisation (not given by the paper, see the module docstring)
    train_steps: int = 1000
    warmup_steps: int = 0
    batch_size: int = 32
    base_lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 0.0
    dropout: float = 0.5
    freeze_backbone: bool = False
    # machinery
    seed: int = 0
    log_every: int = 10
    eval_batch_size: int = 1
    shuffle_buffer: int = pipeline.DEFAULT_SHUFFLE_BUFFER
    test_videos: int = None  # for the progress line only


def run_finetune(config, encoder, stream=None):
    """Fine-tunes (or probes) `encoder` on config.train_data, evaluates on config.test_data, writes output_dir.

    Args:
      config: FinetuneConfig; `backbone` and `width` must be the encoder's.
      encoder: `asc_tf.evaluation.encoders.Encoder` with a Keras backbone (`.model`).
      stream: where progress lines go (default stderr).

    Returns:
      the results dict written to results.json.
    """
    if encoder.model is None:
        raise ValueError(f"fine-tuning needs a Keras backbone; {encoder.source} has none (a SavedModel)")
    class_names = list(config.class_names) or [f"class_{i}" for i in range(config.num_classes)]
    if len(class_names) != config.num_classes:
        raise ValueError(f"{len(class_names)} class names for {config.num_classes} classes")
    os.makedirs(config.output_dir, exist_ok=True)
    clip_shape = (config.frames, config.crop_size, config.crop_size, 3)

    # The head's initial weights and the dropout masks follow the seed.
    keras.utils.set_random_seed(config.seed)
    model = build_classifier(config.backbone, config.width, config.num_classes, config.dropout, clip_shape,
                             freeze_backbone=config.freeze_backbone)
    try:
        model.encoder.set_weights(encoder.model.get_weights())
    except ValueError as error:
        raise ValueError(f"the encoder from {encoder.source} is not a {config.backbone} of width {config.width}: "
                         f"{error}") from error
    compile_classifier(model, config.base_lr, config.batch_size, config.train_steps, config.warmup_steps,
                       config.momentum, config.weight_decay)

    writer = tf.summary.create_file_writer(os.path.join(config.output_dir, "tensorboard"))
    started = time.monotonic()
    train_stats, test_stats = pipeline.InputStats(), pipeline.InputStats()
    try:
        train_logs = train(
            model,
            train_dataset(config.train_data, config.batch_size, config.frames, config.crop_size, config.stride,
                          config.flip, config.seed, config.shuffle_buffer, stats=train_stats),
            config.train_steps, writer, config.log_every, stream,
        )
    except (StopIteration, tf.errors.OutOfRangeError):  # the data repeat: they end only if an epoch is empty
        raise pipeline.NoUsableClips(config.train_data, train_stats.as_dict()) from None
    train_seconds = time.monotonic() - started

    model.save_weights(os.path.join(config.output_dir, "classifier.weights.h5"))
    with open(os.path.join(config.output_dir, "classifier.json"), "w") as f:
        json.dump(classifier_spec(config, class_names), f, indent=2)

    test = pipeline.eval_dataset(
        config.test_data, num_clips=config.eval_clips, crops=config.eval_crops, num_frames=config.frames,
        stride=config.stride, resize_short=config.resize_short, crop_size=config.crop_size,
        batch_size=config.eval_batch_size, stats=test_stats,
    )
    try:
        scores = evaluate(model, test, num_videos=config.test_videos, stream=stream)
    except pipeline.NoUsableClips:
        raise pipeline.NoUsableClips(config.test_data, test_stats.as_dict()) from None
    with writer.as_default():
        for name in ("top1", "top5", "clip_top1"):
            tf.summary.scalar(f"eval/{name}", scores[name], step=config.train_steps)
    writer.flush()

    settings = dataclasses.asdict(config)
    settings["class_names"] = class_names
    results = {
        **scores,
        "num_classes": config.num_classes,
        "protocol": f"{config.eval_clips} clips x {config.eval_crops} crop(s) per video, "
                    "softmax averaged per video",
        "encoder": encoder.source,
        "final_train": train_logs,
        "train_seconds": round(train_seconds, 1),
        # Unreadable records and damaged TFRecord files skipped (training: counted as read, every epoch).
        "input": {"train": train_stats.as_dict(), "test": test_stats.as_dict()},
        "settings": settings,
    }
    with open(os.path.join(config.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    for split, counts in results["input"].items():
        skipped = pipeline.describe_skipped(counts)
        if skipped:
            print(f"skipped in {split}: {skipped}", file=stream or sys.stderr)
    print(f"wrote {config.output_dir}/results.json, classifier.json, classifier.weights.h5",
          file=stream or sys.stderr)
    return results
