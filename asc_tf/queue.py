"""The feature queue of ASCNet's appearance-based retrieval (paper 3.3.1, Algorithm 1 lines 11-16).

The queue is a ring buffer of recent target-network features. Each training
video gives two clips c and c' and so two rows, (c, c') and (c', c):

  keys    [K, D] float32  target appearance key n(g_a(f_ξ(c)))     — what the retrieval matches
  feats   [K, D] float32  target speed feature n(g_m(f_ξ(c')))    — the SCP target
  ids     [K]    int64    video id
  speeds  [K]    int32    playback speed (frame stride) of c'
  labels  [K]    int64    class label (-1 unknown), only for the diagnostic `neighbour_same_label`
  pointer []     int64    total rows ever enqueued (slot = pointer mod K)

For anchor clip c_i of video v the SCP partner is chosen among the queue and
the current global batch (rows made the same way): rows of another video whose
target clip c' is at the same speed as c_i, and among those (`similar`, the
paper's default) the one whose appearance key has the highest dot product with
the anchor video's target appearance key a_j; or (`random`) a uniformly random
one. The SCP target is that row's speed feature. An anchor with no candidate
is masked out of the loss.

Why the key and the target come from different clips: Algorithm 1 retrieves a
video by appearance (line 14) and then samples a clip c_k of it (line 15), so
the target clip has its own augmentation. Taking the target from the very clip
whose key matched would hand SCP a partner that shares the anchor's augmented
colours (the nearest key, early in training, is mostly the nearest colour), and
SCP would then reward colour in the encoder (README, demo experiment log).

Everything here is replica-local arithmetic on identical inputs: the model
fills the queue from the all-gathered global batch, so every replica holds the
same queue (see `asc_tf.ascnet`).
"""

import keras
import tensorflow as tf

from asc_tf.choices import SCP_MODES


class FeatureQueue(keras.layers.Layer):
    """Ring buffer of `size` clips' target features (`dim` each). Not trainable; checkpointed with the model."""

    def __init__(self, size, dim, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=False, **kwargs)
        if size < 1:
            raise ValueError(f"queue size must be positive, got {size}")
        self.size = int(size)
        self.dim = int(dim)

        def state(name, shape, dtype, initializer="zeros"):
            return self.add_weight(
                name=name, shape=shape, dtype=dtype, initializer=initializer, trainable=False,
                aggregation="only_first_replica",
            )

        self.keys = state("keys", (self.size, self.dim), "float32")
        self.feats = state("feats", (self.size, self.dim), "float32")
        self.ids = state("ids", (self.size,), "int64")
        self.speeds = state("speeds", (self.size,), "int32")
        self.labels = state("labels", (self.size,), "int64")
        self.pointer = state("pointer", (), "int64")

    def filled(self):
        """Number of valid rows: min(pointer, size), int64 scalar."""
        return tf.minimum(self.pointer.value, self.size)

    def valid_mask(self):
        """[K] bool: rows that hold a clip."""
        return tf.range(self.size, dtype=tf.int64) < self.filled()

    def slots(self, count):
        """Ring-buffer rows the next `count` clips go to: [count] int64."""
        return (self.pointer.value + tf.range(count, dtype=tf.int64)) % self.size

    def contents(self):
        """(keys, feats, ids, speeds, labels, valid) as tensors."""
        return (self.keys.value, self.feats.value, self.ids.value, self.speeds.value, self.labels.value,
                self.valid_mask())


def _last_rows(slots, rows, size):
    """When a batch is larger than the queue only its last `size` rows survive."""
    keep = tf.maximum(tf.shape(slots, out_type=tf.int64)[0] - size, 0)
    return slots[keep:, None], rows[keep:]


def write_rows(variable, slots, rows):
    """Writes `rows` [B, ...] into `variable` [K, ...] at ring-buffer `slots` [B] int64, in place."""
    indices, rows = _last_rows(slots, rows, variable.shape[0])
    return variable.scatter_nd_update(indices, tf.cast(rows, variable.dtype))


def enqueue_values(queue_tensors, slots, rows):
    """The same write as `write_rows`, as a pure function on tensors (for tests and reasoning).

    Args:
      queue_tensors: (keys [K, D], feats [K, D], ids [K], speeds [K], labels [K]).
      slots: [B] int64 rows to overwrite (from `FeatureQueue.slots`).
      rows: (keys [B, D], feats [B, D], ids [B], speeds [B], labels [B]).

    Returns:
      The five updated tensors.
    """
    updated = []
    for old, new in zip(queue_tensors, rows):
        indices, new = _last_rows(slots, new, old.shape[0])
        updated.append(tf.tensor_scatter_nd_update(old, indices, tf.cast(new, old.dtype)))
    return tuple(updated)


def select_scp_targets(
    query, anchor_ids, anchor_speeds, cand_keys, cand_feats, cand_ids, cand_speeds, cand_valid,
    mode="similar", seed=None, row_offset=0, total_rows=None,
):
    """Chooses each anchor's SCP partner among candidates.

    Args:
      query: [B, D] float32, the anchor video's target appearance key a_j (L2-normalised).
      anchor_ids: [B] int64 video ids of the anchors.
      anchor_speeds: [B] int32 speed s_i of each anchor clip c_i.
      cand_keys: [C, D] float32 appearance keys of the candidates.
      cand_feats: [C, D] float32 speed features of the candidates (the SCP targets).
      cand_ids: [C] int64; cand_speeds: [C] int32; cand_valid: [C] bool (e.g. filled queue rows).
      mode: "similar" (highest dot product with the query) or "random" (uniform among valid).
      seed: [2] int seed for "random" (stateless).
      row_offset, total_rows: for "random" under several replicas: the draws are
        made for all `total_rows` anchors of the global batch with the same seed on
        every replica, and these anchors take rows row_offset .. row_offset + B,
        so the partners do not depend on how the batch is split.

    Returns:
      targets [B, D] float32 (zeros where there is no candidate),
      has_target [B] bool,
      chosen [B] int32 index into the candidates (-1 where there is none).
    """
    allowed = (
        cand_valid[None, :]
        & tf.not_equal(anchor_ids[:, None], cand_ids[None, :])
        & tf.equal(anchor_speeds[:, None], cand_speeds[None, :])
    )
    if mode == "similar":
        scores = tf.matmul(query, cand_keys, transpose_b=True)
    elif mode == "random":
        if seed is None:
            raise ValueError("mode='random' needs a seed")
        rows = tf.shape(allowed)[0]
        total = rows if total_rows is None else total_rows
        draws = tf.random.stateless_uniform(tf.stack([total, tf.shape(allowed)[1]]), seed=seed)
        scores = draws[row_offset : row_offset + rows]
    else:
        raise ValueError(f"mode must be 'similar' or 'random' here, got {mode!r}")
    scores = tf.where(allowed, scores, tf.constant(float("-inf"), scores.dtype))
    chosen = tf.argmax(scores, axis=1, output_type=tf.int32)
    has_target = tf.reduce_any(allowed, axis=1)
    targets = tf.gather(cand_feats, chosen) * tf.cast(has_target, cand_feats.dtype)[:, None]
    chosen = tf.where(has_target, chosen, -1)
    return targets, has_target, chosen
