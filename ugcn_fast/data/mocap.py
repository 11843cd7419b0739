"""Motion-capture sequences in the format of shared/data (`{name: (T, 17, 3)}` in millimetres, world frame
z-up, plus metadata keys), and the (2D input, 3D target) pairs a lifting network trains on."""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from ..graph import H36M_PARENTS
from .camera import Camera, normalize_screen

METADATA_KEYS = ("joint_names", "parents", "fps", "units", "up_axis")
# What numpy lets escape from a damaged archive: the zip directory (BadZipFile, OSError), a member's compressed
# stream (zlib.error, EOFError: np.load reads members lazily, so these come from data[name]) or its .npy header
# (ValueError).
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


# The format's units, up axis and frame rate (shared/data/README.md): metadata saying otherwise is converted where
# that is exact (other length units; y-up turned z-up by a rotation about x, which keeps the handedness: the
# heading is arbitrary anyway) and refused otherwise (another frame rate changes what the motion loss's intervals
# mean; resample first).
_MILLIMETRES_PER_UNIT = {"mm": 1.0, "millimetre": 1.0, "millimetres": 1.0, "millimeter": 1.0, "millimeters": 1.0,
                         "cm": 10.0, "m": 1000.0, "metre": 1000.0, "metres": 1000.0, "meter": 1000.0,
                         "meters": 1000.0}
FORMAT_FPS = 50.0


def load_mocap(path: str | os.PathLike, num_joints: int = 17) -> dict[str, np.ndarray]:
    """{sequence name: (T, J, 3) float32 millimetres, world frame z-up, T >= 1}. The metadata keys, where present,
    are checked: `units` other than millimetres are converted, a y-up `up_axis` is turned z-up, and another `fps`
    (the format is 50 fps), another up axis or unit, or (for 17 joints) `parents` other than SPEC §2's joint order
    are refused. A missing file raises FileNotFoundError; a corrupt file, one that is not an .npz archive of
    sequences (a plain .npy array), or a mis-shaped or empty sequence raises a ValueError that names the file and
    the sequence."""
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
        to_format = _format_conversion(path, data, num_joints)
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
            sequences[name] = to_format(seq).astype(np.float32)
    if not sequences:
        raise ValueError(f"{path} holds no motion sequence")
    return sequences


def _metadata(path: str, data, key: str):
    """A metadata value as a Python scalar where it is one (0-d or one-element arrays; bytes decoded)."""
    try:
        value = data[key]
    except _READ_ERRORS as err:  # (also an object array, which allow_pickle=False refuses)
        raise ValueError(f"{path}: metadata {key!r} cannot be read: {err}") from err
    if value.size == 1 and key != "parents":
        value = value.reshape(()).item()
    return value.decode() if isinstance(value, bytes) else value


def _format_conversion(path: str, data, num_joints: int):
    """The map from the file's sequences to the format's millimetres, z-up, from its metadata (see above)."""
    scale, y_up = 1.0, False
    if "units" in data.files:
        units = _metadata(path, data, "units")
        scale = _MILLIMETRES_PER_UNIT.get(units.strip().lower()) if isinstance(units, str) else None
        if scale is None:
            raise ValueError(f"{path}: units {units!r} is not a length unit this loader knows (mm, cm, m)")
    if "up_axis" in data.files:
        up = _metadata(path, data, "up_axis")
        axis = up.strip().lower() if isinstance(up, str) else None
        if axis not in ("z", "y"):
            raise ValueError(f"{path}: up_axis {up!r}: the loader takes z-up (the format) or y-up motion")
        y_up = axis == "y"
    if "fps" in data.files:
        fps = _metadata(path, data, "fps")
        if not isinstance(fps, (int, float)) or fps != FORMAT_FPS:
            raise ValueError(f"{path}: fps {fps!r}: the format is {FORMAT_FPS:g} fps (the motion loss's intervals are "
                             f"counted in frames); resample the sequences to {FORMAT_FPS:g} fps first")
    if "parents" in data.files and num_joints == len(H36M_PARENTS):
        parents = np.asarray(_metadata(path, data, "parents"))
        if (parents.shape != (num_joints,) or not np.issubdtype(parents.dtype, np.number)
                or not np.array_equal(parents, np.asarray(H36M_PARENTS))):
            raise ValueError(f"{path}: parents {parents.tolist()} are not the 17-joint order of SPEC §2 "
                             f"({list(H36M_PARENTS)}): reorder the joints first")

    def to_format(seq: np.ndarray) -> np.ndarray:
        if y_up:  # (x, y, z) -> (x, -z, y): a rotation about x taking y (up) to z
            seq = np.stack([seq[..., 0], -seq[..., 2], seq[..., 1]], axis=-1)
        return seq * scale if scale != 1.0 else seq

    return to_format


def lifting_pair(sequence_mm: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """One sequence seen by one camera -> (inputs (T, J, 2): normalised screen coordinates, targets (T, J, 3):
    camera-frame poses relative to joint 0, in metres)."""
    camera_points = camera.to_camera(sequence_mm)
    pixels = camera.project(camera_points)
    width, height = camera.size
    inputs = normalize_screen(pixels, width, height).astype(np.float32)
    targets = ((camera_points - camera_points[:, :1]) / 1000.0).astype(np.float32)
    return inputs, targets
