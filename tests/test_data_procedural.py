"""The procedural motion generator: fixed bone lengths, smooth, reproducible, usable through a camera."""
import numpy as np
import pytest

from ugcn_fast.data import lifting_pair, procedural_motion, virtual_cameras
from ugcn_fast.graph import H36M_PARENTS

BONES = [(j, p) for j, p in enumerate(H36M_PARENTS) if p >= 0]


def _bone_lengths(x):
    return np.stack([np.linalg.norm(x[:, j] - x[:, p], axis=-1) for j, p in BONES], axis=1)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_fixed_bone_lengths_and_plausible_body(seed):
    x = procedural_motion(300, seed=seed)
    assert x.shape == (300, 17, 3) and x.dtype == np.float32 and np.isfinite(x).all()
    lengths = _bone_lengths(x.astype(np.float64))
    assert np.abs(lengths - lengths[:1]).max() < 0.05  # mm, float32 rounding only
    assert 1400 < x[:, 10, 2].max() < 2000             # head height
    left, right = lengths[:, [3, 4, 5, 10, 11, 12]], lengths[:, [0, 1, 2, 13, 14, 15]]
    np.testing.assert_allclose(left, right, atol=0.05)  # symmetric limbs


def test_smooth_and_reproducible():
    a, b = procedural_motion(200, seed=3), procedural_motion(200, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, procedural_motion(200, seed=4))
    fps = 50.0
    acceleration = np.diff(a.astype(np.float64), n=2, axis=0) * fps * fps
    assert np.linalg.norm(acceleration, axis=-1).max() < 2e5  # mm / s^2: smooth, no jumps
    assert procedural_motion(1).shape == (1, 17, 3)


def test_scale_and_bad_arguments():
    base, big = procedural_motion(50, seed=2), procedural_motion(50, seed=2, scale=1.1)
    np.testing.assert_allclose(_bone_lengths(big), 1.1 * _bone_lengths(base), rtol=1e-4)
    for kwargs in (dict(num_frames=0), dict(num_frames=10, fps=0), dict(num_frames=10, scale=-1)):
        with pytest.raises(ValueError):
            procedural_motion(**kwargs)


def test_usable_through_virtual_cameras():
    x = procedural_motion(96, seed=5)
    for cam in virtual_cameras(x[:, 0].mean(axis=0), azimuths=(0, 120, 240), distances=(5000.0,)):
        inputs, targets = lifting_pair(x, cam)
        assert np.isfinite(inputs).all() and np.abs(inputs).max() < 1.5 and np.allclose(targets[:, 0], 0)
