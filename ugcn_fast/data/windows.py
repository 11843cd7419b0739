"""Training windows over (2D input, 3D target) sequences, with horizontal-flip augmentation (SPEC §4)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import is_int
from ..graph import H36M_LEFT, H36M_RIGHT


def flip_pose(x: np.ndarray | torch.Tensor, left: Sequence[int] = H36M_LEFT, right: Sequence[int] = H36M_RIGHT):
    """Horizontal flip of (..., J, D) poses: negate x (coordinate 0; screen-normalised 2D inputs are centred) and
    swap the left and right joints. Its own inverse."""
    if len(left) != len(right):
        raise ValueError("left and right must list the same number of joints")
    order = flip_order(x.shape[-2], left, right)
    flipped = x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)
    flipped[..., 0] = -flipped[..., 0]
    return flipped[..., order, :]


def flip_order(num_joints: int, left: Sequence[int], right: Sequence[int]) -> list[int]:
    """The joint permutation of flip_pose (left[i] and right[i] swapped), or a ValueError where an index is out of
    range for `num_joints`."""
    order = list(range(num_joints))
    try:
        for a, b in zip(left, right):
            order[a], order[b] = b, a
    except IndexError:
        raise ValueError(f"left {list(left)} / right {list(right)} joint indices are out of range for poses of "
                         f"{num_joints} joints (the defaults are Human3.6M's 17)") from None
    return order


def window_starts(T: int, window: int, step: int, offset: int = 0) -> list[int]:
    """Starts of `window`-frame windows every `step` frames from `offset` that together cover [0, T): one more at
    0 when offset > 0, and the last one flush with the end. A sequence no longer than a window has one, at 0."""
    if T <= window:
        return [0]
    starts = list(range(offset, T - window + 1, step))
    if offset > 0:
        starts.insert(0, 0)
    if starts[-1] != T - window:
        starts.append(T - window)
    return starts


def edge_pad(x, length: int):
    """(x padded to `length` frames by repeating its first and last frames, centred, as VideoPose3D pads; the
    number of frames added before). Works on numpy arrays and tensors alike."""
    T = len(x)
    before = max(0, (length - T) // 2)
    if T >= length:
        return x, 0
    return x[np.clip(np.arange(length) - before, 0, T - 1).tolist()], before


class WindowDataset(Dataset):
    """Fixed-length windows of paired sequences, for training a lifting network.

    sequences: list of (inputs (T, J, C_in), targets (T, J, C_out)) arrays. Windows of `window` frames tile each
    sequence; `set_epoch(e)` shifts the tiling by a random offset (reproducible from `seed` and the epoch), so
    every frame is seen at every window position over training. A sequence shorter than a window is padded by
    repeating its first and last frames (and its padded frames count once). With `flip`, the dataset holds each
    window twice, plain and flipped (flip_pose on input and target). __getitem__ copies one window, never a
    whole sequence.
    """

    def __init__(self, sequences: Sequence[tuple[np.ndarray, np.ndarray]], window: int = 96, flip: bool = True,
                 seed: int = 0, left: Sequence[int] = H36M_LEFT, right: Sequence[int] = H36M_RIGHT):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        if not sequences:
            raise ValueError("sequences must not be empty")
        self.window, self.flip, self.seed, self.left, self.right = window, flip, seed, left, right
        self.sequences = []
        for k, (inputs, targets) in enumerate(sequences):
            inputs, targets = np.asarray(inputs), np.asarray(targets)
            if (inputs.ndim != 3 or targets.ndim != 3 or len(inputs) != len(targets) or len(inputs) == 0
                    or inputs.shape[1] != targets.shape[1]):
                raise ValueError(f"sequence {k}: inputs {inputs.shape} and targets {targets.shape} must be "
                                 "(T, J, C) arrays with the same T >= 1 and J")
            if flip:
                try:
                    flip_order(inputs.shape[1], left, right)
                except ValueError as error:
                    raise ValueError(f"sequence {k}: {error}; pass left= and right= or flip=False") from None
            if not (np.isfinite(inputs).all() and np.isfinite(targets).all()):
                raise ValueError(f"sequence {k} holds NaN or Inf values; clean or interpolate it first")
            self.sequences.append((edge_pad(inputs, window)[0], edge_pad(targets, window)[0]))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng((self.seed, epoch))
        self.index = []
        for k, (inputs, _) in enumerate(self.sequences):
            T = len(inputs)
            offset = int(rng.integers(0, min(self.window, T - self.window + 1)))
            self.index += [(k, s) for s in window_starts(T, self.window, self.window, offset)]

    def __len__(self) -> int:
        return len(self.index) * (2 if self.flip else 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not is_int(i) or not -n <= i < n:  # (IndexError ends a plain `for x in dataset` loop)
            raise IndexError(f"window index {i!r} out of range for {n} windows")
        flipped, i = divmod(int(i) % n, len(self.index))
        k, start = self.index[i]
        inputs, targets = self.sequences[k]
        x = torch.from_numpy(np.array(inputs[start:start + self.window], dtype=np.float32))
        y = torch.from_numpy(np.array(targets[start:start + self.window], dtype=np.float32))
        if flipped:
            x, y = flip_pose(x, self.left, self.right), flip_pose(y, self.left, self.right)
        return x, y
