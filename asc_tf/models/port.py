"""Loading PyTorch (torchvision) weights into the Keras backbones.

Every backbone keeps `torch_names`, a table from PyTorch `state_dict` prefixes
(`layer1.0.conv1.0`) to its own layer names (`layer1_block0_conv1`), built as
the layers are created. Porting is then a table walk, with one layout change:
Conv3d weights are `[out, in, kt, kh, kw]` in PyTorch and `[kt, kh, kw, in, out]`
in Keras. BatchNorm keys map weight → gamma, bias → beta, running_mean →
moving_mean, running_var → moving_var; `num_batches_tracked` is not needed.

No torch dependency: the caller passes NumPy arrays, e.g.
    state = {k: v.numpy() for k, v in torchvision.models.video.r3d_18(weights=...).state_dict().items()}
    np.savez("r3d_18.npz", **state)           # in an environment with torch
    load_torchvision_state(encoder, dict(np.load("r3d_18.npz")))   # here
"""

import keras
import numpy as np

_BN_KEYS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))
_CONV_TO_KERAS = (2, 3, 4, 1, 0)  # [out, in, t, h, w] → [t, h, w, in, out]


def _layers_by_name(model):
    return {layer.name: layer for layer in model._flatten_layers(include_self=False, recursive=True)}


def _variable_table(model):
    """[(torch key, Keras variable, is_conv_kernel)] for every ported variable."""
    layers = _layers_by_name(model)
    table = []
    for prefix, name in model.torch_names.items():
        layer = layers[name]
        if isinstance(layer, keras.layers.BatchNormalization):
            for torch_key, attribute in _BN_KEYS:
                table.append((f"{prefix}.{torch_key}", getattr(layer, attribute), False))
        else:
            table.append((f"{prefix}.weight", layer.kernel, True))
            if layer.use_bias:
                table.append((f"{prefix}.bias", layer.bias, False))
    return table


def torch_state_names(model):
    """The PyTorch `state_dict` keys a backbone reads, in order."""
    return [key for key, _, _ in _variable_table(model)]


def load_torchvision_state(model, arrays, strict=True):
    """Loads PyTorch-layout arrays into a built backbone.

    Args:
      model: a backbone from `asc_tf.models` (built: call it once on a clip first).
      arrays: dict torch key → np.ndarray in PyTorch layout.
      strict: every key the model reads must be present. With strict=False,
        absent keys are left at their current values (e.g. S3D-G's gates when
        loading torchvision's S3D weights).

    Returns:
      (missing, unused): keys the model reads that `arrays` lacks (only when
      strict=False), and keys of `arrays` the model does not read (e.g. `fc.weight`,
      `num_batches_tracked`).

    Raises:
      KeyError: a key is missing (strict), naming it.
      ValueError: an array has the wrong shape, naming its key and both shapes.
    """
    if not model.built:
        raise ValueError("build the model first (call it once on a clip)")
    missing = []
    assignments = []
    for key, variable, is_kernel in _variable_table(model):
        if key not in arrays:
            if strict:
                raise KeyError(f"missing key {key!r} in the PyTorch state")
            missing.append(key)
            continue
        value = np.asarray(arrays[key])
        if is_kernel:
            if value.ndim != 5:
                raise ValueError(f"{key}: expected a 5-D Conv3d weight, got shape {value.shape}")
            value = value.transpose(_CONV_TO_KERAS)
        if tuple(value.shape) != tuple(variable.shape):
            expected = variable.shape
            if is_kernel:
                expected = tuple(variable.shape[i] for i in (4, 3, 0, 1, 2))
                value = value.transpose(4, 3, 0, 1, 2)
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not match the model's {tuple(expected)}")
        assignments.append((variable, value))
    # Assign only after every key was checked, so a bad state leaves the model untouched.
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    read = set(torch_state_names(model))
    unused = sorted(key for key in arrays if key not in read)
    return missing, unused


def export_torchvision_state(model):
    """The inverse of `load_torchvision_state`: dict torch key → array in PyTorch layout."""
    state = {}
    for key, variable, is_kernel in _variable_table(model):
        value = np.asarray(variable.numpy())
        state[key] = value.transpose(4, 3, 0, 1, 2) if is_kernel else value
    return state
