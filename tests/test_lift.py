"""ugcn_fast.lift: 2D keypoints of a video in pixels -> 3D poses, its input checks and its command line."""
import re
import struct

import numpy as np
import pytest
import torch

from ugcn_fast import UGCN
from ugcn_fast.data import coco_to_h36m
from ugcn_fast.lift import lift, main, prepare_keypoints

from _quadratic import Quadratic
from _checkpoints import tiny_checkpoint_file

WIDTH, HEIGHT = 1000, 1002


def quadratic_poses(pixels):
    """What Quadratic lifts pixels to, written out from VideoPose3D's normalisation X / w * 2 - [1, h / w]."""
    x = pixels[..., 0] / WIDTH * 2 - 1
    y = pixels[..., 1] / WIDTH * 2 - HEIGHT / WIDTH
    poses = np.stack([x, y, x ** 2 + y], axis=-1)
    return poses - poses[:, :1]


def pixel_track(T, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.uniform(100, 900, (17, 2))
    velocity = rng.uniform(-3, 3, (17, 2))
    return start + np.arange(T)[:, None, None] * velocity  # linear motion: interpolation is exact


@pytest.mark.parametrize("T", [1, 7, 40])
def test_lift_normalises_and_predicts_every_frame(T):
    pixels = pixel_track(T)
    poses = lift(pixels, Quadratic(), WIDTH, HEIGHT, window=32, step=5)
    assert poses.shape == (T, 17, 3) and poses.dtype == np.float32
    np.testing.assert_allclose(poses, quadratic_poses(pixels), atol=1e-6)
    assert (poses[:, 0] == 0).all()


def test_lift_fills_missing_and_low_confidence_keypoints():
    pixels = pixel_track(12, seed=1)
    holes = pixels.copy()
    holes[3, 5] = np.nan                   # missing
    holes[7, 9] = (0.0, 0.0)               # a detector's "not found", flagged by its score
    scores = np.ones((12, 17))
    scores[7, 9] = 0.1
    poses = lift(holes, Quadratic(), WIDTH, HEIGHT, scores=scores, window=16)
    np.testing.assert_allclose(poses, quadratic_poses(pixels), atol=1e-6)
    # with a threshold below the low score the bad keypoint is kept (and the result differs there)
    kept = lift(holes, Quadratic(), WIDTH, HEIGHT, scores=scores, score_threshold=0.05, window=16)
    assert not np.allclose(kept[7, 9], quadratic_poses(pixels)[7, 9], atol=1e-3)


def test_lift_coco_layout_converts_to_h36m_joints():
    coco = pixel_track(10, seed=2)
    coco[4, 0] = np.nan  # the nose: H36M neck/nose (9) comes from it alone
    coco_scores = np.full((10, 17), 0.9)
    coco_scores[6, 11] = 0.0  # a left hip: H36M hip (0), l_hip (4) and spine (7) come from it
    poses = lift(coco, Quadratic(), WIDTH, HEIGHT, layout="coco", scores=coco_scores, window=16)
    clean, _ = coco_to_h36m(pixel_track(10, seed=2))
    np.testing.assert_allclose(poses, quadratic_poses(clean), atol=1e-6)
    # the conversion itself: H36M hip is the mid-hips of COCO, thorax the mid-shoulders
    pixels, inputs = prepare_keypoints(pixel_track(3), WIDTH, HEIGHT, layout="coco")
    np.testing.assert_allclose(pixels[:, 0], pixel_track(3)[:, [11, 12]].mean(axis=1))
    np.testing.assert_allclose(pixels[:, 8], pixel_track(3)[:, [5, 6]].mean(axis=1))
    np.testing.assert_allclose(inputs, pixels / WIDTH * 2 - [1, HEIGHT / WIDTH], rtol=1e-6)


@pytest.mark.parametrize("keypoints, kwargs, error, message", [
    (np.zeros((5, 16, 2)), {}, ValueError, "16 joints per frame; expected 17"),
    (np.zeros((5, 17, 3)), {}, ValueError, "last dimension of 2.*scores"),
    (np.zeros((17, 2)), {}, ValueError, r"shape \(T, 17, 2\)"),
    (np.zeros((0, 17, 2)), {}, ValueError, "no frame"),
    (np.full((4, 17, 2), np.nan), {}, ValueError, "all NaN"),
    (np.zeros((5, 17, 2)), {"scores": np.ones((5, 16))}, ValueError, r"scores must have shape \(T, 17\)"),
    (np.zeros((5, 17, 2)), {"width": None}, ValueError, "width is missing"),
    (np.zeros((5, 17, 2)), {"height": -3}, ValueError, "height must be a positive number"),
    (np.zeros((5, 17, 2)), {"layout": "openpose"}, ValueError, "layout must be one of"),
    (np.array([[["a", "b"]] * 17]), {}, TypeError, "numbers"),
])
def test_bad_input_is_refused_with_what_was_expected(keypoints, kwargs, error, message):
    arguments = {"width": WIDTH, "height": HEIGHT, **kwargs}
    with pytest.raises(error, match=message):
        lift(keypoints, Quadratic(), **arguments)


def test_a_joint_missing_in_every_frame_is_named():
    pixels = pixel_track(6)
    pixels[:, 13] = np.nan
    with pytest.raises(ValueError, match="joint 13"):
        lift(pixels, Quadratic(), WIDTH, HEIGHT)


# ------------------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_file(tmp_path_factory.mktemp("ckpt"), epoch=1)


def test_command_line_windows_default_to_the_checkpoints_run(tmp_path):
    from ugcn_fast.checkpoint import load_model, make_model_config, model_from_config, save_checkpoint

    torch.manual_seed(0)
    config = make_model_config(channels=(4, 4, 4, 4, 4))
    path = tmp_path / "run.pt"
    save_checkpoint(path, model=model_from_config(config), model_config=config, epoch=1,
                    extra={"config": {"window": 16, "eval_step": 3}})
    pixels = pixel_track(40, seed=4)
    source, out = tmp_path / "video.npz", tmp_path / "poses.npz"
    np.savez(source, keypoints=pixels, width=WIDTH, height=HEIGHT)
    assert main([str(source), "--checkpoint", str(path), "--out", str(out)]) == 0
    model, _ = load_model(path)
    with np.load(out) as result:
        np.testing.assert_allclose(result["poses_3d"], lift(pixels, model, WIDTH, HEIGHT, window=16, step=3),
                                   rtol=1e-5, atol=1e-6)
        assert not np.allclose(result["poses_3d"], lift(pixels, model, WIDTH, HEIGHT), atol=1e-4)


def png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_command_line_writes_poses_and_renders(tmp_path, tiny_checkpoint, capsys):
    from ugcn_fast.checkpoint import load_model

    pixels = pixel_track(20, seed=3)
    pixels[2, 4] = np.nan
    source = tmp_path / "video.npz"
    np.savez(source, keypoints=pixels, width=WIDTH, height=HEIGHT)
    out, picture, animation = tmp_path / "poses.npz", tmp_path / "poses.png", tmp_path / "poses.gif"
    assert main([str(source), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--window", "16",
                 "--render", str(picture), "--render-size", "64"]) == 0
    assert "lifted 20 frames" in capsys.readouterr().out
    with np.load(out) as result:
        poses, inputs = result["poses_3d"], result["inputs_2d"]
        assert poses.shape == (20, 17, 3) and inputs.shape == (20, 17, 2)
        assert float(result["width"]) == WIDTH and str(result["layout"]) == "h36m"
    model, _ = load_model(tiny_checkpoint)
    np.testing.assert_allclose(poses, lift(pixels, model, WIDTH, HEIGHT, window=16), rtol=1e-5, atol=1e-6)
    assert np.isfinite(inputs).all()
    assert png_size(picture) == (6 * 64 + 5 * 4, 64)  # six frames side by side, 4 pixels apart

    # the file's size is overridden by flags; a GIF gets one frame per lifted frame
    assert main([str(source), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--window", "16",
                 "--width", "2000", "--height", "2004", "--no-flip", "--render", str(animation),
                 "--render-size", "32"]) == 0
    with np.load(out) as result:
        np.testing.assert_allclose(result["inputs_2d"][5], pixels[5] / 2000 * 2 - [1, 2004 / 2000], rtol=1e-5)
    data = open(animation, "rb").read()
    assert data[:6] == b"GIF89a" and data[-1:] == b"\x3b" and data.count(b"\x21\xf9\x04") == 20


@pytest.mark.parametrize("content, flags, message", [
    ({"points": np.zeros((4, 17, 2))}, [], "no 'keypoints' array"),
    ({"keypoints": np.zeros((4, 17, 2))}, [], "width is missing"),
    ({"keypoints": np.zeros((4, 17, 2)), "width": 10, "height": 10}, ["--render", "x.jpg"], "--render must name"),
    ({"keypoints": np.zeros((4, 17, 2)), "width": 10, "height": 10, "scores": np.ones(4)}, [],
     r"scores must have shape \(T, 17\)"),
])
def test_command_line_refuses_bad_files(tmp_path, tiny_checkpoint, capsys, content, flags, message):
    source = tmp_path / "video.npz"
    np.savez(source, **content)
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o.npz")] + flags)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o.npz").exists()


