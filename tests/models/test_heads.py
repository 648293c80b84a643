"""Heads: sizes, float32 outputs under mixed precision, dropout only in training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from asc_tf.models import heads


def count(layer):
    return sum(int(np.prod(v.shape)) for v in layer.trainable_weights)


def test_linear_projection_is_one_dense_layer():
    head = heads.projection_head("linear", dim=256)
    assert head(tf.zeros((3, 512))).shape == (3, 256)
    assert count(head) == 512 * 256 + 256


def test_mlp_projection_and_predictor_are_byol_mlps():
    head = heads.projection_head("mlp", dim=256, hidden_dim=4096)
    head(tf.zeros((3, 512)))
    assert count(head) == (512 * 4096 + 4096) + 2 * 4096 + (4096 * 256 + 256)
    predictor = heads.predictor(dim=256, hidden_dim=4096)
    assert predictor(tf.zeros((3, 256))).shape == (3, 256)
    assert count(predictor) == (256 * 4096 + 4096) + 2 * 4096 + (4096 * 256 + 256)


def test_unknown_projection_kind_is_rejected():
    with pytest.raises(ValueError, match="linear, mlp"):
        heads.projection_head("transformer")


def test_heads_stay_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        head = heads.predictor(dim=16, hidden_dim=32)
        out = head(tf.ones((4, 8), tf.bfloat16), training=True)
        assert out.dtype == tf.float32
        assert all(v.dtype == "float32" for v in head.weights)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_classifier_dropout_only_in_training():
    classifier = heads.ClassifierHead(num_classes=5, dropout=0.5)
    x = tf.ones((64, 32))
    first = classifier(x, training=False).numpy()
    np.testing.assert_array_equal(first, classifier(x, training=False).numpy())
    assert not np.allclose(first, classifier(x, training=True).numpy())
    assert first.shape == (64, 5)
