"""Heads on top of the pooled backbone feature `[N, D]`.

- projection head g (paper 4.2: "all projection heads as a fully connected
  layer with 256 output dimensions"; option: BYOL's MLP D→4096→BN→ReLU→256),
- predictor h (BYOL's MLP 256→4096→BN→ReLU→256 by default),
- classifier for fine-tuning (dropout + Dense).

Heads compute in float32 whatever the global precision policy: their outputs
are L2-normalised and compared, where bfloat16's 8 bits of mantissa would
dominate the loss.
"""

import keras

from asc_tf.models.layers import batch_norm

BYOL_HIDDEN = 4096  # hidden width of BYOL's projection and prediction MLPs


@keras.saving.register_keras_serializable(package="asc_tf")
class MLPHead(keras.layers.Layer):
    """Dense → BN → ReLU (repeated per hidden layer) → Dense; no hidden layer = one Dense.

    Args:
      output_dim: size of the output.
      hidden_dims: sizes of the hidden layers, e.g. (4096,); () for a single Dense layer.
      sync_bn: synchronised (cross-replica) BatchNorm in the hidden layers.
    """

    def __init__(self, output_dim, hidden_dims=(), sync_bn=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.sync_bn = sync_bn
        self.hidden = []
        for index, size in enumerate(self.hidden_dims):
            self.hidden.append(
                (
                    keras.layers.Dense(size, name=f"dense{index}", dtype="float32"),
                    batch_norm(f"bn{index}", synchronized=sync_bn, dtype="float32"),
                )
            )
        self.out = keras.layers.Dense(self.output_dim, name=f"dense{len(self.hidden_dims)}", dtype="float32")

    def call(self, x, training=None):
        x = keras.ops.cast(x, "float32")
        for dense, bn in self.hidden:
            x = keras.ops.relu(bn(dense(x), training=training))
        return self.out(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, hidden_dims=self.hidden_dims, sync_bn=self.sync_bn)
        return config


def projection_head(kind="linear", dim=256, hidden_dim=BYOL_HIDDEN, sync_bn=False, name="projection"):
    """The projection head g_a / g_m.

    Args:
      kind: "linear" (the paper: one Dense layer to `dim`) or "mlp" (BYOL: Dense(hidden_dim) → BN → ReLU → Dense(dim)).
    """
    if kind == "linear":
        return MLPHead(dim, (), sync_bn=sync_bn, name=name)
    if kind == "mlp":
        return MLPHead(dim, (hidden_dim,), sync_bn=sync_bn, name=name)
    raise ValueError(f"unknown projection head kind {kind!r}; valid: linear, mlp")


def predictor(dim=256, hidden_dim=BYOL_HIDDEN, sync_bn=False, name="predictor"):
    """The predictor h_a / h_m: BYOL's MLP; hidden_dim=0 gives a single Dense layer."""
    return MLPHead(dim, (hidden_dim,) if hidden_dim else (), sync_bn=sync_bn, name=name)


@keras.saving.register_keras_serializable(package="asc_tf")
class ClassifierHead(keras.layers.Layer):
    """Dropout + Dense → logits `[N, num_classes]` float32, for fine-tuning and the linear probe."""

    def __init__(self, num_classes, dropout=0.5, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.dropout_rate = float(dropout)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype="float32")
        self.dense = keras.layers.Dense(self.num_classes, name="logits", dtype="float32")

    def call(self, x, training=None):
        x = keras.ops.cast(x, "float32")
        return self.dense(self.dropout(x, training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dropout=self.dropout_rate)
        return config
