"""Launchers of the native CUDA passes of the fused ST-GCN block (csrc/cuda/stgcn_block.cu): the functions of the
plain-PyTorch contract ugcn_fast/backends/torch_stgcn.py, same signatures, same semantics, for CUDA tensors in
float32, float64, float16 or bfloat16. They allocate every output (statistics and BatchNorm gradients in float64)
and the reductions' float64 workspace with torch, and enqueue the kernels on the current stream of the tensors'
device.

Arguments are checked here, once: shapes, the joint count the graph aggregation serves (V <= MAX_JOINTS), then
devices and dtypes. The native module only refuses what would be memory-unsafe (sizes, null pointers, the
workspace size). Activations and per-channel vectors must share one dtype (as the orchestration,
ugcn_fast/ops/stgcn_block.py, hands them); batch statistics and BatchNorm weights are read in float64.

Also `block_output_hashed` / `block_output_backward_hashed` (the optional entry points of the backends listed in
ugcn_fast.ops.stgcn_pieces.HASHED_DROPOUT, signatures as in cpu_stgcn.py): dropout's multipliers hashed from the
seed inside the kernels (torch_stgcn.dropout_multipliers, never materialised).

Deliberate differences from the contract, all within rounding: zero entries of A are skipped (non-edges contribute
exact zeros, as in the CPU backend, so a NaN stays in its joint's neighbourhood); sums run in a fixed
(deterministic) order; `dbias_t`, `dbias_r` and `joint_sums` are evaluated in closed form from the same
reductions as the BatchNorm gradients, before rounding to the dtype, instead of summing the rounded du / dres / dz.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _native
from . import _piece_checks as checks

# Largest skeleton the graph aggregation serves (csrc/cuda/stgcn_block_cuda.h kStgcnMaxJoints; the module exports
# it as stgcn_max_joints and the tests check that the two agree).
MAX_JOINTS = 64

_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_RESIDUAL = {kind: i for i, kind in enumerate(checks.RESIDUAL_KINDS)}
_F64 = torch.float64


def _module():
    m = _native.cuda_module
    if m is None:
        raise RuntimeError(f"backend='cuda': the native module ugcn_fast._cuda is not built ({_native.cuda_import_error})")
    if not hasattr(m, "stgcn_graph_aggregate"):
        raise RuntimeError("backend='cuda': ugcn_fast._cuda predates the ST-GCN block kernels; rebuild it "
                           "(pip install . or python setup.py build_ext --inplace)")
    return m


def _launch(x: Tensor) -> tuple[int, int]:
    """(stream, device index) of the launches: the current stream of x's device ((0, 0) under the emulator)."""
    return _native.cuda_launch_context(x.device)


def _require_cuda(fn: str, x: Tensor) -> None:
    from . import _devices  # the one rule for where backend="cuda" runs (CUDA; the CPU under the emulator)

    if x.device.type != "cuda" and x.device.type not in _devices("cuda"):
        raise ValueError(f"{fn}: backend='cuda' takes CUDA tensors, got a {x.device.type} tensor")


def _check(fn: str, x: Tensor, **others: Tensor | None) -> str:
    """x on a CUDA device with a dtype the kernels serve, every other given tensor on x's device with x's dtype;
    returns the dtype's name for the module."""
    _require_cuda(fn, x)
    if x.dtype not in _DTYPES:
        raise TypeError(f"{fn}: backend='cuda' takes {tuple(_DTYPES)}, got {x.dtype}")
    checks.same_dtype(fn, x, **others)
    return _DTYPES[x.dtype]


def _check_f64(fn: str, x: Tensor, **others: Tensor | None) -> list[Tensor | None]:
    """Per-channel statistics and BatchNorm weights: on x's device, read in float64 (a no-op for the batch
    statistics, which are float64 already)."""
    checks.same_device(fn, x, **others)
    return [None if t is None else t.detach().to(_F64).contiguous() for t in others.values()]


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _stats_vectors(like: Tensor, C: int, n: int) -> list[Tensor]:
    return [torch.empty((C,), dtype=_F64, device=like.device) for _ in range(n)]


def _workspace(size: int, like: Tensor) -> Tensor:
    return torch.empty((max(int(size), 1),), dtype=_F64, device=like.device)


def graph_aggregate(src: Tensor, A: Tensor, contract: bool, transpose: bool, bias_map: Tensor | None) -> Tensor:
    """contract: src (G, V, K*C) -> (G, V, C) (+ bias_map (V, C)); expand: src (G, V, C) -> (G, V, K*C); with
    A^T when `transpose`. See torch_stgcn.graph_aggregate."""
    fn = "graph_aggregate"
    K, V, C, bias_map = checks.graph_aggregate_sizes(fn, src, A, contract, bias_map)
    if V > MAX_JOINTS:
        raise ValueError(f"{fn}: backend='cuda' aggregates skeletons of at most {MAX_JOINTS} joints, got V = {V} "
                         "(use backend='torch' or 'triton' for larger graphs)")
    G = src.shape[0]
    dtype = _check(fn, src, bias_map=bias_map)
    src, bias_map = src.contiguous(), _contiguous(bias_map)
    A = A.detach().to(src.dtype).contiguous()
    out = torch.empty((G, V, C if contract else K * C), dtype=src.dtype, device=src.device)
    _module().stgcn_graph_aggregate(dtype, _ptr(src), _ptr(A), _ptr(bias_map), _ptr(out), G, K, V, C, bool(contract),
                                    bool(transpose), *_launch(src))
    return out


