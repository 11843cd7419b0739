"""Motion-capture sequences in the format of shared/data (`{name: (T, 17, 3)}` in millimetres, world frame
z-up, plus metadata keys), and the (2D input, 3D target) pairs a lifting network trains on."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from .camera import Camera, normalize_screen

METADATA_KEYS = ("joint_names", "parents", "fps", "units", "up_axis")


def load_mocap(path: str | os.PathLike, num_joints: int = 17) -> dict[str, np.ndarray]:
    """{sequence name: (T, J, 3) float32 millimetres}; metadata keys are skipped. A missing, corrupt or
    mis-shaped file raises a ValueError that names the file and the sequence."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"motion-capture file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file: {err}") from err
    sequences = {}
    with data:
        for name in data.files:
            if name in METADATA_KEYS:
                continue
            try:
                seq = data[name]
            except (OSError, ValueError, zipfile.BadZipFile) as err:
                raise ValueError(f"{path}: sequence {name!r} cannot be read: {err}") from err
            if seq.ndim != 3 or seq.shape[1:] != (num_joints, 3):
                raise ValueError(f"{path}: sequence {name!r} has shape {seq.shape}, expected (T, {num_joints}, 3)")
            if not np.issubdtype(seq.dtype, np.floating):
                raise ValueError(f"{path}: sequence {name!r} has dtype {seq.dtype}, expected floating point")
            sequences[name] = seq.astype(np.float32)
    if not sequences:
        raise ValueError(f"{path} holds no motion sequence")
    return sequences


def lifting_pair(sequence_mm: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """One sequence seen by one camera -> (inputs (T, J, 2): normalised screen coordinates, targets (T, J, 3):
    camera-frame poses relative to joint 0, in metres)."""
    camera_points = camera.to_camera(sequence_mm)
    pixels = camera.project(camera_points)
    width, height = camera.size
    inputs = normalize_screen(pixels, width, height).astype(np.float32)
    targets = ((camera_points - camera_points[:, :1]) / 1000.0).astype(np.float32)
    return inputs, targets
