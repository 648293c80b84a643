"""LARS against a NumPy reference, the exclusion rule, and the schedules."""

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from asc_tf import optim


def numpy_lars(weights, grads_fn, lrs, momentum=0.9, weight_decay=1e-6, eta=0.001):
    """Reference LARS: decay and trust ratio for rank ≥ 2 only, then heavy-ball momentum."""
    weights = [w.astype(np.float64).copy() for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    for lr in lrs:
        grads = grads_fn(weights)
        for index, (w, g) in enumerate(zip(weights, grads)):
            if w.ndim >= 2:
                g = g + weight_decay * w
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                if w_norm > 0 and g_norm > 0:
                    g = g * eta * w_norm / g_norm
            velocity[index] = momentum * velocity[index] + g
            weights[index] = w - lr * velocity[index]
    return weights


def test_lars_matches_numpy_reference_on_a_toy_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.normal(size=(16, 3)).astype(np.float32)
    kernel0 = rng.normal(size=(5, 3)).astype(np.float32)
    bias0 = rng.normal(size=(3,)).astype(np.float32)
    schedule = optim.WarmupCosine(peak=2.0, warmup_steps=3, total_steps=10)
    steps = 10

    kernel = keras.Variable(kernel0)
    bias = keras.Variable(bias0)
    optimizer = optim.LARS(schedule, momentum=0.9, weight_decay_rate=1e-2, eta=0.01)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.constant(x) @ kernel + bias - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))

    def grads_fn(weights):
        k, b = weights
        residual = x @ k + b - y
        scale = 2.0 / residual.size
        return [scale * x.T @ residual, scale * residual.sum(axis=0)]

    lrs = [float(schedule(step)) for step in range(steps)]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(2.0)
    expected_kernel, expected_bias = numpy_lars(
        [kernel0, bias0], grads_fn, lrs, momentum=0.9, weight_decay=1e-2, eta=0.01
    )
    np.testing.assert_allclose(kernel.numpy(), expected_kernel, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), expected_bias, atol=1e-6)
    assert not np.allclose(kernel.numpy(), kernel0)


def test_exclusion_rule_is_rank_one_variables():
    assert optim.is_bias_or_norm(keras.Variable(np.zeros(4)))
    assert not optim.is_bias_or_norm(keras.Variable(np.zeros((1, 1, 1, 3, 4))))
    # Every rank-1 trainable variable of a backbone is a bias or a BatchNorm gamma/beta.
    from asc_tf.models import build_backbone

    model = build_backbone("s3dg", width=0.25)
    model(tf.zeros((1, 8, 32, 32, 3)))
    excluded = {v.path.rsplit("/", 1)[-1] for v in model.trainable_weights if optim.is_bias_or_norm(v)}
    assert excluded == {"gamma", "beta", "bias"}


def test_scaled_learning_rate_is_linear_in_batch():
    assert optim.scaled_learning_rate(0.3, 256) == pytest.approx(0.6)
    assert optim.scaled_learning_rate(0.3, 128) == pytest.approx(0.3)


def test_warmup_then_cosine():
    values = [float(optim.warmup_cosine(s, 1.0, 10, 110)) for s in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_byol_tau_rises_from_base_to_one():
    values = [float(optim.byol_tau(s, 0.99, 100)) for s in (0, 50, 100)]
    np.testing.assert_allclose(values, [0.99, 1 - 0.01 * (math.cos(math.pi / 2) + 1) / 2, 1.0], atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_pretraining_weight_decay_is_decoupled_for_adam_and_sgd_and_spares_biases_and_norms(name):
    from asc_tf import pretraining

    dense = keras.layers.Dense(3)
    norm = keras.layers.BatchNormalization()
    norm(dense(tf.ones((2, 4))))
    variables = dense.trainable_variables + norm.trainable_variables
    config = pretraining.PretrainConfig(optimizer=name, base_lr=1.28, global_batch_size=128, weight_decay=0.1,
                                        warmup_steps=0, train_steps=10)
    optimizer = pretraining.make_optimizer(config, variables)
    optimizer.build(variables)
    before = [v.numpy().copy() for v in variables]
    # Zero gradients: Adam's and SGD's own steps are zero, so what moves is the decay alone, w -= lr·wd·w at lr 1.28.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    kernel, bias, gamma, beta = (v.numpy() for v in variables)
    np.testing.assert_allclose(kernel, before[0] * (1 - 1.28 * 0.1), rtol=1e-5)
    for after, was in ((bias, before[1]), (gamma, before[2]), (beta, before[3])):
        np.testing.assert_array_equal(after, was)
    # No decay asked: the plain optimiser.
    plain = pretraining.make_optimizer(dataclasses.replace(config, weight_decay=0.0), variables)
    assert plain.weight_decay is None and type(plain).__name__ == {"adam": "Adam", "sgd": "SGD"}[name]
