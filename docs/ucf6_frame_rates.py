"""Frame rate of every clip of a UCF-101-layout folder, counted per class (PyAV; no TensorFlow).

    python docs/ucf6_frame_rates.py ../shared/ucf6/UCF-101

Prints one line per (class, frame rate) with its clip count, then the totals.
The ingest keeps each clip's own rate (`--fps=0`), and speeds are frame
strides: a stride-s clip of a 29.97 fps video spans 25/29.97 of the time a
stride-s clip of a 25 fps video does.
"""

import collections
import glob
import os
import sys

import av


def main(root):
    per_class, totals = collections.Counter(), collections.Counter()
    for path in sorted(glob.glob(os.path.join(root, "*", "*.avi"))):
        with av.open(path) as container:
            rate = round(float(container.streams.video[0].average_rate), 2)
        per_class[(os.path.basename(os.path.dirname(path)), rate)] += 1
        totals[rate] += 1
    for (name, rate), count in sorted(per_class.items()):
        print(f"{name:16s} {rate:6.2f} fps  {count} clips")
    print("all: " + ", ".join(f"{count} clips at {rate:.2f} fps" for rate, count in sorted(totals.items())))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/ucf6/UCF-101")
