"""Evaluation metrics of SPEC §5, in plain PyTorch.

Every metric first makes both poses root-relative (joint `root`, default 0, subtracted). Poses are
`(..., J, 3)` (`(..., T, J, 3)` for MPJVE, which differentiates along time); errors are in the poses' units, so
the standard thresholds (PCK@150, AUC over 0..150) assume millimetres.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ._checks import check_float_tensor, is_int

# The 14 joints of the MPI-INF-3DHP PCK convention in the Human3.6M 17-joint order: all but hip (0), spine (7)
# and head (10).
PCK_JOINTS_H36M = tuple(j for j in range(17) if j not in (0, 7, 10))
# Each layout's metric conventions: the root joint the poses are made relative to, and the 14 joints PCK / AUC
# count (all but hip / pelvis, spine and head). Layouts without a pelvis joint or a PCK convention (COCO-17,
# NTU-25) have none: their models are not evaluated by ugcn_fast.evaluate / train's validation.
LAYOUT_CONVENTIONS = {
    "h36m": {"root": 0, "pck_joints": PCK_JOINTS_H36M},
    "mpi_inf_3dhp": {"root": 14, "pck_joints": tuple(range(14))},  # pelvis 14, spine 15, head 16 left out
}


def layout_conventions(layout: str | None) -> dict:
    """{"root", "pck_joints"} of a model's layout (UGCN.layout). A layout without conventions, or None (a UGCN on
    a custom graph), raises ValueError."""
    if layout not in LAYOUT_CONVENTIONS:
        what = "a custom graph" if layout is None else f"the {layout!r} layout"
        raise ValueError(f"no metric conventions (root joint, PCK joints) for {what}: the metrics are defined for "
                         f"{tuple(LAYOUT_CONVENTIONS)}; call ugcn_fast.metrics with root= and joints= of your choice")
    return dict(LAYOUT_CONVENTIONS[layout])
AUC_THRESHOLDS = tuple(range(0, 151, 5))


def _check_pair(pred: Tensor, target: Tensor, min_dims: int = 2) -> None:
    for name, x in (("pred", pred), ("target", target)):
        check_float_tensor(name, x)
        if x.dim() < min_dims or x.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (..., J, 3) with at least {min_dims} dimensions, "
                             f"got {tuple(x.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def _joint_index(name: str, j, J: int) -> int:
    """j as an index into J joints, negative ones counted from the end as in Python indexing."""
    if not is_int(j):
        raise TypeError(f"{name} must be an int joint index, got {j!r}")
    if not -J <= j < J:
        raise ValueError(f"{name} = {j} is out of range for {J} joints")
    return int(j) % J


def _joint_subset(joints: Sequence[int], J: int) -> list[int]:
    joints = list(joints)
    if not joints:
        raise ValueError("joints must not be empty")
    if joints == list(PCK_JOINTS_H36M) and J != 17:
        raise ValueError(f"the default joints are the 14 PCK joints of the Human3.6M 17-joint order; the poses "
                         f"have {J} joints: pass joints=... for this skeleton")
    return [_joint_index("joints", j, J) for j in joints]


def root_relative(x: Tensor, root: int = 0) -> Tensor:
    root = _joint_index("root", root, x.shape[-2])
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
    reflection) that minimises the squared error, over the joints of each (..., J, 3) pose.

    Degenerate poses are defined, not errors: where either pose has all its joints in one point, the best scale is
    0 and the aligned pose is the target's centroid in every joint (so a collapsed target is matched exactly, and
    a collapsed prediction scores the target's spread about its centroid). A pose holding NaN or Inf aligns to
    NaN, as mpjpe would report it. Those poses are masked out of the one batched SVD of the other poses, which
    never sees a NaN or a zero norm.
    """
    _check_pair(pred, target)
    mu_p, mu_t = pred.mean(dim=-2, keepdim=True), target.mean(dim=-2, keepdim=True)
    p0, t0 = pred - mu_p, target - mu_t
    finite = torch.isfinite(p0).all(dim=(-2, -1)) & torch.isfinite(t0).all(dim=(-2, -1)) \
        & torch.isfinite(mu_t).all(dim=(-2, -1))
    # the largest |coordinate| first, then the norm of the pose divided by it (in [1, sqrt(3 J)]): a norm
    # that neither underflows for tiny poses nor overflows for huge ones; 0 exactly where a pose is collapsed
    amax_p = torch.where(finite[..., None, None], p0.abs().amax(dim=(-2, -1), keepdim=True), 0)
    amax_t = torch.where(finite[..., None, None], t0.abs().amax(dim=(-2, -1), keepdim=True), 0)
    valid = (amax_p > 0) & (amax_t > 0)  # (..., 1, 1): finite and neither pose collapsed
    one = torch.ones_like(amax_p)
    p_hat = torch.where(valid, p0, 0) / torch.where(valid, amax_p, one)
    t_hat = torch.where(valid, t0, 0) / torch.where(valid, amax_t, one)
    norm_p = torch.where(valid, torch.linalg.vector_norm(p_hat, dim=(-2, -1), keepdim=True), one)
    norm_t = torch.where(valid, torch.linalg.vector_norm(t_hat, dim=(-2, -1), keepdim=True), one)
    p_hat, t_hat = p_hat / norm_p, t_hat / norm_t  # unit Frobenius norm
    eye = torch.eye(3, dtype=p_hat.dtype, device=p_hat.device)
    H = torch.where(valid, t_hat.transpose(-1, -2) @ p_hat, eye)  # H = T0^T P0; the masked poses get I
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    # no reflection: flip the weakest direction where the optimal orthogonal map would mirror
    sign = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    V = torch.cat([V[..., :, :2], V[..., :, 2:] * sign[..., None, None]], dim=-1)
    S = torch.cat([S[..., :2], S[..., 2:] * sign[..., None]], dim=-1)
    R = V @ U.transpose(-1, -2)  # rotation applied as p @ R
    # scale * (pred - mu_p) = trace * |t0| * p_hat: |t0| / |p0| is never formed
    scale = S.sum(dim=-1)[..., None, None] * (amax_t * norm_t)
    aligned = scale * (p_hat @ R) + mu_t
    collapsed = torch.where(finite[..., None, None], mu_t, torch.nan).expand_as(aligned)
    return torch.where(valid, aligned, collapsed)


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
    errors = joint_errors(pred, target, root)
    errors = errors[..., _joint_subset(joints, errors.shape[-1])]
    return (errors < threshold).to(errors.dtype).mean()


def auc(pred: Tensor, target: Tensor, thresholds: Iterable[float] = AUC_THRESHOLDS,
        joints: Sequence[int] = PCK_JOINTS_H36M, root: int = 0) -> Tensor:
    """Mean PCK over `thresholds` (0, 5, ..., 150 mm by default)."""
    thresholds = list(thresholds)
    if not thresholds:
        raise ValueError("thresholds must not be empty")
    errors = joint_errors(pred, target, root)
    errors = errors[..., _joint_subset(joints, errors.shape[-1])]
    return torch.stack([(errors < th).to(errors.dtype).mean() for th in thresholds]).mean()


def average_over_actions(per_action: Mapping[str, float]) -> float:
    """Human3.6M reporting: the metric is averaged within each action first, then over the actions."""
    if not per_action:
        raise ValueError("per_action must not be empty")
    return float(sum(per_action.values()) / len(per_action))
