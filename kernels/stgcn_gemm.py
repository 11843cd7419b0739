"""Triton kernels of the fused ST-GCN block's channel mixing (the GEMMs) with fused epilogues, and their launchers.

The executable contract is ugcn_fast/backends/torch_stgcn.py (gcn_forward, gcn_relu_phases, conv_frames): same
signatures, same semantics; ugcn_fast/backends/triton_stgcn.py delegates to the launchers here. The block's Triton
backend runs its forward channel mixing with these two kernels (ugcn_fast/ops/stgcn_block.py, pieces.FUSED_GEMMS);
the memory-bound passes around them are in kernels/stgcn_block.py, whose helpers (tl.dot precision, accumulator
dtype, shifted moments, float64 partials and their fixed-order sum) both kernels share. Layout as there:
time-major, channels-last matrices, channels contiguous.

Tiles.
- gcn_forward: one program per (chunk of whole groups, block of <= 64 output channels). For each group of its
  chunk it computes, per adjacency subset k, the 1x1 convolution Y_k = X[g] @ W_k^T + b_k as a [VP, BLOCK_C] tile
  (tl.dot over the input channels in BLOCK_I chunks; VP = V padded to a power of two >= 16, the pad joints
  masked), rounds it to the input dtype, and aggregates it over the joints in registers (Z += Mt_k @ Y_k, a
  second tl.dot), so neither Y nor the per-subset products ever reach memory. Z is stored once.
- gcn_relu_phases: the same kernel (PHASES): each group's rounded Z gets the eval epilogue relu(Z + shift_map)
  and is stored at its frame's (phase, slot) row of the phase buffer, with no statistics; the launcher zero-fills
  only the few padding slots no frame fills.
- conv_frames: a tiled GEMM, one program per [BLOCK_M rows, BLOCK_N output channels] tile of u. Output row
  m = t * R + r reads, for tap j, the source row (frame_offsets[j] + t * frame_step) * R + r of src seen as
  (F * R, C_in): the taps and the strided frames are addressing, not copies. The K loop runs over (tap, chunk of
  BLOCK_K input channels) as one flat loop (the compiler pipelines the loads of the whole sum, not of one tap's
  few chunks), accumulating in acc. The epilogue adds the bias and `add`, applies the ReLU, rounds to src's
  dtype and stores the tile.

Statistics, deterministic, no atomics. Both kernels reduce the BatchNorm statistics (sum, sum of squares per
output channel) of the values they store, as rounded: each program writes the sums of its rows to a float64
(P, 2, C_out) workspace (gcn_forward: P chunks of groups; conv_frames: P = the row tiles, a number that depends
on the shape only), and `_sum_partials` adds the P partials in a fixed order. Each program sums x - k and
(x - k)^2 about a shift k (the first stored row of its tile or chunk, 0 where that is not finite; per joint in
gcn_forward) and turns them into sum x, sum x^2 in float64 (`_moments`), so a channel with a large mean and a
small spread keeps its variance in float32.

Precision and dtypes: inputs float32 / float16 / bfloat16 (acc float32) or float64 (acc float64); float32
products in "ieee" precision (not TF32, which the contract does not have); 16-bit operands multiply in tl.dot
with a float32 accumulator; every output rounded once to the input dtype (gcn_forward also rounds Y_k, as the
contract's unfused convolution does). Only plain `triton.language` is used (no libdevice, no autotuning), so the
kernels run in Triton's interpreter (TRITON_INTERPRET=1) on CPU tensors and compile with Triton 3.6 and later.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .stgcn_block import (_LAUNCH, _MAX_BLOCK_C, _acc, _block_c, _device_of, _dot, _finite_shift, _moments, _relu,
                          _split, _store_partials, _sum_partials)

# conv_frames' tile: BLOCK_M rows x up to _GEMM_MAX_BLOCK_N output channels, the inner dimension in chunks of up to
# _GEMM_MAX_BLOCK_K. Modest on purpose: float64 tiles stay in registers and the interpreter stays quick. Every
# block is >= 16, tl.dot's minimum.
_GEMM_BLOCK_M = 64
_GEMM_MAX_BLOCK_N = 64
_GEMM_MAX_BLOCK_K = 32
# Taps conv_frames takes: its frame offsets are scalar arguments F0..F8 (no device tensor to build per call).
_MAX_TAPS = 9


def _gemm_launch(dtype: torch.dtype) -> Tuple[int, dict]:
    """(largest inner-dimension chunk, launch options) of the channel-mixing kernels in this dtype. float32 dots
    ("ieee") run on the FMA units with both operand tiles and the accumulator in registers: at 4 warps, conv_frames'
    64 x 32 @ 32 x 64 tile needs more than the 255 registers a thread has and spills (368 bytes a thread for sm_90,
    as tests/_triton_compile_check.py reports from the cubin); 8 warps and 16-deep chunks hold it in registers.
    16-bit dots run on tensor cores (a warp group of 4 warps), float64 ones only in the tests."""
    if dtype == torch.float32:
        return 16, dict(_LAUNCH, num_warps=8)
    return _GEMM_MAX_BLOCK_K, _LAUNCH


def _dot_block(n: int, largest: int) -> int:
    return max(16, min(triton.next_power_of_2(max(n, 1)), largest))


# ---- the graph convolution's forward in one kernel -----------------------------------------------------------------
@triton.jit
def _input_chunk(X, W, g, k, cin, v, vm, c, cm, V, C_in, C_out):
    """Group g's input channels cin ([VP, BLOCK_I], the pad joints and channels 0) and subset k's weights for them
    ([BLOCK_I, BLOCK_C], W_k^T's rows cin, columns c), in the input's dtype."""
    cim = cin < C_in
    x = tl.load(X + g * V * C_in + v[:, None] * C_in + cin[None, :], mask=vm[:, None] & cim[None, :], other=0.0)
    wt = tl.load(W + (k * C_out + c[None, :]) * C_in + cin[:, None], mask=cim[:, None] & cm[None, :], other=0.0)
    return x, wt.to(X.dtype.element_ty)


@triton.jit
def _gcn_forward_kernel(X, A, W, B, Z, PART, SHIFT, G, V, C_in, C_out, groups_per_program, N, stride, pad, Tq,
                        K: tl.constexpr, PHASES: tl.constexpr, AGG_FIRST: tl.constexpr, IEEE: tl.constexpr,
                        ACC: tl.constexpr, VP: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid (P, output channel blocks). For each group of the program's chunk, in registers:
    Y_k = X[g] @ W_k^T + b_k ([VP, BLOCK_C], tl.dot over C_in in BLOCK_I chunks), Z[g] = sum_k Mt_k @ Y_k
    (tl.dot, Mt_k[w, v] = A[k, v, w]); Z stored once, and PART[p] = the chunk's (sum, sum of squares) of the
    stored Z per channel (about the chunk's first group, per joint), the BatchNorm statistics epilogue.
    Y_k is rounded to the input dtype before the aggregation, as the unfused convolution's output is.
    AGG_FIRST: the narrow side is the input (its padded width below BLOCK_C): Z[g] = sum_k (Mt_k @ X[g]) @ W_k^T
    + sum_k colsum(A_k) b_k, the aggregated input (rounded to the input dtype, as the unfused graph-first path
    stores it) never leaving registers; the same products in another order.
    PHASES (eval): Z is the phase buffer (stride, Tq, N*V, C_out) instead; group g = t * N + n stores
    relu(Z[g] + SHIFT[v, c]) (Z[g] rounded first, as stored without PHASES) at group
    ((t + pad) % stride * Tq + (t + pad) // stride) * N + n, nothing when that slot is >= Tq; no statistics, PART
    untouched (SHIFT, N, stride, pad, Tq unused without PHASES)."""
    DT: tl.constexpr = X.dtype.element_ty
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C_out
    v = tl.arange(0, VP)
    vm = v < V
    ci = tl.arange(0, BLOCK_I)
    w = tl.arange(0, VP)
    m_off = v[None, :] * V + w[:, None]  # Mt_k[w, v] = A[k, v, w]
    m_mask = vm[:, None] & vm[None, :]
    vc_mask = vm[:, None] & cm[None, :]
    vc_off = v[:, None] * C_out + c[None, :]
    start = p.to(tl.int64) * groups_per_program
    n = tl.minimum(G - start, groups_per_program)
    s1 = tl.zeros([VP, BLOCK_C], dtype=ACC)
    s2 = tl.zeros([VP, BLOCK_C], dtype=ACC)
    shift = tl.zeros([VP, BLOCK_C], dtype=ACC)
    if PHASES:
        shift_map = tl.load(SHIFT + vc_off, mask=vc_mask, other=0.0).to(ACC)  # once per program
    for i in range(0, n):
        g = start + i
        acc = tl.zeros([VP, BLOCK_C], dtype=ACC)
        for k in tl.static_range(K):
            mt = tl.load(A + k * V * V + m_off, mask=m_mask, other=0.0).to(DT)
            b = tl.load(B + k * C_out + c, mask=cm, other=0.0).to(ACC)
            if AGG_FIRST:  # aggregate the input chunk, then mix its channels: acc += (Mt_k @ X_chunk) @ W_k_chunk^T
                for i0 in range(0, C_in, BLOCK_I):
                    x, wt = _input_chunk(X, W, g, k, i0 + ci, v, vm, c, cm, V, C_in, C_out)
                    xa = _dot(mt, x, tl.zeros([VP, BLOCK_I], dtype=ACC), IEEE, ACC)
                    acc = _dot(xa.to(DT), wt, acc, IEEE, ACC)
                acc += tl.sum(mt.to(ACC), axis=1)[:, None] * b[None, :]  # the bias, aggregated: colsum(A_k) b_k
            else:  # mix the channels, then aggregate: acc += Mt_k @ (X @ W_k^T + b_k)
                y = tl.zeros([VP, BLOCK_C], dtype=ACC)
                for i0 in range(0, C_in, BLOCK_I):
                    x, wt = _input_chunk(X, W, g, k, i0 + ci, v, vm, c, cm, V, C_in, C_out)
                    y = _dot(x, wt, y, IEEE, ACC)
                y += b[None, :]
                acc = _dot(mt, y.to(DT), acc, IEEE, ACC)
        z = acc.to(Z.dtype.element_ty)
        if PHASES:
            t = g // N
            tp = t + pad
            slot = tp // stride
            dst = ((tp % stride) * Tq + slot) * N + (g - t * N)
            h = _relu(z.to(ACC) + shift_map).to(Z.dtype.element_ty)
            stored = (slot + tl.zeros_like(v)) < Tq  # a block: the interpreter cannot & a scalar mask with one
            tl.store(Z + dst * V * C_out + vc_off, h, mask=vc_mask & stored[:, None])
        else:
            tl.store(Z + g * V * C_out + vc_off, z, mask=vc_mask)
            z = tl.where(vc_mask, z.to(ACC), 0.0)
            if i == 0:
                shift = _finite_shift(z)
            d = z - shift
            s1 += d
            s2 += d * d
    if not PHASES:
        total, total_sq = _moments(s1, s2, shift, n)
        _store_partials(PART, p, c, cm, C_out, 2, 0, tl.sum(total, axis=0))
        _store_partials(PART, p, c, cm, C_out, 2, 1, tl.sum(total_sq, axis=0))


def _aggregate_first(C_in: int, block_i: int, block_c: int) -> bool:
    """Whether a gcn_forward program aggregates its input rather than its output: the narrow side of its tile. It
    aggregates triton.cdiv(C_in, block_i) * block_i input channels (every program, for its own output block) or its
    block_c output channels; the channel-mixing products are the same either way."""
    return triton.cdiv(C_in, block_i) * block_i < block_c


def gcn_forward(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """See torch_stgcn.gcn_forward: the graph convolution of SPEC §3 on time-major groups with its BatchNorm
    statistics, in one kernel: x (G, V, C_in), A (K, V, V), weight (K*C_out, C_in), bias (K*C_out,) ->
    (z (G, V, C_out), sum, sum of squares (float64, per channel of z)), with
    z[g, w, c] = sum_k sum_v A[k, v, w] (x[g, v] . weight[k*C_out + c] + bias[k*C_out + c])."""
    G, V, C_in = x.shape
    K = A.shape[0]
    C_out = weight.shape[0] // K
    z = x.new_empty((G, V, C_out))
    if z.numel() == 0:
        zeros = torch.zeros(C_out, dtype=torch.float64, device=x.device)
        return z.zero_(), zeros, zeros.clone()
    x, A, weight, bias = x.contiguous(), A.contiguous(), weight.reshape(K * C_out, C_in).contiguous(), bias.contiguous()
    block_c = max(16, _block_c(C_out))
    block_i = _dot_block(C_in, _MAX_BLOCK_C)
    P, groups = _split(G, 1)
    part = torch.empty((P, 2, C_out), dtype=torch.float64, device=x.device)
    with _device_of(x):
        _gcn_forward_kernel[(P, triton.cdiv(C_out, block_c))](
            x, A, weight, bias, z, part, bias, G, V, C_in, C_out, groups, 1, 1, 0, 1, K=K, PHASES=False,
            AGG_FIRST=_aggregate_first(C_in, block_i, block_c), IEEE=x.dtype == torch.float32, ACC=_acc(x.dtype),
            VP=max(16, triton.next_power_of_2(V)),
            BLOCK_I=block_i, BLOCK_C=block_c, **_gemm_launch(x.dtype)[1])
        s, ss = _sum_partials(part, C_out, [(C_out,), (C_out,)])
    return z, s, ss


def gcn_relu_phases(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor, shift_map: Tensor, stride: int, pad: int,
                    Tq: int) -> Tensor:
    """See torch_stgcn.gcn_relu_phases: the eval block's graph convolution with B1 folded in (its scale in weight
    and bias, shift_map (V, C_out) the rest) written straight into the temporal convolution's phase buffer, in
    gcn_forward's kernel (PHASES): x (T, N, V, C_in) -> h (stride, Tq, N*V, C_out), h = relu(z + shift_map[v, c])
    of frame t at phase (t + pad) % stride, slot (t + pad) // stride (a frame past slot Tq - 1 is computed, not
    stored: none is with phase_geometry's Tq); the slots no frame fills (the zero padding, at most a leading and a
    trailing run per phase) are zero-filled here, every other element is written once by the kernel. No
    statistics."""
    T, N, V, C_in = x.shape
    K = A.shape[0]
    C_out = weight.shape[0] // K
    h = x.new_empty((stride, Tq, N * V, C_out))
    if h.numel() == 0:
        return h
    _zero_uncovered_slots(h, T, stride, pad, Tq)
    G = T * N
    if G == 0:
        return h
    x = x.reshape(T * N, V, C_in).contiguous()
    A, weight, bias = A.contiguous(), weight.reshape(K * C_out, C_in).contiguous(), bias.contiguous()
    shift_map = shift_map.reshape(V, C_out).contiguous()
    block_c = max(16, _block_c(C_out))
    block_i = _dot_block(C_in, _MAX_BLOCK_C)
    P, groups = _split(G, 1)
    with _device_of(x):
        _gcn_forward_kernel[(P, triton.cdiv(C_out, block_c))](
            x, A, weight, bias, h, h, shift_map, G, V, C_in, C_out, groups, N, stride, pad, Tq, K=K, PHASES=True,
            AGG_FIRST=_aggregate_first(C_in, block_i, block_c), IEEE=x.dtype == torch.float32, ACC=_acc(x.dtype),
            VP=max(16, triton.next_power_of_2(V)),
            BLOCK_I=block_i, BLOCK_C=block_c, **_gemm_launch(x.dtype)[1])
    return h


def _zero_uncovered_slots(h: Tensor, T: int, stride: int, pad: int, Tq: int) -> None:
    """Zeroes the slots of the phase buffer h (stride, Tq, ...) that none of the frames 0..T-1 fills: in phase q,
    frame t = slot * stride + q - pad, so the filled slots are [ceil((pad - q) / stride), (T - 1 + pad - q) // stride]
    (clipped to [0, Tq)); the rest, the zero padding, is a leading and a trailing run of slots."""
    for q in range(stride):
        first = max(0, -((q - pad) // stride))  # ceil((pad - q) / stride)
        last = min(Tq - 1, (T - 1 + pad - q) // stride)  # may be < first: no frame in this phase
        if last < first:
            h[q].zero_()
            continue
        if first > 0:
            h[q, :first].zero_()
        if last + 1 < Tq:
            h[q, last + 1:].zero_()


# ---- temporal / pointwise convolution over frames: a GEMM per tap, one epilogue ------------------------------------
@triton.jit
def _tap_first_frame(j, F0, F1, F2, F3, F4, F5, F6, F7, F8, KT: tl.constexpr):
    """frame_offsets[j] for a tap j known at run time only (the flat K loop's), from the scalar arguments."""
    first = F0
    if KT > 1:
        first = tl.where(j == 1, F1, first)
    if KT > 2:
        first = tl.where(j == 2, F2, first)
    if KT > 3:
        first = tl.where(j == 3, F3, first)
    if KT > 4:
        first = tl.where(j == 4, F4, first)
    if KT > 5:
        first = tl.where(j == 5, F5, first)
    if KT > 6:
        first = tl.where(j == 6, F6, first)
    if KT > 7:
        first = tl.where(j == 7, F7, first)
    if KT > 8:
        first = tl.where(j == 8, F8, first)
    return first


# The frame offsets change with T (through Tq): specialising on their values (== 1, multiples of 16) would compile
# a new variant for many sequence lengths, for no gain (they only shift a row index).
@triton.jit(do_not_specialize=["F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"])
def _conv_frames_kernel(SRC, W, BIAS, ADD, U, PART, M, R, C_in, C_out, frame_step, rows_per_program,
                        stride_wj, stride_wk, stride_wn,
                        F0, F1, F2, F3, F4, F5, F6, F7, F8,
                        KT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, RELU: tl.constexpr,
                        STATS: tl.constexpr, IEEE: tl.constexpr, ACC: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Grid (P, output channel tiles); program p owns the rows_per_program rows (a whole number of BLOCK_M tiles)
    from p * rows_per_program: U[m, n] = sum_j SRC[(F_j + t * frame_step) * R + r] @ W[j] (+ BIAS[n])
    (+ ADD[m, n]), relu'd if RELU, for m = t * R + r; with STATS, PART[p] = its rows' (sum, sum of squares) per
    channel of the stored U, each tile's summed about its first row and added in float64 in tile order (P is
    bounded, so the partials stay few)."""
    p = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n < C_out
    start = p.to(tl.int64) * rows_per_program
    total = tl.zeros([BLOCK_N], dtype=tl.float64)
    total_sq = tl.zeros([BLOCK_N], dtype=tl.float64)
    for tile_start in range(start, tl.minimum(start + rows_per_program, M), BLOCK_M):
        s1, s2 = _conv_frames_tile(SRC, W, BIAS, ADD, U, M, R, C_in, C_out, frame_step, stride_wj, stride_wk,
                                   stride_wn, F0, F1, F2, F3, F4, F5, F6, F7, F8, tile_start, n, nm, KT, HAS_BIAS,
                                   HAS_ADD, RELU, STATS, IEEE, ACC, BLOCK_M, BLOCK_N, BLOCK_K)
        total += s1
        total_sq += s2
    if STATS:
        _store_partials(PART, p, n, nm, C_out, 2, 0, total)
        _store_partials(PART, p, n, nm, C_out, 2, 1, total_sq)


@triton.jit
def _conv_frames_tile(SRC, W, BIAS, ADD, U, M, R, C_in, C_out, frame_step, stride_wj, stride_wk, stride_wn,
                      F0, F1, F2, F3, F4, F5, F6, F7, F8, tile_start, n, nm,
                      KT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, RELU: tl.constexpr,
                      STATS: tl.constexpr, IEEE: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One [BLOCK_M, BLOCK_N] tile of U from row tile_start; returns its float64 (sum, sum of squares) per channel
    (zeros without STATS)."""
    DT: tl.constexpr = SRC.dtype.element_ty
    m = tile_start + tl.arange(0, BLOCK_M)
    mm = m < M
    t = m // R
    r = m - t * R
    kk = tl.arange(0, BLOCK_K)
    k_chunks = tl.cdiv(C_in, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for step in range(0, KT * k_chunks):
        j = step // k_chunks
        k = (step - j * k_chunks) * BLOCK_K + kk
        km = k < C_in
        first = _tap_first_frame(j, F0, F1, F2, F3, F4, F5, F6, F7, F8, KT)
        src_row = (first + t * frame_step) * R + r
        a = tl.load(SRC + src_row[:, None] * C_in + k[None, :], mask=mm[:, None] & km[None, :], other=0.0)
        b = tl.load(W + j * stride_wj + k[:, None] * stride_wk + n[None, :] * stride_wn,
                    mask=km[:, None] & nm[None, :], other=0.0).to(DT)
        acc = _dot(a, b, acc, IEEE, ACC)
    if HAS_BIAS:
        acc += tl.load(BIAS + n, mask=nm, other=0.0).to(ACC)[None, :]
    mask = mm[:, None] & nm[None, :]
    off = m[:, None] * C_out + n[None, :]
    if HAS_ADD:
        acc += tl.load(ADD + off, mask=mask, other=0.0).to(ACC)
    if RELU:
        acc = _relu(acc)
    u = acc.to(U.dtype.element_ty)
    tl.store(U + off, u, mask=mask)
    total = tl.zeros([BLOCK_N], dtype=tl.float64)
    total_sq = tl.zeros([BLOCK_N], dtype=tl.float64)
    if STATS:
        u = u.to(ACC)
        is_first = (tl.arange(0, BLOCK_M) == 0)[:, None]
        shift = _finite_shift(tl.sum(tl.where(is_first, u, 0.0), axis=0))  # row 0 of a tile always exists (m < M)
        d = tl.where(mask, u - shift[None, :], 0.0)
        rows = tl.minimum(M - tile_start, BLOCK_M)
        total, total_sq = _moments(tl.sum(d, axis=0), tl.sum(d * d, axis=0), shift, rows)
    return total, total_sq


def conv_frames(src: Tensor, weight: Tensor, bias: Optional[Tensor], frame_offsets: List[int], frame_step: int,
                T_out: int, add: Optional[Tensor], relu: bool, stats: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """See torch_stgcn.conv_frames: src (F, R, C_in), weight (kt, C_in, C_out) (any strides: used in place when
    its input or output channels are contiguous), bias (C_out,) or None, add (T_out * R, C_out) or None ->
    (u (T_out * R, C_out) in src's dtype, per-channel float64 sum and sum of squares of u when `stats`, else two
    empty float64 tensors), u[t * R + r] = relu?(sum_j src[frame_offsets[j] + t * frame_step, r] @ weight[j]
    + bias + add[t * R + r])."""
    _, R, C_in = src.shape
    kt, _, C_out = weight.shape
    offsets = [int(o) for o in frame_offsets]  # checked by ugcn_fast.backends (torch_stgcn.check_conv_frames)
    M = T_out * R
    u = src.new_empty((M, C_out))
    if M == 0 or C_out == 0:
        n_stats = C_out if stats else 0
        zeros = torch.zeros(n_stats, dtype=torch.float64, device=src.device)
        return u.zero_(), zeros, zeros.clone()
    src, bias, add = src.contiguous(), _contiguous(bias), _contiguous(add)
    if weight.stride(1) != 1 and weight.stride(2) != 1:  # neither dimension of a tile load coalesces: copy once
        weight = weight.contiguous()
    block_n = _dot_block(C_out, _GEMM_MAX_BLOCK_N)
    max_block_k, launch = _gemm_launch(src.dtype)
    block_k = _dot_block(C_in, max_block_k)
    P, rows_per_program = _split(M, _GEMM_BLOCK_M)
    part = torch.empty((P, 2, C_out) if stats else (1, 2, 1), dtype=torch.float64, device=src.device)
    dummy = u  # stands for absent tensors; never dereferenced (constexpr flags)
    with _device_of(src):
        _conv_frames_kernel[(P, triton.cdiv(C_out, block_n))](
            src, weight, bias if bias is not None else dummy, add if add is not None else dummy, u, part, M, R,
            C_in, C_out, frame_step, rows_per_program, weight.stride(0), weight.stride(1), weight.stride(2),
            *(offsets + [0] * (_MAX_TAPS - kt)),
            KT=kt, HAS_BIAS=bias is not None, HAS_ADD=add is not None, RELU=bool(relu), STATS=bool(stats),
            IEEE=src.dtype == torch.float32, ACC=_acc(src.dtype), BLOCK_M=_GEMM_BLOCK_M, BLOCK_N=block_n,
            BLOCK_K=block_k, **launch)
        if not stats:
            empty = torch.empty(0, dtype=torch.float64, device=src.device)
            return u, empty, empty.clone()
        s, ss = _sum_partials(part, C_out, [(C_out,), (C_out,)])
    return u, s, ss


def _contiguous(x: Optional[Tensor]) -> Optional[Tensor]:
    return None if x is None else x.contiguous()