def _lift_command(tmp_path, flags, content=None, source_name="video.npz"):
    source = tmp_path / source_name
    content = content if content is not None else {"keypoints": pixel_track(20), "width": WIDTH, "height": HEIGHT}
    if source_name.endswith(".npy"):
        np.save(source, content["keypoints"])
    else:
        np.savez(source, **content)
    return [str(source)] + flags


@pytest.mark.parametrize("flags, message", [
    (["--render-size", "8"], "--render-size must be >= 16"),
    (["--fps", "0"], "--fps must be a positive number"),
    (["--render", "{tmp}/o.gif", "--fps", "0.001"], r"--fps / --render-stride must be at least 0.00153"),
    (["--render", "{tmp}/o.gif", "--render-stride", "40000"], r"the frame rate of .*video.npz / --render-stride"),
    (["--window", "40"], "--window must be a multiple of 16"),
    (["--out", "{tmp}"], "--out .* is a folder; name a file"),
    (["--render", "{tmp}/missing/o.png"], "--render .*: its folder .* does not exist"),
])
def test_command_line_refuses_bad_flags_before_writing(tmp_path, tiny_checkpoint, capsys, flags, message):
    """Bad output flags are refused with their name and status 2 before anything is lifted or written."""
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    out = ["--out", str(tmp_path / "o.npz")] if "--out" not in flags else []
    with pytest.raises(SystemExit) as exit_info:
        main(_lift_command(tmp_path, ["--checkpoint", str(tiny_checkpoint)] + out + flags))
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o.npz").exists()


def test_command_line_reads_npy_and_size_flags_clearly(tmp_path, tiny_checkpoint, capsys):
    flags = ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o.npz")]
    with pytest.raises(SystemExit):
        main(_lift_command(tmp_path, flags, source_name="video.npy"))
    assert re.search(r"video.npy is not a readable .npz file: it holds one array \(a .npy file\)",
                     capsys.readouterr().err)
    # --width / --height replace the file's values without reading them (here: not one number each)
    content = {"keypoints": pixel_track(20), "width": np.array([1.0, 2.0]), "height": np.array("1002")}
    assert main(_lift_command(tmp_path, flags + ["--width", str(WIDTH), "--height", str(HEIGHT)], content)) == 0
    with np.load(tmp_path / "o.npz") as data:
        assert float(data["width"]) == WIDTH and float(data["height"]) == HEIGHT


def test_untrained_ugcn_lifts_short_videos():
    model = UGCN(channels=(4, 4, 4, 4, 4))
    poses = lift(pixel_track(3), model, WIDTH, HEIGHT, window=16)
    assert poses.shape == (3, 17, 3) and np.isfinite(poses).all() and (poses[:, 0] == 0).all()
