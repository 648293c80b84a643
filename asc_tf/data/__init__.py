"""Video data: the record schema, ingest, speed sampling, augmentation, tf.data pipelines, synthetic set."""
