"""Launcher of the native CPU motion loss (csrc/cpu): allocates outputs, passes pointers, sizes and strides."""
from __future__ import annotations

import torch

from .. import _native
from ._packing import kernel_arguments, sample_packed


def forward(pred, target, opts, need_grad_pred: bool, need_grad_target: bool, *, gather: bool = False):
    """gather=True runs the CUDA kernel's per-frame-joint code on the CPU (a test of the GPU's math)."""
    pred, target = sample_packed(pred), sample_packed(target)
    B, _, J, _ = pred.shape
    den = pred.new_empty((B, len(opts.intervals), J))
    loss = pred.new_empty((B,))
    grad_pred = torch.empty(pred.shape, dtype=pred.dtype) if need_grad_pred else None
    grad_target = torch.empty(pred.shape, dtype=pred.dtype) if need_grad_target else None
    kernel = _native.cpu_module.motion_loss_forward_gather if gather else _native.cpu_module.motion_loss_forward
    kernel(*kernel_arguments(pred, target, opts, den, loss, grad_pred, grad_target), torch.get_num_threads())
    return loss, grad_pred, grad_target
