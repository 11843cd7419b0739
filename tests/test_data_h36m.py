"""Human3.6M loaders on tiny files with the structure of VideoPose3D's (2 subjects, 2 actions, 4 cameras, 20
frames), built here: the real files are not distributed."""
import numpy as np
import pytest

from ugcn_fast.data import normalize_screen
from ugcn_fast.data.h36m import (ACTIONS, CAMERA_EXTRINSICS, H36MCamera, action_name, h36m_cameras, load_h36m,
                                 load_h36m_2d, load_h36m_3d, quaternion_to_matrix, reduce_joints)
from ugcn_fast.data.sources import load_sequences

REMOVED = [4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]   # VideoPose3D's Human36mDataset
ACTIONS_IN_FILE = ("Walking 1", "WalkDog")
SUBJECTS_IN_FILE = ("S1", "S9")
FRAMES = 20


def _positions_32(seed):
    """(T, 32, 3) metres around the capture area's centre, where every Human3.6M camera looks."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(FRAMES, 32, 3)) * 0.3 + [0.0, 0.0, 0.9]).astype(np.float32)


def _write_3d(path, subjects=SUBJECTS_IN_FILE, actions=ACTIONS_IN_FILE, frames=FRAMES):
    data = {s: {a: _positions_32(10 * k + j)[:frames] for j, a in enumerate(actions)}
            for k, s in enumerate(subjects)}
    np.savez_compressed(path, positions_3d=data)
    return data


def _write_2d(path, positions_2d, layout="h36m"):
    metadata = {"layout_name": layout, "num_joints": 17,
                "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
    np.savez_compressed(path, positions_2d=positions_2d, metadata=metadata)


def _pixels_2d(frames=FRAMES, seed=0):
    """{subject: {action: [4 x (frames, 17, 2)]}} pixels with known values."""
    rng = np.random.default_rng(seed)
    return {s: {a: [rng.uniform(0, 1000, size=(frames, 17, 2)).astype(np.float32) for _ in range(4)]
                for a in ACTIONS_IN_FILE} for s in SUBJECTS_IN_FILE}


@pytest.fixture
def file_3d(tmp_path):
    path = tmp_path / "data_3d_h36m.npz"
    return path, _write_3d(path)


def test_joint_reduction_keeps_videopose3d_joints_in_order(file_3d):
    path, raw = file_3d
    kept = [j for j in range(32) if j not in REMOVED]
    assert len(kept) == 17
    loaded = load_h36m_3d(path)
    assert set(loaded) == set(SUBJECTS_IN_FILE) and set(loaded["S1"]) == set(ACTIONS_IN_FILE)
    np.testing.assert_array_equal(loaded["S1"]["Walking 1"], raw["S1"]["Walking 1"][:, kept])
    assert loaded["S9"]["WalkDog"].shape == (FRAMES, 17, 3) and loaded["S9"]["WalkDog"].dtype == np.float32
    # spot checks: thorax (8) is raw 13, left shoulder (11) is raw 17, right wrist (16) is raw 27
    x = np.arange(32 * 3, dtype=np.float32).reshape(1, 32, 3)
    assert reduce_joints(x)[0, 8, 0] == 13 * 3 and reduce_joints(x)[0, 11, 0] == 17 * 3
    assert reduce_joints(x)[0, 16, 0] == 27 * 3
    with pytest.raises(ValueError, match="32"):
        reduce_joints(np.zeros((4, 17, 3)))


def test_quaternion_and_world_to_camera_by_hand():
    # 90 degrees about z: (cos 45, 0, 0, sin 45)
    q = (np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4))
    np.testing.assert_allclose(quaternion_to_matrix(q), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    camera = H36MCamera(id="x", center=(500.0, 500.0), focal_length=(1000.0, 1000.0),
                        radial_distortion=(0.0, 0.0, 0.0), tangential_distortion=(0.0, 0.0), res_w=1000, res_h=1000,
                        azimuth=0.0, orientation=q, translation=(1.0, 2.0, 3.0))
    # the camera centre maps to the origin; R^T (X - t): world x seen along the camera's -y axis
    np.testing.assert_allclose(camera.world_to_camera([1.0, 2.0, 3.0]), [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(camera.world_to_camera([2.0, 2.0, 3.0]), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(camera.world_to_camera([1.0, 3.0, 3.0]), [1, 0, 0], atol=1e-12)
    # linear pinhole: u = f x / z + c
    np.testing.assert_allclose(camera.project([0.2, -0.1, 2.0], distort=False), [600.0, 450.0])
    with pytest.raises(ValueError, match="in front"):
        camera.project([0.0, 0.0, -1.0])


def _videopose3d_world_to_camera(X, q, t):
    """VideoPose3D's world_to_camera: qrot(qinverse(q), X - t), with qrot(q, v) = v + 2 (w (q_v x v) + q_v x
    (q_v x v)) -- written out independently of the rotation matrix."""
    w, qv = q[0], -np.asarray(q[1:])
    v = X - t
    uv = np.cross(qv, v)
    return v + 2 * (w * uv + np.cross(qv, uv))


def test_published_cameras_match_videopose3d_and_look_at_the_room():
    point = np.array([[0.3, -0.2, 1.1], [-1.0, 0.5, 0.2]])
    for subject in CAMERA_EXTRINSICS:
        cameras = h36m_cameras(subject)
        assert [c.id for c in cameras] == ["54138969", "55011271", "58860488", "60457274"]
        for camera in cameras:
            R = camera.rotation
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
            t = np.asarray(camera.translation)
            assert 3.0 < np.linalg.norm(t[:2]) < 6.0 and 1.4 < t[2] < 1.7   # metres, not millimetres
            # (to a micrometre: the published quaternions are float32, normalised here but not in VideoPose3D)
            np.testing.assert_allclose(camera.world_to_camera(point),
                                       _videopose3d_world_to_camera(point, camera.orientation, t), atol=1e-6)
            # the optical axis points at the capture area's centre and the image's "down" is the world's -z
            assert R[:, 2] @ (-t / np.linalg.norm(t)) > 0.98 and R[:, 1] @ [0, 0, -1] > 0.95
    assert h36m_cameras("S1")[0].res_h == 1002 and h36m_cameras("S1")[1].res_h == 1000
    with pytest.raises(ValueError, match="S2"):
        h36m_cameras("S2")


def test_distortion_matches_videopose3d_normalised_projection():
    camera = h36m_cameras("S1")[0]
    on_axis = camera.project([0.0, 0.0, 4.0])
    np.testing.assert_allclose(on_axis, camera.center)   # no distortion on the optical axis
    point = np.array([0.6, -0.4, 4.0])
    # VideoPose3D projects with intrinsics normalised by the image width, then converts back to pixels
    w, h = camera.res_w, camera.res_h
    f = np.asarray(camera.focal_length) / w * 2
    c = np.asarray(camera.center) / w * 2 - [1, h / w]
    xx = np.clip(point[:2] / point[2], -1, 1)
    r2 = xx @ xx
    k, p = np.asarray(camera.radial_distortion), np.asarray(camera.tangential_distortion)
    radial = 1 + k @ [r2, r2 ** 2, r2 ** 3]
    normalised = f * (xx * (radial + p @ xx) + p * r2) + c
    expected = (normalised + [1, h / w]) * w / 2
    np.testing.assert_allclose(camera.project(point), expected, rtol=1e-10)
    assert np.abs(camera.project(point) - camera.project(point, distort=False)).max() > 1.0


def test_targets_are_root_relative_camera_frame_metres(file_3d):
    path, raw = file_3d
    views = load_h36m(path, split="train")
    assert [(v.subject, v.action) for v in views][::4] == [("S1", "WalkDog"), ("S1", "Walking 1")]
    assert [v.camera_id for v in views[:4]] == ["54138969", "55011271", "58860488", "60457274"]
    world = reduce_joints(raw["S1"]["WalkDog"]).astype(np.float64)
    for view, camera in zip(views[:4], h36m_cameras("S1")):
        assert view.targets.shape == (FRAMES, 17, 3) and view.targets.dtype == np.float32
        assert view.inputs.shape == (FRAMES, 17, 2) and view.inputs.dtype == np.float32
        np.testing.assert_allclose(view.targets[:, 0], 0.0)
        in_camera = camera.world_to_camera(world)
        np.testing.assert_allclose(view.targets, in_camera - in_camera[:, :1], atol=1e-6)
        # a rigid transform: every distance between joints is the world one (metres)
        d_world = np.linalg.norm(world[:, :, None] - world[:, None], axis=-1)
        d_cam = np.linalg.norm(view.targets[:, :, None] - view.targets[:, None], axis=-1)
        np.testing.assert_allclose(d_cam, d_world, atol=1e-5)
        # ground-truth 2D: projected (with distortion, as data_2d_h36m_gt.npz) and normalised by the resolution
        pixels = camera.project(in_camera)
        np.testing.assert_allclose(view.inputs, normalize_screen(pixels, camera.res_w, camera.res_h), atol=1e-6)


def test_split_and_action_names(file_3d):
    path, _ = file_3d
    assert {v.subject for v in load_h36m(path, split="train")} == {"S1"}
    assert {v.subject for v in load_h36m(path, split="test")} == {"S9"}
    assert len(load_h36m(path, split="all")) == 2 * 2 * 4
    with pytest.raises(ValueError, match="split"):
        load_h36m(path, split="val")
    assert action_name("Walking 1") == "Walking" and action_name("WalkDog") == "WalkDog"
    assert action_name("SittingDown 2") == "SittingDown" and action_name("TakingPhoto 1") == "Photo"
    assert action_name("WalkingDog") == "WalkDog"
    assert len(set(ACTIONS)) == 15 and "WalkTogether" in ACTIONS and "Photo" in ACTIONS


def test_subjects_of_the_split_must_be_present(tmp_path):
    path = tmp_path / "only_s9.npz"
    _write_3d(path, subjects=("S9",))
    with pytest.raises(ValueError, match="no subject of the 'train' split"):
        load_h36m(path, split="train")


def test_2d_file_inputs_are_normalised_pixels(file_3d, tmp_path):
    path_3d, _ = file_3d
    pixels = _pixels_2d()
    pixels["S1"]["WalkDog"][0][3, 5] = (500.0, 501.0)     # the image centre of camera 0 (1000 x 1002)
    pixels["S1"]["WalkDog"][1][3, 5] = (1000.0, 0.0)      # a corner of camera 1 (1000 x 1000)
    path_2d = tmp_path / "data_2d_h36m_test.npz"
    _write_2d(path_2d, pixels)
    positions, metadata = load_h36m_2d(path_2d)
    assert metadata["num_joints"] == 17 and len(positions["S9"]["Walking 1"]) == 4
    views = load_h36m(path_3d, path_2d, split="train")
    cam0, cam1 = views[0], views[1]
    np.testing.assert_allclose(cam0.inputs[3, 5], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(cam1.inputs[3, 5], [1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(cam0.inputs, pixels["S1"]["WalkDog"][0] / 1000 * 2 - [1, 1.002], atol=1e-6)


def test_ground_truth_2d_file_equals_projection(file_3d, tmp_path):
    path_3d, raw = file_3d
    pixels = {s: {a: [c.project(c.world_to_camera(reduce_joints(raw[s][a]))).astype(np.float32)
                      for c in h36m_cameras(s)] for a in ACTIONS_IN_FILE} for s in SUBJECTS_IN_FILE}
    path_2d = tmp_path / "data_2d_h36m_gt.npz"
    # VideoPose3D's ground-truth file: no layout_name in its metadata
    np.savez_compressed(path_2d, positions_2d=pixels, metadata={"num_joints": 17, "keypoints_symmetry": []})
    from_file = load_h36m(path_3d, path_2d, split="all")
    projected = load_h36m(path_3d, None, split="all")
    for a, b in zip(from_file, projected):
        np.testing.assert_allclose(a.inputs, b.inputs, atol=1e-5)
        np.testing.assert_array_equal(a.targets, b.targets)


@pytest.mark.parametrize("frames_2d, expected", [(FRAMES + 3, FRAMES), (FRAMES - 4, FRAMES - 4)])
def test_2d_and_3d_lengths_are_cropped_to_the_shorter(file_3d, tmp_path, frames_2d, expected):
    path_3d, raw = file_3d
    path_2d = tmp_path / "data_2d_h36m_long.npz"
    pixels = _pixels_2d(frames_2d)
    _write_2d(path_2d, pixels)
    views = load_h36m(path_3d, path_2d, split="test")
    assert all(len(v.inputs) == expected and len(v.targets) == expected for v in views)
    full = load_h36m(path_3d, split="test")
    np.testing.assert_array_equal(views[0].targets, full[0].targets[:expected])   # the start is kept
    np.testing.assert_allclose(views[0].inputs, normalize_screen(pixels["S9"]["WalkDog"][0][:expected], 1000, 1002),
                               atol=1e-6)


def test_coco_layout_is_converted(file_3d, tmp_path):
    path_3d, _ = file_3d
    pixels = _pixels_2d()
    path_2d = tmp_path / "data_2d_h36m_detectron_pt_coco.npz"
    _write_2d(path_2d, pixels, layout="coco")
    converted, _ = load_h36m_2d(path_2d)
    coco = pixels["S1"]["WalkDog"][2]
    np.testing.assert_allclose(converted["S1"]["WalkDog"][2][:, 0], (coco[:, 11] + coco[:, 12]) / 2, rtol=1e-6)
    np.testing.assert_allclose(converted["S1"]["WalkDog"][2][:, 16], coco[:, 10])     # right wrist
    _write_2d(path_2d, pixels, layout="mpii")
    with pytest.raises(ValueError, match="layout_name 'mpii'"):
        load_h36m_2d(path_2d)


def test_nan_keypoints_are_refused_or_filled(file_3d, tmp_path):
    path_3d, _ = file_3d
    pixels = _pixels_2d()
    keypoints = pixels["S9"]["Walking 1"][2]
    keypoints[4, 7] = np.nan
    path_2d = tmp_path / "data_2d_h36m_nan.npz"
    _write_2d(path_2d, pixels)
    with pytest.raises(ValueError, match=r"S9 'Walking 1' camera 2: 1 frame\(s\) hold NaN"):
        load_h36m(path_3d, path_2d, split="test")
    views = load_h36m(path_3d, path_2d, split="test", fill_nan=True)
    filled = [v for v in views if v.action == "Walking 1" and v.camera_id == "58860488"][0]
    expected = (keypoints[3, 7] + keypoints[5, 7]) / 2                                   # linear in time
    np.testing.assert_allclose(filled.inputs[4, 7], normalize_screen(expected, 1000, 1000), atol=1e-6)


def test_missing_and_broken_files_raise_clear_errors(file_3d, tmp_path):
    path_3d, _ = file_3d
    with pytest.raises(FileNotFoundError, match="nothere_3d.npz"):
        load_h36m(tmp_path / "nothere_3d.npz")
    with pytest.raises(FileNotFoundError, match="nothere_2d.npz"):
        load_h36m(path_3d, tmp_path / "nothere_2d.npz")
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="notes.npz"):
        load_h36m_3d(text)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path_3d.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_h36m_3d(truncated)
    wrong_key = tmp_path / "wrong_key.npz"
    np.savez(wrong_key, poses=np.zeros(3))
    with pytest.raises(ValueError, match="wrong_key.npz has no key 'positions_3d'"):
        load_h36m_3d(wrong_key)
    not_dict = tmp_path / "not_dict.npz"
    np.savez(not_dict, positions_3d=np.zeros((4, 32, 3)))
    with pytest.raises(ValueError, match="'positions_3d' must hold a dict"):
        load_h36m_3d(not_dict)
    bad_shape = tmp_path / "bad_shape.npz"
    np.savez(bad_shape, positions_3d={"S1": {"Eating": np.zeros((5, 31, 3), np.float32)}})
    with pytest.raises(ValueError, match=r"bad_shape.npz: positions_3d\['S1'\]\['Eating'\] has shape \(5, 31, 3\)"):
        load_h36m_3d(bad_shape)
    no_metadata = tmp_path / "no_metadata.npz"
    np.savez(no_metadata, positions_2d=_pixels_2d())
    with pytest.raises(ValueError, match="no_metadata.npz has no key 'metadata'"):
        load_h36m(path_3d, no_metadata)


def test_2d_file_must_cover_the_3d_file(file_3d, tmp_path):
    path_3d, _ = file_3d
    pixels = _pixels_2d()
    del pixels["S1"]["WalkDog"]
    path_2d = tmp_path / "missing_action.npz"
    _write_2d(path_2d, pixels)
    with pytest.raises(ValueError, match="no 2D keypoints for S1 'WalkDog'"):
        load_h36m(path_3d, path_2d)
    pixels = _pixels_2d()
    pixels["S1"]["WalkDog"] = pixels["S1"]["WalkDog"][:3]
    _write_2d(path_2d, pixels)
    with pytest.raises(ValueError, match="3 camera views, expected 4"):
        load_h36m(path_3d, path_2d)
    pixels = _pixels_2d()
    pixels["S1"]["WalkDog"][1] = pixels["S1"]["WalkDog"][1][:, :16]
    _write_2d(path_2d, pixels)
    with pytest.raises(ValueError, match=r"positions_2d\['S1'\]\['WalkDog'\]\[1\] has shape \(20, 16, 2\)"):
        load_h36m(path_3d, path_2d)


def test_load_sequences_reads_h36m(file_3d, tmp_path):
    path_3d, _ = file_3d
    train = load_sequences(path_3d, "train")
    assert [s.name for s in train[:2]] == ["S1/WalkDog/54138969", "S1/WalkDog/55011271"]
    assert {s.action for s in train} == {"WalkDog", "Walking"}
    assert len(train) == 2 * 4 and all(s.inputs.shape == (FRAMES, 17, 2) for s in train)
    test = load_sequences(path_3d, "test", num_sequences=1, frames=8)
    assert len(test) == 4 and all(len(s) == 8 and s.name.startswith("S9/WalkDog/") for s in test)
    path_2d = tmp_path / "data_2d_h36m_cpn.npz"
    pixels = _pixels_2d()
    _write_2d(path_2d, pixels)
    detected = load_sequences(path_3d, "test", h36m_2d=str(path_2d))
    np.testing.assert_allclose(detected[0].inputs, normalize_screen(pixels["S9"]["WalkDog"][0], 1000, 1002),
                               atol=1e-6)


def test_non_finite_3d_ground_truth_is_refused_naming_the_entry(tmp_path):
    """NaN in the ground truth would turn every position metric into NaN (and `evaluate` would exit 0)."""
    data = {s: {a: _positions_32(10 * k + j) for j, a in enumerate(ACTIONS_IN_FILE)}
            for k, s in enumerate(SUBJECTS_IN_FILE)}
    data["S9"]["WalkDog"][10, 6, 1] = np.nan
    path = tmp_path / "data_3d_h36m.npz"
    np.savez_compressed(path, positions_3d=data)
    with pytest.raises(ValueError, match=r"positions_3d\['S9'\]\['WalkDog'\] holds NaN or Inf positions "
                                         r"\(first at frame 10, joint 6\)"):
        load_h36m_3d(path)
    with pytest.raises(ValueError, match="holds NaN or Inf"):
        load_h36m(path, split="train")  # even a split without the sequence: the file is read whole
