import numpy as np
import pytest
import tensorflow as tf

from asc_tf.data import augment, pipeline, records, sampling

T = 8
CROP = 32
# Crop and resize only, so a frame's grey level survives to the output.
PLAIN = augment.AugmentConfig(
    flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0
)


def _jpeg(picture):
    return tf.io.encode_jpeg(tf.constant(picture, tf.uint8), quality=95).numpy()


def _counting_video(num_frames, height=36, width=48):
    """Frame k is uniform grey 4k: the frame index is readable from the pixels."""
    return [_jpeg(np.full((height, width, 3), 4 * k, np.uint8)) for k in range(num_frames)]


def _textured_video(num_frames, seed):
    """Every frame the same smooth random picture (a static scene)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (5, 6, 3)).astype(np.float32)
    picture = tf.cast(tf.image.resize(coarse[None], [40, 48])[0], tf.uint8).numpy()
    return [_jpeg(picture)] * num_frames


def _write(path, videos):
    """videos: list of (jpeg_frames, label, video_id)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for frames, label, video_id in videos:
            example = records.make_sequence_example(frames, label, "c", video_id, 25.0, "v.mp4")
            writer.write(example.SerializeToString())
    return str(path)


def _frame_numbers(clips):
    """[..., T, H, W, 3] normalised clips of grey frames -> [..., T] frame indices."""
    grey = augment.denormalize(tf.constant(clips)).numpy().astype(np.float32).mean(axis=(-3, -2, -1))
    return np.round(grey / 4).astype(int)


# Video lengths: long (no wrap at any speed), short (wraps at speed 4 and 8), one frame.
LENGTHS = {0: 60, 1: 10, 2: 1, 3: 25}


@pytest.fixture(scope="module")
def counting_shard(tmp_path_factory):
    path = tmp_path_factory.mktemp("counting") / "counting.tfrecord"
    return _write(path, [(_counting_video(n), vid % 3, vid) for vid, n in LENGTHS.items()])


def _check_sampled(frames, speed, num_video_frames):
    """frames [T] must be (start + speed·t) mod F, never wrapping when the video is long enough."""
    expected = (frames[0] + speed * np.arange(T)) % num_video_frames
    np.testing.assert_array_equal(frames, expected)
    if num_video_frames >= sampling.clip_span(T, speed):
        assert frames[0] + speed * (T - 1) < num_video_frames


def test_pretraining_clips_hold_frames_start_plus_speed_times_t(counting_shard):
    dataset = pipeline.pretrain_dataset(
        counting_shard, 4, num_frames=T, crop_size=CROP, speeds=(1, 2, 4, 8), augment=(PLAIN, PLAIN), seed=0
    )
    seen_speeds = set()
    for batch in dataset.take(12).as_numpy_iterator():
        for view, speed in (("view_i", "speed_i"), ("view_j", "speed_j")):
            for frames, s, vid in zip(_frame_numbers(batch[view]), batch[speed], batch["video_id"]):
                _check_sampled(frames, s, LENGTHS[vid])
                seen_speeds.add(int(s))
    assert seen_speeds == {1, 2, 4, 8}


def test_fixed_speeds_and_third_view(counting_shard):
    dataset = pipeline.pretrain_dataset(
        counting_shard,
        2,
        num_frames=T,
        crop_size=CROP,
        speeds=(2, 4),
        speed_mode="fixed",
        augment=(PLAIN, PLAIN),
        third_view=True,
        seed=1,
    )
    for batch in dataset.take(4).as_numpy_iterator():
        np.testing.assert_array_equal(batch["speed_i"], [2, 2])
        np.testing.assert_array_equal(batch["speed_j"], [4, 4])
        assert batch["view_k"].shape == (2, T, CROP, CROP, 3)
        for frames, vid in zip(_frame_numbers(batch["view_k"]), batch["video_id"]):
            _check_sampled(frames, 2, LENGTHS[vid])


def test_random_speed_mode_pairs_equal_and_unequal_speeds(counting_shard):
    dataset = pipeline.pretrain_dataset(
        counting_shard, 4, num_frames=T, crop_size=CROP, speeds=(4, 8), seed=2
    )
    pairs = {
        (int(s_i), int(s_j))
        for batch in dataset.take(10).as_numpy_iterator()
        for s_i, s_j in zip(batch["speed_i"], batch["speed_j"])
    }
    assert pairs == {(4, 4), (4, 8), (8, 4), (8, 8)}


