"""Ingest: listings per layout, decoding, rejects, resume, on real clips and files built here."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from asc_tf.data import ingest, records, synthetic
from conftest import REALCLIPS

TINY = ingest.EncodeOptions(short_side=32, fps=0.0, max_frames=16, jpeg_quality=90)
KINETICS = os.path.join(REALCLIPS, "kinetics", "train")
KINETICS_CSV = os.path.join(REALCLIPS, "kinetics", "kinetics_mini_train.csv")
UCF = os.path.join(REALCLIPS, "ucf101")
UCF_CLIP = os.path.join(UCF, "UCF-101", "ApplyEyeMakeup", "v_ApplyEyeMakeup_g01_c01.avi")
FASTSTART_CLIP = os.path.join(REALCLIPS, "unlabelled", "misc__juggling_soccer_ball__sam2.mp4")
SMALL_MP4 = os.path.join(KINETICS, "arm_wrestling", "demo_arm_wrestling.mp4")


@pytest.fixture
def realclips():
    if not os.path.isdir(REALCLIPS):
        pytest.skip(f"real clips not found at {REALCLIPS} (see tests/conftest.py)")
    return REALCLIPS


def read_records(output_dir):
    """Every record of the output's shards: list of dicts of numpy values, frames still JPEG."""
    files = sorted(glob.glob(os.path.join(output_dir, "*.tfrecord")))
    parsed = []
    for serialized in tf.data.TFRecordDataset(files):
        parsed.append({k: v.numpy() for k, v in records.parse_sequence_example(serialized).items()})
    return parsed


def frame_shape(record, index=0):
    return tuple(tf.io.decode_jpeg(record["frames"][index]).shape)


def read_rejects(output_dir):
    with open(os.path.join(output_dir, "rejects.tsv"), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "path\treason"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 2 for row in rows)
    return dict(rows)


# ----------------------------------------------------------------------------- pure functions


def test_output_size_scales_short_side_and_never_upsamples():
    assert ingest.output_size(1280, 720, 128) == (228, 128)
    assert ingest.output_size(720, 1280, 128) == (128, 228)
    assert ingest.output_size(320, 240, 32) == (43, 32)
    assert ingest.output_size(100, 50, 128) == (100, 50)  # smaller than asked: kept
    assert ingest.output_size(1280, 720, 0) == (1280, 720)
    assert ingest.output_size(4000, 2, 1) == (2000, 1)


def test_select_by_time_drops_and_repeats_frames_by_timestamp():
    timed = [(i / 30.0, i) for i in range(30)]  # one second at 30 fps
    assert list(ingest.select_by_time(iter(timed), 10.0, 1 / 30.0)) == list(range(0, 30, 3))
    assert list(ingest.select_by_time(iter(timed), 30.0, 1 / 30.0)) == list(range(30))
    assert list(ingest.select_by_time(iter(timed), 60.0, 1 / 30.0)) == [i // 2 for i in range(60)]
    # Irregular times with an offset start: the last frame at or before each target
    # (targets 0.0 .. 0.4 s; "c" at 0.31 s is never the latest at a target).
    irregular = [(5.0, "a"), (5.05, "b"), (5.31, "c"), (5.4, "d")]
    assert list(ingest.select_by_time(iter(irregular), 10.0, 0.1)) == ["a", "b", "b", "b", "d"]
    # The last frame lasts its duration: 0.25 s covers the targets 0.4, 0.5 and 0.6 s.
    assert list(ingest.select_by_time(iter(irregular), 10.0, 0.25))[-3:] == ["d", "d", "d"]


def test_jpeg_frames_keep_rgb_colours_and_size():
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [40, 120, 200]], np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (4, 24, 40, 3))
    video = ingest.encode_frames(frames, 25.0, ingest.EncodeOptions(short_side=0))
    assert len(video.jpegs) == 4 and video.fps == 25.0 and (video.width, video.height) == (40, 24)
    for jpeg, colour in zip(video.jpegs, colours):
        decoded = tf.io.decode_jpeg(jpeg).numpy()
        assert decoded.shape == (24, 40, 3)
        assert np.abs(decoded.astype(int) - colour).mean() < 4.0
    small = ingest.encode_frames(frames, 25.0, ingest.EncodeOptions(short_side=12, fps=50.0))
    assert len(small.jpegs) == 8 and small.fps == 50.0
    assert tf.io.decode_jpeg(small.jpegs[0]).shape == (12, 20, 3)


