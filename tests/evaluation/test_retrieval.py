"""Retrieval top-k, feature extraction and the retrieval picture, on hand-made inputs."""

import numpy as np
import pytest
import tensorflow as tf

from asc_tf.data import augment
from asc_tf.evaluation import retrieval

# Gallery in 2-D; g0 and g4 are the same direction with different labels (a tie).
GALLERY = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [2.0, 0.0]])
GALLERY_LABELS = np.array([0, 1, 1, 0, 1])
# q0 ties g0 (label 0) with g4 (label 1); q1 is unnormalised; q2 is nearest to g3.
QUERIES = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.1]])
QUERY_LABELS = np.array([1, 0, 0])


def test_nearest_neighbours_rank_by_cosine_and_break_ties_in_gallery_order():
    nearest = retrieval.nearest_neighbours(QUERIES, GALLERY, k=5)
    # q0: g0 = g4 (1) > g2 (0.71) > g1 (0) > g3 (-1); q1: g1 (1) > g2 (0.71) > g0 = g3 = g4 (0).
    np.testing.assert_array_equal(nearest[:2], [[0, 4, 2, 1, 3], [1, 2, 0, 3, 4]])
    assert nearest[2, 0] == 3


def test_topk_accuracy_equals_hand_computation_in_percent():
    accuracy = retrieval.topk_accuracy(QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS, ks=(1, 2, 3, 50))
    # Neighbour labels: q0 [0, 1, ...] hit from k=2; q1 [1, 1, 0, ...] hit from k=3; q2 [0, ...] hit at k=1.
    assert accuracy == pytest.approx({"top1": 100 / 3, "top2": 200 / 3, "top3": 100.0, "top50": 100.0})


def test_a_tie_goes_to_the_earlier_gallery_item():
    order = [4, 1, 2, 3, 0]  # g4 (label 1) now comes before g0 (label 0)
    accuracy = retrieval.topk_accuracy(QUERIES[:1], QUERY_LABELS[:1], GALLERY[order], GALLERY_LABELS[order], ks=(1,))
    assert accuracy == {"top1": 100.0}
    accuracy = retrieval.topk_accuracy(QUERIES[:1], QUERY_LABELS[:1], GALLERY, GALLERY_LABELS, ks=(1,))
    assert accuracy == {"top1": 0.0}


def test_k_larger_than_the_gallery_is_the_whole_gallery():
    assert retrieval.nearest_neighbours(QUERIES, GALLERY, k=50).shape == (3, 5)
    accuracy = retrieval.topk_accuracy(QUERIES, [1, 0, 7], GALLERY, GALLERY_LABELS, ks=(5, 50))
    assert accuracy == pytest.approx({"top5": 200 / 3, "top50": 200 / 3})  # class 7 is in no gallery item


def _clips(videos=3, clips=4, frames=3, size=6, seed=0):
    rng = np.random.default_rng(seed)
    return augment.normalize(rng.integers(0, 256, (videos, clips, frames, size, size, 3))).numpy()


def mean_colour(clips):
    """A stand-in encoder: the mean colour of each clip, [N, T, H, W, 3] → [N, 3]."""
    return tf.reduce_mean(clips, axis=[1, 2, 3]) + 1.0


@pytest.mark.parametrize("batch", [None, 2])
def test_extract_features_averages_the_clips_then_l2_normalises(batch):
    clips = _clips()
    dataset = tf.data.Dataset.from_tensor_slices(
        {"clips": clips, "label": np.array([3, 1, 3]), "video_id": np.array([10, 11, 12])}
    )
    if batch:
        dataset = dataset.batch(batch)
    names = {10: ("a/x.avi", "alpha"), 12: ("c/z.avi", "gamma")}
    videos = retrieval.extract_features(mean_colour, dataset, names=names)

    expected = clips.mean(axis=(2, 3, 4)).mean(axis=1) + 1.0  # [V, 3]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(videos.features, expected, rtol=1e-5)
    assert videos.features.dtype == np.float32
    np.testing.assert_array_equal(videos.labels, [3, 1, 3])
    np.testing.assert_array_equal(videos.video_ids, [10, 11, 12])
    assert videos.paths == ["a/x.avi", "", "c/z.avi"] and videos.class_names == ["alpha", "", "gamma"]
    # The frames of the middle clip (2 of 4), all three of a 3-frame clip, back in uint8.
    np.testing.assert_array_equal(videos.frames, augment.denormalize(clips[:, 2]).numpy())


def test_kept_frames_are_shrunk_to_the_thumbnail_size():
    dataset = tf.data.Dataset.from_tensor_slices(
        {"clips": _clips(size=20), "label": np.zeros(3, np.int64), "video_id": np.arange(3)}
    )
    videos = retrieval.extract_features(mean_colour, dataset, thumbnail_size=8)
    assert videos.frames.shape == (3, 3, 8, 8, 3) and videos.frames.dtype == np.uint8


