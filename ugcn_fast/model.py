"""UGCN: the U-shaped graph convolutional network of SPEC §4, built from ST-GCN blocks.

    input (B, T, J, 2) -> input BatchNorm over (J x 2) channels
    down:  9 blocks, stride 2 at blocks 2, 4, 6, 8: T -> T/2 -> T/4 -> T/8 -> T/16, widths channels[0..4]
    up:    4 blocks, each followed by nearest x2 upsampling along time and the addition of the down feature of
           the same resolution
    merge: the up features of every resolution, brought to full length (nearest) and to channels[0] (1x1
           convolution), summed
    head:  an ST-GCN block at channels[0] and a 1x1 convolution to 3 channels per joint -> (B, T, J, 3)

`fused=True` (the default) builds the network from FusedSTGCNBlock (`backend` as for the block), `fused=False`
from the reference blocks; both have the same parameters and buffers, so state dicts move between them with
strict=True. The fused blocks hand each other time-major buffers without copies.

Choices where SPEC §4 is silent: the first down block has no residual (as in ST-GCN's first block); the merge
width is channels[0]; T must be a multiple of 16 (the four stride-2 stages), see `UGCN.check_length`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_float_tensor, is_int
from .fused_stgcn_block import FusedSTGCNBlock, runs_hooks
from .graph import Graph
from .reference.stgcn_block import STGCNBlock


class UGCN(nn.Module):
    def __init__(self, num_joints: int = 17, in_channels: int = 2, out_channels: int = 3,
                 channels: Sequence[int] = (16, 32, 64, 128, 256), graph: Graph | None = None,
                 kernel_size: int = 5, dropout: float = 0.5, fused: bool = True, backend: str = "auto"):
        super().__init__()
        channels = tuple(channels)
        if len(channels) != 5 or any(not is_int(c) or c < 1 for c in channels):
            raise ValueError(f"channels must be 5 positive ints (one per temporal resolution), got {channels}")
        channels = tuple(int(c) for c in channels)
        for name, value in (("num_joints", num_joints), ("in_channels", in_channels), ("out_channels", out_channels)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        num_joints, in_channels, out_channels = int(num_joints), int(in_channels), int(out_channels)
        graph = graph if graph is not None else Graph(layout="h36m")
        if graph.num_nodes != num_joints:
            raise ValueError(f"graph has {graph.num_nodes} joints but num_joints = {num_joints}")
        A = graph.A
        self.num_joints, self.in_channels, self.out_channels = num_joints, in_channels, out_channels
        # the joint order the model expects and the joints flip augmentation swaps
        # (ugcn_fast.inference.predict_sequence); None for a custom graph
        self.layout = graph.layout
        self.flip_joints = (tuple(graph.left), tuple(graph.right)) if graph.left is not None else None

        self.fused = fused

        def block(c_in, c_out, stride=1, residual=True):
            if fused:
                return FusedSTGCNBlock(c_in, c_out, A, kernel_size=kernel_size, stride=stride, dropout=dropout,
                                       residual=residual, backend=backend)
            return STGCNBlock(c_in, c_out, A, kernel_size=kernel_size, stride=stride, dropout=dropout,
                              residual=residual)

        c = channels
        self.input_bn = nn.BatchNorm1d(in_channels * num_joints)
        self.down = nn.ModuleList([
            block(in_channels, c[0], residual=False),
            block(c[0], c[1], stride=2), block(c[1], c[1]),
            block(c[1], c[2], stride=2), block(c[2], c[2]),
            block(c[2], c[3], stride=2), block(c[3], c[3]),
            block(c[3], c[4], stride=2), block(c[4], c[4]),
        ])
        self.up = nn.ModuleList([block(c[4], c[3]), block(c[3], c[2]), block(c[2], c[1]), block(c[1], c[0])])
        self.merge = nn.ModuleList([nn.Conv2d(width, c[0], kernel_size=1) for width in (c[3], c[2], c[1], c[0])])
        self.head = block(c[0], c[0])
        self.regressor = nn.Conv2d(c[0], out_channels, kernel_size=1)

    @staticmethod
    def check_length(T: int) -> None:
        if T < 16 or T % 16:
            raise ValueError(f"UGCN needs a sequence length that is a multiple of 16 (four stride-2 stages), "
                             f"got T = {T}; pad or crop the sequence (training uses 96-frame windows)")

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[2:] != (self.num_joints, self.in_channels):
            raise ValueError(f"x must have shape (B, T, {self.num_joints}, {self.in_channels}), "
                             f"got {tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        check_float_tensor("x", x)
        weight = self.input_bn.weight  # (under autocast the layers cast their inputs themselves)
        if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"x is {x.dtype} but the model's parameters are {weight.dtype}: convert one of them "
                            f"(e.g. x.to({weight.dtype}) or model.to({x.dtype}))")
        B, T, J, C = x.shape
        self.check_length(T)
        # input BatchNorm over the (J x C) channels, as ST-GCN's data_bn
        h = self.input_bn(x.permute(0, 2, 3, 1).reshape(B, J * C, T))
        h = h.view(B, J, C, T).permute(0, 2, 3, 1).contiguous()  # (B, C, T, J)
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h)
            if i % 2 == 0:  # blocks 1, 3, 5, 7, 9 end a resolution: T, T/2, T/4, T/8, T/16
                skips.append(h)
        if self.fused:
            return self._up_merge_head_time_major(h, skips, T)
        merged = 0
        for blk, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            h = F.interpolate(blk(h), scale_factor=(2, 1), mode="nearest") + skip  # f_up(t) = f(floor(t / 2))
            merged = merged + F.interpolate(merge(h), size=(T, J), mode="nearest")
        out = self.regressor(self.head(merged))  # (B, 3, T, J)
        return out.permute(0, 2, 3, 1).contiguous()

    def _up_merge_head_time_major(self, h: Tensor, skips: list, T: int) -> Tensor:
        """The up stages, merge and head of forward() on the fused blocks' time-major (T, B, J, C) buffers: the same
        operations (nearest upsampling along time is repeat_interleave, a 1x1 convolution is a linear map over the
        channels), written so every block's input is already time-major and no activation is permuted or copied
        between blocks."""
        def time_major(a: Tensor) -> Tensor:  # (B, C, T, J) view of a fused block's output -> (T, B, J, C)
            return a.permute(2, 0, 3, 1)

        def as_block_input(a_tm: Tensor) -> Tensor:
            return a_tm.permute(1, 3, 0, 2)

        def conv1x1(conv: nn.Module, a_tm: Tensor) -> Tensor:
            if _plain_pointwise(conv):
                return F.linear(a_tm, conv.weight.view(conv.out_channels, conv.in_channels), conv.bias)
            return time_major(conv(as_block_input(a_tm)))  # hooks, a replaced module: what the module says runs

        merged = 0
        for blk, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            h_tm = time_major(blk(h)).repeat_interleave(2, dim=0) + time_major(skip)  # f_up(t) = f(floor(t / 2))
            h = as_block_input(h_tm)
            merged = merged + conv1x1(merge, h_tm).repeat_interleave(T // h_tm.shape[0], dim=0)
        out_tm = conv1x1(self.regressor, time_major(self.head(as_block_input(merged))))  # (T, B, J, 3)
        return out_tm.permute(1, 0, 2, 3).contiguous()


def _plain_pointwise(conv: nn.Module) -> bool:
    """Whether `conv` is still the constructor's 1x1 nn.Conv2d with no hooks to run, so that a linear map over the
    time-major channels computes exactly what calling it would (a parametrized weight is read through the module)."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1 and not runs_hooks(conv))
