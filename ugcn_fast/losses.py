"""nn.Module wrappers: FusedMotionLoss (drop-in motion loss) and UGCNLoss (the paper's training objective)."""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor, nn

from . import backends
from ._options import REDUCTIONS, check_config, check_pose_pair
from .ops.motion_loss import motion_loss


class FusedMotionLoss(nn.Module):
    """Motion loss of SPEC §1 on the fastest available backend. Arguments as `ugcn_fast.motion_loss`."""

    def __init__(self, intervals: Sequence[int] = (8, 12, 16, 24), operator: str = "cross",
                 normalize: str | bool | None = "sample", eps: float = 0.01, reduction: str = "mean",
                 backend: str = "auto"):
        super().__init__()
        opts = check_config(intervals, operator, normalize, eps, reduction)  # fail at construction, not in step 1
        check_backend_name(backend)
        self.intervals, self.operator, self.normalize = opts.intervals, operator, opts.normalize
        self.eps, self.reduction, self.backend = opts.eps, reduction, backend

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return motion_loss(pred, target, self.intervals, self.operator, self.normalize, self.eps, self.reduction,
                           self.backend)

    def extra_repr(self) -> str:
        return (f"intervals={self.intervals}, operator={self.operator!r}, normalize={self.normalize!r}, "
                f"eps={self.eps}, reduction={self.reduction!r}, backend={self.backend!r}")


def check_backend_name(backend) -> None:
    """A module fails at construction on a misspelt backend; whether the backend is available for the tensors it
    will see (device, dtype) can only be checked per call."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend not in backends.BACKENDS:
        raise ValueError(f"backend must be one of {backends.BACKENDS}, got {backend!r}")


POSITIONS = ("l2sq", "mpjpe")


def position_loss(pred: Tensor, target: Tensor, position: str = "l2sq", reduction: str = "mean") -> Tensor:
    """L_p: squared Euclidean joint error ("l2sq", paper eq. 5 up to a constant) or its root ("mpjpe"),
    averaged over (b, t, j) ("mean"), summed ("sum"), or averaged per sample ("none"). pred and target: (B, T,
    J, D) of one shape, dtype and device (no broadcasting)."""
    check_pose_pair(pred, target)
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    diff = pred - target
    per_joint = diff.pow(2).sum(dim=-1) if position == "l2sq" else torch.linalg.vector_norm(diff, dim=-1)
    if reduction == "mean":
        return per_joint.mean()
    if reduction == "sum":
        return per_joint.sum()
    return per_joint.mean(dim=(1, 2))


class UGCNLoss(nn.Module):
    """L = L_p + lambda_motion * L_m (SPEC §1): position loss plus the fused motion loss."""

    def __init__(self, lambda_motion: float = 1.0, position: str = "l2sq", **motion_loss_kwargs):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
        real = isinstance(lambda_motion, numbers.Real) and not isinstance(lambda_motion, bool)  # numpy scalars too
        if not real or lambda_motion != lambda_motion:
            raise ValueError(f"lambda_motion must be a real number, got {lambda_motion!r}")
        self.lambda_motion, self.position = float(lambda_motion), position
        self.motion = FusedMotionLoss(**motion_loss_kwargs)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        loss = position_loss(pred, target, self.position, self.motion.reduction)
        if self.lambda_motion != 0:
            loss = loss + self.lambda_motion * self.motion(pred, target)
        return loss

    def extra_repr(self) -> str:
        return f"lambda_motion={self.lambda_motion}, position={self.position!r}"
