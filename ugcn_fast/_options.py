"""Argument checking for the motion loss, shared by the reference and every fused backend.

Every bad input is rejected here, in Python, with an error that names the argument, so the native and
Triton code can trust what they are told.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch

from ._checks import check_float_tensor

OPERATORS = ("sub", "inner", "cross")
NORMALIZE_MODES = ("none", "sample", "joint")
REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class MotionLossOptions:
    intervals: tuple[int, ...]
    operator: str
    normalize: str  # effective mode: always "none" for the sub operator
    eps: float
    reduction: str

    def components(self, D: int) -> int:
        """Number of encoding components C per (b, t, j)."""
        return {"sub": D, "inner": 1, "cross": 3}[self.operator]


def resolve_normalize(normalize) -> str:
    if normalize is True:
        return "sample"
    if normalize is False or normalize is None:
        return "none"
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, True, False or None, got {normalize!r}")
    return normalize


def check_intervals(intervals: Sequence[int], T: int | None = None) -> tuple[int, ...]:
    if hasattr(intervals, "tolist") and getattr(intervals, "ndim", None) == 1:  # a numpy array or a tensor
        intervals = intervals.tolist()
    if isinstance(intervals, (str, bytes)) or not isinstance(intervals, (Sequence, range)):
        if isinstance(intervals, numbers.Integral) and not isinstance(intervals, bool):
            intervals = (intervals,)
        else:
            raise TypeError(f"intervals must be a sequence of ints, got {type(intervals).__name__}")
    out = []
    for tau in intervals:
        if isinstance(tau, bool) or not isinstance(tau, numbers.Integral):
            raise TypeError(f"intervals must contain ints, got {tau!r} ({type(tau).__name__})")
        out.append(int(tau))
    if not out:
        raise ValueError("intervals must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"intervals must not repeat a value, got {tuple(out)}")
    for tau in out:
        if tau < 1 or (T is not None and tau >= T):
            bound = f"the sequence length T = {T}" if T is not None else "T"
            raise ValueError(f"intervals: every interval must satisfy 1 <= tau < T; got tau = {tau} with {bound}")
    return tuple(out)


def check_eps(eps) -> float:
    """eps as a float, a finite number >= 0. Plain comparisons only (NaN fails both): torch.compile(dynamic=True)
    traces eps as a symbolic float, which math.isnan cannot take; a SymFloat is passed on as it is."""
    if isinstance(eps, torch.SymFloat):
        return eps
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not 0 <= eps < math.inf:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def check_config(intervals, operator, normalize, eps, reduction, T: int | None = None) -> MotionLossOptions:
    """Checks the loss configuration alone (what a module can check at construction time)."""
    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
    normalize = resolve_normalize(normalize)
    eps = check_eps(eps)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return MotionLossOptions(
        intervals=check_intervals(intervals, T),
        operator=operator,
        normalize="none" if operator == "sub" else normalize,
        eps=eps,
        reduction=reduction,
    )


def resolve_options(pred, target, intervals, operator, normalize, eps, reduction) -> MotionLossOptions:
    """Checks the inputs and the configuration; returns the normalised configuration."""
    check_pose_pair(pred, target)
    B, T, J, D = pred.shape
    if operator == "cross" and D != 3:
        raise ValueError(f"operator='cross' needs D = 3 coordinates per joint; pred has D = {D}")
    if B == 0 or J == 0 or D == 0:
        raise ValueError(f"pred must not be empty, got shape {tuple(pred.shape)}")
    return check_config(intervals, operator, normalize, eps, reduction, T)


def check_pose_pair(pred, target) -> None:
    """pred and target: floating (B, T, J, D) tensors of one shape, dtype and device."""
    check_float_tensor("pred", pred, "(B, T, J, D)", ndim=4)
    check_float_tensor("target", target, "(B, T, J, D)", ndim=4)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dtype != target.dtype:
        raise TypeError(f"pred and target must have the same dtype, got {pred.dtype} and {target.dtype}")
    if pred.device != target.device:
        raise ValueError(f"pred and target must be on the same device, got {pred.device} and {target.device}")
