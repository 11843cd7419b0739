"""Launchers of the native CPU passes of the fused ST-GCN block (csrc/cpu/stgcn_block.cpp): same functions and
semantics as ugcn_fast.backends.torch_stgcn; they allocate outputs and pass pointers, sizes and the thread count.
The memory-bound pieces check their arguments (_piece_checks.py, as the CUDA launchers do) and read contiguous
copies of what is not contiguous (a no-op for what the orchestration, ugcn_fast/ops/stgcn_block.py, hands them)."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _native
from . import _piece_checks as checks
from . import _scratch, torch_stgcn

_RESIDUAL = {kind: i for i, kind in enumerate(checks.RESIDUAL_KINDS)}
_DTYPES = (torch.float32, torch.float64)
_GCN_ORDER = {"auto": 0, "aggregate_first": 1, "gemm_first": 2}


def _module():
    return _native.cpu_module


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _check(fn: str, x: Tensor, **others: Tensor | None) -> None:
    """x a CPU tensor of a dtype the kernels serve, every other given tensor on the CPU with x's dtype."""
    if x.device.type != "cpu":
        raise ValueError(f"{fn}: backend='cpu' takes CPU tensors, got a {x.device.type} tensor")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{fn}: backend='cpu' takes {_DTYPES}, got {x.dtype}")
    checks.same_dtype(fn, x, **others)


def _contiguous(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.contiguous() for t in tensors]


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float64).contiguous()


def _rows(sums: Tensor) -> list[Tensor]:
    """The rows of a (k, C) sums buffer as separate tensors (op outputs must not alias each other)."""
    return [row.clone() for row in sums]


def _threads() -> int:
    return torch.get_num_threads()


def graph_aggregate(src: Tensor, A: Tensor, contract: bool, transpose: bool, bias_map: Tensor | None) -> Tensor:
    fn = "graph_aggregate"
    K, V, C, bias_map = checks.graph_aggregate_sizes(fn, src, A, contract, bias_map)
    _check(fn, src, bias_map=bias_map)
    G = src.shape[0]
    M = _f64(A.transpose(1, 2) if transpose else A)
    out = src.new_empty((G, V, C if contract else K * C))
    src, bias_map = _contiguous(src, bias_map)
    _module().stgcn_graph_aggregate(_dtype(src), _ptr(src), _ptr(M), _ptr(bias_map), _ptr(out), G, V, K, C, contract,
                                    _threads())
    return out


def _result(like: Tensor, shape: tuple[int, ...], scratch: str | None) -> Tensor:
    """A launcher's output: fresh, or (`scratch`: a slot name) this thread's reused buffer of that slot
    (backends/_scratch.py: only for what the caller drops before it returns)."""
    return like.new_empty(shape) if scratch is None else _scratch.buffer(scratch, shape, like.dtype)


def time_major(x: Tensor, scratch: str | None = None) -> Tensor:
    """See torch_stgcn.time_major: one native transposing pass over a contiguous x. `scratch`: see _result."""
    if x.dim() != 4:
        raise ValueError(f"time_major: x must be (N, C, T, V), got shape {tuple(x.shape)}")
    N, C, T, V = x.shape
    if x.numel() == 0 or not x.is_contiguous():
        return torch_stgcn.time_major(x)
    out = _result(x, (T, N, V, C), scratch)
    _module().stgcn_to_time_major(_dtype(x), _ptr(x), _ptr(out), N, C, T, V, _threads())
    return out


def _stats(fn: str, x: Tensor, bias_map: Tensor | None) -> tuple[Tensor | None, Tensor]:
    C, V = checks.stats_sizes(fn, x, bias_map)
    _check(fn, x, bias_map=bias_map)
    x, bias_map = _contiguous(x, bias_map)
    rows = x.numel() // C if C else 0
    sums = torch.empty((2, C), dtype=torch.float64)
    y = torch.empty_like(x) if bias_map is not None else None
    _module().stgcn_channel_stats(_dtype(x), _ptr(x), rows, C, _ptr(bias_map), V, _ptr(y), _ptr(sums), _threads())
    return y, sums


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    _, sums = _stats("channel_stats", x, None)
    return tuple(_rows(sums))


