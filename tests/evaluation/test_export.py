"""Exported SavedModels: raw uint8 clips in, the Keras model's outputs out, without this package."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from asc_tf import export
from asc_tf.data import augment
from asc_tf.models import build_backbone
from conftest import REPO_ROOT

FRAMES, CROP, RESIZE = 4, 16, 18
CLASS_NAMES = ["archery", "bowling", "surfing"]

# Runs in a fresh interpreter that only has TensorFlow: what a user of the export has.
LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    encoder_path, classifier_path, inputs_path, outputs_path = sys.argv[1:]
    inputs = np.load(inputs_path)
    encoder = tf.saved_model.load(encoder_path)
    classifier = tf.saved_model.load(classifier_path)
    serve = encoder.signatures["serving_default"]
    classify = classifier.signatures["serving_default"]
    outputs = {
        "wide": serve(clips=tf.constant(inputs["wide"]))["features"].numpy(),
        "portrait": serve(clips=tf.constant(inputs["portrait"]))["features"].numpy(),
        "features": encoder.features(tf.constant(inputs["normalised"])).numpy(),
        "probabilities": classify(clips=tf.constant(inputs["wide"]))["probabilities"].numpy(),
        "class_names": classifier.signatures["class_names"]()["class_names"].numpy().astype(str),
        "class_names_variable": classifier.class_names.numpy().astype(str),
        "settings": np.array([int(encoder.output_dim.numpy()), int(encoder.frames.numpy()),
                              int(encoder.crop_size.numpy()), int(encoder.resize_short.numpy()),
                              int(classifier.frames.numpy())]),
        "serving_shape": np.array([-1 if d is None else d for d in serve.structured_input_signature[1]["clips"].shape]),
        "serving_dtype": np.array(serve.structured_input_signature[1]["clips"].dtype.name),
    }
    longer = tf.constant(inputs["longer"])
    try:
        serve(clips=longer)
        outputs["wrong_length"] = np.array("accepted")
    except tf.errors.InvalidArgumentError as error:
        outputs["wrong_length"] = np.array(error.message)
    outputs["longer"] = encoder.signatures["any_length"](clips=longer)["features"].numpy()
    outputs["longer_probabilities"] = classifier.signatures["any_length"](clips=longer)["probabilities"].numpy()
    assert "asc_tf" not in sys.modules
    np.savez(outputs_path, **outputs)
""")


def protocol(clips):
    """The evaluation protocol clip by clip, as asc_tf.data.pipeline.eval_dataset applies it."""
    return tf.stack([augment.normalize(augment.spatial_crops(augment.resize_short_side(clip, RESIZE), CROP, 1)[0])
                     for clip in clips])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    encoder = build_backbone("r3d_18", width=0.125)
    encoder(tf.zeros((1, FRAMES, CROP, CROP, 3)))
    # A stand-in for a fine-tuned classifier: the exporter only needs clips -> logits.
    inputs = keras.Input((None, CROP, CROP, 3))  # any T, as finetune.VideoClassifier
    classifier = keras.Model(inputs, keras.layers.Dense(len(CLASS_NAMES))(build_backbone("r3d_18", width=0.125)(inputs)))
    export.export_encoder(encoder, str(root / "encoder"), FRAMES, CROP, RESIZE)
    export.export_classifier(classifier, str(root / "classifier"), CLASS_NAMES, FRAMES, CROP, RESIZE)

    rng = np.random.default_rng(0)
    clips = {
        "wide": rng.integers(0, 256, (2, FRAMES, 20, 28, 3), dtype=np.uint8),  # resized down, cropped across
        "portrait": rng.integers(0, 256, (1, FRAMES, 22, 14, 3), dtype=np.uint8),  # upsampled, cropped down
        "normalised": rng.normal(size=(2, FRAMES, CROP, CROP, 3)).astype(np.float32),
        "longer": rng.integers(0, 256, (2, 2 * FRAMES + 1, 20, 28, 3), dtype=np.uint8),  # not FRAMES long
    }
    np.savez(root / "inputs.npz", **clips)
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(root / "encoder"), str(root / "classifier"), str(root / "inputs.npz"),
         str(root / "outputs.npz")],
        cwd=str(root), capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return encoder, classifier, clips, dict(np.load(root / "outputs.npz"))


def test_encoder_serving_equals_keras_on_protocol_crops_for_any_frame_size(exported):
    encoder, _, clips, outputs = exported
    for name in ("wide", "portrait"):
        expected = encoder(protocol(clips[name]), training=False).numpy()
        assert outputs[name].shape == (len(clips[name]), encoder.output_dim)
        np.testing.assert_allclose(outputs[name], expected, atol=1e-5, rtol=0)


def test_encoder_features_takes_normalised_clips(exported):
    encoder, _, clips, outputs = exported
    expected = encoder(clips["normalised"], training=False).numpy()
    np.testing.assert_allclose(outputs["features"], expected, atol=1e-5, rtol=0)


def test_exports_carry_their_protocol_and_fix_only_frames(exported):
    encoder, _, _, outputs = exported
    assert outputs["settings"].tolist() == [encoder.output_dim, FRAMES, CROP, RESIZE, FRAMES]
    assert outputs["serving_shape"].tolist() == [-1, FRAMES, -1, -1, 3]
    assert str(outputs["serving_dtype"]) == "uint8"


