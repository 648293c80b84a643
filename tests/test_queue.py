"""The feature queue and the SCP partner choice, against hand computations."""

import numpy as np
import tensorflow as tf

from asc_tf.queue import FeatureQueue, enqueue_values, select_scp_targets, write_rows


def rows(start, count, dim=2):
    ids = np.arange(start, start + count, dtype=np.int64)
    keys = np.stack([ids, -ids], axis=1).astype(np.float32)[:, :dim]
    return (keys, keys * 10, ids, (ids % 2).astype(np.int32), ids * 100)


def test_queue_wraps_around():
    queue = FeatureQueue(size=4, dim=2)
    for start, count in ((0, 3), (3, 3)):
        slots = queue.slots(count)
        for variable, row in zip((queue.keys, queue.feats, queue.ids, queue.speeds, queue.labels), rows(start, count)):
            write_rows(variable.value, slots, row)
        queue.pointer.assign_add(count)
    # Clips 0..5 through 4 slots: slots hold 4, 5, 2, 3.
    np.testing.assert_array_equal(queue.ids.numpy(), [4, 5, 2, 3])
    np.testing.assert_array_equal(queue.keys.numpy()[:, 0], [4, 5, 2, 3])
    np.testing.assert_array_equal(queue.labels.numpy(), [400, 500, 200, 300])
    assert int(queue.filled()) == 4 and int(queue.pointer.numpy()) == 6
    assert queue.valid_mask().numpy().all()


def test_partly_filled_queue_marks_only_written_rows_valid():
    queue = FeatureQueue(size=5, dim=2)
    queue.pointer.assign(2)
    np.testing.assert_array_equal(queue.valid_mask().numpy(), [True, True, False, False, False])


def test_batch_larger_than_queue_keeps_its_last_rows():
    zeros = (np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32), np.zeros(3, np.int64),
             np.zeros(3, np.int32), np.zeros(3, np.int64))
    slots = (7 + tf.range(5, dtype=tf.int64)) % 3  # pointer 7, five clips
    updated = enqueue_values(zeros, slots, rows(0, 5))
    # Clips 3 and 4 are the survivors of slots 1 and 2 (written last); clip 2 holds slot 0.
    np.testing.assert_array_equal(updated[2].numpy(), [2, 3, 4])


def choose(query, anchor_ids, anchor_speeds, keys, ids, speeds, valid=None, mode="similar", seed=(1, 2)):
    keys = np.asarray(keys, np.float32)
    feats = np.arange(len(keys) * 2, dtype=np.float32).reshape(len(keys), 2)
    valid = np.ones(len(keys), bool) if valid is None else np.asarray(valid)
    return select_scp_targets(
        tf.constant(query, tf.float32), tf.constant(anchor_ids, tf.int64), tf.constant(anchor_speeds, tf.int32),
        tf.constant(keys), tf.constant(feats), tf.constant(ids, tf.int64), tf.constant(speeds, tf.int32),
        tf.constant(valid), mode=mode, seed=seed,
    ), feats


def test_similar_picks_the_highest_dot_product_among_allowed():
    query = [[1.0, 0.0], [0.6, 0.8]]
    keys = [[0.9, 0.1], [0.0, 1.0], [0.7, 0.7], [1.0, 0.0], [0.6, 0.8]]
    ids = [10, 11, 12, 13, 14]
    speeds = [4, 4, 4, 8, 4]
    (targets, has, chosen), feats = choose(query, [99, 14], [4, 4], keys, ids, speeds)
    # Anchor 0 (speed 4): dots 0.9, 0.0, 0.7, (1.0 at speed 8: excluded), 0.6 → candidate 0.
    # Anchor 1 is video 14: its own clip (dot 1.0) is excluded; 0.62, 0.8, 0.98 → candidate 2.
    np.testing.assert_array_equal(chosen.numpy(), [0, 2])
    np.testing.assert_array_equal(has.numpy(), [True, True])
    np.testing.assert_array_equal(targets.numpy(), feats[[0, 2]])


def test_same_video_and_other_speeds_and_empty_rows_are_never_chosen():
    query = [[1.0, 0.0]]
    keys = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.1, 0.0]]
    ids = [5, 6, 7, 8]
    speeds = [2, 1, 2, 2]
    valid = [True, True, False, True]
    (_, has, chosen), _ = choose(query, [5], [2], keys, ids, speeds, valid)
    # Same video (0), other speed (1), empty row (2) all lose to the weak but allowed row 3.
    assert chosen.numpy().tolist() == [3] and has.numpy().tolist() == [True]


def test_anchor_without_candidate_is_masked():
    (targets, has, chosen), _ = choose([[1.0, 0.0]], [5], [8], [[1.0, 0.0], [0.0, 1.0]], [5, 6], [8, 4])
    assert has.numpy().tolist() == [False] and chosen.numpy().tolist() == [-1]
    np.testing.assert_array_equal(targets.numpy(), [[0.0, 0.0]])


def test_random_mode_draws_uniformly_among_allowed_only():
    keys = np.eye(2, dtype=np.float32)[[0, 0, 1, 1, 0]]
    ids, speeds = [1, 2, 3, 4, 5], [1, 1, 1, 2, 1]
    counts = np.zeros(5)
    for seed in range(400):
        (_, _, chosen), _ = choose([[1.0, 0.0]], [1], [1], keys, ids, speeds, mode="random", seed=(seed, 0))
        counts[chosen.numpy()[0]] += 1
    assert counts[0] == 0 and counts[3] == 0  # same video; other speed
    assert all(80 < counts[i] < 190 for i in (1, 2, 4)), counts  # ~133 each
