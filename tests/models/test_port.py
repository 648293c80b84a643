"""Weight porting from PyTorch layouts: round trip, errors naming the key, and (when
torch is installed) numerical equality with torchvision's own models."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from asc_tf.models import build_backbone, load_torchvision_state, torch_state_names
from asc_tf.models.port import export_torchvision_state


def built(name, width=0.25):
    model = build_backbone(name, width=width)
    model(tf.zeros((1, 8, 32, 32, 3)))
    return model


def random_torch_state(model, seed=0):
    """Arrays in PyTorch layout with the shapes the model expects."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, array in export_torchvision_state(model).items():
        value = rng.normal(size=array.shape).astype(np.float32)
        state[key] = np.abs(value) + 0.5 if key.endswith("running_var") else value
    return state


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18", "r2plus1d_10", "s3d", "s3dg"])
def test_round_trip_through_torch_layout(name):
    model = built(name)
    state = random_torch_state(model)
    state["fc.weight"] = np.zeros((3, 3), np.float32)  # a classifier key the backbone does not read
    missing, unused = load_torchvision_state(model, state)
    assert missing == [] and unused == ["fc.weight"]
    back = export_torchvision_state(model)
    assert sorted(back) == sorted(torch_state_names(model))
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    # Conv kernels really are transposed, not reinterpreted.
    kernel_key = torch_state_names(model)[0]
    assert state[kernel_key].ndim == 5
    keras_kernel = model.get_weights()[0] if name != "s3dg" else None
    if keras_kernel is not None and keras_kernel.ndim == 5:
        np.testing.assert_array_equal(keras_kernel, state[kernel_key].transpose(2, 3, 4, 1, 0))


def test_wrong_shape_names_the_key_and_leaves_model_untouched():
    model = built("r3d_18")
    before = [w.copy() for w in model.get_weights()]
    state = random_torch_state(model)
    state["layer2.0.conv1.1.weight"] = np.ones((7,), np.float32)
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1\.1\.weight"):
        load_torchvision_state(model, state)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_missing_key_is_named_unless_not_strict():
    model = built("s3dg")
    state = random_torch_state(model)
    gate_keys = [key for key in state if "gate" in key]
    for key in gate_keys:
        del state[key]
    with pytest.raises(KeyError, match="features.3.gate.weight"):
        load_torchvision_state(model, state)
    missing, _ = load_torchvision_state(model, state, strict=False)
    assert missing == sorted(gate_keys, key=torch_state_names(model).index)


def test_unbuilt_model_is_rejected():
    with pytest.raises(ValueError, match="build"):
        load_torchvision_state(build_backbone("r3d_18", width=0.25), {})


# Runs in a subprocess: importing torch into a process that already holds
# TensorFlow crashes (two copies of the same native libraries).
TORCH_REFERENCE = r"""
import sys
import numpy as np
import torch
from torchvision.models import video

name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = getattr(video, name)()
# Non-trivial BN affine terms and running statistics, so inference-mode BN is exercised.
for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm3d):
        module.running_mean.uniform_(-0.1, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.data.uniform_(0.5, 1.5)
        module.bias.data.uniform_(-0.1, 0.1)
model.eval()
clips = np.random.default_rng(1).normal(size=(2, 8, 48, 48, 3)).astype(np.float32)
x = torch.from_numpy(clips.transpose(0, 4, 1, 2, 3))
with torch.no_grad():
    if name == "s3d":
        features = torch.mean(model.features(x), dim=(2, 3, 4))
    else:
        model.fc = torch.nn.Identity()
        features = model(x)
state = {"state/" + k: v.detach().numpy() for k, v in model.state_dict().items()}
np.savez(out, clips=clips, features=features.numpy(), **state)
"""


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18", "s3d"])
def test_ported_torchvision_model_gives_the_same_features(name, tmp_path):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        pytest.skip("torch/torchvision not installed (optional; only this cross-check needs them)")
    out = tmp_path / "reference.npz"
    subprocess.run([sys.executable, "-c", TORCH_REFERENCE, name, str(out)], check=True, timeout=600)
    reference = np.load(out)
    state = {k[len("state/"):]: reference[k] for k in reference.files if k.startswith("state/")}
    model = build_backbone(name)
    model(tf.zeros((1, 8, 32, 32, 3)))
    _, unused = load_torchvision_state(model, state)
    assert all(key.startswith(("fc.", "classifier.")) or key.endswith("num_batches_tracked") for key in unused)
    expected = reference["features"]
    ours = model(reference["clips"], training=False).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
