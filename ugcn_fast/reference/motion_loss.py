"""Motion loss in plain PyTorch, written to read like SPEC §1 (the paper's pairwise motion encoding).

This is the oracle for every test and the "eager" row of the benchmark. It materialises every encoding,
which is exactly what the fused backends avoid.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .._options import MotionLossOptions, resolve_options


def cross(a: Tensor, b: Tensor) -> Tensor:
    """a × b over the last dimension, written out: torch.linalg.cross's CPU kernel contracts to FMA, which
    leaves x × x at the rounding error of one product instead of 0, and a static target's mu must be 0."""
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack((a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0), dim=-1)


def encode(x: Tensor, tau: int, operator: str) -> Tensor:
    """Pairwise motion encoding m[b, t, j, :] of frames (x_t, x_{t+tau}), for t = 0 .. T - tau - 1."""
    a, b = x[:, :-tau], x[:, tau:]
    if operator == "sub":
        return a - b
    if operator == "inner":
        return (a * b).sum(dim=-1, keepdim=True)
    return cross(a, b)


@torch.no_grad()
def normalisation(target: Tensor, tau: int, operator: str, normalize: str, eps: float) -> Tensor:
    """den = mu + eps * s from the target's statistics, shaped to broadcast against an encoding (B, T', J, C).

    mu: mean encoding magnitude over (t, j) for "sample", over t for "joint"; s: mean over (t, j) of
    ||G_t|| * ||G_{t+tau}||, the largest magnitude the encoding can take. An all-zero target gives den = 1.
    """
    mG = encode(target, tau, operator)
    magnitude = mG.abs()[..., 0] if operator == "inner" else torch.linalg.vector_norm(mG, dim=-1)  # (B, T', J)
    if normalize == "sample":
        mu = magnitude.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    else:
        mu = magnitude.mean(dim=1).view(magnitude.shape[0], 1, -1, 1)
    norms = torch.linalg.vector_norm(target, dim=-1)  # (B, T, J)
    s = (norms[:, :-tau] * norms[:, tau:]).mean(dim=(1, 2)).view(-1, 1, 1, 1)
    den = mu + eps * s
    return torch.where(den == 0, torch.ones_like(den), den)


def motion_loss(
    pred: Tensor,
    target: Tensor,
    intervals: Sequence[int] = (8, 12, 16, 24),
    operator: str = "cross",
    normalize: str | bool | None = "sample",
    eps: float = 0.01,
    reduction: str = "mean",
) -> Tensor:
    """L = (1 / |intervals|) * sum_tau L_tau, with L_tau the reduced |m̂P - m̂G| (SPEC §1)."""
    opts: MotionLossOptions = resolve_options(pred, target, intervals, operator, normalize, eps, reduction)
    per_interval = []
    for tau in opts.intervals:
        mP, mG = encode(pred, tau, opts.operator), encode(target, tau, opts.operator)
        if opts.normalize != "none":
            den = normalisation(target, tau, opts.operator, opts.normalize, opts.eps)
            mP, mG = mP / den, mG / den
        d = (mP - mG).abs()
        if opts.reduction == "mean":
            per_interval.append(d.mean())
        elif opts.reduction == "sum":
            per_interval.append(d.sum())
        else:
            per_interval.append(d.mean(dim=(1, 2, 3)))
    return torch.stack(per_interval).mean(dim=0)