def test_class_key_matches_kinetics_labels_to_folder_names():
    assert ingest.class_key("arm wrestling") == ingest.class_key("arm_wrestling")
    assert ingest.class_key("massaging person's head") == ingest.class_key("massaging_persons_head")
    assert (ingest.class_key("passing American football (in game)")
            == ingest.class_key("passing_American_football_(in_game)"))
    assert ingest.class_key("arm wrestling") != ingest.class_key("armwrestling")


# ----------------------------------------------------------------------------- listings


def test_ucf101_listing_reads_crlf_labels_and_counts_missing(tmp_path):
    for path in ("UCF-101/Archery/v_Archery_g01_c01.avi", "UCF-101/Biking/v_Biking_g01_c01.avi"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    (tmp_path / "classInd.txt").write_bytes(b"1 Archery\r\n2 Biking\r\n")
    (tmp_path / "train.txt").write_bytes(b"Biking/v_Biking_g01_c01.avi 2\r\n"
                                         b"Archery/v_Archery_g01_c01.avi 1\r\n"
                                         b"Archery/v_Archery_g09_c01.avi 1\r\n\r\n")
    (tmp_path / "test.txt").write_bytes(b"Biking/v_Biking_g01_c01.avi\r\nBiking/v_Biking_g07_c02.avi\r\n")
    root = str(tmp_path / "UCF-101")
    train = ingest.list_ucf101(root, str(tmp_path / "train.txt"), str(tmp_path / "classInd.txt"))
    assert train.class_names == ["Archery", "Biking"]
    assert train.entries == [("Archery/v_Archery_g01_c01.avi", 0, "Archery"),
                             ("Biking/v_Biking_g01_c01.avi", 1, "Biking")]
    assert train.missing == [("Archery/v_Archery_g09_c01.avi", 0, "Archery")]
    test = ingest.list_ucf101(root, str(tmp_path / "test.txt"), str(tmp_path / "classInd.txt"))
    assert test.entries == [("Biking/v_Biking_g01_c01.avi", 1, "Biking")]
    assert [e.path for e in test.missing] == ["Biking/v_Biking_g07_c02.avi"]


def test_hmdb51_listing_takes_the_subset_of_each_class(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "walk_test_split1.txt").write_text("w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n")
    (splits / "clap_test_split1.txt").write_text("c1.avi 1 \nc2.avi 1 \n")
    (splits / "clap_test_split2.txt").write_text("c1.avi 2 \n")
    for path in ("clap/c1.avi", "walk/w1.avi", "walk/w2.avi"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    train = ingest.list_hmdb51(str(tmp_path), str(splits), 1, "train")
    assert train.class_names == ["clap", "walk"]
    assert train.entries == [("clap/c1.avi", 0, "clap"), ("walk/w1.avi", 1, "walk")]
    assert train.missing == [("clap/c2.avi", 0, "clap")]
    test = ingest.list_hmdb51(str(tmp_path), str(splits), 1, "test")
    assert test.entries == [("walk/w2.avi", 1, "walk")] and not test.missing


def test_kinetics_csv_listing_matches_folders_reports_missing_and_unlisted(tmp_path):
    files = ["arm_wrestling/aaa_000001_000011.mp4", "arm_wrestling/extra_000000_000010.mp4",
             "massaging persons head/bbb_000002_000012.mp4", "arm_wrestling/notes.txt"]
    for path in files:
        (tmp_path / "train" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / path).write_bytes(b"")
    csv_path = tmp_path / "k.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n"
                        "arm wrestling,aaa,1,11,train\n"
                        "massaging person's head,bbb,2,12,train\n"
                        "arm wrestling,ccc,5,15,train\n")
    listing = ingest.list_kinetics(str(tmp_path / "train"), str(csv_path))
    assert listing.class_names == ["arm wrestling", "massaging person's head"]
    assert listing.entries == [("arm_wrestling/aaa_000001_000011.mp4", 0, "arm wrestling"),
                               ("massaging persons head/bbb_000002_000012.mp4", 1,
                                "massaging person's head")]
    assert listing.missing == [("arm_wrestling/ccc_000005_000015.mp4", 0, "arm wrestling")]
    assert listing.unlisted == ["arm_wrestling/extra_000000_000010.mp4"]
    assert listing.ignored == ["arm_wrestling/notes.txt"]


# ----------------------------------------------------------------------------- real clips


def test_kinetics_without_csv_ingests_every_clip_labelled_by_folder(realclips, tmp_path):
    listing = ingest.list_kinetics(KINETICS)
    manifest = ingest.ingest(listing, str(tmp_path), num_shards=2, options=TINY, command=["test"])
    assert manifest["class_names"] == ["arm_wrestling", "bungee_jumping"]
    assert manifest["totals"]["ingested"] == 9 and manifest["totals"]["rejected"] == 0
    assert manifest["totals"]["frames"] == 9 * 16
    assert [c["ingested"] for c in manifest["per_class"]] == [5, 4]
    found = read_records(str(tmp_path))
    assert sorted(r["video_id"] for r in found) == list(range(9))
    for record in found:
        path = record["path"].decode()
        assert record["label"] == ["arm_wrestling", "bungee_jumping"].index(path.split("/")[0])
        assert record["label_text"].decode() == path.split("/")[0]
        assert record["num_frames"] == 16 and len(record["frames"]) == 16
        assert min(frame_shape(record)[:2]) == 32
        assert 27.0 < record["fps"] < 31.0
        # video id = position in the sorted listing
        assert listing.entries[record["video_id"]].path == path
    assert len(glob.glob(os.path.join(tmp_path, "train-0000[01]-of-00002.tfrecord"))) == 2


def test_kinetics_with_csv_ingests_listed_clips_and_reports_the_unlisted(realclips, tmp_path):
    listing = ingest.list_kinetics(KINETICS, KINETICS_CSV)
    manifest = ingest.ingest(listing, str(tmp_path), options=TINY, command=["test"])
    assert manifest["class_names"] == ["arm wrestling", "bungee jumping"]
    totals = manifest["totals"]
    assert (totals["listed"], totals["ingested"], totals["missing"], totals["unlisted"]) == (8, 8, 0, 1)
    assert manifest["unlisted"] == ["arm_wrestling/demo_arm_wrestling.mp4"]
    found = read_records(str(tmp_path))
    assert len({r["video_id"] for r in found}) == 8
    assert sorted(r["label"] for r in found) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {r["label_text"].decode() for r in found} == {"arm wrestling", "bungee jumping"}
    assert all(b"demo" not in r["path"] for r in found)


def test_ucf101_split_files_ingest_the_clip_and_count_the_missing_one(realclips, tmp_path):
    lists = os.path.join(UCF, "ucfTrainTestlist")
    train = ingest.list_ucf101(os.path.join(UCF, "UCF-101"), os.path.join(lists, "trainlist01.txt"),
                               os.path.join(lists, "classInd.txt"))
    manifest = ingest.ingest(train, str(tmp_path / "train"), options=TINY, command=["test"])
    assert manifest["totals"]["ingested"] == 1 and manifest["totals"]["missing"] == 0
    (record,) = read_records(str(tmp_path / "train"))
    assert record["label"] == 0 and record["label_text"] == b"ApplyEyeMakeup"
    assert record["path"] == b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    assert record["num_frames"] == 16 and record["fps"] == 25.0
    assert frame_shape(record) == (32, 43, 3)

    # testlist01 names only g02_c01, which is not on disk.
    test = ingest.list_ucf101(os.path.join(UCF, "UCF-101"), os.path.join(lists, "testlist01.txt"),
                              os.path.join(lists, "classInd.txt"))
    manifest = ingest.ingest(test, str(tmp_path / "test"), options=TINY, command=["test"])
    totals = manifest["totals"]
    assert (totals["listed"], totals["ingested"], totals["missing"]) == (1, 0, 1)
    assert manifest["missing"] == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi"]
    assert manifest["per_class"][0]["missing"] == 1
    assert read_rejects(str(tmp_path / "test")) == {
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi": "missing"}
    assert read_records(str(tmp_path / "test")) == []


def test_damaged_files_are_rejected_with_reasons_and_good_ones_ingested(realclips, tmp_path):
    root = tmp_path / "videos"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    shutil.copy(SMALL_MP4, root / "good" / "a.mp4")
    shutil.copy(UCF_CLIP, root / "good" / "b.avi")
    data = open(SMALL_MP4, "rb").read()
    (root / "bad" / "cut_index.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end
    faststart = open(FASTSTART_CLIP, "rb").read()
    (root / "bad" / "cut_stream.mp4").write_bytes(faststart[: len(faststart) // 2])  # index first
    avi = open(UCF_CLIP, "rb").read()
    (root / "bad" / "cut.avi").write_bytes(avi[: len(avi) // 2])
    # Cut at a packet boundary (packet 81's chunk header): reads cleanly, 81 of 164 frames.
    (root / "good" / "short.avi").write_bytes(avi[: 156036 - 8])
    (root / "bad" / "empty.mp4").write_bytes(b"")
    (root / "bad" / "text.avi").write_text("not a video\n")
    (root / "bad" / "still.mp4").write_bytes(tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy())
    (root / "bad" / "readme.txt").write_text("ignored\n")

    options = ingest.EncodeOptions(short_side=32, max_frames=0)
    manifest = ingest.ingest(ingest.list_folder(str(root)), str(tmp_path / "out"), options=options,
                             command=["test"])
    rejects = read_rejects(str(tmp_path / "out"))
    assert set(rejects) == {"bad/cut.avi", "bad/cut_index.mp4", "bad/cut_stream.mp4",
                            "bad/empty.mp4", "bad/text.avi", "bad/still.mp4"}
    assert rejects["bad/cut_index.mp4"].startswith("cannot open")
    assert rejects["bad/cut_stream.mp4"].startswith("truncated: damaged data after ")
    assert rejects["bad/cut.avi"].startswith("truncated: damaged data after ")
    assert rejects["bad/empty.mp4"].startswith("cannot open")
    assert rejects["bad/text.avi"].startswith("cannot open")
    assert rejects["bad/still.mp4"].startswith("not a video")
    assert "/" + str(root) not in json.dumps(manifest["rejects"])  # relative paths only
    assert manifest["totals"]["rejected"] == 6 and manifest["totals"]["ingested"] == 3
    assert manifest["ignored"] == ["bad/readme.txt"]
    assert manifest["short"] == [{"path": "good/short.avi", "declared_frames": 164,
                                  "decoded_frames": 81}]
    assert manifest["per_class"] == [
        {"label": 0, "name": "bad", "listed": 6, "ingested": 0, "rejected": 6, "missing": 0, "frames": 0},
        {"label": 1, "name": "good", "listed": 3, "ingested": 3, "rejected": 0, "missing": 0,
         "frames": manifest["totals"]["frames"]}]
    found = {r["path"].decode(): r for r in read_records(str(tmp_path / "out"))}
    assert set(found) == {"good/a.mp4", "good/b.avi", "good/short.avi"}
    assert found["good/a.mp4"]["num_frames"] == 280 and found["good/b.avi"]["num_frames"] == 164
    assert frame_shape(found["good/a.mp4"]) == (32, 43, 3)  # 340 x 256: 42.5 rounds up


def test_a_hanging_file_times_out_and_the_ingest_goes_on(realclips, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(UCF_CLIP, root / "a.avi")
    os.mkfifo(root / "b.mp4")  # opening it blocks forever: no writer ever comes
    shutil.copy(UCF_CLIP, root / "c.avi")
    manifest = ingest.ingest(ingest.list_folder(str(root)), str(tmp_path / "out"), options=TINY,
                             video_timeout=3.0, command=["test"])
    assert read_rejects(str(tmp_path / "out")) == {"b.mp4": "timeout: not decoded within 3 s"}
    assert manifest["totals"]["ingested"] == 2
    assert sorted(r["video_id"] for r in read_records(str(tmp_path / "out"))) == [0, 2]
    assert [r["label"] for r in read_records(str(tmp_path / "out"))] == [-1, -1]


# ----------------------------------------------------------------------------- resume, synthetic


def _synthetic_listing(num_videos=7):
    return ingest.list_synthetic(num_videos, split="train", seed=3, num_frames=8, size=32,
                                 motion="direction_speed")


def test_synthetic_layout_writes_the_labelled_videos(tmp_path):
    listing = _synthetic_listing()
    expected = list(synthetic.videos(7, split="train", seed=3, num_frames=8, size=32))
    options = ingest.EncodeOptions(short_side=16)
    manifest = ingest.ingest(listing, str(tmp_path), num_shards=3, options=options, command=["test"])
    assert manifest["class_names"] == synthetic.class_names("direction_speed")
    assert manifest["totals"]["ingested"] == 7 and manifest["totals"]["frames"] == 56
    found = sorted(read_records(str(tmp_path)), key=lambda r: r["video_id"])
    assert [r["video_id"] for r in found] == list(range(7))
    for record, video in zip(found, expected):
        assert record["label"] == video.label and record["label_text"].decode() == video.label_text
        assert record["path"].decode() == video.path and record["fps"] == video.fps
        assert record["num_frames"] == 8 and frame_shape(record) == (16, 16, 3)
    shard_of = {}
    for path in sorted(glob.glob(os.path.join(tmp_path, "*.tfrecord"))):
        for serialized in tf.data.TFRecordDataset(path):
            shard_of[int(records.parse_sequence_example(serialized)["video_id"])] = path[-23:-18]
    assert shard_of == {i: f"{i % 3:05d}" for i in range(7)}


def test_rerun_keeps_complete_shards_and_rebuilds_the_rest(tmp_path):
    listing = _synthetic_listing()
    options = ingest.EncodeOptions(short_side=16)
    first = ingest.ingest(listing, str(tmp_path), num_shards=3, options=options, command=["test"])
    # Simulate a kill during shard 1: its final file gone, a temporary left behind.
    os.remove(tmp_path / "train-00001-of-00003.tfrecord")
    (tmp_path / "train-00001-of-00003.tfrecord.tmp-99999").write_bytes(b"partial")
    kept = os.path.getmtime(tmp_path / "train-00000-of-00003.tfrecord")
    second = ingest.ingest(listing, str(tmp_path), num_shards=3, options=options, command=["test"])
    assert second["run"]["shards_resumed"] == 2 and second["run"]["videos_decoded"] == 2
    assert os.path.getmtime(tmp_path / "train-00000-of-00003.tfrecord") == kept
    assert not glob.glob(os.path.join(tmp_path, "*.tmp-*"))
    first.pop("run"), second.pop("run")
    assert first == second
    assert sorted(r["video_id"] for r in read_records(str(tmp_path))) == list(range(7))
    with pytest.raises(ValueError, match="other settings"):
        ingest.ingest(listing, str(tmp_path), num_shards=3, options=options._replace(short_side=8))
