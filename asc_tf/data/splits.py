"""Training and validation splits of one labelled video folder, made of whole groups.

UCF-101's groups (the `gNN` of `v_<Class>_gNN_cMM.avi`) share actor and
scene; a split by clip puts near-copies of a validation clip in the training
set and inflates every number, so UCF-101 is split by group (`split_by_group`).
Layouts without groups (class folders, Kinetics) are split per class by the
sorted path: the last fifth of each class's videos (at least one, when the
class has two or more) validates (`split_per_class`). Both rules are
deterministic: the same folder gives the same split on every machine.

No TensorFlow here: the demo validates its flags with these before it loads.
"""

import math
import re

UCF_GROUP = re.compile(r"_g(\d+)_c\d+\.[^/]+$")
VAL_FRACTION = 0.2


def parse_groups(text):
    """"8-11" or "8,9,10,11" or "1-7,25" -> {8, 9, 10, 11}; ValueError with the reason otherwise."""
    groups = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{part!r} is not a group number or a range like 8-11")
        low, high = int(first), int(last) if dash else int(first)
        if low > high:
            raise ValueError(f"range {part!r} runs backwards")
        groups.update(range(low, high + 1))
    if not groups:
        raise ValueError("names no group")
    return groups


def ucf_group(path):
    """The group number of a UCF-101 clip path (`.../v_Archery_g08_c01.avi` -> 8), or None."""
    match = UCF_GROUP.search(path)
    return int(match.group(1)) if match else None


def split_by_group(paths, val_groups):
    """(train, val) lists of the paths: val holds the clips of `val_groups`. ValueError names a path without a group."""
    train, val = [], []
    for path in paths:
        group = ucf_group(path)
        if group is None:
            raise ValueError(f"{path}: no UCF-101 group (_gNN_cNN) in the file name")
        (val if group in val_groups else train).append(path)
    return train, val


def split_per_class(labelled_paths):
    """(train, val) from [(path, label)]: per label, the last fifth of the sorted paths validates.

    A class of one video trains only; every class of two or more videos has at least one validation video.
    """
    by_label = {}
    for path, label in labelled_paths:
        by_label.setdefault(label, []).append(path)
    train, val = [], []
    for label in sorted(by_label):
        paths = sorted(by_label[label])
        count = 0 if len(paths) < 2 else max(1, math.floor(len(paths) * VAL_FRACTION))
        train += paths[: len(paths) - count]
        val += paths[len(paths) - count:]
    return sorted(train), sorted(val)
