"""SavedModels that take raw video clips: the encoder and the fine-tuned classifier.

A model exported here needs neither this package nor Keras to run: plain
`tf.saved_model.load(path)` gives

  encoder (`export_encoder`):
    signatures["serving_default"](clips=[N, frames, H, W, 3] uint8) -> {"features": [N, D] float32}
    signatures["any_length"](clips=[N, T, H, W, 3] uint8) -> {"features": [N, D] float32}, any T
    features(clips [N, T, h, w, 3] float32, normalised) -> [N, D] float32
    output_dim, frames, crop_size, resize_short    int32 scalar variables

  classifier (`export_classifier`):
    signatures["serving_default"](clips=[N, frames, H, W, 3] uint8) -> {"probabilities": [N, C] float32}
    signatures["any_length"](clips=[N, T, H, W, 3] uint8) -> {"probabilities": [N, C] float32}, any T
    signatures["class_names"]() -> {"class_names": [C] string}
    logits(clips [N, T, h, w, 3] float32, normalised) -> [N, C] float32
    class_names                                    [C] string variable
    frames, crop_size, resize_short                int32 scalar variables

The serving signature applies the test-time protocol of
`asc_tf.data.pipeline.eval_dataset` inside the graph: the short side of every
frame resized to `resize_short` (bilinear, antialiased), one centre crop of
`crop_size`, `augment.normalize`. N, H and W are free (one SavedModel serves
any video size); T is fixed to `frames`, the clip length the model was
trained and evaluated at, and checked in the graph: clips of another length
fail with InvalidArgumentError naming both lengths, so a caller cannot feed
them by mistake. `any_length` is the same protocol without that check, for
callers who mean another T (the backbones pool over time). `features` and `logits` are the bare networks for evaluation code that
does its own preprocessing (`asc_tf.evaluation.encoders.from_saved_model`);
the backbones are fully convolutional with global pooling, so they take any
T, h and w.
"""

import tensorflow as tf

from asc_tf.data import augment

# The paper's evaluation resizes the short side to 128 for 112 crops; other
# crop sizes keep that ratio unless told otherwise.
def preprocess(clips, crop_size, resize_short):
    """Raw clips -> the model's input: short side resized, centre crop, normalised.

    Args:
      clips: [N, T, H, W, 3] uint8 (or float in [0, 255]), any H and W.
      crop_size: int.
      resize_short: int >= crop_size.

    Returns:
      [N, T, crop_size, crop_size, 3] float32, normalised.
    """
    shape = tf.shape(clips)
    # Every frame of every clip has the same H and W, so the batch is one long clip to resize.
    frames = tf.reshape(clips, tf.concat([[-1], shape[2:]], axis=0))
    frames = augment.resize_short_side(frames, resize_short)
    frames = augment.spatial_crops(frames, crop_size, 1)[0]
    frames = tf.reshape(frames, [shape[0], shape[1], crop_size, crop_size, 3])
    return augment.normalize(frames)


def _check(frames, crop_size, resize_short):
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if crop_size < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    if resize_short < crop_size:
        raise ValueError(f"resize_short {resize_short} is smaller than crop_size {crop_size}")


def _raw_clips(frames=None):
    return [tf.TensorSpec([None, None if frames is None else int(frames), None, None, 3], tf.uint8, name="clips")]


_NORMALISED_CLIPS = [tf.TensorSpec([None, None, None, None, 3], tf.float32, name="clips")]


def _int_constant(value, name):
    # A non-trainable variable, not a tf.constant: variables are what a SavedModel restores as attributes.
    return tf.Variable(int(value), trainable=False, dtype=tf.int32, name=name)


