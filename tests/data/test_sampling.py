import numpy as np
import pytest
import tensorflow as tf

from asc_tf.data import sampling


def _seed(n):
    return tf.constant([n, 7], tf.int64)


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_clip_indices_are_start_plus_stride_times_t(stride):
    indices = sampling.clip_indices(200, 16, stride, 5).numpy()
    np.testing.assert_array_equal(indices, 5 + stride * np.arange(16))


def test_short_video_loops_modulo_frame_count():
    # 10 frames, 8 frames at stride 4 span 29 frames: indices wrap around.
    indices = sampling.clip_indices(10, 8, 4, 3).numpy()
    np.testing.assert_array_equal(indices, [3, 7, 1, 5, 9, 3, 7, 1])


def test_one_frame_video_gives_static_clip():
    np.testing.assert_array_equal(sampling.clip_indices(1, 16, 8, 0).numpy(), np.zeros(16))
    assert int(sampling.random_start(1, 16, 8, _seed(0))) == 0


def test_clip_span():
    assert sampling.clip_span(16, 8) == 121
    assert sampling.clip_span(16, 1) == 16


def test_random_start_keeps_the_clip_inside_a_long_video():
    # 40 frames, span (8-1)*4+1 = 29: starts 0..11, all reached.
    starts = {int(sampling.random_start(40, 8, 4, _seed(n))) for n in range(400)}
    assert starts == set(range(12))


def test_random_start_on_a_short_video_covers_every_frame():
    starts = {int(sampling.random_start(10, 8, 4, _seed(n))) for n in range(300)}
    assert starts == set(range(10))


def test_random_start_is_a_function_of_the_seed():
    a = [int(sampling.random_start(1000, 16, 4, _seed(n))) for n in range(20)]
    b = [int(sampling.random_start(1000, 16, 4, _seed(n))) for n in range(20)]
    assert a == b
    assert len(set(a)) > 10


def test_fixed_speed_mode_gives_exactly_s1_s2():
    for n in range(20):
        s_i, s_j = sampling.draw_speeds((4, 8), "fixed", _seed(n))
        assert (int(s_i), int(s_j)) == (4, 8)


def test_random_speed_mode_draws_both_speeds_equal_and_unequal():
    pairs = [tuple(int(s) for s in sampling.draw_speeds((4, 8), "random", _seed(n))) for n in range(400)]
    assert set(pairs) == {(4, 4), (4, 8), (8, 4), (8, 8)}
    equal = sum(s_i == s_j for s_i, s_j in pairs) / len(pairs)
    assert 0.4 < equal < 0.6
    # s_i and s_j are independent draws, each uniform over the set.
    assert 0.4 < np.mean([s_i == 4 for s_i, _ in pairs]) < 0.6
    assert 0.4 < np.mean([s_j == 4 for _, s_j in pairs]) < 0.6


def test_random_speed_mode_uses_the_whole_speed_set():
    drawn = {int(s) for n in range(200) for s in sampling.draw_speeds((1, 2, 4, 8), "random", _seed(n))}
    assert drawn == {1, 2, 4, 8}


@pytest.mark.parametrize(
    "speeds, mode", [((4, 8), "sometimes"), ((1, 2, 4), "fixed"), ((0, 2), "random"), ((), "random")]
)
def test_bad_speed_settings_raise(speeds, mode):
    with pytest.raises(ValueError):
        sampling.draw_speeds(speeds, mode, _seed(0))


def test_uniform_starts_are_evenly_spaced_from_first_to_last():
    # 100 frames, span 16: starts linspace(0, 84, 10) rounded.
    starts = sampling.uniform_starts(100, 16, 1, 10).numpy()
    np.testing.assert_array_equal(starts, np.floor(np.linspace(0, 84, 10) + 0.5).astype(int))
    assert starts[0] == 0 and starts[-1] == 84


def test_uniform_starts_single_clip_is_centred_and_short_video_starts_at_zero():
    np.testing.assert_array_equal(sampling.uniform_starts(100, 16, 1, 1).numpy(), [42])
    np.testing.assert_array_equal(sampling.uniform_starts(10, 16, 2, 3).numpy(), [0, 0, 0])
