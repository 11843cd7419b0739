"""One entry point for every source of (2D input, 3D target) training sequences: procedural motion, motion-capture
files in the format of shared/data, and VideoPose3D's Human3.6M files.

Every source gives `LiftingSequence`s: one motion seen by one camera, with inputs in VideoPose3D's normalised
screen coordinates and targets in metres, camera frame, relative to joint 0. Procedural and motion-capture motion
is filmed by virtual cameras (Human3.6M intrinsics, several azimuths, heights and distances); Human3.6M uses its
four real cameras.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np

from .camera import Camera, look_at
from .h36m import action_name, is_h36m_3d, load_h36m
from .mocap import lifting_pair, load_mocap
from .procedural import procedural_motion

SPLITS = ("train", "test", "all")
# Every source gives its joints in this layout's order (ugcn_fast.graph.LAYOUTS).
SOURCE_LAYOUT = "h36m"

# Small defaults: a few minutes of training on 2 CPU cores. Each motion is filmed by CAMERAS_PER_MOTION cameras.
PROCEDURAL_DEFAULT_SEQUENCES = {"train": 16, "test": 4}
PROCEDURAL_DEFAULT_FRAMES = 256
CAMERAS_PER_MOTION = 4

# Virtual camera placement (millimetres, relative to the centre of the subject's path): Human3.6M's cameras
# stand 4-6 m from the capture area's centre, roughly 0.5 m above the hips, looking slightly down.
CAMERA_HEIGHTS_MM = (0.0, 1000.0)
CAMERA_DISTANCES_MM = (3500.0, 6000.0)
# A camera that would see part of the motion outside its image (or behind it) steps back by this factor until
# the whole sequence is in view.
CAMERA_BACK_OFF = 1.15

# A motion-capture file's test split holds one sequence in MOCAP_TEST_EVERY (at least one).
MOCAP_TEST_EVERY = 5


@dataclass
class LiftingSequence:
    """One motion seen by one camera.

    name: unique, identifies the motion and the camera (e.g. "S9/Walking 1/54138969", "CMU_01_01/cam2");
    action: what metrics average over (Human3.6M: the action without its take number; otherwise the motion's
    name); inputs: (T, J, 2) float32 normalised screen coordinates (x / w * 2 - [1, h / w]); targets: (T, J, 3)
    float32 camera frame, metres, joint 0 at the origin.
    """

    name: str
    action: str
    inputs: np.ndarray
    targets: np.ndarray

    def __post_init__(self):
        self.inputs = np.asarray(self.inputs, dtype=np.float32)
        self.targets = np.asarray(self.targets, dtype=np.float32)
        if self.inputs.ndim != 3 or self.inputs.shape[-1] != 2 or len(self.inputs) == 0:
            raise ValueError(f"{self.name}: inputs must have shape (T, J, 2) with T >= 1, got {self.inputs.shape}")
        if self.targets.shape != self.inputs.shape[:2] + (3,):
            raise ValueError(f"{self.name}: targets must have shape {self.inputs.shape[:2] + (3,)} (T, J, 3) to "
                             f"match the inputs, got {self.targets.shape}")

    @property
    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), the form `WindowDataset` takes."""
        return self.inputs, self.targets

    def __len__(self) -> int:
        return len(self.inputs)


def check_source_layout(layout: str, what: str) -> None:
    """A model's graph must follow its data's joint order: one built on another layout than the sources' would
    aggregate (and flip) the wrong joints without a sign. `what` names the setting in the error."""
    if layout != SOURCE_LAYOUT:
        raise ValueError(f"{what} is {layout!r}, but the data sources give joints in {SOURCE_LAYOUT!r} order "
                         f"(ugcn_fast.data.sources); a {layout!r} graph needs sequences in its own joint order, "
                         "given from Python")


