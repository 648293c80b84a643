"""The retrieval monitor: the paper's retrieval protocol on the live online encoder during pretraining.

Self-supervised losses say little about whether the features are getting
better; retrieval top-k on a labelled set does, without any training. The
monitor runs `retrieval` with fewer clips per video than the paper's 10 (it
runs many times), and its TensorBoard tags say how many:
`monitor/retrieval_top1_2clips`, `monitor/retrieval_top5_2clips`.
"""

import tensorflow as tf

from asc_tf.data import augment, pipeline
from asc_tf.evaluation import retrieval

MONITOR_KS = (1, 5)


class RetrievalMonitor:
    """Retrieval top-1 and top-5 of the online encoder, written to the run's TensorBoard.

    Usage (what `pretraining.run` does on the chief):
        if monitor.due(step, final=step == last_step):
            monitor(model.online_encoder, step, writer)
    """

    def __init__(self, train_data, test_data, num_clips=2, num_frames=16, crop_size=112, resize_short=None,
                 every=1000, stride=1):
        """
        Args:
          train_data, test_data: file patterns of labelled TFRecords (gallery, queries).
          num_clips: clips per video.
          num_frames, crop_size: the clip shape the encoder is trained on.
          resize_short: short side before the centre crop; None: `augment.protocol_resize_short(crop_size)`.
          every: steps between runs; 0 = never (the end of training included).
          stride: playback speed of the clips.
        """
        resize_short = resize_short or augment.protocol_resize_short(crop_size)
        self.every = every
        self.num_clips = num_clips
        # The clips are the same at every run (uniform starts, centre crop); the datasets are built once.
        self._gallery, self._queries = (
            pipeline.eval_dataset(pattern, num_clips=num_clips, num_frames=num_frames, stride=stride,
                                  resize_short=resize_short, crop_size=crop_size)
            for pattern in (train_data, test_data)
        )
        self._model = self._forward = None

    def tag(self, k):
        return f"monitor/retrieval_top{k}_{self.num_clips}clips"

    def due(self, step, final=False):
        return self.every > 0 and (step % self.every == 0 or final)

    def __call__(self, encoder, step, writer):
        """Runs the protocol with `encoder` (a Keras model, clips → [N, D]) and writes at `step`.

        Returns:
          {tag: top-k accuracy in percent}.
        """
        if encoder is not self._model:
            # One traced function per model: its variables are read live, so later steps need no retrace.
            self._model = encoder
            self._forward = tf.function(lambda clips: encoder(clips, training=False), reduce_retracing=True)
        gallery = retrieval.extract_features(self._forward, self._gallery, keep_frames=False)
        queries = retrieval.extract_features(self._forward, self._queries, keep_frames=False)
        accuracy = retrieval.topk_accuracy(queries.features, queries.labels, gallery.features, gallery.labels,
                                           ks=MONITOR_KS)
        results = {self.tag(k): accuracy[f"top{k}"] for k in MONITOR_KS}
        with writer.as_default():
            for tag, value in results.items():
                tf.summary.scalar(tag, value, step=step)
        writer.flush()
        return results
