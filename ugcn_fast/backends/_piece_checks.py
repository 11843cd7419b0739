"""Argument checks of the block's memory-bound pieces, shared by the native launchers (cpu_stgcn.py, cuda_stgcn.py):
the shapes, sizes and flags the contract (torch_stgcn.py) implies, and that every tensor lives with the activations.
The launchers add their own device and dtype rules, then pass contiguous tensors: a native pass reads exactly the
sizes these checks return, so a tensor that does not match is an error that names it, never an out-of-bounds read.
(The pieces are torch.library ops: anyone can call them, and a saved-tensor hook can hand the backward tensors
of any layout.)"""
from __future__ import annotations

from torch import Tensor

RESIDUAL_KINDS = ("none", "identity", "conv")


def expect_shape(fn: str, name: str, t: Tensor | None, shape: tuple[int, ...]) -> None:
    if t is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def expect_dim(fn: str, name: str, t: Tensor, dim: int, layout: str) -> None:
    if t.dim() != dim:
        raise ValueError(f"{fn}: {name} must be {layout}, got shape {tuple(t.shape)}")


def same_device(fn: str, x: Tensor, **others: Tensor | None) -> None:
    for name, t in others.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{fn}: {name} is on {t.device}, expected {x.device}")


def same_dtype(fn: str, x: Tensor, **others: Tensor | None) -> None:
    """Every given tensor on x's device with x's dtype (the activations' and per-channel vectors' rule)."""
    same_device(fn, x, **others)
    for name, t in others.items():
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{fn}: {name} has dtype {t.dtype}, expected {x.dtype} (the dtype of the activations)")


def graph_aggregate_sizes(fn: str, src: Tensor, A: Tensor, contract: bool, bias_map: Tensor | None
                          ) -> tuple[int, int, int, Tensor | None]:
    """-> (K, V, C, bias_map) for src (G, V, K*C) when contracting (bias_map (V, C) or None), src (G, V, C) when
    expanding (bias_map ignored: None)."""
    if A.dim() != 3 or A.shape[1] != A.shape[2] or A.shape[0] < 1:
        raise ValueError(f"{fn}: A must be (K, V, V) with K >= 1, got shape {tuple(A.shape)}")
    K, V, _ = A.shape
    expect_dim(fn, "src", src, 3, f"(G, V={V}, channels)")
    _, V_src, width = src.shape
    if V_src != V:
        raise ValueError(f"{fn}: src has V = {V_src} joints but A is for V = {V}")
    if contract and width % K:
        raise ValueError(f"{fn}: contracting src needs K * C channels with K = {K}, got {width}")
    C = width // K if contract else width
    bias_map = bias_map if contract else None  # the contract adds bias_map only when contracting
    expect_shape(fn, "bias_map", bias_map, (V, C))
    same_device(fn, src, A=A)
    return K, V, C, bias_map


def stats_sizes(fn: str, x: Tensor, bias_map: Tensor | None) -> tuple[int, int]:
    """-> (C, V) for x (..., C), or x (G, V, C) with bias_map (V, C)."""
    if x.dim() == 0:
        raise ValueError(f"{fn}: x must have a channel dimension, got a 0-d tensor")
    C, V = x.shape[-1], 1
    if bias_map is not None:
        expect_dim(fn, "x", x, 3, "(G, V, C)")
        V = x.shape[1]
        expect_shape(fn, "bias_map", bias_map, (V, C))
    return C, V


def _phase_sizes(fn: str, z: Tensor, V, stride, pad) -> tuple[int, int, int, int, int, int]:
    expect_dim(fn, "z", z, 3, "(T, N*V, C)")
    T, NV, C = z.shape
    V, stride, pad = int(V), int(stride), int(pad)
    if V < 1 or NV % V:
        raise ValueError(f"{fn}: z's {NV} rows per frame must be a multiple of V = {V}")
    if stride < 1 or pad < 0:
        raise ValueError(f"{fn}: need stride >= 1 and pad >= 0, got stride={stride}, pad={pad}")
    return T, NV, C, V, stride, pad


