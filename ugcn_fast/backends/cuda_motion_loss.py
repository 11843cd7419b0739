"""Launcher of the native CUDA motion loss (csrc/cuda): pointers, sizes, strides and the current stream."""
from __future__ import annotations

import torch

from .. import _native
from ._packing import kernel_arguments, sample_packed


def forward(pred, target, opts, need_grad_pred: bool, need_grad_target: bool):
    pred, target = sample_packed(pred), sample_packed(target)
    B, _, J, _ = pred.shape
    acc_dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    den = torch.empty((B, len(opts.intervals), J), dtype=acc_dtype, device=pred.device)
    loss = torch.empty((B,), dtype=acc_dtype, device=pred.device)
    # unit gradients in acc_dtype: before grad_output multiplies them they are below float16's normal range
    grad_pred = torch.empty(pred.shape, dtype=acc_dtype, device=pred.device) if need_grad_pred else None
    grad_target = torch.empty(pred.shape, dtype=acc_dtype, device=pred.device) if need_grad_target else None
    _native.cuda_module.motion_loss_forward(
        *kernel_arguments(pred, target, opts, den, loss, grad_pred, grad_target),
        *_native.cuda_launch_context(pred.device),
    )
    return loss, grad_pred, grad_target
