"""Backbones: published sizes, shapes, gradients, SavedModel round trip."""

import numpy as np
import pytest
import tensorflow as tf

from asc_tf.models import BACKBONES, build_backbone

PUBLISHED_PARAMETERS = {
    "r3d_18": 33_166_272,
    "r2plus1d_18": 31_300_125,
    "r2plus1d_10": 14_365_303,
    "s3d": 7_910_048,
    "s3dg": 9_135_056,
}
FEATURE_SIZE = {"r3d_18": 512, "r2plus1d_18": 512, "r2plus1d_10": 512, "s3d": 1024, "s3dg": 1024}


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_published_parameter_count(name):
    model = build_backbone(name)
    model(tf.zeros((1, 8, 32, 32, 3)))
    assert count(model.trainable_weights) == PUBLISHED_PARAMETERS[name]
    # BN moving statistics are state, not parameters (torchvision counts the same way).
    assert all("moving" in v.path for v in model.non_trainable_weights)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("frames,size", [(8, 32), (16, 32), (8, 112), (16, 112)])
def test_output_is_pooled_feature(name, frames, size):
    model = build_backbone(name, width=0.25)
    features = model(tf.random.uniform((2, frames, size, size, 3)), training=False)
    assert features.shape == (2, FEATURE_SIZE[name] // 4)
    assert model.output_dim == FEATURE_SIZE[name] // 4
    assert features.dtype == tf.float32
    assert np.all(np.isfinite(features.numpy()))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_trainable_variable_receives_gradient(name):
    model = build_backbone(name, width=0.25)
    clips = tf.random.stateless_normal((2, 8, 32, 32, 3), seed=(1, 2))
    model(clips)
    projection = tf.random.stateless_normal((model.output_dim,), seed=(3, 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(clips, training=True) ** 2 * projection)
    grads = tape.gradient(loss, model.trainable_weights)
    dead = [v.path for v, g in zip(model.trainable_weights, grads) if g is None or not np.any(g.numpy())]
    assert not dead, f"variables without gradient: {dead[:5]}"


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError) as error:
        build_backbone("resnet50")
    for name in BACKBONES:
        assert name in str(error.value)


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="width"):
        build_backbone("r3d_18", width=0)


@pytest.mark.parametrize("sync", [False, True])
def test_sync_bn_switch(sync):
    model = build_backbone("r2plus1d_10", width=0.25, sync_bn=sync)
    model(tf.zeros((1, 8, 32, 32, 3)))
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert norms and all(layer.synchronized == sync for layer in norms)


def test_batchnorm_constants_follow_torchvision():
    resnet = build_backbone("r3d_18", width=0.25)
    s3d = build_backbone("s3d", width=0.25)
    for model, (epsilon, momentum) in ((resnet, (1e-5, 0.9)), (s3d, (1e-3, 0.999))):
        model(tf.zeros((1, 8, 32, 32, 3)))
        norms = [layer for layer in model._flatten_layers() if isinstance(layer, tf.keras.layers.BatchNormalization)]
        assert {(layer.epsilon, layer.momentum) for layer in norms} == {(epsilon, momentum)}


@pytest.mark.parametrize("name", ["r3d_18", "s3dg"])
def test_saved_model_reloads_with_identical_outputs(name, tmp_path):
    model = build_backbone(name, width=0.25)
    clips = tf.random.stateless_uniform((2, 8, 32, 32, 3), seed=(5, 6))
    # One training step's worth of BN statistics so inference differs from init.
    model(clips, training=True)
    expected = model(clips, training=False).numpy()
    path = str(tmp_path / "encoder")
    model.export(path, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(reloaded.serve(clips).numpy(), expected, rtol=1e-5, atol=1e-5)
