"""Triton backend of the fused ST-GCN block's passes (installed as ugcn_fast.kernels: kernels/stgcn_block.py, the
memory-bound passes; kernels/stgcn_gemm.py, the channel mixing with fused epilogues): the functions of the
plain-PyTorch contract ugcn_fast/backends/torch_stgcn.py, same signatures, same semantics. Inputs on CUDA in
float32 / float16 / bfloat16 / float64, or on the CPU under TRITON_INTERPRET=1 in float32 / float64 (the interpreter
has no bfloat16 arithmetic). Triton is imported on first use, not at import.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import Tensor

from .torch_stgcn import check_conv_frames, phase_geometry  # noqa: F401  (phase_geometry: as the contract's)


def _k():
    from ..kernels import stgcn_block  # imports triton: only when this backend runs

    return stgcn_block


def _gemm():
    from ..kernels import stgcn_gemm  # imports triton: only when this backend runs

    return stgcn_gemm


def graph_aggregate(src: Tensor, A: Tensor, contract: bool, transpose: bool, bias_map: Optional[Tensor]) -> Tensor:
    return _k().graph_aggregate(src, A, contract, transpose, bias_map)


def channel_stats(x: Tensor) -> Tuple[Tensor, Tensor]:
    return _k().channel_stats(x)


def bias_map_stats(x: Tensor, bias_map: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return _k().bias_map_stats(x, bias_map)


def bn_relu_phases(z: Tensor, scale: Tensor, shift_map: Tensor, V: int, stride: int, pad: int, Tq: int) -> Tensor:
    return _k().bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq)


def block_output(u: Tensor, scale2: Tensor, shift2: Tensor, mask: Optional[Tensor], res: Optional[Tensor],
                 scale3: Optional[Tensor], shift3: Optional[Tensor]) -> Tensor:
    return _k().block_output(u, scale2, shift2, mask, res, scale3, shift3)


def block_output_backward(dout: Tensor, out: Tensor, u: Tensor, mask: Optional[Tensor], mean2: Tensor,
                          invstd2: Tensor, weight2: Tensor, res_kind: str, r0: Optional[Tensor],
                          mean3: Optional[Tensor], invstd3: Optional[Tensor], weight3: Optional[Tensor]
                          ) -> Tuple[Optional[Tensor], ...]:
    return _k().block_output_backward(dout, out, u, mask, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3,
                                      weight3)


def bn_relu_phases_backward(dh_ph: Tensor, h_ph: Tensor, z: Tensor, mean1: Tensor, invstd1: Tensor, weight1: Tensor,
                            V: int, stride: int, pad: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _k().bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, weight1, V, stride, pad)


def gcn_forward(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return _gemm().gcn_forward(x, A, weight, bias)


def gcn_relu_phases(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor, shift_map: Tensor, stride: int, pad: int,
                    Tq: int) -> Tensor:
    return _gemm().gcn_relu_phases(x, A, weight, bias, shift_map, stride, pad, Tq)


def conv_frames(src: Tensor, weight: Tensor, bias: Optional[Tensor], frame_offsets: List[int], frame_step: int,
                T_out: int, add: Optional[Tensor], relu: bool, stats: bool, tap_spans: Optional[List[int]] = None,
                src2: Optional[Tensor] = None, weight2: Optional[Tensor] = None, frame_step2: int = 1
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """tap_spans is checked and not used: the kernel reads the padding's zeros (see torch_stgcn.conv_frames). The
    pointwise term runs as a kernel of its own whose result the main one adds (as `add`)."""
    offsets = check_conv_frames(src, weight, bias, frame_offsets, frame_step, T_out, add, tap_spans, src2, weight2,
                                frame_step2)
    if src2 is not None:
        add, _, _ = _gemm().conv_frames(src2, weight2.unsqueeze(0), None, [0], frame_step2, T_out, add, False, False)
    return _gemm().conv_frames(src, weight, bias, offsets, frame_step, T_out, add, relu, stats)
