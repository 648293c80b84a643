"""tools.search: a folder of videos indexed with an exported encoder; every video finds itself first."""

import os
import shutil
import subprocess
import sys

import av
import keras
import numpy as np
import pytest
import tensorflow as tf

from asc_tf import export
from asc_tf.data import synthetic
from asc_tf.models import build_backbone
from conftest import REPO_ROOT

FRAMES, CROP, RESIZE = 4, 16, 20


def write_video(path, frames, fps=25):
    """[T, H, W, 3] uint8 -> an MPEG-4 file (even H and W)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def run_search(*args):
    return subprocess.run([sys.executable, "-m", "tools.search", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    keras.utils.set_random_seed(0)
    encoder = build_backbone("r3d_18", width=0.125)
    encoder(tf.zeros((1, FRAMES, CROP, CROP, 3)))
    export.export_encoder(encoder, str(root / "encoder"), FRAMES, CROP, RESIZE)

    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    paths = [videos / "a.mp4", videos / "b.mp4", videos / "sub" / "c.mp4"]
    for index, (path, size) in enumerate(zip(paths, (24, 32, 24))):
        write_video(path, synthetic.make_video(index, "train", 0, num_frames=20, size=size,
                                               motion="direction_speed").frames)
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 50)
    (videos / "notes.txt").write_text("ignored: no video extension")

    index = root / "index.npz"
    result = run_search("index", f"--saved_model={root / 'encoder'}", f"--videos={videos}",
                        f"--index={index}", "--num_clips=3")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, [str(p) for p in paths], index, result


def test_index_holds_unit_features_settings_and_the_skipped_video(gallery):
    root, paths, index, result = gallery
    assert "indexed 3 videos" in result.stdout and "skipped 1" in result.stdout
    assert "broken.mp4" in result.stdout
    assert "4/4 videos" in result.stderr.splitlines()[-1]  # the progress line, finished
    stored = np.load(index)
    assert sorted(stored["paths"].tolist()) == sorted(paths)
    assert stored["features"].shape == (3, 64) and stored["features"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(stored["features"], axis=1), 1.0, atol=1e-5)
    assert [int(stored[k]) for k in ("frames", "crop_size", "resize_short", "output_dim", "num_clips")] == [
        FRAMES, CROP, RESIZE, 64, 3]
    assert len(stored["skipped"]) == 1 and stored["skipped"][0].startswith(os.path.join(str(root), "videos", "broken.mp4"))


def test_every_video_is_its_own_nearest_neighbour(gallery):
    root, paths, index, _ = gallery
    for path in paths:
        result = run_search("query", f"--saved_model={root / 'encoder'}", f"--index={index}", f"--video={path}",
                            "--k=2")
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [line.split() for line in result.stdout.splitlines()[1:]]
        assert len(rows) == 2
        assert rows[0][0] == "1" and rows[0][2] == path
        assert abs(float(rows[0][1]) - 1.0) < 1e-4
        assert float(rows[1][1]) < float(rows[0][1])


def test_a_query_with_another_encoder_is_refused_unless_allowed(gallery, tmp_path):
    root, paths, index, _ = gallery
    keras.utils.set_random_seed(1)
    other = build_backbone("r3d_18", width=0.125)  # the same settings, other weights
    other(tf.zeros((1, FRAMES, CROP, CROP, 3)))
    export.export_encoder(other, str(tmp_path / "other"), FRAMES, CROP, RESIZE)
    query = ["query", f"--saved_model={tmp_path / 'other'}", f"--index={index}", f"--video={paths[0]}", "--k=1"]
    refused = run_search(*query)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].startswith("search: error: --saved_model: is not the encoder")
    allowed = run_search(*query, "--allow_other_encoder")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    # The index's own encoder, copied elsewhere, is the same encoder.
    shutil.copytree(root / "encoder", tmp_path / "same")
    again = run_search("query", f"--saved_model={tmp_path / 'same'}", f"--index={index}", f"--video={paths[0]}",
                       "--k=1")
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.parametrize("args, flag", [
    (["index", "--saved_model={model}", "--videos={tmp}", "--index={tmp}/i.npz", "--num_clips=0"], "num_clips"),
    (["index", "--saved_model={tmp}", "--videos={tmp}", "--index={tmp}/i.npz"], "saved_model"),
    (["index", "--saved_model={model}", "--videos={tmp}/absent", "--index={tmp}/i.npz"], "videos"),
    (["index", "--saved_model={model}", "--videos={tmp}", "--index={tmp}/i.txt"], "index"),
    (["query", "--saved_model={model}", "--index={tmp}/absent.npz", "--video={file}"], "index"),
    (["query", "--saved_model={model}", "--index={file}", "--video={tmp}/absent.mp4"], "video"),
    (["query", "--saved_model={model}", "--index={file}", "--video={file}", "--k=0"], "k"),
    (["query", "--saved_model={model}", "--index={file}", "--video={file}", "--k=many"], "k"),
])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(gallery, tmp_path, args, flag):
    root = gallery[0]
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = run_search(*[a.format(model=root / "encoder", tmp=tmp_path, file=a_file) for a in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--{flag}" in lines[0], result.stderr
    assert not (tmp_path / "i.npz").exists()


@pytest.mark.parametrize("command", [[], ["bogus"], ["index", "query"]])
def test_missing_or_unknown_sub_command_exits_2_with_one_line(tmp_path, command):
    result = run_search(*command, f"--saved_model={tmp_path}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sub-command" in lines[0], result.stderr