def _videos(labels, seed):
    rng = np.random.default_rng(seed)
    count = len(labels)
    return retrieval.VideoFeatures(
        features=rng.normal(size=(count, 4)).astype(np.float32), labels=np.array(labels),
        video_ids=np.arange(count), paths=[f"v{i}" for i in range(count)],
        class_names=[f"class {label}" for label in labels],
        frames=rng.integers(0, 256, (count, 10, 10, 3), dtype=np.uint8),
    )


def test_picture_has_one_row_per_shown_query_and_marks_hits_green_and_misses_red():
    queries, gallery = _videos([0, 1, 2, 0, 1], seed=1), _videos([0, 1, 2, 0, 1, 2, 0], seed=2)
    picture = retrieval.retrieval_picture(queries, gallery, rows=3, neighbours=3, frame_size=32)
    height = retrieval.row_height(32)
    assert picture.dtype == np.uint8 and picture.shape[0] == 3 * height and picture.shape[2] == 3

    shown = retrieval.picture_queries(5, 3)
    np.testing.assert_array_equal(shown, [0, 2, 4])
    nearest = retrieval.nearest_neighbours(queries.features[shown], gallery.features, 3)
    cell = 32 + 2 * retrieval.BORDER
    for row, (query, found) in enumerate(zip(shown, nearest)):
        assert tuple(picture[row * height, 0]) == (255, 255, 255)  # the query's border
        for column, index in enumerate(found):
            corner = picture[row * height, cell + 16 + column * (cell + 4)]
            hit = gallery.labels[index] == queries.labels[query]
            assert tuple(corner) == ((40, 200, 60) if hit else (230, 40, 40))


def test_picture_with_fewer_queries_than_rows_shows_them_all():
    picture = retrieval.retrieval_picture(_videos([0, 1], 3), _videos([1, 0, 1], 4), rows=8, frame_size=24)
    assert picture.shape[0] == 2 * retrieval.row_height(24)


def test_picture_cells_show_each_video_as_a_strip_of_its_frames_under_a_title():
    queries, gallery = _videos([0, 1], 5), _videos([1, 0], 6)
    # Three frames per video, each a flat grey level of its own: the cell shows them left to right.
    for videos in (queries, gallery):
        videos.frames = np.stack([np.full((len(videos), 8, 8, 3), level, np.uint8) for level in (50, 120, 190)],
                                 axis=1)
    size = 16
    plain = retrieval.retrieval_picture(queries, gallery, rows=2, neighbours=1, frame_size=size)
    titled = retrieval.retrieval_picture(queries, gallery, rows=2, neighbours=1, frame_size=size, title="asc, seed 0")
    assert titled.shape[0] == plain.shape[0] + retrieval.TITLE_HEIGHT
    np.testing.assert_array_equal(titled[retrieval.TITLE_HEIGHT:], plain)
    assert titled[:retrieval.TITLE_HEIGHT].max() > 200  # the title's white (anti-aliased) text
    cell = 3 * size + 2 * retrieval._STRIP_GAP + 2 * retrieval.BORDER
    assert plain.shape[1] == 2 * cell + retrieval._QUERY_GAP
    y = retrieval.BORDER + size // 2
    for k, level in enumerate((50, 120, 190)):
        x = retrieval.BORDER + k * (size + retrieval._STRIP_GAP) + size // 2
        assert tuple(plain[y, x]) == (level,) * 3, k


def test_kept_frames_span_the_middle_clip_first_to_last():
    np.testing.assert_array_equal(retrieval.strip_indices(8), [0, 2, 5, 7])
    np.testing.assert_array_equal(retrieval.strip_indices(2), [0, 1])
    clips = np.zeros((1, 3, 8, 4, 4, 3), np.float32)  # [B, clips, T, H, W, 3], normalised
    clips[:, 1] = np.arange(8, dtype=np.float32)[None, :, None, None, None] / 4.0  # the middle clip: t / 4
    dataset = [{"clips": tf.constant(clips), "label": tf.constant([0]), "video_id": tf.constant([7])}]
    videos = retrieval.extract_features(lambda x: tf.reshape(x, [x.shape[0], -1])[:, :4], dataset)
    assert videos.frames.shape == (1, 4, 4, 4, 3)
    expected = augment.denormalize(tf.constant(clips[0, 1, [0, 2, 5, 7], 0, 0])).numpy()
    assert len(np.unique(expected[:, 0])) == 4  # four different frames
    np.testing.assert_array_equal(videos.frames[0, :, 0, 0], expected)
