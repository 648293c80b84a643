"""ASCNet: appearance consistency (ACP) and speed consistency (SCP) with an EMA target (paper 3, Algorithm 1).

Online network θ: encoder f, projection heads g_a and g_m, predictors h_a and h_m.
Target network ξ: encoder f and heads g_a, g_m, an exponential moving average of
the online ones (never touched by the optimiser). With n(·) = L2 normalisation:

  ACP   a'_i = n(h_a(g_a(f_θ(c_i))))     a_j = n(g_a(f_ξ(c_j)))     L_a = ‖a'_i − a_j‖² = 2 − 2 cos
  SCP   m'_i = n(h_m(g_m(f_θ(c_i))))     m_k = n(g_m(f_ξ(c_k)))     L_m = ‖m'_i − m_k‖²
  L = γ·L_m + (1 − γ)·L_a,  γ = 0.5

c_k is a clip of ANOTHER video at the SAME speed as c_i. `similar` (the paper's
default) retrieves, from the feature queue and the current global batch, the
video one of whose clips has the target appearance key nearest (dot product) to
a_j, and c_k is that video's other clip (its own augmentation, as Algorithm 1
samples c_k after the retrieval; `asc_tf.queue`); `random` a uniformly random
candidate; `same` a third clip of the anchor's own video
(the "same instance" ablation). `speed_task="sp"` replaces SCP by speed
classification with cross-entropy (the ACP + SP ablation); γ = 0 is ACP only,
γ = 1 SCP only. `symmetric=True` also swaps the roles of the two clips.

`appearance_loss="infonce"` is not the paper's: a contrastive reference for
small-scale studies, which replaces L_a by InfoNCE (MoCo v3's form) — the
prediction a'_i against the target keys of every video of the global batch,
a_j the positive and the other videos' keys the negatives, at temperature
`temperature`. It tells a budget too small to learn anything from a
negative-free objective that does not learn at that budget.

What the EMA averages: the trainable weights of the target encoder and heads
(τ·ξ + (1 − τ)·θ). The target's BatchNorm layers run in training mode — they
normalise with the statistics of the batch, as in BYOL — so their moving
statistics are never used for training; they are updated by the target's own
forward passes (not averaged from the online network) and exist only so the
target could be evaluated too.

Distribution: the per-replica loss is divided by the number of replicas
(Keras sums gradients across replicas); the queue is filled from the
all-gathered global batch and the EMA and queue writes go through
`merge_call` + `strategy.extended.update`, so every replica holds identical
state.
"""

import keras
import tensorflow as tf

from asc_tf import optim
from asc_tf.choices import APPEARANCE_LOSSES, SPEED_TASKS, TAU_SCHEDULES
from asc_tf.models import build_backbone
from asc_tf.models.heads import BYOL_HIDDEN, predictor, projection_head
from asc_tf.queue import SCP_MODES, FeatureQueue, select_scp_targets, write_rows

# Logged every step. encoder_std, projection_std, speed_projection_std: the per-dimension std over the batch
# of the L2-normalised encoder features, online projections the loss trains (the appearance head's, else the
# speed head's) and SCP's speed projections (BYOL's collapse signal is the projections', ~1/sqrt(dim) when
# healthy, 0 when collapsed); neighbour_same_label: how often the SCP partner had the anchor's class.
METRICS = (
    "loss", "loss_a", "loss_m", "tau", "lr", "scp_masked_fraction", "queue_fill", "encoder_std", "projection_std",
    "speed_projection_std", "neighbour_same_label",
)


# Replicas whose input positions a checkpoint can hold (`ASCNet.data_position`).
MAX_REPLICAS = 4096


def all_gather(replica, values):
    """Each tensor of `values` concatenated over the replicas along axis 0, in replica order.

    Not `ReplicaContext.all_gather`, which fails under MultiWorkerMirroredStrategy
    in TF 2.21 ("destinations can not be empty"): each replica writes its
    tensor into its own slot of a zero tensor and one all-reduce sums them
    (exact: every element is a value plus zeros). Every replica's tensors must
    have the same shape (per-replica batches are equal: remainders dropped).
    """
    count = replica.num_replicas_in_sync
    if count == 1:
        return list(values)
    slot = tf.one_hot(replica.replica_id_in_sync_group, count, dtype=tf.int32)
    placed = []
    for value in values:
        mask = tf.reshape(tf.cast(slot, value.dtype), [count] + [1] * value.shape.rank)
        placed.append(mask * value[None])
    # One all-reduce per tensor: a batched one needs one dtype and one placement (host or device).
    summed = [replica.all_reduce(tf.distribute.ReduceOp.SUM, p) for p in placed]
    return [tf.reshape(total, [-1, *value.shape[1:]]) for total, value in zip(summed, values)]