def test_pretraining_element_types(counting_shard):
    batch = next(iter(pipeline.pretrain_dataset(counting_shard, 3, num_frames=T, crop_size=CROP, seed=0)))
    assert batch["view_i"].shape == (3, T, CROP, CROP, 3) and batch["view_i"].dtype == tf.float32
    assert batch["view_j"].shape == (3, T, CROP, CROP, 3)
    assert (batch["speed_i"].dtype, batch["speed_j"].dtype) == (tf.int32, tf.int32)
    assert (batch["video_id"].dtype, batch["label"].dtype) == (tf.int64, tf.int64)
    assert "view_k" not in batch


def test_static_videos_give_static_augmented_clips_and_different_views(tmp_path):
    shard = _write(tmp_path / "static.tfrecord", [(_textured_video(12, seed=v), v, v) for v in range(3)])
    dataset = pipeline.pretrain_dataset(shard, 3, num_frames=T, crop_size=CROP, seed=0, repeat=False)
    batch = next(dataset.as_numpy_iterator())
    for view in ("view_i", "view_j"):
        clips = batch[view]
        np.testing.assert_allclose(clips, np.repeat(clips[:, :1], T, axis=1), atol=1e-5)
    assert np.abs(batch["view_i"] - batch["view_j"]).mean(axis=(1, 2, 3, 4)).min() > 0.05


def test_same_seed_same_tensors_other_seed_other_tensors(counting_shard):
    def first_batches(seed):
        dataset = pipeline.pretrain_dataset(counting_shard, 2, num_frames=T, crop_size=CROP, seed=seed)
        return list(dataset.take(3).as_numpy_iterator())

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(np.abs(x["view_i"] - z["view_i"]).max() > 0.1 for x, z in zip(a, c))


def test_epochs_draw_new_augmentations(tmp_path):
    shard = _write(tmp_path / "static.tfrecord", [(_textured_video(12, seed=v), v, v) for v in range(2)])
    dataset = pipeline.pretrain_dataset(shard, 2, num_frames=T, crop_size=CROP, seed=0, shuffle_buffer=0)
    first, second = list(dataset.take(2).as_numpy_iterator())
    np.testing.assert_array_equal(first["video_id"], second["video_id"])
    assert np.abs(first["view_i"] - second["view_i"]).max() > 0.1


def test_evaluation_gives_every_clip_of_every_video_once(counting_shard):
    num_clips, stride = 4, 2
    dataset = pipeline.eval_dataset(
        counting_shard,
        num_clips=num_clips,
        crops=3,
        num_frames=T,
        stride=stride,
        resize_short=36,
        crop_size=CROP,
    )
    videos = list(dataset.as_numpy_iterator())
    assert sorted(v["video_id"] for v in videos) == sorted(LENGTHS)
    for video in videos:
        length = LENGTHS[video["video_id"]]
        assert video["clips"].shape == (num_clips * 3, T, CROP, CROP, 3)
        assert video["label"] == video["video_id"] % 3
        frames = _frame_numbers(video["clips"]).reshape(num_clips, 3, T)
        # The three crops of a clip hold the same frames.
        np.testing.assert_array_equal(frames, np.repeat(frames[:, :1], 3, axis=1))
        starts = frames[:, 0, 0]
        room = max(length - sampling.clip_span(T, stride), 0)
        np.testing.assert_array_equal(starts, np.floor(np.linspace(0, room, num_clips) + 0.5))
        for clip in frames[:, 0]:
            _check_sampled(clip, stride, length)


def test_evaluation_batches_videos(counting_shard):
    dataset = pipeline.eval_dataset(
        counting_shard, num_clips=2, num_frames=T, resize_short=36, crop_size=CROP, batch_size=3
    )
    shapes = [batch["clips"].shape for batch in dataset]
    assert shapes == [(3, 2, T, CROP, CROP, 3), (1, 2, T, CROP, CROP, 3)]


def test_finetuning_gives_labelled_clips_at_the_fixed_stride(tmp_path):
    videos = [
        (_counting_video(30), 5, 0),
        (_counting_video(30), records.UNLABELLED, 1),
        (_counting_video(20), 6, 2),
    ]
    shard = _write(tmp_path / "labelled.tfrecord", videos)
    dataset = pipeline.finetune_dataset(
        shard, 2, num_frames=T, crop_size=CROP, stride=3, augment=PLAIN, seed=0
    )
    for batch in dataset.take(5).as_numpy_iterator():
        assert batch["clip"].shape == (2, T, CROP, CROP, 3)
        assert set(batch["label"]) <= {5, 6}
        for frames, vid in zip(_frame_numbers(batch["clip"]), batch["video_id"]):
            _check_sampled(frames, 3, 30 if vid == 0 else 20)


