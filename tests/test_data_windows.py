"""Training windows and flip augmentation."""
import numpy as np
import pytest
import torch

from ugcn_fast.data import WindowDataset, flip_pose, lifting_pair, procedural_motion, virtual_cameras
from ugcn_fast.graph import H36M_LEFT, H36M_RIGHT


def _pair(T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, 17, 2)).astype(np.float32), rng.normal(size=(T, 17, 3)).astype(np.float32)


def test_flip_negates_x_swaps_sides_and_is_an_involution():
    x = torch.randn(5, 17, 3)
    f = flip_pose(x)
    assert torch.equal(f[:, 0, 0], -x[:, 0, 0]) and torch.equal(f[:, 0, 1:], x[:, 0, 1:])
    for a, b in zip(H36M_LEFT, H36M_RIGHT):
        assert torch.equal(f[:, a, 1], x[:, b, 1]) and torch.equal(f[:, a, 0], -x[:, b, 0])
    assert torch.equal(flip_pose(f), x)
    assert np.array_equal(flip_pose(flip_pose(x.numpy())), x.numpy())


def test_flip_of_a_camera_pair_is_a_mirrored_view():
    """Flipping the 2D input and the 3D target together gives a consistent (2D, 3D) pair: the mirrored 3D pose
    projects onto the mirrored 2D pose when the principal point is the image centre."""
    seq = procedural_motion(20, seed=1)
    cam = virtual_cameras(seq[:, 0].mean(0), azimuths=(30,), c=(500.0, 500.0), size=(1000, 1000))[0]
    inputs, targets = lifting_pair(seq, cam)
    root = cam.to_camera(seq[:, :1]) * np.array([-1.0, 1.0, 1.0])  # mirrored root position
    pixels = cam.project(flip_pose(targets).astype(np.float64) * 1000 + root)
    np.testing.assert_allclose(pixels / 1000 * 2 - 1, flip_pose(inputs), atol=1e-5)


def test_windows_tile_sequences_and_shift_with_the_epoch():
    data = WindowDataset([_pair(300), _pair(96, 1)], window=96, flip=False, seed=3)
    covered = set()
    for k, s in data.index:
        if k == 0:
            covered.update(range(s, s + 96))
    assert covered == set(range(300))
    starts = {e: [s for k, s in (data.set_epoch(e) or data.index) if k == 0] for e in range(4)}
    assert len({tuple(v) for v in starts.values()}) > 1  # offsets change with the epoch
    data.set_epoch(2)
    again = WindowDataset([_pair(300), _pair(96, 1)], window=96, flip=False, seed=3)
    again.set_epoch(2)
    assert data.index == again.index  # reproducible
    x, y = data[0]
    assert x.shape == (96, 17, 2) and y.shape == (96, 17, 3) and x.dtype == torch.float32


def test_flip_doubles_the_dataset_and_short_sequences_are_padded():
    data = WindowDataset([_pair(40)], window=96, flip=True)
    assert len(data) == 2
    (x, y), (xf, yf) = data[0], data[1]
    assert x.shape == (96, 17, 2) and torch.equal(flip_pose(x), xf) and torch.equal(flip_pose(y), yf)
    inputs, _ = _pair(40)
    assert torch.equal(x[28:68], torch.from_numpy(inputs)) and torch.equal(x[0], x[28])  # edge padding


def test_bad_sequences_are_rejected():
    bad = _pair(100)[0].copy()
    bad[5, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        WindowDataset([(bad, _pair(100)[1])])
    with pytest.raises(ValueError, match="same T"):
        WindowDataset([(_pair(100)[0], _pair(99)[1])])
    with pytest.raises(ValueError, match="window"):
        WindowDataset([_pair(100)], window=0)
    with pytest.raises(ValueError, match="empty"):
        WindowDataset([])


def test_indexing_ends_and_counts_from_the_end():
    """IndexError past the end (a plain `for x in dataset` loop relies on it), negative indices as in a list."""
    ds = WindowDataset([_pair(100)], window=32)
    n = len(ds)
    assert sum(1 for _ in ds) == n
    for i in (n, n + 7, -n - 1, 10 ** 6):
        with pytest.raises(IndexError, match="out of range"):
            ds[i]
    x, y = ds[-1]
    x_last, y_last = ds[n - 1]
    assert torch.equal(x, x_last) and torch.equal(y, y_last)
    with pytest.raises(IndexError):
        ds[1.0]


def test_joint_counts_must_agree_with_each_other_and_the_flip():
    inputs, targets = _pair(100)
    with pytest.raises(ValueError, match="same T >= 1 and J"):
        WindowDataset([(inputs, targets[:, :16])])
    with pytest.raises(ValueError, match="sequence 0: .* out of range for poses of 16 joints"):
        WindowDataset([(inputs[:, :16], targets[:, :16])])
    assert len(WindowDataset([(inputs[:, :16], targets[:, :16])], flip=False)) > 0


def test_flip_of_another_skeleton_needs_its_own_joints():
    with pytest.raises(ValueError, match="out of range for poses of 16 joints"):
        flip_pose(np.zeros((3, 16, 2)))
    assert flip_pose(np.zeros((3, 5, 2)), left=[1], right=[3]).shape == (3, 5, 2)