def l2_normalize(x):
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def regression_loss(prediction, target):
    """‖n(p) − n(t)‖² per row: [B] float32 (= 2 − 2·cos)."""
    return tf.reduce_sum(tf.square(l2_normalize(prediction) - l2_normalize(target)), axis=-1)


def infonce_loss(prediction, keys, positives, temperature):
    """Mean InfoNCE of predictions [B, D] against keys [N, D]; row b's positive is keys[positives[b]]."""
    logits = tf.matmul(l2_normalize(prediction), l2_normalize(keys), transpose_b=True) / temperature
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positives, logits=logits))


def masked_mean(values, mask):
    mask = tf.cast(mask, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


def _ema(target, online, tau):
    return target.assign(tau * target + (1.0 - tau) * online)


class ASCNet(keras.Model):
    """The pretraining model; `model(clips)` gives the online encoder's features.

    Args:
      backbone, width, sync_bn: the encoder (`asc_tf.models.build_backbone`).
      projection: "linear" (paper) or "mlp" projection heads g_a, g_m; the MLP's hidden
        layer has `predictor_hidden` units (4096 when that is 0), as BYOL's heads share one width.
      dim: feature size of the appearance and speed spaces (256).
      predictor_hidden: hidden size of the predictors h_a, h_m (4096; 0 = one Dense layer).
      gamma: weight γ of the speed task.
      scp_mode: "similar", "random" or "same".
      speed_task: "scp", or "sp" (speed classification over `speed_set`).
      symmetric: also use c_j as the online clip.
      appearance_loss: "regression" (the paper's L_a) or "infonce" (a contrastive reference; see above).
      temperature: InfoNCE's temperature.
      queue_size: rows in the feature queue; must exceed the global batch.
      tau: EMA decay (base value for the cosine schedule).
      tau_schedule: "constant" or "cosine" (BYOL: τ rises to 1 over `total_steps`).
      total_steps: length of training (for the τ schedule).
      speed_set: speeds the data may use (the `sp` head's classes).
      seed: seed of the `random` SCP partner draws.
    """

    def __init__(
        self,
        backbone="r3d_18",
        width=1.0,
        sync_bn=False,
        projection="linear",
        dim=256,
        predictor_hidden=BYOL_HIDDEN,
        gamma=0.5,
        scp_mode="similar",
        speed_task="scp",
        symmetric=False,
        appearance_loss="regression",
        temperature=0.1,
        queue_size=65536,
        tau=0.99,
        tau_schedule="constant",
        total_steps=1,
        speed_set=(1, 2, 4, 8),
        seed=0,
        name="ascnet",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if scp_mode not in SCP_MODES:
            raise ValueError(f"scp_mode must be one of {SCP_MODES}, got {scp_mode!r}")
        if speed_task not in SPEED_TASKS:
            raise ValueError(f"speed_task must be one of {SPEED_TASKS}, got {speed_task!r}")
        if tau_schedule not in TAU_SCHEDULES:
            raise ValueError(f"tau_schedule must be one of {TAU_SCHEDULES}, got {tau_schedule!r}")
        if appearance_loss not in APPEARANCE_LOSSES:
            raise ValueError(f"appearance_loss must be one of {APPEARANCE_LOSSES}, got {appearance_loss!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        if symmetric and scp_mode == "same":
            # The swapped anchor c_j would need a fourth clip at speed s_j.
            raise ValueError("scp_mode='same' is not supported with symmetric=True")
        self.gamma = float(gamma)
        self.scp_mode = scp_mode
        self.speed_task = speed_task
        self.symmetric = bool(symmetric)
        self.appearance_loss = appearance_loss
        self.temperature = float(temperature)
        self.tau_base = float(tau)
        self.tau_schedule = tau_schedule
        self.total_steps = int(total_steps)
        self.speed_set = tuple(int(s) for s in speed_set)
        self.seed = int(seed)

        def encoder(role):
            return build_backbone(backbone, width=width, sync_bn=sync_bn, name=f"{role}_encoder")

        def head(role, space):
            return projection_head(
                projection, dim=dim, hidden_dim=predictor_hidden or BYOL_HIDDEN, sync_bn=sync_bn,
                name=f"{role}_{space}_projection",
            )

        self.online_encoder = encoder("online")
        self.target_encoder = encoder("target")
        self.online_appearance = head("online", "appearance")
        self.target_appearance = head("target", "appearance")
        self.online_speed = head("online", "speed")
        self.target_speed = head("target", "speed")
        self.appearance_predictor = predictor(dim, predictor_hidden, sync_bn=sync_bn, name="appearance_predictor")
        self.speed_predictor = predictor(dim, predictor_hidden, sync_bn=sync_bn, name="speed_predictor")
        self.speed_classifier = (
            keras.layers.Dense(len(self.speed_set), dtype="float32", name="speed_classifier")
            if speed_task == "sp"
            else None
        )
        self.queue = FeatureQueue(queue_size, dim, name="queue")
        # Where each replica's input stream stands: the last record position it trained on
        # (`pipeline.split_position`), -1 before the first step and past the replica count;
        # saved with the model for an exact resume. Fixed length, so that a checkpoint
        # restores under any replica count.
        self.data_position = self.add_weight(
            shape=(MAX_REPLICAS,),
            dtype="int64",
            initializer=keras.initializers.Constant(-1),
            trainable=False,
            aggregation="only_first_replica",
            name="data_position",
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRICS}
        # Left out where they mean nothing: no SCP partner is chosen, no projection is trained.
        self.logged_metrics = tuple(
            name for name in METRICS
            if not (name == "neighbour_same_label" and not (gamma > 0 and speed_task == "scp" and scp_mode != "same"))
            and not (name == "projection_std" and gamma == 1.0 and speed_task != "scp")
            and not (name == "speed_projection_std" and not (gamma > 0 and speed_task == "scp"))
        )

    # ------------------------------------------------------------------ building
    def call(self, clips, training=False):
        """clips [N, T, H, W, 3] float32 → online encoder features [N, D] float32."""
        return self.online_encoder(clips, training=training)

    def build_networks(self, clip_shape):
        """Creates every variable from a clip shape (T, H, W, 3) and copies online → target (ξ ← θ)."""
        clips = tf.zeros((2, *clip_shape))
        for encoder, appearance, speed in (
            (self.online_encoder, self.online_appearance, self.online_speed),
            (self.target_encoder, self.target_appearance, self.target_speed),
        ):
            features = encoder(clips, training=False)
            appearance(features, training=False)
            speed(features, training=False)
        self.appearance_predictor(self.online_appearance(features), training=False)
        self.speed_predictor(self.online_speed(features), training=False)
        if self.speed_classifier is not None:
            self.speed_classifier(features)
        for target, online in self.ema_pairs():
            target.assign(online)
        self.built = True

    def ema_pairs(self):
        """[(target variable, online variable)] for every weight the EMA averages."""
        pairs = []
        for target, online in (
            (self.target_encoder, self.online_encoder),
            (self.target_appearance, self.online_appearance),
            (self.target_speed, self.online_speed),
        ):
            for t, o in zip(target.trainable_weights, online.trainable_weights, strict=True):
                if t.shape != o.shape:
                    raise ValueError(f"target/online mismatch: {t.path} {t.shape} vs {o.path} {o.shape}")
                pairs.append((t, o))
        return pairs

    @property
    def online_variables(self):
        """The variables the optimiser trains (θ): those the active losses reach."""
        layers = [self.online_encoder]
        if self.gamma < 1:
            layers += [self.online_appearance, self.appearance_predictor]
        if self.gamma > 0 and self.speed_task == "scp":
            layers += [self.online_speed, self.speed_predictor]
        if self.gamma > 0 and self.speed_task == "sp":
            layers.append(self.speed_classifier)
        return [v for layer in layers for v in layer.trainable_weights]

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ------------------------------------------------------------------ schedules
    def tau(self, step):
        if self.tau_schedule == "cosine":
            return optim.byol_tau(step, self.tau_base, self.total_steps)
        return tf.constant(self.tau_base, tf.float32)

    # ------------------------------------------------------------------ training
    def _target_features(self, clips):
        """Target appearance keys and speed features of a clip batch: ([N, D], [N, D]), no gradient."""
        features = self.target_encoder(clips, training=True)
        keys = l2_normalize(self.target_appearance(features, training=True))
        speeds = l2_normalize(self.target_speed(features, training=True))
        return tf.stop_gradient(keys), tf.stop_gradient(speeds)

    def train_step(self, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        replica = tf.distribute.get_replica_context()
        num_replicas = replica.num_replicas_in_sync
        step = self.optimizer.iterations

        view_i, view_j = data["view_i"], data["view_j"]
        ids = tf.cast(data["video_id"], tf.int64)
        speed_i = tf.cast(data["speed_i"], tf.int32)
        speed_j = tf.cast(data["speed_j"], tf.int32)
        labels = tf.cast(data["label"], tf.int64) if "label" in data else -tf.ones_like(ids)
        batch = tf.shape(view_i)[0]

        # Target: both clips (and the third for `same`) in one pass.
        target_clips = [view_i, view_j] + ([data["view_k"]] if self.scp_mode == "same" else [])
        keys, speed_feats = self._target_features(tf.concat(target_clips, axis=0))
        key_i, key_j = keys[:batch], keys[batch : 2 * batch]
        feat_i, feat_j = speed_feats[:batch], speed_feats[batch : 2 * batch]

        # Candidates for SCP: the queue and the whole global batch, a row per clip of every video. A
        # row pairs one clip's appearance key (what the retrieval matches) with the speed feature and
        # speed of the video's OTHER clip (the target): Algorithm 1 retrieves a video by appearance and
        # then samples a clip c_k of it, so the target clip carries its own augmentation, not the one
        # that made the keys match.
        gathered = all_gather(replica, (key_i, key_j, feat_i, feat_j, ids, speed_i, speed_j, labels))
        g_key_i, g_key_j, g_feat_i, g_feat_j, g_ids, g_speed_i, g_speed_j, g_labels = gathered
        rows = (
            tf.concat([g_key_i, g_key_j], 0), tf.concat([g_feat_j, g_feat_i], 0), tf.concat([g_ids, g_ids], 0),
            tf.concat([g_speed_j, g_speed_i], 0), tf.concat([g_labels, g_labels], 0),
        )
        *queued, q_valid = self.queue.contents()
        cand_keys, cand_feats, cand_ids, cand_speeds, cand_labels = (
            tf.concat([q, r], axis=0) for q, r in zip(queued, rows, strict=True)
        )
        cand_valid = tf.concat([q_valid, tf.ones_like(rows[2], tf.bool)], axis=0)

        # Each direction: (online clip c_a, target key of the other clip — the ACP target and the
        # SCP query —, speed of c_a, `same`: target speed feature of a third clip at that speed,
        # the global batch's keys of that other clip: InfoNCE's positives and negatives).
        directions = [(view_i, key_j, speed_i, speed_feats[2 * batch :] if self.scp_mode == "same" else None,
                       g_key_j)]
        if self.symmetric:
            directions.append((view_j, key_i, speed_j, None, g_key_i))

        uses_scp = self.gamma > 0 and self.speed_task == "scp"
        scp_targets, scp_masks, chosen_all = [], [], []
        for index, (_, query, anchor_speed, same_target, _) in enumerate(directions):
            if not uses_scp:
                scp_masks.append(tf.ones_like(ids, tf.bool))
                continue
            if self.scp_mode == "same":
                scp_targets.append(same_target)
                scp_masks.append(tf.ones_like(ids, tf.bool))
                continue
            seed = tf.stack([tf.cast(step, tf.int32) * 2 + index, self.seed])
            targets, has_target, chosen = select_scp_targets(
                query, ids, anchor_speed, cand_keys, cand_feats, cand_ids, cand_speeds, cand_valid,
                mode=self.scp_mode, seed=seed,
                row_offset=replica.replica_id_in_sync_group * batch, total_rows=num_replicas * batch,
            )
            scp_targets.append(targets)
            scp_masks.append(has_target)
            chosen_all.append(chosen)

        online_clips = tf.concat([d[0] for d in directions], axis=0)
        with tf.GradientTape() as tape:
            features = self.online_encoder(online_clips, training=True)
            loss_a = tf.constant(0.0)
            projection = None  # the one the loss trains: appearance, else speed
            if self.gamma < 1:
                projection = self.online_appearance(features, training=True)
                prediction = self.appearance_predictor(projection, training=True)
                if self.appearance_loss == "infonce":
                    # This replica's videos sit at rows [offset, offset + batch) of the gathered keys.
                    positives = replica.replica_id_in_sync_group * batch + tf.range(batch)
                    loss_a = tf.add_n([
                        infonce_loss(prediction[k * batch : (k + 1) * batch], d[4], positives, self.temperature)
                        for k, d in enumerate(directions)
                    ]) / len(directions)
                else:
                    acp_targets = tf.concat([d[1] for d in directions], axis=0)
                    loss_a = tf.reduce_mean(regression_loss(prediction, acp_targets))
            loss_m = tf.constant(0.0)
            if uses_scp:
                speed_projection = self.online_speed(features, training=True)
                projection = speed_projection if projection is None else projection
                prediction = self.speed_predictor(speed_projection, training=True)
                loss_m = masked_mean(
                    regression_loss(prediction, tf.concat(scp_targets, axis=0)), tf.concat(scp_masks, axis=0)
                )
            elif self.gamma > 0:
                logits = self.speed_classifier(features)
                speeds = tf.concat([d[2] for d in directions], axis=0)
                classes = tf.argmax(tf.cast(tf.equal(speeds[:, None], self.speed_set), tf.int32), axis=1)
                loss_m = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(classes, logits, from_logits=True)
                )
            loss = self.gamma * loss_m + (1.0 - self.gamma) * loss_a
            # Keras sums the replicas' gradients: divide so the step is that of the global mean.
            scaled_loss = loss / tf.cast(num_replicas, loss.dtype)
        variables = self.online_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))

        tau = self.tau(step)
        self._update_target(tau)
        self._enqueue(rows)

        if "position" in data:
            self._record_position(tf.reduce_max(tf.cast(data["position"], tf.int64)))

        masks = tf.concat(scp_masks, axis=0)
        values = {
            "loss": loss,
            "loss_a": loss_a,
            "loss_m": loss_m,
            "tau": tau,
            "lr": tf.cast(self.optimizer.learning_rate, tf.float32),
            "scp_masked_fraction": 1.0 - tf.reduce_mean(tf.cast(masks, tf.float32)),
            "queue_fill": tf.cast(self.queue.filled(), tf.float32) / float(self.queue.size),
            "encoder_std": tf.reduce_mean(tf.math.reduce_std(l2_normalize(features), axis=0)),
        }
        if projection is not None:
            values["projection_std"] = tf.reduce_mean(tf.math.reduce_std(l2_normalize(projection), axis=0))
        if uses_scp:
            values["speed_projection_std"] = tf.reduce_mean(
                tf.math.reduce_std(l2_normalize(speed_projection), axis=0))
        for name, value in values.items():
            self.trackers[name].update_state(value)
        if chosen_all:
            anchor_labels = tf.concat([labels for _ in directions], axis=0)
            chosen = tf.concat(chosen_all, axis=0)
            partner_labels = tf.gather(cand_labels, tf.maximum(chosen, 0))
            known = masks & (anchor_labels >= 0) & (partner_labels >= 0)
            same = tf.cast(tf.equal(anchor_labels, partner_labels), tf.float32)
            # Weighted so batches without labels do not count.
            self.trackers["neighbour_same_label"].update_state(same, sample_weight=tf.cast(known, tf.float32))
        return {name: self.trackers[name].result() for name in self.logged_metrics}

    def _update_target(self, tau):
        """ξ ← τ·ξ + (1 − τ)·θ on every replica, identically."""
        pairs = self.ema_pairs()

        def merge(strategy, tau):
            for target, online in pairs:
                strategy.extended.update(target.value, _ema, args=(online.value, tau), group=False)

        tf.distribute.get_replica_context().merge_call(merge, args=(tau,))

    def _record_position(self, last):
        """data_position ← every replica's last record position (identical on every replica)."""
        (positions,) = all_gather(tf.distribute.get_replica_context(), (last[None],))
        positions = tf.pad(positions, [[0, MAX_REPLICAS - tf.shape(positions)[0]]], constant_values=-1)

        def merge(strategy, positions):
            strategy.extended.update(self.data_position.value, lambda v, p: v.assign(p), args=(positions,), group=False)

        tf.distribute.get_replica_context().merge_call(merge, args=(positions,))

    def _enqueue(self, rows):
        """Writes the global batch's clips into the queue (identical rows on every replica)."""
        queue = self.queue
        count = tf.shape(rows[0], out_type=tf.int64)[0]
        slots = queue.slots(count)
        variables = (queue.keys, queue.feats, queue.ids, queue.speeds, queue.labels)

        def merge(strategy, count, slots, *rows):
            for variable, row in zip(variables, rows):
                strategy.extended.update(variable.value, write_rows, args=(slots, row), group=False)
            strategy.extended.update(queue.pointer.value, lambda p, n: p.assign_add(n), args=(count,), group=False)

        tf.distribute.get_replica_context().merge_call(merge, args=(count, slots, *rows))
