"""FusedSTGCNBlock: the ST-GCN block of SPEC §3 on fused kernels, a drop-in for ugcn_fast.reference.STGCNBlock.

Same constructor, parameters and buffers as the reference (it *is* one, with another forward), so state dicts move
between the two with strict=True. Exact in both modes:
- training: BatchNorm with batch statistics, running statistics updated as nn.BatchNorm2d updates them (momentum,
  or the cumulative average when momentum is None; unbiased running variance; num_batches_tracked); dropout keeps
  each element with probability 1 - p, decided by a counter-based hash of a seed drawn from torch's generator
  (torch.manual_seed reproduces the masks; `dropout_masks` below rebuilds them), so the CPU kernels never store a
  mask and the backward recomputes it. The masks differ from the reference block's bernoulli_ draws (drawing those
  alone took a fifth of a training step on the CPU);
- eval: BatchNorm folded into the convolutions (ugcn_fast/ops/stgcn_block.py).
Eval-mode calls that need gradients (autograd enabled and x or a parameter requiring grad) run the reference
block: the folded passes have no backward. Wrap inference in torch.no_grad() or torch.inference_mode().
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import backends
from .backends.torch_stgcn import dropout_multipliers
from .ops.stgcn_block import (BlockConfig, draw_dropout_seed, eval_forward, from_time_major, phase_geometry,
                              to_time_major, training_forward)
from .reference.stgcn_block import STGCNBlock, check_block_input


class FusedSTGCNBlock(STGCNBlock):
    """(N, C_in, T, V) -> (N, C_out, T_out, V). `backend`: "auto" (CPU: the native kernels; CUDA: the native CUDA
    kernels, else Triton; otherwise the reference), "reference", "torch", "cpu", "triton" or "cuda" (see
    ugcn_fast.backends). The output is a view of a time-major buffer; a following fused block reads it without a
    copy."""

    def __init__(self, in_channels: int, out_channels: int, A: Tensor, kernel_size: int = 5, stride: int = 1,
                 dropout: float = 0.0, residual: bool = True, backend: str = "auto"):
        super().__init__(in_channels, out_channels, A, kernel_size, stride, dropout, residual)
        if backend not in backends.BLOCK_BACKENDS:
            raise ValueError(f"backend must be one of {backends.BLOCK_BACKENDS}, got {backend!r}")
        self.backend = backend

    def _batch_norms(self) -> list[nn.BatchNorm2d]:
        bns = [self.tcn[0], self.tcn[3]]
        return bns + [self.residual[1]] if self.residual_kind == "conv" else bns

    def _parameters_by_name(self) -> dict[str, Tensor]:
        """named_parameters() as a dict, read from the submodules directly (the generic walk took ~60 µs a call, a
        tenth of a small batch's eval block)."""
        convs = {"gcn.conv": self.gcn.conv, "tcn.0": self.tcn[0], "tcn.2": self.tcn[2], "tcn.3": self.tcn[3]}
        if self.residual_kind == "conv":
            convs.update({"residual.0": self.residual[0], "residual.1": self.residual[1]})
        return {f"{name}.{kind}": getattr(m, kind) for name, m in convs.items() for kind in ("weight", "bias")}

    def _needs_reference(self, x: Tensor) -> bool:
        bns = self._batch_norms()
        if any(not (bn.affine and bn.track_running_stats) for bn in bns):
            return True  # a BatchNorm reconfigured after construction: only the reference follows it
        if self.training:
            return False
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def forward(self, x: Tensor) -> Tensor:
        check_block_input(x, self.A, self.in_channels)
        backend = backends.select_block(self.backend, x.device, x.dtype, x.shape[-1])
        if backend == "reference" or self._needs_reference(x):
            return super().forward(x)
        params = self._parameters_by_name()
        bns = self._batch_norms()
        eps = tuple(bn.eps for bn in bns) + (0.0,) * (3 - len(bns))
        cfg = BlockConfig(self.kernel_size, self.stride, self.residual_kind, eps, backend, float(self.tcn[4].p))
        x_tm = to_time_major(x, backend, scratch=not self.training)
        if not self.training:
            states = [{"weight": bn.weight, "bias": bn.bias, "running_mean": bn.running_mean,
                       "running_var": bn.running_var} for bn in bns]
            return from_time_major(eval_forward(x_tm, self.A, params, states, cfg))
        N, _, T, V = x.shape
        _, T_out, _ = phase_geometry(T, self.kernel_size, self.stride)
        if T * N * V < 2 or T_out * N * V < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input of shape "
                             f"{tuple(x.shape)} (BatchNorm needs batch statistics over N * T * V > 1)")
        seed = draw_dropout_seed() if cfg.dropout > 0 else None
        out, stats = training_forward(x_tm, self.A, params, seed, cfg)
        counts = [T * N * V] + [T_out * N * V] * (len(bns) - 1)
        with torch.no_grad():
            for bn, (mean, var), count in zip(bns, stats, counts):
                _update_running_stats(bn, mean, var, count)
        return from_time_major(out)


def dropout_masks(seed: Tensor, p: float, shape: tuple[int, int, int, int], dtype=torch.float32,
                  device=None) -> Tensor:
    """Dropout's multipliers (0 or 1 / (1 - p)) that a fused block's training forward applied to its (N, C_out,
    T_out, V) activation, given the seed it drew (`draw_dropout_seed`; e.g. re-seed torch and draw again)."""
    N, C, T, V = shape
    multipliers = dropout_multipliers(seed, p, T * N * V, C, dtype, device or seed.device)
    return from_time_major(multipliers.view(T, N, V, C))


def _update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """As nn.BatchNorm2d in training: running = (1 - f) running + f batch, with the unbiased batch variance and
    f = momentum, or 1 / num_batches_tracked when momentum is None."""
    bn.num_batches_tracked.add_(1)
    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    unbiased = var * (count / (count - 1))
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