def bias_map_stats(x: Tensor, bias_map: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    y, sums = _stats("bias_map_stats", x, bias_map)
    return (y, *_rows(sums))


def bn_relu_phases(z: Tensor, scale: Tensor, shift_map: Tensor, V: int, stride: int, pad: int, Tq: int) -> Tensor:
    fn = "bn_relu_phases"
    T, rows, C, V, stride, pad, Tq = checks.bn_relu_phases_sizes(fn, z, scale, shift_map, V, stride, pad, Tq)
    _check(fn, z, scale=scale, shift_map=shift_map)
    h_ph = z.new_empty((stride, Tq, rows, C))
    z, scale, shift_map = _contiguous(z, scale, shift_map)
    _module().stgcn_bn_relu_phases(_dtype(z), _ptr(z), _ptr(scale), _ptr(shift_map), _ptr(h_ph), T, rows, C, V,
                                   stride, pad, Tq, _threads())
    return h_ph


def block_output(u: Tensor, scale2: Tensor, shift2: Tensor, mask: Tensor | None, res: Tensor | None,
                 scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    C = _block_output_args("block_output", u, scale2, shift2, mask, res, scale3, shift3)
    u, scale2, shift2, mask, res, scale3, shift3 = _contiguous(u, scale2, shift2, mask, res, scale3, shift3)
    rows = u.numel() // C if C else 0
    out = torch.empty_like(u)
    _module().stgcn_block_output(_dtype(u), rows, C, _ptr(u), _ptr(scale2), _ptr(shift2), _ptr(mask), False, 0, 0.0,
                                 _ptr(res), _ptr(scale3), _ptr(shift3), _ptr(out), _threads())
    return out


def block_output_hashed(u: Tensor, scale2: Tensor, shift2: Tensor, seed: int, p: float, res: Tensor | None,
                        scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    """block_output with dropout's multipliers hashed from `seed` in the kernel (torch_stgcn.dropout_multipliers),
    never stored."""
    fn = "block_output_hashed"
    C = _block_output_args(fn, u, scale2, shift2, None, res, scale3, shift3)
    seed, p = checks.dropout_seed(fn, seed), checks.dropout_p(fn, p)
    u, scale2, shift2, res, scale3, shift3 = _contiguous(u, scale2, shift2, res, scale3, shift3)
    rows = u.numel() // C if C else 0
    out = torch.empty_like(u)
    _module().stgcn_block_output(_dtype(u), rows, C, _ptr(u), _ptr(scale2), _ptr(shift2), 0, True, seed, p, _ptr(res),
                                 _ptr(scale3), _ptr(shift3), _ptr(out), _threads())
    return out


def _block_output_args(fn: str, u: Tensor, scale2: Tensor, shift2: Tensor, mask: Tensor | None, res: Tensor | None,
                       scale3: Tensor | None, shift3: Tensor | None) -> int:
    C = checks.block_output_channels(fn, u, scale2, shift2, mask, res, scale3, shift3)
    _check(fn, u, scale2=scale2, shift2=shift2, mask=mask, res=res, scale3=scale3, shift3=shift3)
    return C


def block_output_backward(dout: Tensor, out: Tensor, u: Tensor, mask: Tensor | None, mean2: Tensor, invstd2: Tensor,
                          weight2: Tensor, res_kind: str, r0: Tensor | None, mean3: Tensor | None,
                          invstd3: Tensor | None, weight3: Tensor | None) -> tuple[Tensor | None, ...]:
    return _block_output_backward("block_output_backward", dout, out, u, (mask, False, 0, 0.0), mean2, invstd2,
                                  weight2, res_kind, r0, mean3, invstd3, weight3)


def block_output_backward_hashed(dout: Tensor, out: Tensor, u: Tensor, seed: int, p: float, mean2: Tensor,
                                 invstd2: Tensor, weight2: Tensor, res_kind: str, r0: Tensor | None,
                                 mean3: Tensor | None, invstd3: Tensor | None, weight3: Tensor | None
                                 ) -> tuple[Tensor | None, ...]:
    fn = "block_output_backward_hashed"
    seed, p = checks.dropout_seed(fn, seed), checks.dropout_p(fn, p)
    return _block_output_backward(fn, dout, out, u, (None, True, seed, p), mean2, invstd2, weight2, res_kind, r0,
                                  mean3, invstd3, weight3)


def _block_output_backward(fn, dout, out, u, dropout, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3,
                           weight3):
    mask, hashed, seed, p = dropout
    C, (r0, mean3, invstd3, weight3) = checks.block_output_backward_args(
        fn, dout, out, u, mask, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3, weight3)
    _check(fn, u, dout=dout, out=out, mask=mask, r0=r0)
    dout, out, u, mask, r0 = _contiguous(dout, out, u, mask, r0)
    rows = u.numel() // C if C else 0
    du = torch.empty_like(u)
    dres = torch.empty_like(u) if res_kind != "none" else None
    sums = torch.empty((6, C), dtype=torch.float64)
    mean2, invstd2, weight2, mean3, invstd3, weight3 = map(_f64, (mean2, invstd2, weight2, mean3, invstd3, weight3))
    _module().stgcn_block_output_backward(
        _dtype(u), rows, C, _ptr(dout), _ptr(out), _ptr(u), _ptr(mask), hashed, seed, p, _ptr(mean2), _ptr(invstd2),
        _ptr(weight2),
        _RESIDUAL[res_kind], _ptr(r0), _ptr(mean3), _ptr(invstd3), _ptr(weight3), _ptr(du), _ptr(dres), _ptr(sums),
        _threads())
    conv = res_kind == "conv"
    dw2, db2, dw3, db3, db_t, db_r = _rows(sums)
    return du, dres, dw2, db2, dw3 if conv else None, db3 if conv else None, db_t, db_r if conv else None


def bn_relu_phases_backward(dh_ph: Tensor, h_ph: Tensor, z: Tensor, mean1: Tensor, invstd1: Tensor, weight1: Tensor,
                            V: int, stride: int, pad: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    fn = "bn_relu_phases_backward"
    T, rows, C, V, stride, pad, Tq = checks.bn_relu_phases_backward_sizes(fn, dh_ph, h_ph, z, mean1, invstd1, weight1,
                                                                          V, stride, pad)
    _check(fn, z, dh_ph=dh_ph, h_ph=h_ph)
    dh_ph, h_ph, z = _contiguous(dh_ph, h_ph, z)
    dz = torch.empty_like(z)
    sums = torch.empty((2, C), dtype=torch.float64)
    joint_sums = torch.empty((V, C), dtype=torch.float64)
    mean1, invstd1, weight1 = map(_f64, (mean1, invstd1, weight1))
    _module().stgcn_bn_relu_phases_backward(
        _dtype(z), _ptr(dh_ph), _ptr(h_ph), _ptr(z), _ptr(mean1), _ptr(invstd1), _ptr(weight1), _ptr(dz), _ptr(sums),
        _ptr(joint_sums), T, rows, C, V, stride, pad, Tq, _threads())
    return (dz, *_rows(sums), joint_sums)


# ---- channel mixing with fused epilogues (csrc/cpu/stgcn_gemm.cpp) -------------------------------------------------
def _same_dtype(ref: Tensor, *others: Tensor | None) -> None:
    for t in others:
        if t is not None and t.dtype != ref.dtype:
            raise ValueError(f"every tensor must have the input's dtype {ref.dtype}, got {t.dtype}")


def gcn_forward(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """See torch_stgcn.gcn_forward: x (G, V, C_in), A (K, V, V), weight (K*C_out, C_in), bias (K*C_out,) ->
    (z (G, V, C_out), sum, sum of squares), in one native pass (the 1x1 convolution, the sparse aggregation over
    the joints and the statistics, group by group)."""
    return gcn_forward_ordered(x, A, weight, bias, "auto")


def gcn_forward_ordered(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor, order: str
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """gcn_forward with the side to aggregate forced: "aggregate_first" (xa = A-aggregated x, then one GEMM with
    the bias map), "gemm_first" (the 1x1 convolution, then the aggregation; the contract's order) or "auto"
    (aggregate first when the input has fewer SIMD vectors of channels than the output, e.g. 16 -> 32)."""
    G, V, _ = x.shape
    K, C_out = _gcn_sizes("gcn_forward", x.shape, A, weight, bias)
    if min(G, V, K, C_out) == 0:  # nothing for the native pass to do: the contract's empty results
        return torch_stgcn.gcn_forward(x, A, weight, bias)
    x, weight, bias, A64 = _gcn_native_operands(x, A, weight, bias)
    z = x.new_empty((G, V, C_out))
    sums = torch.empty((2, C_out), dtype=torch.float64)
    _module().stgcn_gcn_forward(_dtype(x), _ptr(x), _ptr(A64), _ptr(weight), _ptr(bias), _ptr(z), _ptr(sums),
                                G, V, K, x.shape[-1], C_out, _GCN_ORDER[order], _threads())
    return (z, *_rows(sums))


def gcn_relu_phases(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor, shift_map: Tensor, stride: int, pad: int,
                    Tq: int, order: str = "auto", scratch: str | None = None) -> Tensor:
    """See torch_stgcn.gcn_relu_phases: gcn_forward's native pass with an eval epilogue (+ shift_map, ReLU, each
    group's rows stored at their frame's place in the phase buffer; no statistics). `order` as gcn_forward_ordered,
    `scratch` as _result."""
    T, N, V, _ = x.shape
    K, C_out = _gcn_sizes("gcn_relu_phases", x.shape, A, weight, bias, shift_map)
    if stride < 1 or pad < 0 or Tq < 1:
        raise ValueError(f"gcn_relu_phases: need stride >= 1, pad >= 0, Tq >= 1, got {stride}, {pad}, {Tq}")
    if min(T, N, V, K, C_out) == 0:  # nothing for the native pass to do: the contract's results
        return torch_stgcn.gcn_relu_phases(x, A, weight, bias, shift_map, stride, pad, Tq)
    _same_dtype(x, shift_map)
    x, weight, bias, A64 = _gcn_native_operands(x, A, weight, bias)
    shift_map = shift_map.contiguous()
    h = _result(x, (stride, Tq, N * V, C_out), scratch)
    _module().stgcn_gcn_relu_phases(_dtype(x), _ptr(x), _ptr(A64), _ptr(weight), _ptr(bias), _ptr(shift_map), _ptr(h),
                                    T, N, V, K, x.shape[-1], C_out, stride, pad, Tq, _GCN_ORDER[order], _threads())
    return h


def _gcn_sizes(what: str, x_shape: tuple, A: Tensor, weight: Tensor, bias: Tensor, shift_map: Tensor | None = None
               ) -> tuple[int, int]:
    """(K, C_out) of a graph convolution on x (..., V, C_in); ValueError naming the shapes when they disagree."""
    V, C_in = x_shape[-2:]
    K, KC = A.shape[0], weight.shape[0]
    C_out = KC // K if K else 0
    if (A.shape != (K, V, V) or KC % max(K, 1) != 0 or weight.shape != (KC, C_in) or bias.shape != (KC,)
            or (shift_map is not None and shift_map.shape != (V, C_out))):
        shift = f", shift_map {tuple(shift_map.shape)}" if shift_map is not None else ""
        raise ValueError(f"{what}: shapes x {tuple(x_shape)}, A {tuple(A.shape)}, weight {tuple(weight.shape)}, "
                         f"bias {tuple(bias.shape)}{shift} do not match")
    return K, C_out


def _gcn_native_operands(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x, weight, bias contiguous in one dtype and A in float64 (kept alive by the caller: the kernel gets its
    pointer); no input channel becomes one zero channel, whose 1x1 convolution is exactly its bias."""
    _same_dtype(x, weight, bias)
    if x.shape[-1] == 0:
        x, weight = x.new_zeros((*x.shape[:-1], 1)), weight.new_zeros((weight.shape[0], 1))
    return x.contiguous(), weight.contiguous(), bias.contiguous(), _f64(A)


def conv_frames(src: Tensor, weight: Tensor, bias: Tensor | None, frame_offsets: list[int], frame_step: int,
                T_out: int, add: Tensor | None, relu: bool, stats: bool, tap_spans: list[int] | None = None,
                src2: Tensor | None = None, weight2: Tensor | None = None, frame_step2: int = 1,
                scratch: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """See torch_stgcn.conv_frames: u[t*R + r] = relu?(sum_j src[frame_offsets[j] + t*frame_step, r] @ weight[j]
    + bias + add[t*R + r]) over src (F, R, C_in), weight (kt, C_in, C_out) (any strides: copied once into the
    contiguous layout the kernel packs from), with the per-channel statistics of u when `stats`; a row tile skips
    the taps `tap_spans` says read only zeros for its frames; the pointwise term (src2, weight2) is summed in the
    same accumulators. `scratch`: see _result."""
    offsets = torch_stgcn.check_conv_frames(src, weight, bias, frame_offsets, frame_step, T_out, add, tap_spans,
                                            src2, weight2, frame_step2)
    F, R, C_in = src.shape
    C_out = weight.shape[2]
    M = T_out * R
    if M == 0 or C_out == 0 or C_in == 0:  # nothing for the native pass to do: the contract's results
        return torch_stgcn.conv_frames(src, weight, bias, offsets, frame_step, T_out, add, relu, stats, None, src2,
                                       weight2, frame_step2)
    _same_dtype(src, weight, bias, add, src2, weight2)
    src, weight = src.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    add = None if add is None else add.contiguous()
    if src2 is not None and src2.shape[2] == 0:  # a term over no channels adds nothing
        src2 = weight2 = None
    src2 = None if src2 is None else src2.contiguous()
    weight2 = None if weight2 is None else weight2.contiguous()
    u = _result(src, (M, C_out), scratch)
    sums = torch.empty((2, C_out), dtype=torch.float64) if stats else None
    spans = [int(v) for v in tap_spans or ()]
    F2, _, C_in2 = src2.shape if src2 is not None else (0, 0, 0)
    _module().stgcn_conv_frames(_dtype(src), _ptr(src), _ptr(weight), _ptr(bias), _ptr(add), _ptr(u), _ptr(sums), F,
                                R, C_in, C_out, T_out, frame_step, offsets, spans, _ptr(src2), _ptr(weight2), F2,
                                C_in2, frame_step2, bool(relu), _threads())
    if sums is None:
        empty = torch.empty(0, dtype=torch.float64)
        return u, empty, empty.clone()
    return (u, *_rows(sums))


# ---- packed weights: built once, reused by a frozen eval block (csrc/cpu/stgcn_gemm.h) ------------------------------
def pack_gcn_relu_phases(A: Tensor, weight: Tensor, bias: Tensor, shift_map: Tensor, order: str = "auto"):
    """gcn_relu_phases' weights packed once (an opaque _C.PackedWeights that owns copies of everything it needs):
    for gcn_relu_phases_packed."""
    K, C_out = _gcn_sizes("pack_gcn_relu_phases", (A.shape[-1], weight.shape[-1]), A, weight, bias, shift_map)
    _same_dtype(weight, bias, shift_map)
    weight, bias, shift_map, A64 = weight.contiguous(), bias.contiguous(), shift_map.contiguous(), _f64(A)
    return _module().stgcn_pack_gcn_relu_phases(_dtype(weight), _ptr(A64), _ptr(weight), _ptr(bias), _ptr(shift_map),
                                                A.shape[-1], K, weight.shape[1], C_out, _GCN_ORDER[order])


def pack_eval_block(A: Tensor, params: dict, batch_norms: list[dict], eps: tuple, kernel_size: int,
                    residual_conv: bool) -> tuple | None:
    """The eval block's operands folded (every BatchNorm into its convolution) and packed for gcn_relu_phases_packed
    and conv_frames_packed in one native call, from the parameters as the block holds them (`params` by their state
    dict names, `batch_norms` the weight, bias, running_mean and running_var of tcn.0, tcn.3 and, with the
    convolution residual, residual.1): the operands of fold_eval_weights, bitwise, without its ~35 tensor
    operations a block (~0.3 ms, most of a small batch's eval call). -> (graph, temporal), or None where the
    native call does not apply (a tensor of another dtype, a zero size): the caller folds in torch then."""
    names = ["gcn.conv.weight", "gcn.conv.bias", "tcn.2.weight", "tcn.2.bias"]
    if residual_conv:
        names += ["residual.0.weight", "residual.0.bias"]
    tensors = [params[k] for k in names] + [bn[k] for bn in batch_norms
                                              for k in ("weight", "bias", "running_mean", "running_var")]
    dtype = tensors[0].dtype
    if dtype not in _DTYPES or any(t.dtype != dtype or t.device.type != "cpu" for t in tensors):
        return None
    K, V = A.shape[0], A.shape[-1]
    C_out, C_in = tensors[2].shape[0], tensors[0].shape[1]
    shapes = [(K * C_out, C_in, 1, 1), (K * C_out,), (C_out, C_out, kernel_size, 1), (C_out,)]
    shapes += [(C_out, C_in, 1, 1), (C_out,)] if residual_conv else []
    shapes += [(C_out,)] * (4 * len(batch_norms))
    if C_in == 0 or C_out == 0 or [t.shape for t in tensors] != shapes:
        return None
    # (a block's parameters are contiguous: no copies; this Python is ~1/3 of a 16-channel block's packing)
    tensors = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    A64 = _f64(A.to(dtype))  # A's values rounded to the dtype, as the unpacked path's
    ptrs = [t.data_ptr() for t in tensors]
    weights = ptrs[:6] if residual_conv else ptrs[:4] + [0, 0]
    bns = [ptrs[len(names) + 4 * i: len(names) + 4 * i + 4] for i in range(len(batch_norms))]
    return _module().stgcn_pack_eval_block(_dtype(tensors[0]), A64.data_ptr(), *weights, bns, list(eps), V, K, C_in,
                                           C_out, kernel_size, _GCN_ORDER["auto"], _threads())


def gcn_relu_phases_packed(x: Tensor, packed, stride: int, pad: int, Tq: int, scratch: str | None = None) -> Tensor:
    """gcn_relu_phases(x, ...) with the weights of `packed` (pack_gcn_relu_phases), x (T, N, V, C_in) contiguous in
    the packed dtype. `scratch` as _result."""
    T, N, V, C_in = x.shape
    V_packed, _, C_in_packed, C_out = packed.sizes
    if _dtype(x) != packed.dtype or (V, C_in) != (V_packed, C_in_packed) or not x.is_contiguous():
        raise ValueError(f"gcn_relu_phases_packed: x {tuple(x.shape)} {x.dtype} (contiguous: {x.is_contiguous()}) "
                         f"does not match weights packed for V = {V_packed}, C_in = {C_in_packed}, {packed.dtype}")
    h = _result(x, (stride, Tq, N * V, C_out), scratch)
    _module().stgcn_gcn_relu_phases_packed(packed, _ptr(x), _ptr(h), T, N, V, C_in, C_out, stride, pad, Tq,
                                           _threads())
    return h


def pack_conv_frames(weight: Tensor, bias: Tensor | None, weight2: Tensor | None = None):
    """conv_frames' weights packed once: weight (kt, C_in, C_out), bias (C_out,) or None, the pointwise term's
    weight2 (C_in2, C_out) or None; for conv_frames_packed."""
    kt, C_in, C_out = weight.shape
    _same_dtype(weight, bias, weight2)
    if (bias is not None and bias.shape != (C_out,)) or (weight2 is not None and weight2.shape[1:] != (C_out,)):
        raise ValueError(f"pack_conv_frames: weight {tuple(weight.shape)}, bias {getattr(bias, 'shape', None)}, "
                         f"weight2 {getattr(weight2, 'shape', None)} do not match")
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    weight2 = None if weight2 is None else weight2.contiguous()
    C_in2 = 0 if weight2 is None else weight2.shape[0]
    return _module().stgcn_pack_conv_frames(_dtype(weight), _ptr(weight), _ptr(bias), kt, C_in, C_out, _ptr(weight2),
                                            C_in2)


def conv_frames_packed(src: Tensor, packed, frame_offsets: list[int], frame_step: int, T_out: int, add: Tensor | None,
                       relu: bool, tap_spans: list[int] | None = None, src2: Tensor | None = None,
                       frame_step2: int = 1, scratch: str | None = None) -> Tensor:
    """conv_frames(src, weight, bias, ...) without statistics, with the weights of `packed` (pack_conv_frames);
    src2 is the pointwise term's source when the weights hold one. Tensors contiguous in the packed dtype."""
    kt, C_in, C_out, C_in2 = packed.sizes
    if (src2 is None) != (C_in2 == 0):
        raise ValueError("conv_frames_packed: src2 must be given exactly when the packed weights hold a pointwise term")
    offsets = torch_stgcn.check_conv_frames_shapes(
        tuple(src.shape), (kt, C_in, C_out), None, frame_offsets, frame_step, T_out,
        None if add is None else add.numel(), tap_spans, None if src2 is None else tuple(src2.shape), (C_in2, C_out),
        frame_step2)
    for name, t in (("src", src), ("add", add), ("src2", src2)):
        if t is not None and (_dtype(t) != packed.dtype or not t.is_contiguous()):
            raise ValueError(f"conv_frames_packed: {name} must be contiguous {packed.dtype}, got {t.dtype}")
    F, R, _ = src.shape
    u = _result(src, (T_out * R, C_out), scratch)
    F2 = src2.shape[0] if src2 is not None else 0
    _module().stgcn_conv_frames_packed(packed, _ptr(src), _ptr(add), _ptr(u), 0, F, R, C_in, C_out, T_out, frame_step,
                                       offsets, [int(v) for v in tap_spans or ()], _ptr(src2), F2, C_in2, frame_step2,
                                       bool(relu), _threads())
    return u
