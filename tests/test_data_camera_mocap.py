"""Cameras, screen normalisation and motion-capture pairs."""
import pathlib

import numpy as np
import pytest

from ugcn_fast.data import H36M_INTRINSICS, lifting_pair, load_mocap, look_at, normalize_screen, virtual_cameras

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_17j_50fps.npz"


def test_look_at_puts_the_target_on_the_optical_axis_upright():
    target = np.array([100.0, -200.0, 900.0])
    for azimuth in (0, 45, 90, 200):
        cam = look_at(target, azimuth, height=300.0, distance=4000.0)
        assert np.allclose(cam.R @ cam.R.T, np.eye(3)) and np.isclose(np.linalg.det(cam.R), 1.0)
        in_cam = cam.to_camera(target)
        assert np.allclose(in_cam[:2], 0.0, atol=1e-9) and in_cam[2] == pytest.approx(np.hypot(4000.0, 300.0))
        # world up (z) points up in the image: image y decreases
        above = cam.project(cam.to_camera(target + [0, 0, 100.0]))
        centre = cam.project(cam.to_camera(target))
        assert above[1] < centre[1]
        assert np.allclose(centre, H36M_INTRINSICS["c"])


def test_projection_and_screen_normalisation_by_hand():
    cam = look_at([0, 0, 0], 0, 0.0, 1000.0, f=(1000.0, 1000.0), c=(500.0, 500.0), size=(1000, 1000))
    assert np.allclose(cam.project(np.array([100.0, -50.0, 1000.0])), [600.0, 450.0])
    assert np.allclose(normalize_screen(np.array([[0.0, 0.0], [1000.0, 1002.0]]), 1000, 1002),
                       [[-1.0, -1.002], [1.0, 1.002]])
    with pytest.raises(ValueError, match="in front"):
        cam.project(np.array([0.0, 0.0, -1.0]))
    for width, height, name in ((0, 1000, "width"), (1000, -1, "height"), (np.nan, 1000, "width"),
                                (1000, "1000", "height")):
        with pytest.raises(ValueError, match=f"{name} must be a positive number of pixels"):
            normalize_screen(np.zeros((1, 2)), width, height)


def test_virtual_cameras_cover_every_combination():
    cams = virtual_cameras([0, 0, 900], azimuths=(0, 120, 240), heights=(0, 500), distances=(3000, 5000))
    assert len(cams) == 12
    with pytest.raises(ValueError, match=r"target must be one finite 3D point.*\(10, 17, 3\)"):
        virtual_cameras(np.zeros((10, 17, 3)))  # a motion, not its centre
    with pytest.raises(ValueError, match="up must be a non-zero"):
        look_at([0, 0, 0], 0, 0.0, 1000.0, up=(0, 0, 0))


def test_load_mocap_rejects_bad_files(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, walk=np.zeros((10, 17, 3), np.float32), fps=np.array(50), joint_names=np.array(["a"] * 17))
    assert list(load_mocap(good)) == ["walk"]
    bad_shape = tmp_path / "bad_shape.npz"
    np.savez(bad_shape, walk=np.zeros((10, 16, 3), np.float32))
    with pytest.raises(ValueError, match="'walk' has shape"):
        load_mocap(bad_shape)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt.npz"):
        load_mocap(corrupt)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive\n")
    with pytest.raises(ValueError, match=r"notes\.npz is not a readable \.npz file \(not a numpy file\)"):
        load_mocap(text)
    with pytest.raises(FileNotFoundError):
        load_mocap(tmp_path / "missing.npz")
    empty = tmp_path / "empty.npz"
    np.savez(empty, fps=np.array(50))
    with pytest.raises(ValueError, match="no motion sequence"):
        load_mocap(empty)


def test_lifting_pair_shapes_units_and_consistency():
    rng = np.random.default_rng(0)
    seq = (rng.normal(size=(20, 17, 3)) * 200 + [0, 0, 1000]).astype(np.float32)
    cam = look_at(seq[0, 0], 30, 200.0, 4500.0)
    inputs, targets = lifting_pair(seq, cam)
    assert inputs.shape == (20, 17, 2) and targets.shape == (20, 17, 3)
    assert np.allclose(targets[:, 0], 0.0)
    # the 3D target re-projects onto the 2D input once the root's camera position is added back
    root = cam.to_camera(seq[:, :1])
    pixels = cam.project(targets * 1000.0 + root)
    assert np.allclose(normalize_screen(pixels, *cam.size), inputs, atol=1e-5)


@pytest.mark.skipif(not SHARED.exists(), reason="shared/data not beside the checkout")
def test_real_mocap_gives_sane_pairs():
    sequences = load_mocap(SHARED)
    assert len(sequences) == 5
    seq = next(iter(sequences.values()))
    root = seq[:, 0].mean(axis=0)
    for cam in virtual_cameras(root, azimuths=(0, 90, 180, 270), heights=(0.0, 800.0), distances=(4500.0,)):
        inputs, targets = lifting_pair(seq, cam)
        assert np.isfinite(inputs).all() and np.abs(inputs).max() < 1.5   # the subject stays in the image
        assert 0.3 < np.abs(targets).max() < 1.5                         # metres, root-relative
