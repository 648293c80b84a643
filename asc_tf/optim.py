"""LARS for Keras 3, and the learning-rate and EMA (τ) schedules as pure functions of the step.

Paper 4.2: LARS, momentum 0.9, weight decay 1e-6, base learning rate 0.3 scaled
linearly with the batch (0.3 × b / 128). As in BYOL, biases and BatchNorm
parameters get neither weight decay nor the trust ratio.
"""

import math

import keras
import tensorflow as tf


def scaled_learning_rate(base_lr, global_batch_size):
    """The linear scaling rule: base_lr × global_batch / 128."""
    return base_lr * global_batch_size / 128.0


def warmup_cosine(step, peak, warmup_steps, total_steps):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    step = tf.cast(step, tf.float32)
    warmup = tf.cast(warmup_steps, tf.float32)
    total = tf.cast(total_steps, tf.float32)
    warm = peak * step / tf.maximum(warmup, 1.0)
    progress = tf.clip_by_value((step - warmup) / tf.maximum(total - warmup, 1.0), 0.0, 1.0)
    cosine = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
    return tf.where(step < warmup, warm, cosine)


@keras.saving.register_keras_serializable(package="asc_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """`warmup_cosine` as a Keras learning-rate schedule."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        return warmup_cosine(step, self.peak, self.warmup_steps, self.total_steps)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def byol_tau(step, base_tau, total_steps):
    """BYOL's target decay: τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2, rising from τ_base to 1."""
    progress = tf.clip_by_value(tf.cast(step, tf.float32) / float(max(total_steps, 1)), 0.0, 1.0)
    return 1.0 - (1.0 - base_tau) * (tf.cos(math.pi * progress) + 1.0) / 2.0


def is_bias_or_norm(variable):
    """The exclusion rule: a variable of rank ≤ 1 is a bias or a BatchNorm γ/β.

    In every model of this project the rank-1 trainable variables are exactly
    the Dense/Conv biases and the BatchNorm scales and offsets (kernels are
    rank 2 or 5), so the rule needs no name matching.
    """
    return len(variable.shape) <= 1


@keras.saving.register_keras_serializable(package="asc_tf")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017), as BYOL uses it.

    For each variable w with gradient g (all excluded variables skip steps 1-2):
      1. g ← g + weight_decay · w
      2. g ← g · η‖w‖/‖g‖   (when both norms are positive)
      3. v ← momentum · v + g
      4. w ← w − lr · v      (nesterov: w ← w − lr · (momentum · v + g))

    Args:
      learning_rate: float or schedule.
      momentum: 0.9 in the paper.
      weight_decay_rate: 1e-6 in the paper (named so as not to clash with Keras's
        own decoupled `weight_decay`, which is not used).
      eta: trust coefficient η, 0.001.
      exclude: callable(variable) → True for variables without decay and trust
        ratio; default `is_bias_or_norm`.
    """

    def __init__(
        self,
        learning_rate=0.3,
        momentum=0.9,
        weight_decay_rate=1e-6,
        eta=0.001,
        nesterov=False,
        exclude=None,
        name="lars",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.weight_decay_rate = float(weight_decay_rate)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)
        self.exclude = exclude or is_bias_or_norm

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.velocities = [self.add_variable_from_reference(v, name="velocity") for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        velocity = self.velocities[self._get_variable_index(variable)]
        if not self.exclude(variable):
            gradient = gradient + self.weight_decay_rate * variable
            w_norm = tf.norm(variable)
            g_norm = tf.norm(gradient)
            trust = tf.where(
                (w_norm > 0.0) & (g_norm > 0.0), self.eta * w_norm / tf.maximum(g_norm, 1e-30), 1.0
            )
            gradient = gradient * trust
        self.assign(velocity, self.momentum * velocity + gradient)
        step = self.momentum * velocity + gradient if self.nesterov else velocity
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum, weight_decay_rate=self.weight_decay_rate, eta=self.eta, nesterov=self.nesterov
        )
        return config
