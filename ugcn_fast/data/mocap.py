"""Motion-capture sequences in the format of shared/data (`{name: (T, 17, 3)}` in millimetres, world frame
z-up, plus metadata keys), and the (2D input, 3D target) pairs a lifting network trains on."""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from .camera import Camera, normalize_screen

METADATA_KEYS = ("joint_names", "parents", "fps", "units", "up_axis")
# What numpy lets escape from a damaged archive: the zip directory (BadZipFile, OSError), a member's compressed
# stream (zlib.error, EOFError: np.load reads members lazily, so these come from data[name]) or its .npy header
# (ValueError).
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_mocap(path: str | os.PathLike, num_joints: int = 17) -> dict[str, np.ndarray]:
    """{sequence name: (T, J, 3) float32 millimetres, T >= 1}; metadata keys are skipped. A missing file raises
    FileNotFoundError; a corrupt file, one that is not an .npz archive of sequences (a plain .npy array), or a
    mis-shaped or empty sequence raises a ValueError that names the file and the sequence."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"motion-capture file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        # numpy reads a file that is no numpy format as a pickle, which allow_pickle=False refuses
        why = "not a numpy file" if "pickle" in str(err) else f"{type(err).__name__}: {err}"
        raise ValueError(f"{path} is not a readable .npz file ({why})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        # a .npy file loads as one bare array: there are no sequence names to key the motions by
        raise ValueError(f"{path} is not an .npz archive of sequences (it holds a single array of shape "
                         f"{getattr(data, 'shape', None)}); save the motions with np.savez(path, name=(T, "
                         f"{num_joints}, 3) array, ...)")
    sequences = {}
    with data:
        for name in data.files:
            if name in METADATA_KEYS:
                continue
            try:
                seq = data[name]
            except _READ_ERRORS as err:
                raise ValueError(f"{path}: sequence {name!r} cannot be read (damaged archive): {err}") from err
            if seq.ndim != 3 or seq.shape[1:] != (num_joints, 3):
                raise ValueError(f"{path}: sequence {name!r} has shape {seq.shape}, expected (T, {num_joints}, 3)")
            if not np.issubdtype(seq.dtype, np.floating):
                raise ValueError(f"{path}: sequence {name!r} has dtype {seq.dtype}, expected floating point")
            if seq.shape[0] == 0:
                # refused here: training would fail much later on an empty reduction
                raise ValueError(f"{path}: sequence {name!r} has no frame (shape {seq.shape}); expected T >= 1")
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