def _stats(fn: str, x: Tensor, bias_map: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor]:
    C, V = checks.stats_sizes(fn, x, bias_map)
    dtype = _check(fn, x, bias_map=bias_map)
    m = _module()
    x, bias_map = x.contiguous(), _contiguous(bias_map)
    rows = x.numel() // C if C else 0
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device) if bias_map is not None else None
    total, squares = _stats_vectors(x, C, 2)
    ws = _workspace(m.stgcn_stats_workspace(rows, C), x)
    m.stgcn_channel_stats(dtype, _ptr(x), _ptr(bias_map), _ptr(y), rows, C, V, _ptr(total), _ptr(squares), _ptr(ws),
                          ws.numel(), *_launch(x))
    return y, total, squares


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """(..., C) -> per-channel (sum, sum of squares) in float64."""
    _, total, squares = _stats("channel_stats", x, None)
    return total, squares


def bias_map_stats(x: Tensor, bias_map: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x (G, V, C) + bias_map (V, C), and its channel statistics."""
    return _stats("bias_map_stats", x, bias_map)


def bn_relu_phases(z: Tensor, scale: Tensor, shift_map: Tensor, V: int, stride: int, pad: int, Tq: int) -> Tensor:
    """h = relu(z * scale[c] + shift_map[v, c]) for z (T, N*V, C), written to the phase buffer (stride, Tq, N*V, C)."""
    fn = "bn_relu_phases"
    T, NV, C, V, stride, pad, Tq = checks.bn_relu_phases_sizes(fn, z, scale, shift_map, V, stride, pad, Tq)
    dtype = _check(fn, z, scale=scale, shift_map=shift_map)
    z, scale, shift_map = z.contiguous(), scale.contiguous(), shift_map.contiguous()
    h_ph = torch.empty((stride, Tq, NV, C), dtype=z.dtype, device=z.device)
    _module().stgcn_bn_relu_phases(dtype, _ptr(z), _ptr(scale), _ptr(shift_map), _ptr(h_ph), T, NV // V, V, C, stride,
                                   pad, Tq, *_launch(z))
    return h_ph


_NO_HASH = (False, 0, 0, 1.0)


def _hashed(fn: str, seed, p, dtype: torch.dtype) -> tuple[bool, int, int, float]:
    """(hashed, seed, threshold, keep_scale) of the kernels' hashed dropout, exactly as
    torch_stgcn.dropout_multipliers: threshold round(p * 2^24), multiplier 1 / (1 - p) rounded to the dtype."""
    p, seed = checks.dropout_p(fn, p), checks.dropout_seed(fn, seed)
    return True, seed, int(p * (1 << 24) + 0.5), torch.tensor(1.0 / (1.0 - p), dtype=dtype).item()


def block_output(u: Tensor, scale2: Tensor, shift2: Tensor, mask: Tensor | None, res: Tensor | None,
                 scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    """out = relu((u * scale2 + shift2) * mask + residual) over (R, C) rows; residual = res * scale3 + shift3, res
    or 0. See torch_stgcn.block_output."""
    return _block_output("block_output", u, scale2, shift2, mask, None, res, scale3, shift3)


def block_output_hashed(u: Tensor, scale2: Tensor, shift2: Tensor, seed: int, p: float, res: Tensor | None,
                        scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    """block_output with dropout's multipliers torch_stgcn.dropout_multipliers(seed, p, R, C) hashed in the kernel."""
    return _block_output("block_output_hashed", u, scale2, shift2, None, (seed, p), res, scale3, shift3)


def _block_output(fn: str, u: Tensor, scale2: Tensor, shift2: Tensor, mask: Tensor | None, seed_p, res: Tensor | None,
                  scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    C = checks.block_output_channels(fn, u, scale2, shift2, mask, res, scale3, shift3)
    dropout = _NO_HASH if seed_p is None else _hashed(fn, *seed_p, u.dtype)
    dtype = _check(fn, u, scale2=scale2, shift2=shift2, mask=mask, res=res, scale3=scale3, shift3=shift3)
    u, scale2, shift2, mask, res, scale3, shift3 = map(_contiguous, (u, scale2, shift2, mask, res, scale3, shift3))
    out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    rows = u.numel() // C if C else 0
    _module().stgcn_block_output(dtype, _ptr(u), _ptr(scale2), _ptr(shift2), _ptr(mask), *dropout, _ptr(res),
                                 _ptr(scale3), _ptr(shift3), _ptr(out), rows, C, *_launch(u))
    return out


def block_output_backward(dout: Tensor, out: Tensor, u: Tensor, mask: Tensor | None, mean2: Tensor, invstd2: Tensor,
                          weight2: Tensor, res_kind: str, r0: Tensor | None, mean3: Tensor | None,
                          invstd3: Tensor | None, weight3: Tensor | None) -> tuple[Tensor | None, ...]:
    """Backward of block_output in training: (du, dres, dweight2, dbias2, dweight3, dbias3, dbias_t, dbias_r), as
    torch_stgcn.block_output_backward. A reduction pass, then an apply pass."""
    return _block_output_backward("block_output_backward", dout, out, u, mask, None, mean2, invstd2, weight2,
                                  res_kind, r0, mean3, invstd3, weight3)


def block_output_backward_hashed(dout: Tensor, out: Tensor, u: Tensor, seed: int, p: float, mean2: Tensor,
                                 invstd2: Tensor, weight2: Tensor, res_kind: str, r0: Tensor | None,
                                 mean3: Tensor | None, invstd3: Tensor | None, weight3: Tensor | None
                                 ) -> tuple[Tensor | None, ...]:
    """block_output_backward with the dropout multipliers block_output_hashed(..., seed, p, ...) applied."""
    return _block_output_backward("block_output_backward_hashed", dout, out, u, None, (seed, p), mean2, invstd2,
                                  weight2, res_kind, r0, mean3, invstd3, weight3)


def _block_output_backward(fn, dout, out, u, mask, seed_p, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3,
                           weight3):
    C, (r0, mean3, invstd3, weight3) = checks.block_output_backward_args(
        fn, dout, out, u, mask, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3, weight3)
    conv = res_kind == "conv"
    dropout = _NO_HASH if seed_p is None else _hashed(fn, *seed_p, u.dtype)
    dtype = _check(fn, u, dout=dout, out=out, mask=mask, r0=r0)
    mean2, invstd2, weight2, mean3, invstd3, weight3 = _check_f64(
        fn, u, mean2=mean2, invstd2=invstd2, weight2=weight2, mean3=mean3, invstd3=invstd3, weight3=weight3)
    m = _module()
    dout, out, u, mask, r0 = map(_contiguous, (dout, out, u, mask, r0))
    rows = u.numel() // C if C else 0
    du = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    dres = torch.empty(u.shape, dtype=u.dtype, device=u.device) if res_kind != "none" else None
    dweight2, dbias2, dbias_t = _stats_vectors(u, C, 3)
    dweight3, dbias3, dbias_r = _stats_vectors(u, C, 3) if conv else (None, None, None)
    ws = _workspace(m.stgcn_block_output_backward_workspace(rows, C, conv), u)
    m.stgcn_block_output_backward(
        dtype, _ptr(dout), _ptr(out), _ptr(u), _ptr(mask), *dropout, _ptr(mean2), _ptr(invstd2), _ptr(weight2),
        _RESIDUAL[res_kind], _ptr(r0), _ptr(mean3), _ptr(invstd3), _ptr(weight3), _ptr(du), _ptr(dres),
        _ptr(dweight2), _ptr(dbias2), _ptr(dweight3), _ptr(dbias3), _ptr(dbias_t), _ptr(dbias_r), rows, C, _ptr(ws),
        ws.numel(), *_launch(u))
    return du, dres, dweight2, dbias2, dweight3, dbias3, dbias_t, dbias_r


def bn_relu_phases_backward(dh_ph: Tensor, h_ph: Tensor, z: Tensor, mean1: Tensor, invstd1: Tensor, weight1: Tensor,
                            V: int, stride: int, pad: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward of bn_relu_phases in training for z (T, N*V, C): (dz, dweight1, dbias1, joint_sums (V, C)), as
    torch_stgcn.bn_relu_phases_backward. A reduction pass, then an apply pass."""
    fn = "bn_relu_phases_backward"
    T, NV, C, V, stride, pad, Tq = checks.bn_relu_phases_backward_sizes(fn, dh_ph, h_ph, z, mean1, invstd1, weight1,
                                                                         V, stride, pad)
    dtype = _check(fn, z, dh_ph=dh_ph, h_ph=h_ph)
    mean1, invstd1, weight1 = _check_f64(fn, z, mean1=mean1, invstd1=invstd1, weight1=weight1)
    m = _module()
    dh_ph, h_ph, z = dh_ph.contiguous(), h_ph.contiguous(), z.contiguous()
    N = NV // V
    dz = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    dweight1, dbias1 = _stats_vectors(z, C, 2)
    joint_sums = torch.empty((V, C), dtype=_F64, device=z.device)
    ws = _workspace(m.stgcn_bn_relu_phases_backward_workspace(T, N, V, C), z)
    m.stgcn_bn_relu_phases_backward(
        dtype, _ptr(dh_ph), _ptr(h_ph), _ptr(z), _ptr(mean1), _ptr(invstd1), _ptr(weight1), _ptr(dz), _ptr(dweight1),
        _ptr(dbias1), _ptr(joint_sums), T, N, V, C, stride, pad, Tq, _ptr(ws), ws.numel(), *_launch(z))
    return dz, dweight1, dbias1, joint_sums