def bn_relu_phases_sizes(fn: str, z: Tensor, scale: Tensor, shift_map: Tensor, V, stride, pad, Tq
                         ) -> tuple[int, int, int, int, int, int, int]:
    """-> (T, N*V, C, V, stride, pad, Tq) for z (T, N*V, C), scale (C,), shift_map (V, C)."""
    T, NV, C, V, stride, pad = _phase_sizes(fn, z, V, stride, pad)
    Tq = int(Tq)
    if Tq < 0:
        raise ValueError(f"{fn}: need Tq >= 0, got Tq={Tq}")
    expect_shape(fn, "scale", scale, (C,))
    expect_shape(fn, "shift_map", shift_map, (V, C))
    return T, NV, C, V, stride, pad, Tq


def bn_relu_phases_backward_sizes(fn: str, dh_ph: Tensor, h_ph: Tensor, z: Tensor, mean1: Tensor, invstd1: Tensor,
                                  weight1: Tensor, V, stride, pad) -> tuple[int, int, int, int, int, int, int]:
    """-> (T, N*V, C, V, stride, pad, Tq) for z (T, N*V, C), h_ph and dh_ph (stride, Tq, N*V, C), the per-channel
    vectors (C,)."""
    T, NV, C, V, stride, pad = _phase_sizes(fn, z, V, stride, pad)
    expect_dim(fn, "h_ph", h_ph, 4, "(stride, Tq, N*V, C)")
    Tq = h_ph.shape[1]
    expect_shape(fn, "h_ph", h_ph, (stride, Tq, NV, C))
    expect_shape(fn, "dh_ph", dh_ph, (stride, Tq, NV, C))
    for name, t in (("mean1", mean1), ("invstd1", invstd1), ("weight1", weight1)):
        expect_shape(fn, name, t, (C,))
    same_device(fn, z, mean1=mean1, invstd1=invstd1, weight1=weight1)
    return T, NV, C, V, stride, pad, Tq


def dropout_p(fn: str, p) -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{fn}: p must be in [0, 1), got {p}")
    return p


def dropout_seed(fn: str, seed) -> int:
    seed = int(seed)
    if not -(1 << 63) <= seed < (1 << 63):
        raise ValueError(f"{fn}: seed must fit in int64, got {seed}")
    return seed


def block_output_channels(fn: str, u: Tensor, scale2: Tensor, shift2: Tensor, mask: Tensor | None,
                          res: Tensor | None, scale3: Tensor | None, shift3: Tensor | None) -> int:
    """-> C for u (..., C), mask and res u's shape, the per-channel vectors (C,)."""
    if u.dim() == 0:
        raise ValueError(f"{fn}: u must have a channel dimension, got a 0-d tensor")
    C = u.shape[-1]
    if (scale3 is None) != (shift3 is None) or (scale3 is not None and res is None):
        raise ValueError(f"{fn}: scale3 and shift3 come together, and only with res (the convolution residual)")
    for name, t in (("scale2", scale2), ("shift2", shift2), ("scale3", scale3), ("shift3", shift3)):
        expect_shape(fn, name, t, (C,))
    for name, t in (("mask", mask), ("res", res)):
        expect_shape(fn, name, t, tuple(u.shape))
    return C


def block_output_backward_args(fn: str, dout: Tensor, out: Tensor, u: Tensor, mask: Tensor | None, mean2: Tensor,
                               invstd2: Tensor, weight2: Tensor, res_kind: str, r0, mean3, invstd3, weight3
                               ) -> tuple[int, tuple]:
    """-> (C, (r0, mean3, invstd3, weight3)), the residual's tensors None unless res_kind is "conv"."""
    if res_kind not in RESIDUAL_KINDS:
        raise ValueError(f"{fn}: res_kind must be one of {RESIDUAL_KINDS}, got {res_kind!r}")
    conv = res_kind == "conv"
    if u.dim() == 0:
        raise ValueError(f"{fn}: u must have a channel dimension, got a 0-d tensor")
    C = u.shape[-1]
    if conv and any(t is None for t in (r0, mean3, invstd3, weight3)):
        raise ValueError(f"{fn}: res_kind='conv' needs r0, mean3, invstd3 and weight3")
    if not conv:
        r0 = mean3 = invstd3 = weight3 = None
    for name, t in (("dout", dout), ("out", out), ("mask", mask), ("r0", r0)):
        expect_shape(fn, name, t, tuple(u.shape))
    vectors = dict(mean2=mean2, invstd2=invstd2, weight2=weight2, mean3=mean3, invstd3=invstd3, weight3=weight3)
    for name, t in vectors.items():
        expect_shape(fn, name, t, (C,))
    same_device(fn, u, **vectors)
    return C, (r0, mean3, invstd3, weight3)
