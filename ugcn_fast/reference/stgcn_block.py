"""The ST-GCN block in plain PyTorch, exactly SPEC §3, with the parameter names of the common ST-GCN block so
its state dicts load with strict=True:

    gcn(x)   = einsum('nkctv,kvw->nctw', conv1x1(x).view(N, K, C_out, T, V), A)
    block(x) = ReLU( Dropout( BN2( Conv_t( ReLU( BN1( gcn(x) ) ) ) ) ) + res(x) )
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_float_tensor, is_int, is_real


class GraphConvolution(nn.Module):
    """gcn(x): a 1x1 convolution to K * C_out channels, then aggregation over the K adjacency subsets."""

    def __init__(self, in_channels: int, out_channels: int, num_subsets: int):
        super().__init__()
        self.num_subsets, self.out_channels = num_subsets, out_channels
        self.conv = nn.Conv2d(in_channels, out_channels * num_subsets, kernel_size=1)

    def forward(self, x: Tensor, A: Tensor) -> Tensor:
        N, _, T, V = x.shape
        y = self.conv(x).view(N, self.num_subsets, self.out_channels, T, V)
        return torch.einsum("nkctv,kvw->nctw", y, A)


def check_block_config(in_channels, out_channels, A, kernel_size, stride, dropout,
                       residual) -> tuple[int, int, int, int, float]:
    """The constructor's arguments checked -> (in_channels, out_channels, kernel_size, stride) as Python ints and
    dropout as a float (numpy scalars are accepted)."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride),
                        ("kernel_size", kernel_size)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (symmetric zero padding), got {kernel_size}")
    if not isinstance(A, Tensor) or A.dim() != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"A must be a (K, V, V) tensor, got {getattr(A, 'shape', type(A).__name__)}")
    if A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"A must hold at least one subset of at least one joint, got shape {tuple(A.shape)}")
    if not A.dtype.is_floating_point:
        raise TypeError(f"A must be floating point, got {A.dtype}")
    if not (is_real(dropout) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    return int(in_channels), int(out_channels), int(kernel_size), int(stride), float(dropout)


def check_block_input(x, A: Tensor, in_channels: int) -> None:
    check_float_tensor("x", x, "(N, C_in, T, V)", ndim=4)
    if x.shape[1] != in_channels:
        raise ValueError(f"x has {x.shape[1]} channels, the block expects C_in = {in_channels}")
    if x.shape[3] != A.shape[-1]:
        raise ValueError(f"x has V = {x.shape[3]} joints but A is for V = {A.shape[-1]}")
    if x.device != A.device:
        raise ValueError(f"A is on {A.device} but x is on {x.device}: move the module with .to(device)")


class STGCNBlock(nn.Module):
    """Spatial graph convolution + temporal convolution (SPEC §3). Input (N, C_in, T, V) -> (N, C_out, T_out, V),
    T_out = floor((T + 2p - kernel_size) / stride) + 1, p = (kernel_size - 1) / 2."""

    def __init__(self, in_channels: int, out_channels: int, A: Tensor, kernel_size: int = 5, stride: int = 1,
                 dropout: float = 0.0, residual: bool = True):
        super().__init__()
        in_channels, out_channels, kernel_size, stride, dropout = check_block_config(
            in_channels, out_channels, A, kernel_size, stride, dropout, residual)
        self.in_channels, self.out_channels, self.kernel_size, self.stride = in_channels, out_channels, kernel_size, stride
        padding = (kernel_size - 1) // 2
        self.register_buffer("A", A.detach().clone().float(), persistent=False)
        self.gcn = GraphConvolution(in_channels, out_channels, A.shape[0])
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (kernel_size, 1), (stride, 1), (padding, 0)),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True),
        )
        if not residual:
            self.residual_kind = "none"
        elif in_channels == out_channels and stride == 1:
            self.residual_kind = "identity"
        else:
            self.residual_kind = "conv"
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        check_block_input(x, self.A, self.in_channels)
        if self.residual_kind == "none":
            res = 0
        elif self.residual_kind == "identity":
            res = x
        else:
            res = self.residual(x)
        y = self.tcn(self.gcn(x, self.A.to(x.dtype)))
        return self.relu(y + res)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"residual={self.residual_kind!r}, K={self.A.shape[0]}, V={self.A.shape[-1]}")