def test_serving_refuses_clips_of_another_length_and_any_length_takes_them(exported):
    encoder, classifier, clips, outputs = exported
    assert f"clips must have {FRAMES} frames" in str(outputs["wrong_length"]), outputs["wrong_length"]
    expected = encoder(protocol(clips["longer"]), training=False).numpy()
    np.testing.assert_allclose(outputs["longer"], expected, atol=1e-5, rtol=0)
    expected = tf.nn.softmax(classifier(protocol(clips["longer"]), training=False)).numpy()
    np.testing.assert_allclose(outputs["longer_probabilities"], expected, atol=1e-5, rtol=0)


def test_classifier_serving_gives_softmax_of_keras_logits_and_class_names(exported):
    _, classifier, clips, outputs = exported
    expected = tf.nn.softmax(classifier(protocol(clips["wide"]), training=False)).numpy()
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert outputs["class_names"].tolist() == CLASS_NAMES
    assert outputs["class_names_variable"].tolist() == CLASS_NAMES


def test_preprocess_equals_the_eval_protocol_clip_by_clip():
    clips = np.random.default_rng(1).integers(0, 256, (3, FRAMES, 21, 30, 3), dtype=np.uint8)
    batch = export.preprocess(tf.constant(clips), CROP, RESIZE)
    assert batch.shape == (3, FRAMES, CROP, CROP, 3) and batch.dtype == tf.float32
    np.testing.assert_allclose(batch.numpy(), protocol(clips).numpy(), atol=1e-6, rtol=0)


def test_export_rejects_resize_short_below_crop(tmp_path):
    encoder = build_backbone("r3d_18", width=0.125)
    with pytest.raises(ValueError, match="resize_short"):
        export.export_encoder(encoder, str(tmp_path / "x"), FRAMES, CROP, CROP - 1)
    assert augment.protocol_resize_short(112) == 128


def run_export(*args):
    return subprocess.run([sys.executable, "-m", "tools.export", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_tools_export_writes_the_encoder_of_a_pretraining_run(tmp_path):
    from asc_tf import pretraining
    from asc_tf.evaluation import encoders

    model_dir = tmp_path / "run"
    config = pretraining.PretrainConfig(
        model_dir=str(model_dir), backbone="r3d_18", width=0.125, dim=16, predictor_hidden=32, frames=FRAMES,
        crop_size=CROP, speed_set=(1, 2), queue_size=32, global_batch_size=4,
    )
    os.makedirs(model_dir)
    with open(model_dir / "config.json", "w") as f:
        json.dump(dataclasses.asdict(config), f, default=list)
    model, _, manager, _ = pretraining.restore(config, tf.distribute.get_strategy())
    manager.save()

    result = run_export(f"--model_dir={model_dir}", f"--output_dir={tmp_path / 'encoder'}", "--resize_short=20")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "serving_default: clips uint8 [N, 4, H, W, 3] -> short side 20, centre crop 16" in result.stdout
    loaded = encoders.from_saved_model(str(tmp_path / "encoder"))
    assert loaded.output_dim == model.online_encoder.output_dim
    clips = tf.random.stateless_normal((2, FRAMES, CROP, CROP, 3), seed=[0, 1])
    np.testing.assert_allclose(loaded(clips).numpy(), model.online_encoder(clips, training=False).numpy(),
                               atol=1e-5, rtol=0)


def test_tools_export_writes_a_finetuned_classifier(tmp_path):
    finetune = pytest.importorskip("asc_tf.evaluation.finetune")
    clip_shape = (FRAMES, CROP, CROP, 3)
    model = finetune.build_classifier("r3d_18", 0.125, len(CLASS_NAMES), dropout=0.5, clip_shape=clip_shape)
    source = tmp_path / "finetune"
    source.mkdir()
    model.save_weights(str(source / "classifier.weights.h5"))
    (source / "classifier.json").write_text(json.dumps({
        "backbone": "r3d_18", "width": 0.125, "frames": FRAMES, "crop_size": CROP, "resize_short": RESIZE,
        "num_classes": len(CLASS_NAMES), "class_names": CLASS_NAMES, "dropout": 0.5,
    }))
    result = run_export(f"--classifier_dir={source}", f"--output_dir={tmp_path / 'classifier'}")
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = tf.saved_model.load(str(tmp_path / "classifier"))
    clips = np.random.default_rng(2).integers(0, 256, (2, FRAMES, 20, 28, 3), dtype=np.uint8)
    probabilities = loaded.signatures["serving_default"](clips=tf.constant(clips))["probabilities"].numpy()
    expected = tf.nn.softmax(model(protocol(clips), training=False)).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
    assert loaded.class_names.numpy().astype(str).tolist() == CLASS_NAMES
    assert int(loaded.resize_short.numpy()) == RESIZE  # the classifier's own protocol by default


@pytest.mark.parametrize("args, flag", [
    ([], "model_dir"),
    (["--model_dir={run}", "--classifier_dir={run}"], "model_dir"),
    (["--model_dir={tmp}"], "model_dir"),
    (["--classifier_dir={tmp}"], "classifier_dir"),
    (["--model_dir={run}", "--output_dir={file}"], "output_dir"),
    (["--model_dir={run}"], "output_dir"),
    (["--model_dir={run}", "--output_dir={tmp}/out", "--resize_short=8"], "resize_short"),
    (["--model_dir={run}", "--output_dir={tmp}/out", "--frames=0"], "frames"),
    (["--model_dir={run}", "--output_dir={tmp}/out", "--crop_size=abc"], "crop_size"),
])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(tmp_path, args, flag):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint").write_text("")
    (run / "config.json").write_text(json.dumps({"frames": FRAMES, "crop_size": CROP}))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = run_export(*[a.format(run=run, tmp=tmp_path, file=a_file) for a in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--{flag}" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