class _ClipModel(tf.Module):
    """A Keras model and the clip protocol it was evaluated with, as variables a loaded SavedModel keeps."""

    def __init__(self, model, frames, crop_size, resize_short, name):
        super().__init__(name=name)
        self._model = model
        self._frames = int(frames)
        self._crop_size = int(crop_size)
        self._resize_short = int(resize_short)
        self.frames = _int_constant(frames, "frames")
        self.crop_size = _int_constant(crop_size, "crop_size")
        self.resize_short = _int_constant(resize_short, "resize_short")

    def forward(self, clips):
        """[N, T, h, w, 3] float32 normalised -> the Keras model's output, float32."""
        return tf.cast(self._model(clips, training=False), tf.float32)

    def forward_raw(self, clips, any_length=False):
        """[N, frames, H, W, 3] uint8 -> the Keras model's output on the protocol's crops, float32.

        Clips of another T fail (InvalidArgumentError) unless `any_length`.
        """
        if not any_length:
            # A loaded signature does not enforce its declared T by itself: checked here, in the graph.
            tf.debugging.assert_equal(
                tf.shape(clips)[1], self._frames,
                message=f"{self.name}: clips must have {self._frames} frames (the declared T; "
                        "signatures['any_length'] takes another); got T =")
        return self.forward(preprocess(clips, self._crop_size, self._resize_short))


def export_encoder(encoder_model, path, frames, crop_size, resize_short=None):
    """Writes an encoder SavedModel that takes raw uint8 clips (see the module docstring).

    Args:
      encoder_model: a built Keras backbone, [N, T, h, w, 3] float32 -> [N, D]; it has `output_dim`.
      path: the SavedModel directory (created; files of an earlier export are overwritten).
      frames: int, T of the serving signature.
      crop_size: int, the centre crop.
      resize_short: int >= crop_size, the short side before cropping; None: `augment.protocol_resize_short`.

    Returns:
      The exported tf.Module (what loading `path` gives, but with the Keras model behind it).
    """
    resize_short = augment.protocol_resize_short(crop_size) if resize_short is None else resize_short
    _check(frames, crop_size, resize_short)
    module = _ClipModel(encoder_model, frames, crop_size, resize_short, name="encoder")
    module.output_dim = _int_constant(encoder_model.output_dim, "output_dim")
    module.features = tf.function(module.forward, input_signature=_NORMALISED_CLIPS)
    serve = tf.function(lambda clips: {"features": module.forward_raw(clips)},
                        input_signature=_raw_clips(frames))
    any_length = tf.function(lambda clips: {"features": module.forward_raw(clips, any_length=True)},
                             input_signature=_raw_clips())
    tf.saved_model.save(module, path, signatures={"serving_default": serve, "any_length": any_length})
    return module


def export_classifier(classifier_model, path, class_names, frames, crop_size, resize_short=None):
    """Writes a classifier SavedModel that takes raw uint8 clips and gives class probabilities.

    Args:
      classifier_model: a built Keras model, [N, T, h, w, 3] float32 normalised -> [N, C] logits.
      path: the SavedModel directory.
      class_names: C strings, index = class.
      frames, crop_size, resize_short: as in `export_encoder`.

    Returns:
      The exported tf.Module.
    """
    resize_short = augment.protocol_resize_short(crop_size) if resize_short is None else resize_short
    _check(frames, crop_size, resize_short)
    class_names = [str(name) for name in class_names]
    if not class_names:
        raise ValueError("class_names is empty")
    module = _ClipModel(classifier_model, frames, crop_size, resize_short, name="classifier")
    module.class_names = tf.Variable(class_names, trainable=False, dtype=tf.string, name="class_names")
    module.logits = tf.function(module.forward, input_signature=_NORMALISED_CLIPS)
    serve = tf.function(lambda clips: {"probabilities": tf.nn.softmax(module.forward_raw(clips), axis=-1)},
                        input_signature=_raw_clips(frames))
    any_length = tf.function(
        lambda clips: {"probabilities": tf.nn.softmax(module.forward_raw(clips, any_length=True), axis=-1)},
        input_signature=_raw_clips())
    names = tf.function(lambda: {"class_names": module.class_names.read_value()}, input_signature=[])
    tf.saved_model.save(module, path, signatures={"serving_default": serve, "any_length": any_length,
                                                  "class_names": names})
    return module