def load_sequences(source: str | os.PathLike = "procedural", split: str = "train", *, h36m_2d: str | None = None,
                   seed: int = 0, num_sequences: int | None = None,
                   frames: int | None = None) -> list[LiftingSequence]:
    """Lifting sequences from `source`:

    - "procedural": `procedural_motion` sequences (the "train" and "test" splits use disjoint seeds derived from
      `seed`), `num_sequences` motions (default 16 for train, 4 for test) of `frames` frames (default 256);
    - a motion-capture .npz in the format of shared/data: the sequences split deterministically by name (the
      "test" split holds about one in five, at least one); `num_sequences` keeps the first motions of the split
      (in name order), `frames` crops each to its first frames;
    - VideoPose3D's `data_3d_h36m.npz`: train subjects S1 S5 S6 S7 S8, test S9 S11; 2D inputs from `h36m_2d`
      (a `data_2d_h36m_*.npz`) or, when None, the 3D ground truth projected with the published cameras;
      `num_sequences` keeps the first (subject, action) recordings, `frames` crops.

    Each motion is seen from several cameras (virtual ones for procedural and motion-capture motion, placed by
    `seed`; Human3.6M's four real ones, `seed` unused), one LiftingSequence per camera. `split` is "train",
    "test" or "all". Bad arguments raise ValueError / TypeError, a missing file FileNotFoundError, an unreadable
    or mis-shaped file a ValueError that names it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    _check_optional_count("num_sequences", num_sequences)
    _check_optional_count("frames", frames)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be 'procedural' or a path, got {type(source).__name__}")
    if source == "procedural":
        if h36m_2d is not None:
            raise ValueError("h36m_2d is only used with a Human3.6M data_3d_h36m.npz source, not 'procedural'")
        return _procedural(split, int(seed), num_sequences, frames)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data source not found: {path} (source must be 'procedural' or an existing .npz)")
    if is_h36m_3d(path):
        return _h36m(path, h36m_2d, split, num_sequences, frames)
    if h36m_2d is not None:
        raise ValueError(f"h36m_2d is only used with a Human3.6M data_3d_h36m.npz source; {path} has no "
                         "'positions_3d' key")
    return _mocap(path, split, int(seed), num_sequences, frames)


def _check_optional_count(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")


def _view_cameras(rng: np.random.Generator, sequence_mm: np.ndarray,
                  count: int = CAMERAS_PER_MOTION) -> list[Camera]:
    """`count` cameras around a sequence, evenly spread in azimuth from a random start, with random heights and
    distances; each stepped back as far as needed for the whole sequence to stay inside its image."""
    root = sequence_mm[:, 0].astype(np.float64)
    centre = (root.min(axis=0) + root.max(axis=0)) / 2
    centre[2] = root[:, 2].mean()
    start = rng.uniform(0.0, 360.0)
    cameras = []
    for k in range(count):
        azimuth = start + 360.0 * k / count + rng.uniform(-20.0, 20.0)
        height, distance = rng.uniform(*CAMERA_HEIGHTS_MM), rng.uniform(*CAMERA_DISTANCES_MM)
        camera = look_at(centre, azimuth, height, distance)
        for _ in range(100):   # 1.15 ** 100: a million times farther; finite motion fits long before
            if _in_view(camera, sequence_mm):
                break
            distance *= CAMERA_BACK_OFF
            camera = look_at(centre, azimuth, height, distance)
        cameras.append(camera)
    return cameras


def _in_view(camera: Camera, sequence_mm: np.ndarray) -> bool:
    points = camera.to_camera(sequence_mm)
    if np.any(points[..., 2] < 1000.0):   # at least a metre in front: no joint close to or behind the lens
        return False
    pixels = camera.project(points)
    return bool(np.all((pixels >= 0) & (pixels <= np.asarray(camera.size))))


def _filmed(name: str, action: str, sequence_mm: np.ndarray, rng: np.random.Generator,
            source: str = "data") -> list[LiftingSequence]:
    if not np.isfinite(sequence_mm).all():
        raise ValueError(f"{source}: sequence {name!r} holds NaN or Inf positions")
    out = []
    for k, camera in enumerate(_view_cameras(rng, sequence_mm)):
        inputs, targets = lifting_pair(sequence_mm, camera)
        out.append(LiftingSequence(f"{name}/cam{k}", action, inputs, targets))
    return out


def _procedural(split: str, seed: int, num_sequences: int | None, frames: int | None) -> list[LiftingSequence]:
    if split == "all":
        return (_procedural("train", seed, num_sequences, frames)
                + _procedural("test", seed, num_sequences, frames))
    count = PROCEDURAL_DEFAULT_SEQUENCES[split] if num_sequences is None else int(num_sequences)
    length = PROCEDURAL_DEFAULT_FRAMES if frames is None else int(frames)
    split_id = SPLITS.index(split)
    out = []
    for k in range(count):
        # Seeds from (seed, split, k): train and test never share a motion, and adding sequences keeps the others.
        motion_seed = int(np.random.SeedSequence([seed, split_id, k]).generate_state(1)[0])
        name = f"procedural-{split}-{seed}-{k:03d}"
        motion = procedural_motion(length, seed=motion_seed)
        out += _filmed(name, name, motion, np.random.default_rng([seed, split_id, k, 1]))
    return out


def _stable_key(name: str) -> int:
    """A hash of a sequence name that is the same in every process (Python's hash() is salted)."""
    return zlib.crc32(name.encode("utf-8"))


def mocap_split(names, split: str) -> list[str]:
    """The names of a motion-capture file's `split`, in name order: "test" holds about one sequence in five (at
    least one), picked by a stable hash of the name, so adding a sequence rarely moves the others."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names = sorted(names)
    if split == "all":
        return names
    num_test = max(1, round(len(names) / MOCAP_TEST_EVERY))
    test = set(sorted(names, key=lambda n: (_stable_key(n), n))[:num_test])
    return [n for n in names if (n in test) == (split == "test")]


def _mocap(path: str, split: str, seed: int, num_sequences: int | None,
           frames: int | None) -> list[LiftingSequence]:
    sequences = load_mocap(path)
    names = mocap_split(sequences, split)
    if not names:
        raise ValueError(f"{path} holds {len(sequences)} sequence(s): too few for a {split!r} split (the test "
                         "split takes at least one, training needs one more); load_sequences(..., split='all') "
                         "reads them all")
    names = names[:num_sequences]
    out = []
    for name in names:
        motion = sequences[name][:frames]
        # The cameras depend on the name, not on the split, so a sequence is filmed the same way in "all".
        out += _filmed(name, name, motion, np.random.default_rng([seed, _stable_key(name)]), path)
    return out


def _h36m(path: str, h36m_2d: str | None, split: str, num_sequences: int | None,
          frames: int | None) -> list[LiftingSequence]:
    views = load_h36m(path, h36m_2d, split)
    recordings = list(dict.fromkeys((v.subject, v.action) for v in views))   # in file order, deduplicated
    kept = set(recordings[:num_sequences])
    return [LiftingSequence(f"{v.subject}/{v.action}/{v.camera_id}", action_name(v.action),
                            v.inputs[:frames], v.targets[:frames])
            for v in views if (v.subject, v.action) in kept]
