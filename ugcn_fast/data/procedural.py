"""Procedural skeleton motion: plausible 17-joint (Human3.6M order) sequences with fixed bone lengths and smooth
joint-angle trajectories, so training and evaluation run on a fresh machine without any data.

Each joint's local rotation is a sum of a few sinusoids per Euler angle (0.2 to 2 Hz, amplitudes within loose
anatomical limits); the root walks a smooth path and turns; forward kinematics places every joint at its fixed
bone length from its parent. Output: millimetres, world frame z-up, like shared/data.
"""
from __future__ import annotations

import numpy as np

from ..graph import H36M_PARENTS

# Rest-pose offsets from the parent (mm, z-up, the subject facing +y, its left on -x... a standing pose).
REST_OFFSETS_MM = np.array([
    [0, 0, 0],            # 0 hip (root)
    [130, 0, 0],          # 1 r_hip
    [0, 0, -450],         # 2 r_knee
    [0, 0, -440],         # 3 r_ankle
    [-130, 0, 0],         # 4 l_hip
    [0, 0, -450],         # 5 l_knee
    [0, 0, -440],         # 6 l_ankle
    [0, 0, 230],          # 7 spine
    [0, 0, 250],          # 8 thorax
    [0, 20, 110],         # 9 neck / nose
    [0, -10, 115],        # 10 head
    [-150, 0, 0],         # 11 l_shoulder
    [0, 0, -280],         # 12 l_elbow
    [0, 0, -250],         # 13 l_wrist
    [150, 0, 0],          # 14 r_shoulder
    [0, 0, -280],         # 15 r_elbow
    [0, 0, -250],         # 16 r_wrist
], dtype=np.float64)

# Amplitude (radians) of each joint's local rotation about x, y, z: the joint whose bone it moves.
AMPLITUDES = np.zeros((17, 3))
AMPLITUDES[[1, 4]] = (0.6, 0.2, 0.3)     # hips swing the thighs
AMPLITUDES[[2, 5]] = (0.7, 0.0, 0.0)     # knees bend
AMPLITUDES[[0]] = (0.05, 0.05, 0.0)      # pelvis tilt (heading is separate)
AMPLITUDES[[7, 8]] = (0.15, 0.1, 0.2)    # spine and thorax bend and twist
AMPLITUDES[[9]] = (0.2, 0.1, 0.3)        # neck
AMPLITUDES[[8]] = (0.1, 0.1, 0.15)
AMPLITUDES[[11, 14]] = (0.8, 0.4, 0.4)   # shoulders swing the upper arms
AMPLITUDES[[12, 15]] = (0.9, 0.0, 0.3)   # elbows bend


def _rotations(angles: np.ndarray) -> np.ndarray:
    """(..., 3) Euler angles (x, y, z) -> (..., 3, 3) rotation matrices Rz Ry Rx."""
    cx, cy, cz = np.cos(angles[..., 0]), np.cos(angles[..., 1]), np.cos(angles[..., 2])
    sx, sy, sz = np.sin(angles[..., 0]), np.sin(angles[..., 1]), np.sin(angles[..., 2])
    R = np.empty(angles.shape[:-1] + (3, 3))
    R[..., 0, 0] = cz * cy
    R[..., 0, 1] = cz * sy * sx - sz * cx
    R[..., 0, 2] = cz * sy * cx + sz * sx
    R[..., 1, 0] = sz * cy
    R[..., 1, 1] = sz * sy * sx + cz * cx
    R[..., 1, 2] = sz * sy * cx - cz * sx
    R[..., 2, 0] = -sy
    R[..., 2, 1] = cy * sx
    R[..., 2, 2] = cy * cx
    return R


def _smooth_signal(rng: np.random.Generator, t: np.ndarray, shape: tuple, low_hz=0.2, high_hz=2.0, terms=3):
    """Sums of `terms` sinusoids per element, unit peak amplitude at most."""
    freq = rng.uniform(low_hz, high_hz, size=shape + (terms,))
    phase = rng.uniform(0, 2 * np.pi, size=shape + (terms,))
    weight = rng.dirichlet(np.ones(terms), size=shape)
    return np.einsum("...k,t...k->t...", weight, np.sin(2 * np.pi * freq * t.reshape((-1,) + (1,) * (len(shape) + 1))
                                                            + phase))


def procedural_motion(num_frames: int, fps: float = 50.0, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """A (num_frames, 17, 3) float32 sequence in millimetres (z-up). `scale` multiplies every bone length."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    local = AMPLITUDES * _smooth_signal(rng, t, (17, 3))                    # (T, 17, 3) radians
    heading = rng.uniform(0, 2 * np.pi) + 0.6 * _smooth_signal(rng, t, (), 0.05, 0.3)   # (T,)
    local[:, 0, 2] += heading
    speed = rng.uniform(0, 1200)                                            # mm / s along the heading
    forward = np.stack([-np.sin(heading), np.cos(heading), np.zeros_like(heading)], axis=-1)
    root_path = np.cumsum(forward * speed / fps, axis=0)
    root_path[:, 2] = 920 * scale + 30 * _smooth_signal(rng, t, (), 0.5, 2.0)  # hip height with a small bounce
    offsets = REST_OFFSETS_MM * scale
    R_local = _rotations(local)                                             # (T, 17, 3, 3)
    R_global = np.empty_like(R_local)
    positions = np.empty((num_frames, 17, 3))
    for j, parent in enumerate(H36M_PARENTS):                               # parents precede children
        if parent < 0:
            R_global[:, j], positions[:, j] = R_local[:, j], root_path
        else:
            R_global[:, j] = R_global[:, parent] @ R_local[:, j]
            positions[:, j] = positions[:, parent] + np.einsum("tab,b->ta", R_global[:, parent], offsets[j])
    return positions.astype(np.float32)
