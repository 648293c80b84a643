"""Training and validation splits of a labelled folder: whole UCF-101 groups, or the last fifth of each class."""

import pytest

from asc_tf.data import splits


def test_groups_parse_from_ranges_and_lists():
    assert splits.parse_groups("8-11") == {8, 9, 10, 11}
    assert splits.parse_groups("1-3, 25") == {1, 2, 3, 25}
    assert splits.parse_groups("12") == {12}
    for bad, reason in (("x", "not a group number"), ("9-8", "backwards"), ("", "names no group"),
                        ("8-", "not a group number")):
        with pytest.raises(ValueError, match=reason):
            splits.parse_groups(bad)


def test_the_group_is_read_from_a_ucf101_file_name():
    assert splits.ucf_group("Archery/v_Archery_g08_c01.avi") == 8
    assert splits.ucf_group("v_PlayingPiano_g25_c03.avi") == 25
    assert splits.ucf_group("Archery/clip_8.avi") is None
    # A folder whose name looks like a group does not count: only the file name's.
    assert splits.ucf_group("v_X_g01_c01.avi/other.avi") is None


def test_a_group_never_spans_the_two_splits():
    paths = [f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c in ("A", "B") for g in range(8, 26) for k in (1, 2, 3)]
    train, val = splits.split_by_group(paths, {8, 9, 10, 11})
    assert (len(train), len(val)) == (2 * 14 * 3, 2 * 4 * 3)
    assert {splits.ucf_group(p) for p in val} == {8, 9, 10, 11}
    assert {splits.ucf_group(p) for p in train} == set(range(12, 26))
    with pytest.raises(ValueError, match="no UCF-101 group"):
        splits.split_by_group(paths + ["A/odd.avi"], {8})


def test_folders_without_groups_validate_on_the_last_fifth_of_each_class():
    labelled = [(f"a/{i:02d}.mp4", 0) for i in range(10)] + [(f"b/{i}.mp4", 1) for i in range(4)] + [("c/0.mp4", 2)]
    train, val = splits.split_per_class(labelled)
    # 10 videos: 2 validate; 4 videos: at least 1; a class of one trains only.
    assert val == ["a/08.mp4", "a/09.mp4", "b/3.mp4"]
    assert len(train) == 15 - 3 and "c/0.mp4" in train
    # Deterministic: the order the listing gives does not matter.
    assert splits.split_per_class(labelled[::-1]) == (train, val)
