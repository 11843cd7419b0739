"""Launcher of the Triton motion loss (kernels/motion_loss.py, installed as ugcn_fast.kernels)."""
from __future__ import annotations


def forward(pred, target, opts, need_grad_pred: bool, need_grad_target: bool):
    from ..kernels import motion_loss as triton_motion_loss  # imports triton: only when this backend runs

    return triton_motion_loss.motion_loss_forward(
        pred, target, opts.intervals, opts.operator, opts.normalize, opts.eps, opts.reduction,
        need_grad_pred, need_grad_target,
    )
