"""Evaluation metrics of SPEC §5, in plain PyTorch.

Every metric first makes both poses root-relative (joint `root`, default 0, subtracted). Poses are
`(..., J, 3)` (`(..., T, J, 3)` for MPJVE, which differentiates along time); errors are in the poses' units, so
the standard thresholds (PCK@150, AUC over 0..150) assume millimetres.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ._checks import check_float_tensor

# The 14 joints of the MPI-INF-3DHP PCK convention in the Human3.6M 17-joint order: all but hip (0), spine (7)
# and head (10).
PCK_JOINTS_H36M = tuple(j for j in range(17) if j not in (0, 7, 10))
AUC_THRESHOLDS = tuple(range(0, 151, 5))


def _check_pair(pred: Tensor, target: Tensor, min_dims: int = 2) -> None:
    for name, x in (("pred", pred), ("target", target)):
        check_float_tensor(name, x)
        if x.dim() < min_dims or x.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (..., J, 3) with at least {min_dims} dimensions, "
                             f"got {tuple(x.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def root_relative(x: Tensor, root: int = 0) -> Tensor:
    return x - x[..., root:root + 1, :]


def joint_errors(pred: Tensor, target: Tensor, root: int = 0) -> Tensor:
    """Euclidean error of every joint, (..., J), after making both poses root-relative."""
    _check_pair(pred, target)
    return torch.linalg.vector_norm(root_relative(pred, root) - root_relative(target, root), dim=-1)


def mpjpe(pred: Tensor, target: Tensor, root: int = 0) -> Tensor:
    """Protocol 1: mean per-joint position error over joints and frames."""
    return joint_errors(pred, target, root).mean()


def procrustes_align(pred: Tensor, target: Tensor) -> Tensor:
    """pred aligned to target per pose by the similarity transform (scale, rotation, translation; no
    reflection) that minimises the squared error, over the joints of each (..., J, 3) pose."""
    _check_pair(pred, target)
    mu_p, mu_t = pred.mean(dim=-2, keepdim=True), target.mean(dim=-2, keepdim=True)
    p0, t0 = pred - mu_p, target - mu_t
    norm_p = torch.linalg.vector_norm(p0, dim=(-2, -1), keepdim=True)
    norm_t = torch.linalg.vector_norm(t0, dim=(-2, -1), keepdim=True)
    p0, t0 = p0 / norm_p, t0 / norm_t
    U, S, Vh = torch.linalg.svd(t0.transpose(-1, -2) @ p0)  # H = T0^T P0
    V = Vh.transpose(-1, -2)
    # no reflection: flip the weakest direction where the optimal orthogonal map would mirror
    sign = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    V = torch.cat([V[..., :, :2], V[..., :, 2:] * sign[..., None, None]], dim=-1)
    S = torch.cat([S[..., :2], S[..., 2:] * sign[..., None]], dim=-1)
    R = V @ U.transpose(-1, -2)  # rotation applied as p @ R
    scale = S.sum(dim=-1)[..., None, None] * norm_t / norm_p
    return scale * (pred - mu_p) @ R + mu_t


def p_mpjpe(pred: Tensor, target: Tensor, root: int = 0) -> Tensor:
    """Protocol 2: MPJPE after per-frame similarity alignment (Procrustes, no reflection)."""
    _check_pair(pred, target)
    pred, target = root_relative(pred, root), root_relative(target, root)
    return torch.linalg.vector_norm(procrustes_align(pred, target) - target, dim=-1).mean()


def mpjve(pred: Tensor, target: Tensor, root: int = 0) -> Tensor:
    """Mean per-joint velocity error: mean norm of the difference of first temporal differences; poses
    (..., T, J, 3) with T >= 2."""
    _check_pair(pred, target, min_dims=3)
    if pred.shape[-3] < 2:
        raise ValueError(f"mpjve needs at least 2 frames, got T = {pred.shape[-3]}")
    pred, target = root_relative(pred, root), root_relative(target, root)
    velocity_error = torch.diff(pred, dim=-3) - torch.diff(target, dim=-3)
    return torch.linalg.vector_norm(velocity_error, dim=-1).mean()


def pck(pred: Tensor, target: Tensor, threshold: float = 150.0, joints: Sequence[int] = PCK_JOINTS_H36M,
        root: int = 0) -> Tensor:
    """Fraction of the selected joints whose error is strictly below `threshold` (MPI-INF-3DHP convention)."""
    errors = joint_errors(pred, target, root)[..., list(joints)]
    return (errors < threshold).to(errors.dtype).mean()


def auc(pred: Tensor, target: Tensor, thresholds: Iterable[float] = AUC_THRESHOLDS,
        joints: Sequence[int] = PCK_JOINTS_H36M, root: int = 0) -> Tensor:
    """Mean PCK over `thresholds` (0, 5, ..., 150 mm by default)."""
    errors = joint_errors(pred, target, root)[..., list(joints)]
    return torch.stack([(errors < th).to(errors.dtype).mean() for th in thresholds]).mean()


def average_over_actions(per_action: Mapping[str, float]) -> float:
    """Human3.6M reporting: the metric is averaged within each action first, then over the actions."""
    if not per_action:
        raise ValueError("per_action must not be empty")
    return float(sum(per_action.values()) / len(per_action))