def _model_garden_record(frames, label):
    """Only the keys Model Garden's video tools write."""
    example = tf.train.SequenceExample()
    example.context.feature[records.LABEL_KEY].int64_list.value.append(label)
    frame_list = example.feature_lists.feature_list[records.IMAGE_KEY]
    for frame in frames:
        frame_list.feature.add().bytes_list.value.append(frame)
    return example.SerializeToString()


def test_model_garden_records_go_through_pretraining(tmp_path):
    path = str(tmp_path / "mg.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for label in range(3):
            writer.write(_model_garden_record(_textured_video(9, seed=label), label))
    dataset = pipeline.pretrain_dataset(path, 3, num_frames=T, crop_size=CROP, seed=0, repeat=False)
    batch = next(dataset.as_numpy_iterator())
    assert batch["view_i"].shape == (3, T, CROP, CROP, 3)
    assert sorted(batch["label"]) == [0, 1, 2]
    assert len(set(batch["video_id"])) == 3


def test_model_garden_records_that_open_on_the_same_frame_are_two_videos(tmp_path):
    black = _jpeg(np.zeros((40, 48, 3), np.uint8))
    path = str(tmp_path / "mg.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for seed in (1, 2):
            writer.write(_model_garden_record([black] + _textured_video(8, seed=seed), 0))
    ids = _video_ids(path)
    assert len(ids) == 2 and ids[0] != ids[1]
    assert _video_ids(path) == ids  # the same record, the same id, every read


def _video_ids(path, stats=None):
    dataset = pipeline.eval_dataset(path, num_clips=1, num_frames=2, resize_short=32, crop_size=CROP, stats=stats)
    return [int(element["video_id"]) for element in dataset]


def test_unreadable_records_are_skipped_and_the_rest_read(tmp_path):
    frames = _counting_video(4)
    broken_jpeg = [frames[0], frames[1][:40] + b"\x00" * 60, frames[2], frames[3]]
    serialized = [
        records.make_sequence_example(frames, 0, "", 0, 25.0, "").SerializeToString(),
        records.make_sequence_example(broken_jpeg, 0, "", 1, 25.0, "").SerializeToString(),
        b"well framed, but not a SequenceExample",
        records.make_sequence_example(frames, 0, "", 2, 25.0, "").SerializeToString(),
        records.make_sequence_example([], 0, "", 3, 25.0, "").SerializeToString(),
        records.make_sequence_example(frames, 0, "", 4, 25.0, "").SerializeToString(),
    ]
    path = str(tmp_path / "bad_content.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in serialized:
            writer.write(record)
    stats = pipeline.InputStats()
    assert _video_ids(path, stats) == [0, 2, 4]
    assert stats.as_dict() == {"records_skipped": 3, "shards_cut_short": 0}

    # Training skips and counts them too, each epoch it reads them. (Pretraining decodes only the crop
    # box, where libjpeg may get through the damaged JPEG of video 1.)
    stats = pipeline.InputStats()
    dataset = pipeline.pretrain_dataset(path, 3, num_frames=T, crop_size=CROP, seed=0, shuffle_buffer=0, stats=stats)
    ids = np.concatenate([b["video_id"].numpy() for b in dataset.take(4)])
    assert set(ids) <= {0, 1, 2, 4} and {0, 2, 4} <= set(ids)
    assert stats.as_dict()["records_skipped"] >= 2 * 3


def test_repeated_pipeline_over_only_unusable_records_ends_instead_of_hanging(tmp_path):
    path = str(tmp_path / "junk.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(3):
            writer.write(b"not a record we can use")
    dataset = pipeline.pretrain_dataset(path, 2, num_frames=T, crop_size=CROP, seed=0, repeat=True)
    assert list(dataset.take(1)) == []


def test_corrupt_framing_skips_the_rest_of_that_shard_only(tmp_path):
    first = _write(tmp_path / "a.tfrecord", [(_counting_video(4), 0, vid) for vid in range(6)])
    _write(tmp_path / "b.tfrecord", [(_counting_video(4), 0, vid) for vid in range(10, 13)])
    data = bytearray(open(first, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    open(first, "wb").write(bytes(data))
    stats = pipeline.InputStats()
    ids = _video_ids(str(tmp_path / "*.tfrecord"), stats)
    assert stats.as_dict() == {"records_skipped": 0, "shards_cut_short": 1}
    # The shard's records before the damage survive, the other shard is whole.
    assert sorted(vid for vid in ids if vid >= 10) == [10, 11, 12]
    survivors = sorted(vid for vid in ids if vid < 10)
    assert survivors == list(range(len(survivors))) and 1 <= len(survivors) < 6

    # The pretraining pipeline keeps going over the damaged shard, epoch after epoch.
    stats = pipeline.InputStats()
    dataset = pipeline.pretrain_dataset(
        str(tmp_path / "*.tfrecord"), 4, num_frames=T, crop_size=CROP, seed=0, stats=stats
    )
    assert len(list(dataset.take(6))) == 6
    # 6 batches of 4 from 3 + (1 to 5) records per epoch: at least 3 epochs read, each cut once.
    assert stats.as_dict()["shards_cut_short"] >= 3


def test_a_stream_started_at_a_position_continues_the_full_stream_exactly(tmp_path):
    """Resume: the records after position p, augmented identically, across epochs and skipped records."""
    videos = [(_counting_video(12), vid % 3, vid) for vid in range(7)]
    _write(tmp_path / "a.tfrecord", videos[:4])
    path = _write(tmp_path / "b.tfrecord", videos[4:])
    with tf.io.TFRecordWriter(str(tmp_path / "c.tfrecord")) as writer:
        writer.write(b"well framed, but not a SequenceExample")
    pattern = str(tmp_path / "*.tfrecord")
    del path

    def stream(start, count):
        dataset = pipeline.pretrain_dataset(
            pattern, 1, num_frames=T, crop_size=CROP, seed=5, shuffle_buffer=4, start_position=start,
            with_position=True,
        )
        return [{k: v[0] for k, v in b.items()} for b in dataset.take(count).as_numpy_iterator()]

    full = stream(0, 20)  # 8 records per epoch, 7 usable: nearly 3 epochs
    positions = [int(e["position"]) for e in full]
    epochs = [pipeline.split_position(p)[0] for p in positions]
    assert epochs[:7] == [0] * 7 and epochs[7:14] == [1] * 7 and epochs[14:] == [2] * 6
    assert positions == sorted(positions)
    # Every epoch holds every video once, in its own order.
    orders = [[int(e["video_id"]) for e in full[k : k + 7]] for k in (0, 7)]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(7)) and orders[0] != orders[1]
    for cut in (3, 7, 11):
        resumed = stream(positions[cut - 1] + 1, 20 - cut)
        assert [int(e["position"]) for e in resumed] == positions[cut:]
        for a, b in zip(resumed, full[cut:]):
            np.testing.assert_array_equal(a["view_i"], b["view_i"])
            np.testing.assert_array_equal(a["view_j"], b["view_j"])
            assert (a["speed_i"], a["speed_j"]) == (b["speed_i"], b["speed_j"])


def test_input_pipelines_read_disjoint_shards_and_batch_per_replica(tmp_path):
    for shard in range(4):
        _write(tmp_path / f"s{shard}.tfrecord", [(_counting_video(2), 0, 10 * shard + v) for v in range(2)])
    pattern = str(tmp_path / "*.tfrecord")
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=4
        )
        dataset = pipeline.pretrain_dataset(
            pattern, 8, num_frames=2, crop_size=CROP, input_context=context, repeat=False
        )
        batches = list(dataset.as_numpy_iterator())
        assert [b["view_i"].shape[0] for b in batches] == [2, 2]
        seen.append(sorted(vid for b in batches for vid in b["video_id"]))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(10 * s + v for s in range(4) for v in range(2))


def test_one_input_pipeline_batches_per_replica(counting_shard):
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    dataset = pipeline.pretrain_dataset(
        counting_shard, 4, num_frames=2, crop_size=CROP, input_context=context
    )
    assert next(iter(dataset))["view_i"].shape[0] == 2


def test_fewer_files_than_pipelines_falls_back_to_record_sharding(tmp_path):
    path = _write(tmp_path / "only.tfrecord", [(_counting_video(2), 0, v) for v in range(6)])
    seen = []
    for pipeline_id in range(3):
        context = tf.distribute.InputContext(
            num_input_pipelines=3, input_pipeline_id=pipeline_id, num_replicas_in_sync=3
        )
        dataset = pipeline.eval_dataset(
            path, num_clips=1, num_frames=2, resize_short=32, crop_size=CROP, input_context=context
        )
        seen.append([int(e["video_id"]) for e in dataset])
    assert sorted(sum(seen, [])) == list(range(6))
    assert all(len(ids) == 2 for ids in seen)


def test_no_matching_files_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no files"):
        pipeline.pretrain_dataset(str(tmp_path / "*.tfrecord"), 2)
