"""Triton kernels of the fused ST-GCN block's memory-bound passes, and their launchers.

The executable contract is ugcn_fast/backends/torch_stgcn.py: every launcher here has the signature and the
semantics of the function of the same name there (ugcn_fast/backends/triton_stgcn.py only re-exports them).
Layout as in ugcn_fast/ops/stgcn_block.py: time-major, channels-last matrices, rows (t, n, v), channels
contiguous; a "group" is the V rows of one (t, n); the temporal convolution's input is the phase buffer
h_ph (s, Tq, N*V, C), padded frame tp = t + pad in phase tp % s at slot tp // s.

Tiles. Every kernel works on tiles of channels (BLOCK_C, <= 64) and rows: plain row tiles [BLOCK_R, BLOCK_C] for the
passes that do not care about joints, [BLOCK_G, VP, BLOCK_C] tiles of whole groups (VP = V rounded up to a power
of two, the pad lanes masked) where a joint index is needed (bias map, shift map, joint sums, phase buffer).

Reductions, deterministic, no atomics. A reduction pass runs on a grid (P, channel blocks); program p owns a
fixed contiguous chunk of rows (P depends on the shape only, never on the device), accumulates its chunk in
`acc` tiles (float32; float64 for float64 inputs) and writes its partial sums in float64 to a (P, NSTAT, L)
workspace. `_sum_partials_kernel` then adds the P partials in a fixed order into the float64 results (one tensor
per statistic: a custom op's outputs must not alias each other). The BatchNorm statistics (sum, sum of squares)
are accumulated about a per-program shift (the chunk's first row; per joint with a bias map): each program sums
x - k and (x - k)^2 and turns them into sum x and sum x^2 in float64, so a channel with a large mean and a small
spread loses nothing to float32's cancellation in sum x^2 (the var = E[x^2] - mean^2 of the orchestration is
then as good as the contract's float64 sums).

Two-pass backward (block_output_backward, bn_relu_phases_backward): pass 1 reads every input once and reduces
the BatchNorm sums; pass 2 reads every input once more and writes the gradients, and the sums the orchestration
needs of them (bias gradients, joint sums) as partials. The per-channel coefficients of BatchNorm's backward are
computed in the apply kernels from the float64 sums (in float64, then cast to acc), so there is no host math.

Precision and dtypes: inputs float32 / float16 / bfloat16 (acc float32) or float64 (acc float64); 16-bit values
are converted to float32 before any arithmetic; outputs rounded once to the input dtype (and, as in the contract,
the dropout-masked gradient before BN2's backward). Only plain
`triton.language` is used (no libdevice, no autotuning), so the kernels run in Triton's interpreter
(TRITON_INTERPRET=1) on CPU tensors and compile with Triton 3.6 and later.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

# Elements of one loaded tile: the passes hold 2 to 6 such tiles (and as many accumulators) per program.
_TILE_ELEMS = 2048
# Widest channel block; wider channel counts take several programs along grid axis 1.
_MAX_BLOCK_C = 64
# Programs along the rows of a reduction pass (per channel block): enough to fill a GPU, few enough that the
# (P, NSTAT, C) float64 partials stay small. Depends on the shape only, so results are the same on every device.
_MAX_ROW_PROGRAMS = 256
# Columns (groups x channels) of one graph-aggregation tile: the N of its tl.dot.
_DOT_COLS = 64
# Partials summed per step of _sum_partials_kernel.
_BLOCK_P = 32
# Launch options of every kernel. FMA contraction stays on (Triton's default up to 3.9, which warns that its
# default will change): stated here so that every Triton version compiles the same arithmetic.
_LAUNCH = dict(num_warps=4, enable_fp_fusion=True)


# ---- small helpers -----------------------------------------------------------------------------------------------
@triton.jit
def _relu(x):
    """torch.relu: NaN stays NaN (x < 0 is false for NaN), negatives become 0."""
    return tl.where(x < 0, 0.0, x)


@triton.jit
def _dot(a, b, acc, IEEE: tl.constexpr, ACC: tl.constexpr):
    """acc + a @ b. float32 operands ask for "ieee" (exact float32 products: the default on NVIDIA GPUs is TF32,
    whose 10-bit mantissa the contract does not have); 16-bit operands accumulate in float32, float64 in float64.
    out_dtype is spelled out: Triton 3.6 defaults it to float32 whatever the accumulator."""
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=ACC)
    else:
        return tl.dot(a, b, acc, out_dtype=ACC)


@triton.jit
def _channel_vector(PTR, c, cm, ACC: tl.constexpr):
    return tl.load(PTR + c, mask=cm, other=0.0).to(ACC)


@triton.jit
def _bn_backward_coefficients(W, MEAN, INVSTD, SUM_DY, SUM_DY_XHAT, c, cm, M, ACC: tl.constexpr):
    """Per channel, from the float64 sums sum(dy), sum(dy * xhat) over the M rows:
    dx = k * (dy - mean_dy - xhat * mean_dy_xhat), k = weight * invstd (csrc/stgcn_block_math.h's
    bn_backward_element; the contract's w * invstd / M * (M dy - sum dy - xhat sum dy xhat)). Computed in
    float64, returned in acc with mean and invstd."""
    w = tl.load(W + c, mask=cm, other=0.0).to(tl.float64)  # Triton casts bf16 -> fp64 through fp32
    mean = tl.load(MEAN + c, mask=cm, other=0.0).to(tl.float64)
    invstd = tl.load(INVSTD + c, mask=cm, other=0.0).to(tl.float64)
    mean_dy = tl.load(SUM_DY + c, mask=cm, other=0.0).to(tl.float64) / M
    mean_dy_xhat = tl.load(SUM_DY_XHAT + c, mask=cm, other=0.0).to(tl.float64) / M
    return (w * invstd).to(ACC), mean_dy.to(ACC), mean_dy_xhat.to(ACC), mean.to(ACC), invstd.to(ACC)


@triton.jit
def _finite_shift(first):
    """The shift of the shifted sums: the first value, 0 where it is +-inf or NaN (x - inf over the chunk would make
    its sum NaN where the reference's, a plain sum, is +-inf)."""
    return tl.where(first - first == 0, first, 0.0)


@triton.jit
def _moments(s1, s2, shift, n):
    """(sum x, sum x^2) in float64 from the shifted sums s1 = sum(x - k), s2 = sum((x - k)^2) of n values per
    lane: sum x = s1 + n k, sum x^2 = s2 + 2 k s1 + n k^2."""
    s1 = s1.to(tl.float64)
    k = shift.to(tl.float64)
    n = n.to(tl.float64)
    return s1 + n * k, s2.to(tl.float64) + 2.0 * k * s1 + n * k * k


@triton.jit
def _store_partials(PART, p, c, cm, C, NSTAT: tl.constexpr, i: tl.constexpr, values):
    """PART[p, i, c] = values (float64)."""
    tl.store(PART + (p.to(tl.int64) * NSTAT + i) * C + c, values.to(tl.float64), mask=cm)


@triton.jit
def _sum_partials_kernel(PART, O0, O1, O2, O3, P, L, NSTAT: tl.constexpr, BLOCK_P: tl.constexpr,
                         BLOCK_L: tl.constexpr):
    """O_s[l] = sum over p of PART[p, s, l] (float64), p in a fixed order: each lane adds the partials
    p = lane, lane + BLOCK_P, ... and the BLOCK_P lane sums are then added by one fixed-shape tree."""
    l = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    lm = l < L
    pr = tl.arange(0, BLOCK_P)
    for s in tl.static_range(NSTAT):
        acc = tl.zeros([BLOCK_P, BLOCK_L], dtype=tl.float64)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + pr
            m = (p < P)[:, None] & lm[None, :]
            acc += tl.load(PART + (p.to(tl.int64)[:, None] * NSTAT + s) * L + l[None, :], mask=m, other=0.0)
        total = tl.sum(acc, axis=0)
        if s == 0:
            tl.store(O0 + l, total, mask=lm)
        elif s == 1:
            tl.store(O1 + l, total, mask=lm)
        elif s == 2:
            tl.store(O2 + l, total, mask=lm)
        else:
            tl.store(O3 + l, total, mask=lm)


# ---- graph aggregation -------------------------------------------------------------------------------------------
# tl.dot, not a loop over v: per subset the aggregation of one group is a (V x V) @ (V x C) product, and a tile
# of several groups' channels is the same M_k^T times a (V x groups*channels) matrix, so one tl.dot per subset
# does a whole tile (tensor cores on a GPU; a scalar loop over v would be V dependent multiply-adds per element
# with M's entries broadcast from scalar loads). Both sides are padded: V to VP = max(16, next power of two) (the
# tl.dot minimum on every Triton version; the pad rows / columns of M are 0), the columns to _DOT_COLS. The
# padding costs flops, not memory traffic, and the pass is memory-bound.
@triton.jit
def _graph_aggregate_kernel(SRC, A, BIAS, OUT, G, V, C,
                            K: tl.constexpr, CONTRACT: tl.constexpr, TRANSPOSE: tl.constexpr,
                            HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, ACC: tl.constexpr,
                            VP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid (group blocks, channel blocks). Columns j of a tile are (group j // BLOCK_C, channel j % BLOCK_C).
    contract: OUT[g, w, c]       = sum_k sum_v M[k, v, w] SRC[g, v, k*C + c] (+ BIAS[w, c])
    expand:   OUT[g, w, k*C + c] = sum_v M[k, v, w] SRC[g, v, c]
    with M = A, or A^T per subset (TRANSPOSE). The dot's left operand is Mt_k[w, v] = M[k, v, w]."""
    DT: tl.constexpr = SRC.dtype.element_ty
    j = tl.arange(0, BLOCK_G * BLOCK_C)
    g = (tl.program_id(0) * BLOCK_G + j // BLOCK_C).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + j % BLOCK_C
    col_ok = (g < G) & (c < C)
    w = tl.arange(0, VP)  # output joint: rows of the product
    v = tl.arange(0, VP)  # input joint: the contracted index
    if TRANSPOSE:
        m_off = w[:, None] * V + v[None, :]  # M[k, v, w] = A[k, w, v]
    else:
        m_off = v[None, :] * V + w[:, None]  # M[k, v, w] = A[k, v, w]
    m_mask = (w < V)[:, None] & (v < V)[None, :]
    x_mask = (v < V)[:, None] & col_ok[None, :]
    out_mask = (w < V)[:, None] & col_ok[None, :]
    if CONTRACT:
        src_row = K * C
        out_row = C
    else:
        src_row = C
        out_row = K * C
    x_off = g[None, :] * V * src_row + v[:, None] * src_row + c[None, :]
    out_off = g[None, :] * V * out_row + w[:, None] * out_row + c[None, :]
    if CONTRACT:
        acc = tl.zeros([VP, BLOCK_G * BLOCK_C], dtype=ACC)
        for k in tl.static_range(K):
            mt = tl.load(A + k * V * V + m_off, mask=m_mask, other=0.0).to(DT)
            x = tl.load(SRC + x_off + k * C, mask=x_mask, other=0.0)
            acc = _dot(mt, x, acc, IEEE, ACC)
        if HAS_BIAS:
            acc += tl.load(BIAS + w[:, None] * C + c[None, :], mask=out_mask, other=0.0).to(ACC)
        tl.store(OUT + out_off, acc.to(OUT.dtype.element_ty), mask=out_mask)
    else:
        x = tl.load(SRC + x_off, mask=x_mask, other=0.0)
        for k in tl.static_range(K):
            mt = tl.load(A + k * V * V + m_off, mask=m_mask, other=0.0).to(DT)
            acc = _dot(mt, x, tl.zeros([VP, BLOCK_G * BLOCK_C], dtype=ACC), IEEE, ACC)
            tl.store(OUT + out_off + k * C, acc.to(OUT.dtype.element_ty), mask=out_mask)


# ---- BatchNorm statistics ----------------------------------------------------------------------------------------
@triton.jit
def _channel_stats_kernel(X, PART, R, C, rows_per_program,
                          ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid (P, channel blocks): program p reduces rows [p * rows_per_program, ...) of X (R, C) into
    PART[p] = (sum, sum of squares) per channel, about the chunk's first row."""
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    start = p.to(tl.int64) * rows_per_program
    n = tl.minimum(R - start, rows_per_program)
    shift = _finite_shift(tl.load(X + start * C + c, mask=cm, other=0.0).to(ACC))
    s1 = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    s2 = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    for i in range(0, n, BLOCK_R):
        r = i + tl.arange(0, BLOCK_R)
        m = (r < n)[:, None] & cm[None, :]
        x = tl.load(X + (start + r)[:, None] * C + c[None, :], mask=m, other=0.0).to(ACC)
        d = tl.where(m, x - shift[None, :], 0.0)
        s1 += d
        s2 += d * d
    total, total_sq = _moments(tl.sum(s1, axis=0), tl.sum(s2, axis=0), shift, n)
    _store_partials(PART, p, c, cm, C, 2, 0, total)
    _store_partials(PART, p, c, cm, C, 2, 1, total_sq)


@triton.jit
def _bias_map_stats_kernel(X, BIAS, Y, PART, G, V, C, groups_per_program,
                           ACC: tl.constexpr, VP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr):
    """Y = X + BIAS[v] over X (G, V, C) in one pass, and PART[p] = the channel sums of the stored (rounded) Y over
    the program's chunk of groups, about the chunk's first group (one shift per joint and channel)."""
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    v = tl.arange(0, VP)
    vc_mask = (v < V)[:, None] & cm[None, :]
    vc_off = v[:, None] * C + c[None, :]
    start = p.to(tl.int64) * groups_per_program
    n = tl.minimum(G - start, groups_per_program)
    bias = tl.load(BIAS + vc_off, mask=vc_mask, other=0.0).to(ACC)
    first = tl.load(X + start * V * C + vc_off, mask=vc_mask, other=0.0).to(ACC)
    shift = _finite_shift((first + bias).to(Y.dtype.element_ty).to(ACC))
    s1 = tl.zeros([BLOCK_G, VP, BLOCK_C], dtype=ACC)
    s2 = tl.zeros([BLOCK_G, VP, BLOCK_C], dtype=ACC)
    for i in range(0, n, BLOCK_G):
        gi = i + tl.arange(0, BLOCK_G)
        m = (gi < n)[:, None, None] & vc_mask[None, :, :]
        off = (start + gi)[:, None, None] * V * C + vc_off[None, :, :]
        y = (tl.load(X + off, mask=m, other=0.0).to(ACC) + bias[None, :, :]).to(Y.dtype.element_ty)
        tl.store(Y + off, y, mask=m)
        d = tl.where(m, y.to(ACC) - shift[None, :, :], 0.0)
        s1 += d
        s2 += d * d
    total, total_sq = _moments(tl.sum(s1, axis=0), tl.sum(s2, axis=0), shift, n)  # [VP, BLOCK_C], pad lanes 0
    _store_partials(PART, p, c, cm, C, 2, 0, tl.sum(total, axis=0))
    _store_partials(PART, p, c, cm, C, 2, 1, tl.sum(total_sq, axis=0))


# ---- BN1 + ReLU into the phase buffer ------------------------------------------------------------------------------
@triton.jit
def _bn_relu_phases_kernel(Z, SCALE, SHIFT, H, T, N, V, C, n_out_groups, stride, pad, Tq,
                           ACC: tl.constexpr, VP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid over the groups (phase, slot, n) of the phase buffer H (stride, Tq, N*V, C), channel blocks: every
    element of H is written once, relu(Z * SCALE[c] + SHIFT[v, c]) of frame t = slot * stride + phase - pad, or 0
    where t is outside [0, T) (the zero padding)."""
    go = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    v = tl.arange(0, VP)
    vc_mask = (v < V)[:, None] & cm[None, :]
    vc_off = v[:, None] * C + c[None, :]
    n = go % N
    slot_phase = go // N
    t = (slot_phase % Tq) * stride + slot_phase // Tq - pad
    inside = (t >= 0) & (t < T) & (go < n_out_groups)
    scale = _channel_vector(SCALE, c, cm, ACC)
    shift = tl.load(SHIFT + vc_off, mask=vc_mask, other=0.0).to(ACC)
    z_off = (t * N + n)[:, None, None] * V * C + vc_off[None, :, :]
    z = tl.load(Z + z_off, mask=inside[:, None, None] & vc_mask[None, :, :], other=0.0).to(ACC)
    h = _relu(z * scale[None, None, :] + shift[None, :, :])
    h = tl.where(inside[:, None, None], h, 0.0)
    out_mask = (go < n_out_groups)[:, None, None] & vc_mask[None, :, :]
    tl.store(H + go[:, None, None] * V * C + vc_off[None, :, :], h.to(H.dtype.element_ty), mask=out_mask)


@triton.jit
def _phase_grad_tile(DH, HPH, Z, gi, n_groups, v, vc_mask, vc_off, N, V, C, Tq, stride, pad, ACC: tl.constexpr):
    """For groups gi = (t, n) of Z (T, N*V, C): (g, z, mask) tiles [BLOCK_G, VP, BLOCK_C], g = dh where h > 0 read
    from the phase buffers where frame t is stored, 0 where no tap reads it."""
    t = gi // N
    n = gi - t * N
    tp = t + pad
    slot = tp // stride
    stored = (slot < Tq) & (gi < n_groups)
    m = (gi < n_groups)[:, None, None] & vc_mask[None, :, :]
    ph_off = (((tp % stride) * Tq + slot) * N + n)[:, None, None] * V * C + vc_off[None, :, :]
    ph_mask = stored[:, None, None] & vc_mask[None, :, :]
    dh = tl.load(DH + ph_off, mask=ph_mask, other=0.0).to(ACC)
    h = tl.load(HPH + ph_off, mask=ph_mask, other=0.0).to(ACC)
    g = tl.where(h <= 0, 0.0, dh)  # ReLU's backward as torch's: a NaN h passes dh, h <= 0 stops even a NaN dh
    z = tl.load(Z + gi[:, None, None] * V * C + vc_off[None, :, :], mask=m, other=0.0).to(ACC)
    return g, z, m


@triton.jit
def _bn_relu_phases_bwd_reduce_kernel(DH, HPH, Z, MEAN, INVSTD, PART, T, N, V, C, Tq, stride, pad,
                                      groups_per_program,
                                      ACC: tl.constexpr, VP: tl.constexpr, BLOCK_G: tl.constexpr,
                                      BLOCK_C: tl.constexpr):
    """Pass 1: PART[p] = (sum g, sum g * xhat) per channel over the program's chunk of groups."""
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    v = tl.arange(0, VP)
    vc_mask = (v < V)[:, None] & cm[None, :]
    vc_off = v[:, None] * C + c[None, :]
    mean = _channel_vector(MEAN, c, cm, ACC)
    invstd = _channel_vector(INVSTD, c, cm, ACC)
    start = p.to(tl.int64) * groups_per_program
    end = tl.minimum(T * N, start + groups_per_program)
    s_dy = tl.zeros([BLOCK_G, VP, BLOCK_C], dtype=ACC)
    s_dy_xhat = tl.zeros([BLOCK_G, VP, BLOCK_C], dtype=ACC)
    for i in range(0, end - start, BLOCK_G):
        gi = start + i + tl.arange(0, BLOCK_G)
        g, z, m = _phase_grad_tile(DH, HPH, Z, gi, end, v, vc_mask, vc_off, N, V, C, Tq, stride, pad, ACC)
        xhat = (z - mean[None, None, :]) * invstd[None, None, :]
        s_dy += g
        s_dy_xhat += tl.where(m, g * xhat, 0.0)
    _store_partials(PART, p, c, cm, C, 2, 0, tl.sum(tl.sum(s_dy, axis=0), axis=0))
    _store_partials(PART, p, c, cm, C, 2, 1, tl.sum(tl.sum(s_dy_xhat, axis=0), axis=0))


@triton.jit
def _bn_relu_phases_bwd_apply_kernel(DH, HPH, Z, W, MEAN, INVSTD, SUM_DY, SUM_DY_XHAT, DZ, PART, T, N, V, C, Tq,
                                     stride, pad, groups_per_program,
                                     ACC: tl.constexpr, VP: tl.constexpr, BLOCK_G: tl.constexpr,
                                     BLOCK_C: tl.constexpr):
    """Pass 2: DZ = BN1 backward of g; PART[p, v, c] = the program's sum over (t, n) of the stored DZ."""
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    v = tl.arange(0, VP)
    vc_mask = (v < V)[:, None] & cm[None, :]
    vc_off = v[:, None] * C + c[None, :]
    k, mean_dy, mean_dy_xhat, mean, invstd = _bn_backward_coefficients(W, MEAN, INVSTD, SUM_DY, SUM_DY_XHAT, c, cm,
                                                                       T * N * V, ACC)
    start = p.to(tl.int64) * groups_per_program
    end = tl.minimum(T * N, start + groups_per_program)
    joint_sums = tl.zeros([BLOCK_G, VP, BLOCK_C], dtype=ACC)
    for i in range(0, end - start, BLOCK_G):
        gi = start + i + tl.arange(0, BLOCK_G)
        g, z, m = _phase_grad_tile(DH, HPH, Z, gi, end, v, vc_mask, vc_off, N, V, C, Tq, stride, pad, ACC)
        xhat = (z - mean[None, None, :]) * invstd[None, None, :]
        dz = (k[None, None, :] * (g - mean_dy[None, None, :] - xhat * mean_dy_xhat[None, None, :]))
        dz = dz.to(DZ.dtype.element_ty)
        tl.store(DZ + gi[:, None, None] * V * C + vc_off[None, :, :], dz, mask=m)
        joint_sums += tl.where(m, dz.to(ACC), 0.0)
    tl.store(PART + p.to(tl.int64) * V * C + vc_off, tl.sum(joint_sums, axis=0).to(tl.float64), mask=vc_mask)


# ---- block output: relu(B2(u) * mask + residual), and its backward ------------------------------------------------
RES_NONE: tl.constexpr = tl.constexpr(0)
RES_IDENTITY: tl.constexpr = tl.constexpr(1)
RES_CONV: tl.constexpr = tl.constexpr(2)
_RES_KINDS = {"none": 0, "identity": 1, "conv": 2}


@triton.jit
def _block_output_kernel(U, SCALE2, SHIFT2, MASK, RES, SCALE3, SHIFT3, OUT, R, C,
                         HAS_MASK: tl.constexpr, RES_KIND: tl.constexpr, ACC: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    m = (r < R)[:, None] & cm[None, :]
    off = r[:, None] * C + c[None, :]
    y = (tl.load(U + off, mask=m, other=0.0).to(ACC) * _channel_vector(SCALE2, c, cm, ACC)[None, :]
         + _channel_vector(SHIFT2, c, cm, ACC)[None, :])
    if HAS_MASK:
        y = y * tl.load(MASK + off, mask=m, other=0.0).to(ACC)
    if RES_KIND == RES_CONV:
        y += (tl.load(RES + off, mask=m, other=0.0).to(ACC) * _channel_vector(SCALE3, c, cm, ACC)[None, :]
              + _channel_vector(SHIFT3, c, cm, ACC)[None, :])
    elif RES_KIND == RES_IDENTITY:
        y += tl.load(RES + off, mask=m, other=0.0).to(ACC)
    tl.store(OUT + off, _relu(y).to(OUT.dtype.element_ty), mask=m)


@triton.jit
def _output_grad_tile(DOUT, OUT, MASK, off, m, HAS_MASK: tl.constexpr, ACC: tl.constexpr):
    """(g, d_bn2): g = 0 where out <= 0, else dout (ReLU's backward as autograd's threshold_backward: a NaN out
    passes dout, out <= 0 stops even a NaN dout), d_bn2 = g * mask (dropout's backward)."""
    dout = tl.load(DOUT + off, mask=m, other=0.0).to(ACC)
    out = tl.load(OUT + off, mask=m, other=0.0).to(ACC)
    g = tl.where(out <= 0, 0.0, dout)
    if HAS_MASK:  # rounded to the input dtype like the contract's product (a no-op unless 16-bit)
        d_bn2 = (g * tl.load(MASK + off, mask=m, other=0.0).to(ACC)).to(DOUT.dtype.element_ty).to(ACC)
    else:
        d_bn2 = g
    return g, d_bn2


@triton.jit
def _block_output_bwd_reduce_kernel(DOUT, OUT, U, MASK, R0, MEAN2, INVSTD2, MEAN3, INVSTD3, PART, R, C,
                                    rows_per_program,
                                    HAS_MASK: tl.constexpr, CONV: tl.constexpr, ACC: tl.constexpr,
                                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Pass 1: PART[p] = (sum d_bn2, sum d_bn2 * xhat2[, sum g, sum g * xhat3 for the convolution residual])."""
    NSTAT: tl.constexpr = 4 if CONV else 2
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    mean2 = _channel_vector(MEAN2, c, cm, ACC)
    invstd2 = _channel_vector(INVSTD2, c, cm, ACC)
    if CONV:
        mean3 = _channel_vector(MEAN3, c, cm, ACC)
        invstd3 = _channel_vector(INVSTD3, c, cm, ACC)
    start = p.to(tl.int64) * rows_per_program
    n = tl.minimum(R - start, rows_per_program)
    s_dy2 = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    s_dy_xhat2 = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    s_dy3 = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    s_dy_xhat3 = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    for i in range(0, n, BLOCK_R):
        r = start + i + tl.arange(0, BLOCK_R)
        m = (r < start + n)[:, None] & cm[None, :]
        off = r[:, None] * C + c[None, :]
        g, d_bn2 = _output_grad_tile(DOUT, OUT, MASK, off, m, HAS_MASK, ACC)
        xhat2 = (tl.load(U + off, mask=m, other=0.0).to(ACC) - mean2[None, :]) * invstd2[None, :]
        s_dy2 += d_bn2
        s_dy_xhat2 += tl.where(m, d_bn2 * xhat2, 0.0)
        if CONV:
            xhat3 = (tl.load(R0 + off, mask=m, other=0.0).to(ACC) - mean3[None, :]) * invstd3[None, :]
            s_dy3 += g
            s_dy_xhat3 += tl.where(m, g * xhat3, 0.0)
    _store_partials(PART, p, c, cm, C, NSTAT, 0, tl.sum(s_dy2, axis=0))
    _store_partials(PART, p, c, cm, C, NSTAT, 1, tl.sum(s_dy_xhat2, axis=0))
    if CONV:
        _store_partials(PART, p, c, cm, C, NSTAT, 2, tl.sum(s_dy3, axis=0))
        _store_partials(PART, p, c, cm, C, NSTAT, 3, tl.sum(s_dy_xhat3, axis=0))


@triton.jit
def _block_output_bwd_apply_kernel(DOUT, OUT, U, MASK, R0, W2, MEAN2, INVSTD2, SUM_DY2, SUM_DY_XHAT2, W3, MEAN3,
                                   INVSTD3, SUM_DY3, SUM_DY_XHAT3, DU, DRES, PART, R, C, rows_per_program,
                                   HAS_MASK: tl.constexpr, RES_KIND: tl.constexpr, ACC: tl.constexpr,
                                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Pass 2: DU = BN2 backward of d_bn2, DRES = g (identity) or BN3 backward of g (convolution);
    PART[p] = (sum DU[, sum DRES for the convolution residual]) of the stored values."""
    CONV: tl.constexpr = RES_KIND == RES_CONV
    NSTAT: tl.constexpr = 2 if CONV else 1
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    k2, mean_dy2, mean_dy_xhat2, mean2, invstd2 = _bn_backward_coefficients(W2, MEAN2, INVSTD2, SUM_DY2,
                                                                            SUM_DY_XHAT2, c, cm, R, ACC)
    if CONV:
        k3, mean_dy3, mean_dy_xhat3, mean3, invstd3 = _bn_backward_coefficients(W3, MEAN3, INVSTD3, SUM_DY3,
                                                                                SUM_DY_XHAT3, c, cm, R, ACC)
    start = p.to(tl.int64) * rows_per_program
    n = tl.minimum(R - start, rows_per_program)
    s_du = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    s_dres = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    for i in range(0, n, BLOCK_R):
        r = start + i + tl.arange(0, BLOCK_R)
        m = (r < start + n)[:, None] & cm[None, :]
        off = r[:, None] * C + c[None, :]
        g, d_bn2 = _output_grad_tile(DOUT, OUT, MASK, off, m, HAS_MASK, ACC)
        xhat2 = (tl.load(U + off, mask=m, other=0.0).to(ACC) - mean2[None, :]) * invstd2[None, :]
        du = (k2[None, :] * (d_bn2 - mean_dy2[None, :] - xhat2 * mean_dy_xhat2[None, :])).to(DU.dtype.element_ty)
        tl.store(DU + off, du, mask=m)
        s_du += tl.where(m, du.to(ACC), 0.0)
        if CONV:
            xhat3 = (tl.load(R0 + off, mask=m, other=0.0).to(ACC) - mean3[None, :]) * invstd3[None, :]
            dres = (k3[None, :] * (g - mean_dy3[None, :] - xhat3 * mean_dy_xhat3[None, :]))
            dres = dres.to(DRES.dtype.element_ty)
            tl.store(DRES + off, dres, mask=m)
            s_dres += tl.where(m, dres.to(ACC), 0.0)
        elif RES_KIND == RES_IDENTITY:
            tl.store(DRES + off, g.to(DRES.dtype.element_ty), mask=m)
    _store_partials(PART, p, c, cm, C, NSTAT, 0, tl.sum(s_du, axis=0))
    if CONV:
        _store_partials(PART, p, c, cm, C, NSTAT, 1, tl.sum(s_dres, axis=0))


# ---- launchers ---------------------------------------------------------------------------------------------------
def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _device_of(x: Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _block_c(C: int) -> int:
    return min(triton.next_power_of_2(max(C, 1)), _MAX_BLOCK_C)


def _split(n_items: int, block: int) -> Tuple[int, int]:
    """(programs, items per program) of a reduction over n_items >= 1 rows or groups: every program gets a
    whole number of blocks and at least one item."""
    n_blocks = triton.cdiv(n_items, block)
    per = triton.cdiv(n_blocks, min(n_blocks, _MAX_ROW_PROGRAMS))
    return triton.cdiv(n_blocks, per), per * block


def _group_tile(V: int, C: int) -> Tuple[int, int, int]:
    """(VP, BLOCK_G, BLOCK_C) of a [BLOCK_G, VP, BLOCK_C] tile of whole groups."""
    VP = triton.next_power_of_2(V)
    block_c = _block_c(C)
    return VP, max(1, _TILE_ELEMS // (VP * block_c)), block_c


def _row_tile(C: int) -> Tuple[int, int]:
    block_c = _block_c(C)
    return max(1, _TILE_ELEMS // block_c), block_c


def _sum_partials(part: Tensor, L: int, shapes) -> list:
    """Reduces part (P, len(shapes), L) float64 over P into one new float64 tensor per statistic."""
    P, nstat = part.shape[0], part.shape[1]
    outs = [torch.empty(shape, dtype=torch.float64, device=part.device) for shape in shapes]
    slots = outs + [outs[0]] * (4 - nstat)
    block_l = min(triton.next_power_of_2(L), 128)
    _sum_partials_kernel[(triton.cdiv(L, block_l),)](part, *slots, P, L, NSTAT=nstat, BLOCK_P=_BLOCK_P,
                                                     BLOCK_L=block_l, **_LAUNCH)
    return outs


def _c(x: Optional[Tensor]) -> Optional[Tensor]:
    return None if x is None else x.contiguous()


def graph_aggregate(src: Tensor, A: Tensor, contract: bool, transpose: bool, bias_map: Optional[Tensor]) -> Tensor:
    """See torch_stgcn.graph_aggregate: contract (G, V, K*C) -> (G, V, C) (+ bias_map), expand (G, V, C) ->
    (G, V, K*C), with M = A or A^T per subset."""
    K, V, _ = A.shape
    G = src.shape[0]
    C = src.shape[2] // K if contract else src.shape[2]
    out = src.new_empty((G, V, C if contract else K * C))
    if out.numel() == 0:
        return out.zero_()
    src, A = src.contiguous(), A.contiguous()
    bias_map = _c(bias_map) if contract else None
    block_c = _block_c(C)
    block_g = _DOT_COLS // block_c
    grid = (triton.cdiv(G, block_g), triton.cdiv(C, block_c))
    with _device_of(src):
        _graph_aggregate_kernel[grid](
            src, A, bias_map if bias_map is not None else src, out, G, V, C,
            K=K, CONTRACT=bool(contract), TRANSPOSE=bool(transpose), HAS_BIAS=bias_map is not None,
            IEEE=src.dtype == torch.float32, ACC=_acc(src.dtype), VP=max(16, triton.next_power_of_2(V)),
            BLOCK_G=block_g, BLOCK_C=block_c, **_LAUNCH)
    return out


def channel_stats(x: Tensor) -> Tuple[Tensor, Tensor]:
    """(R, C) (any leading shape) -> per-channel (sum, sum of squares) in float64."""
    C = x.shape[-1]
    R = x.numel() // C if C else 0
    if R == 0:
        z = torch.zeros(C, dtype=torch.float64, device=x.device)
        return z, z.clone()
    x = x.contiguous()
    block_r, block_c = _row_tile(C)
    P, rows = _split(R, block_r)
    part = torch.empty((P, 2, C), dtype=torch.float64, device=x.device)
    with _device_of(x):
        _channel_stats_kernel[(P, triton.cdiv(C, block_c))](x, part, R, C, rows, ACC=_acc(x.dtype), BLOCK_R=block_r,
                                                           BLOCK_C=block_c, **_LAUNCH)
        s, ss = _sum_partials(part, C, [(C,), (C,)])
    return s, ss


def bias_map_stats(x: Tensor, bias_map: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """x (G, V, C) + bias_map (V, C), and its channel statistics, in one pass."""
    G, V, C = x.shape
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() == 0:
        z = torch.zeros(C, dtype=torch.float64, device=x.device)
        return y, z, z.clone()
    x, bias_map = x.contiguous(), bias_map.contiguous()
    VP, block_g, block_c = _group_tile(V, C)
    P, groups = _split(G, block_g)
    part = torch.empty((P, 2, C), dtype=torch.float64, device=x.device)
    with _device_of(x):
        _bias_map_stats_kernel[(P, triton.cdiv(C, block_c))](x, bias_map, y, part, G, V, C, groups, ACC=_acc(x.dtype),
                                                            VP=VP, BLOCK_G=block_g, BLOCK_C=block_c, **_LAUNCH)
        s, ss = _sum_partials(part, C, [(C,), (C,)])
    return y, s, ss


def bn_relu_phases(z: Tensor, scale: Tensor, shift_map: Tensor, V: int, stride: int, pad: int, Tq: int) -> Tensor:
    """h = relu(z * scale[c] + shift_map[v, c]) for z (T, N*V, C), written with its zero padding to the phase
    buffer (stride, Tq, N*V, C): every element of the buffer is written once, no separate zero fill."""
    T, NV, C = z.shape
    N = NV // V
    h_ph = z.new_empty((stride, Tq, NV, C))
    if h_ph.numel() == 0:
        return h_ph
    z, scale, shift_map = z.contiguous(), scale.contiguous(), shift_map.contiguous()
    VP, block_g, block_c = _group_tile(V, C)
    n_out = stride * Tq * N
    with _device_of(z):
        _bn_relu_phases_kernel[(triton.cdiv(n_out, block_g), triton.cdiv(C, block_c))](
            z, scale, shift_map, h_ph, T, N, V, C, n_out, stride, pad, Tq,
            ACC=_acc(z.dtype), VP=VP, BLOCK_G=block_g, BLOCK_C=block_c, **_LAUNCH)
    return h_ph


def block_output(u: Tensor, scale2: Tensor, shift2: Tensor, mask: Optional[Tensor], res: Optional[Tensor],
                 scale3: Optional[Tensor], shift3: Optional[Tensor]) -> Tensor:
    """out = relu((u * scale2 + shift2) * mask + residual) over (R, C) rows in one pass (see the contract)."""
    C = u.shape[-1]
    out = torch.empty_like(u, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    R = u.numel() // C
    res_kind = "none" if res is None else ("conv" if scale3 is not None else "identity")
    u, mask, res = u.contiguous(), _c(mask), _c(res)
    scale2, shift2, scale3, shift3 = _c(scale2), _c(shift2), _c(scale3), _c(shift3)  # per-channel, read packed
    block_r, block_c = _row_tile(C)
    dummy = scale2
    with _device_of(u):
        _block_output_kernel[(triton.cdiv(R, block_r), triton.cdiv(C, block_c))](
            u, scale2, shift2, mask if mask is not None else dummy, res if res is not None else dummy,
            scale3 if scale3 is not None else dummy, shift3 if shift3 is not None else dummy, out, R, C,
            HAS_MASK=mask is not None, RES_KIND=_RES_KINDS[res_kind], ACC=_acc(u.dtype), BLOCK_R=block_r,
            BLOCK_C=block_c, **_LAUNCH)
    return out


def block_output_backward(dout: Tensor, out: Tensor, u: Tensor, mask: Optional[Tensor], mean2: Tensor,
                          invstd2: Tensor, weight2: Tensor, res_kind: str, r0: Optional[Tensor],
                          mean3: Optional[Tensor], invstd3: Optional[Tensor], weight3: Optional[Tensor]
                          ) -> Tuple[Optional[Tensor], ...]:
    """Backward of block_output in training: (du, dres, dweight2, dbias2, dweight3, dbias3, dbias_t, dbias_r) as
    in the contract. Two passes over the inputs (BN2 / BN3 reductions, then du and dres with their sums), each
    followed by the tiny fixed-order reduction of its partials."""
    if res_kind not in _RES_KINDS:
        raise ValueError(f"res_kind must be one of {tuple(_RES_KINDS)}, got {res_kind!r}")
    C = u.shape[-1]
    R = u.numel() // C if C else 0
    conv = res_kind == "conv"
    if R == 0:  # nothing to read: the contract's (empty and zero) results
        from ugcn_fast.backends import torch_stgcn
        return torch_stgcn.block_output_backward(dout, out, u, mask, mean2, invstd2, weight2, res_kind, r0, mean3,
                                                 invstd3, weight3)
    dout, out, u, mask = dout.contiguous(), out.contiguous(), u.contiguous(), _c(mask)
    mean2, invstd2, weight2, mean3, invstd3, weight3 = map(_c, (mean2, invstd2, weight2, mean3, invstd3, weight3))
    du = torch.empty(u.shape, dtype=dout.dtype, device=u.device)
    dres = torch.empty(u.shape, dtype=dout.dtype, device=u.device) if res_kind != "none" else None
    block_r, block_c = _row_tile(C)
    P, rows = _split(R, block_r)
    grid = (P, triton.cdiv(C, block_c))
    acc = _acc(u.dtype)
    dummy = mean2  # stands for absent tensors; never dereferenced (constexpr flags)
    mask_arg = mask if mask is not None else dummy
    r0_arg, mean3_arg, invstd3_arg, weight3_arg = (r0.contiguous(), mean3, invstd3, weight3) if conv else (dummy,) * 4
    with _device_of(u):
        part = torch.empty((P, 4 if conv else 2, C), dtype=torch.float64, device=u.device)
        _block_output_bwd_reduce_kernel[grid](dout, out, u, mask_arg, r0_arg, mean2, invstd2, mean3_arg, invstd3_arg,
                                              part, R, C, rows, HAS_MASK=mask is not None, CONV=conv, ACC=acc,
                                              BLOCK_R=block_r, BLOCK_C=block_c, **_LAUNCH)
        # dbias2 = sum d_bn2, dweight2 = sum d_bn2 xhat2[, dbias3 = sum g, dweight3 = sum g xhat3]
        sums = _sum_partials(part, C, [(C,)] * part.shape[1])
        dbias2, dweight2 = sums[0], sums[1]
        dbias3, dweight3 = (sums[2], sums[3]) if conv else (dummy, dummy)
        part2 = torch.empty((P, 2 if conv else 1, C), dtype=torch.float64, device=u.device)
        _block_output_bwd_apply_kernel[grid](
            dout, out, u, mask_arg, r0_arg, weight2, mean2, invstd2, dbias2, dweight2, weight3_arg, mean3_arg,
            invstd3_arg, dbias3, dweight3, du, dres if dres is not None else du, part2, R, C, rows,
            HAS_MASK=mask is not None, RES_KIND=_RES_KINDS[res_kind], ACC=acc, BLOCK_R=block_r, BLOCK_C=block_c,
            **_LAUNCH)
        bias_sums = _sum_partials(part2, C, [(C,)] * part2.shape[1])  # dbias_t = sum du[, dbias_r = sum dres]
    if not conv:
        return du, dres, dweight2, dbias2, None, None, bias_sums[0], None
    return du, dres, dweight2, dbias2, dweight3, dbias3, bias_sums[0], bias_sums[1]


def bn_relu_phases_backward(dh_ph: Tensor, h_ph: Tensor, z: Tensor, mean1: Tensor, invstd1: Tensor, weight1: Tensor,
                            V: int, stride: int, pad: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward of bn_relu_phases in training for z (T, N*V, C): (dz, dweight1, dbias1, joint_sums (V, C)). Two
    passes over (dh_ph, h_ph, z): the BN1 reductions, then dz and its per-joint sums."""
    T, NV, C = z.shape
    N = NV // V
    Tq = h_ph.shape[1]
    if z.numel() == 0:
        from ugcn_fast.backends import torch_stgcn
        return torch_stgcn.bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, weight1, V, stride, pad)
    dh_ph, h_ph, z = dh_ph.contiguous(), h_ph.contiguous(), z.contiguous()
    mean1, invstd1, weight1 = _c(mean1), _c(invstd1), _c(weight1)
    dz = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    VP, block_g, block_c = _group_tile(V, C)
    P, groups = _split(T * N, block_g)
    grid = (P, triton.cdiv(C, block_c))
    acc = _acc(z.dtype)
    with _device_of(z):
        part = torch.empty((P, 2, C), dtype=torch.float64, device=z.device)
        _bn_relu_phases_bwd_reduce_kernel[grid](dh_ph, h_ph, z, mean1, invstd1, part, T, N, V, C, Tq, stride, pad,
                                                groups, ACC=acc, VP=VP, BLOCK_G=block_g, BLOCK_C=block_c,
                                                **_LAUNCH)
        dbias1, dweight1 = _sum_partials(part, C, [(C,), (C,)])
        part2 = torch.empty((P, 1, V * C), dtype=torch.float64, device=z.device)
        _bn_relu_phases_bwd_apply_kernel[grid](dh_ph, h_ph, z, weight1, mean1, invstd1, dbias1, dweight1, dz, part2,
                                               T, N, V, C, Tq, stride, pad, groups, ACC=acc, VP=VP, BLOCK_G=block_g,
                                               BLOCK_C=block_c, **_LAUNCH)
        joint_sums, = _sum_partials(part2, V * C, [(V, C)])
    return dz, dweight1, dbias1, joint_sums
