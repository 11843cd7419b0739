"""Triton backend of the motion loss (SPEC §1): loss and unit gradients, no encoded tensor, no atomics.

Vocabulary, as in csrc/motion_loss_math.h (this file mirrors its "gather" form): a *frame-joint* is one point
x[b, t, j, 0:D]; a sample is a packed (T, J, D) block, so frame-joint n = t * J + j sits at x[b] + n * D. A *pair*
at interval tau is (a, b) = (x_t, x_{t+tau}), i.e. the frame-joints n and n + tau * J. Encodings have C components
(sub: D, inner: 1, cross: 3).

Two kernels, both launched by `motion_loss_forward`:

1. `_den_kernel` (statistics pass): one program per (sample, interval), one pass over the target. It produces
   den[b, i, j] = mu + eps * s (1 where that is 0), the constant that both encodings are divided by.
2. `_loss_grad_kernel` (loss-and-gradient pass): one program per tile of frame-joints of one sample. For every
   interval it visits the pair its frame-joints START (that pair's loss is counted here, once, and it feeds da)
   and the pair they END (it feeds db). Each gradient element therefore gathers its own sum and is written once
   by its owner: no atomics, and the results are bitwise reproducible run to run.

The reduction never branches in a kernel: it only sets the per-interval weights w_tau (the header's
interval_weight), computed on the host in double precision. Without normalisation den is 1 and kernel 1 is not
launched; kernel 2 is then compiled without reading den at all.

Both kernels read 16-bit inputs, convert them to float32 before any arithmetic and accumulate in float32
(float64 for float64 inputs): `acc` below. Only plain `triton.language` is used, so the kernels run under
TRITON_INTERPRET=1 on CPU tensors and compile with Triton 3.6 .. 3.9 on a GPU.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

# Enumerations as in csrc/motion_loss_math.h; they are tl.constexpr kernel arguments, so each compiled
# kernel holds exactly one operator / normalisation / gradient combination.
_OPERATORS = {"sub": 0, "inner": 1, "cross": 2}
_NORMALIZE = {"none": 0, "sample": 1, "joint": 2}
_REDUCTIONS = ("mean", "sum", "none")

OP_SUB: tl.constexpr = tl.constexpr(0)
OP_INNER: tl.constexpr = tl.constexpr(1)
OP_CROSS: tl.constexpr = tl.constexpr(2)
NORM_NONE: tl.constexpr = tl.constexpr(0)
NORM_SAMPLE: tl.constexpr = tl.constexpr(1)
NORM_JOINT: tl.constexpr = tl.constexpr(2)

# Both kernels are compiled with enable_fp_fusion=False: no FMA contraction, so the arithmetic is the plain
# multiply-then-add of the reference and of the CPU backend, x × x is exactly 0 (a static target's cross
# encoding, whose mu is then exactly 0), and the result does not depend on the Triton version's default (3.9
# warns that it is about to change). Square roots and divisions are the correctly rounded ones (_sqrt_rn,
# _div_rn), not the GPU's approximate float32 defaults, so a GPU computes what the interpreter does.

# Grid axis 1 is limited to 65535 programs on CUDA; longer samples loop over their tiles (see the kernel).
_MAX_GRID_1 = 65535
# Joints per block of the statistics pass; more joints take an extra pass for s (see _den_kernel).
_MAX_BLOCK_J = 64
# Elements per loaded tile: large enough to amortise the per-interval scalar loads, small enough to stay in
# registers (the loss-and-gradient pass holds ~8 such tiles per program).
_TILE_ELEMS = 1024


# ---- per-element math (csrc/motion_loss_math.h) ------------------------------------------------------------------
@triton.jit
def _sqrt_rn(x):
    """IEEE square root: tl.sqrt is sqrt.approx.ftz.f32 on NVIDIA GPUs (a few ulp, tiny values flushed to zero),
    which the CPU and CUDA backends and the interpreter are not; float64's tl.sqrt is already correctly rounded."""
    if x.dtype == tl.float32:
        r = tl.sqrt_rn(x)
    else:
        r = tl.sqrt(x)
    return r


@triton.jit
def _div_rn(a, b):
    """IEEE division (float32 `/` is div.full.f32 on NVIDIA GPUs, up to 2 ulp off)."""
    if a.dtype == tl.float32:
        r = tl.div_rn(a, b)
    else:
        r = a / b
    return r


@triton.jit
def _upstream(diff, scale):
    """dL/dmP = sign(diff) * scale with diff = mP - mG (same sign as the normalised difference, den > 0) and
    scale = w / den, as torch's abs backward computes it: sign(0) = sign(NaN) = 0, and the sign is multiplied
    by scale rather than selecting it, so a NaN den (a NaN in the target's sample) still makes the gradient NaN
    and an infinite den makes it 0 (the header's component_loss_and_upstream). NaN / Inf inputs thus reach the
    gradients exactly where they do through the reference."""
    return tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0)) * scale


@triton.jit
def _cross(a0, a1, a2, b0, b1, b2):
    return a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0


@triton.jit
def _load3(ptr, mask, ACC: tl.constexpr):
    """The three coordinates of D = 3 points, each as its own tile (the cross product mixes components)."""
    x0 = tl.load(ptr, mask=mask, other=0.0).to(ACC)
    x1 = tl.load(ptr + 1, mask=mask, other=0.0).to(ACC)
    x2 = tl.load(ptr + 2, mask=mask, other=0.0).to(ACC)
    return x0, x1, x2


# ---- kernel 1: statistics pass -> den ----------------------------------------------------------------------------
@triton.jit
def _stats_tile(G, t0, j0, tau, n_frames, J, D, OP: tl.constexpr, ACC: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
    """One [frames t0.., joints j0..] tile of the pairs (G_t, G_{t+tau}) of one sample, summed over its frames:
    -> (sum_t |mG[t, j]| per joint, sum_t ||G_t,j|| * ||G_t+tau,j|| per joint), both [BLOCK_J] in acc.

    The tile is [frames, joints] (and coordinates for inner) rather than a flat run of n so that the per-joint
    sums the "joint" mode needs fall out of a reduction over axis 0. Lanes past the end load zeros, whose
    magnitude and norm product are 0.
    """
    t = t0 + tl.arange(0, BLOCK_T)
    j = j0 + tl.arange(0, BLOCK_J)
    mask = (t < n_frames)[:, None] & (j < J)[None, :]
    n = t[:, None] * J + j[None, :]
    if OP == OP_CROSS:
        a0, a1, a2 = _load3(G + n * 3, mask, ACC)
        b0, b1, b2 = _load3(G + (n + tau * J) * 3, mask, ACC)
        m0, m1, m2 = _cross(a0, a1, a2, b0, b1, b2)
        magnitude = _sqrt_rn(m0 * m0 + m1 * m1 + m2 * m2)
        norm_product = _sqrt_rn(a0 * a0 + a1 * a1 + a2 * a2) * _sqrt_rn(b0 * b0 + b1 * b1 + b2 * b2)
    else:  # inner (sub is never normalised)
        d = tl.arange(0, BLOCK_D)
        mask3 = mask[:, :, None] & (d < D)[None, None, :]
        off = n[:, :, None] * D + d[None, None, :]
        a = tl.load(G + off, mask=mask3, other=0.0).to(ACC)
        b = tl.load(G + off + tau * J * D, mask=mask3, other=0.0).to(ACC)
        magnitude = tl.abs(tl.sum(a * b, axis=2))
        norm_product = _sqrt_rn(tl.sum(a * a, axis=2)) * _sqrt_rn(tl.sum(b * b, axis=2))
    return tl.sum(magnitude, axis=0), tl.sum(norm_product, axis=0)


@triton.jit
def _den_kernel(G, DEN, EPS, INTERVALS, stride_gb, T, J, D, n_intervals,
                OP: tl.constexpr, NORMALIZE: tl.constexpr, SINGLE_J_BLOCK: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
    """den[b, i, :] = mu + eps * s of interval i of sample b (grid (B, n_intervals)), from the target only.

    mu = mean |mG| over (t, j) ("sample") or over t per joint ("joint"); s = mean over (t, j) of
    ||G_t|| * ||G_t+tau||. Joint blocks of BLOCK_J joints are walked in order, frames in BLOCK_T chunks.
    """
    ACC: tl.constexpr = DEN.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1)
    G += b * stride_gb
    DEN += (b * n_intervals + i) * J
    tau = tl.load(INTERVALS + i)
    n_frames = T - tau                      # pairs per joint: t = 0 .. T - tau - 1
    n_pairs = (n_frames * J).to(ACC)        # pairs per sample: the count of both means over (t, j)
    eps = tl.load(EPS)

    if NORMALIZE == NORM_JOINT:
        if not SINGLE_J_BLOCK:
            # Pre-pass, only when the joints do not fit one block: s spans every joint, but each joint block
            # writes its den as soon as its mu is known, so s must be complete before the main pass.
            s_acc = tl.zeros([BLOCK_J], dtype=ACC)
            for j0 in range(0, J, BLOCK_J):
                for t0 in range(0, n_frames, BLOCK_T):
                    _, prod = _stats_tile(G, t0, j0, tau, n_frames, J, D, OP, ACC, BLOCK_T, BLOCK_J, BLOCK_D)
                    s_acc += prod
            s_mean_all = _div_rn(tl.sum(s_acc, axis=0), n_pairs)

    mu_total = tl.zeros([BLOCK_J], dtype=ACC)
    s_total = tl.zeros([BLOCK_J], dtype=ACC)
    # Main pass: the one read of the target (when the joints fit one block, i.e. always for skeletons).
    for j0 in range(0, J, BLOCK_J):
        mu_sum = tl.zeros([BLOCK_J], dtype=ACC)
        s_sum = tl.zeros([BLOCK_J], dtype=ACC)
        for t0 in range(0, n_frames, BLOCK_T):
            mag, prod = _stats_tile(G, t0, j0, tau, n_frames, J, D, OP, ACC, BLOCK_T, BLOCK_J, BLOCK_D)
            mu_sum += mag
            s_sum += prod
        if NORMALIZE == NORM_JOINT:
            if SINGLE_J_BLOCK:
                s_mean = _div_rn(tl.sum(s_sum, axis=0), n_pairs)
            else:
                s_mean = s_mean_all
            den = _div_rn(mu_sum, n_frames.to(ACC)) + eps * s_mean
            den = tl.where(den == 0, 1.0, den)
            j = j0 + tl.arange(0, BLOCK_J)
            tl.store(DEN + j, den.to(ACC), mask=j < J)
        else:
            mu_total += mu_sum
            s_total += s_sum

    if NORMALIZE == NORM_SAMPLE:
        den = _div_rn(tl.sum(mu_total, axis=0), n_pairs) + eps * _div_rn(tl.sum(s_total, axis=0), n_pairs)
        den = tl.where(den == 0, 1.0, den)
        fill = tl.zeros([BLOCK_J], dtype=ACC) + den   # one value, repeated over J so both modes share a layout
        for j0 in range(0, J, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            tl.store(DEN + j, fill, mask=j < J)


# ---- kernel 2: loss-and-gradient pass ----------------------------------------------------------------------------
@triton.jit
def _pair_cross(aP0, aP1, aP2, bP0, bP1, bP2, aG0, aG1, aG2, bG0, bG1, bG2, scale, pair_mask):
    """One pair per lane, cross operator (the header's pair_loss_and_upstream): -> (sum_c |mP - mG|, gP) with
    gP = dL/dmP (see _upstream). The difference is taken before dividing by den > 0 (same sign), so
    pred == target gives exactly 0. Lanes outside pair_mask get gP = 0, whatever their inputs;
    their loss is masked by the caller after scaling."""
    mP0, mP1, mP2 = _cross(aP0, aP1, aP2, bP0, bP1, bP2)
    mG0, mG1, mG2 = _cross(aG0, aG1, aG2, bG0, bG1, bG2)
    d0 = mP0 - mG0
    d1 = mP1 - mG1
    d2 = mP2 - mG2
    g0 = tl.where(pair_mask, _upstream(d0, scale), 0.0)
    g1 = tl.where(pair_mask, _upstream(d1, scale), 0.0)
    g2 = tl.where(pair_mask, _upstream(d2, scale), 0.0)
    return tl.abs(d0) + tl.abs(d1) + tl.abs(d2), g0, g1, g2


@triton.jit
def _tile_cross(P, G, DEN, W, INTERVALS, DP, DG, n, T, J, n_intervals,
                NORMALIZE: tl.constexpr, NEED_GP: tl.constexpr, NEED_GG: tl.constexpr, ACC: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """Cross operator (D = 3) on the frame-joints n of one sample: -> weighted loss of the pairs they start,
    [BLOCK_N]; stores their unit gradients. Coordinates live in separate [BLOCK_N] tiles (cf. _load3)."""
    valid = n < T * J
    t = n // J
    j = n - t * J
    hP0, hP1, hP2 = _load3(P + n * 3, valid, ACC)      # "here": the tile's own frame-joints
    hG0, hG1, hG2 = _load3(G + n * 3, valid, ACC)
    loss = tl.zeros([BLOCK_N], dtype=ACC)
    dP0 = tl.zeros([BLOCK_N], dtype=ACC)
    dP1 = tl.zeros([BLOCK_N], dtype=ACC)
    dP2 = tl.zeros([BLOCK_N], dtype=ACC)
    dG0 = tl.zeros([BLOCK_N], dtype=ACC)
    dG1 = tl.zeros([BLOCK_N], dtype=ACC)
    dG2 = tl.zeros([BLOCK_N], dtype=ACC)
    for i in range(n_intervals):
        tau = tl.load(INTERVALS + i)
        w = tl.load(W + i)
        if NORMALIZE != NORM_NONE:  # dL/d|mP - mG| of this interval: w / den, per frame-joint
            den = tl.load(DEN + i * J + j, mask=valid, other=1.0)
            scale = w * _div_rn(tl.zeros_like(den) + 1.0, den)
        else:
            scale = w

        # Start pass: (here, here + tau) -> the pair's loss (counted once, by its start) and da.
        start = valid & (t + tau < T)
        oP0, oP1, oP2 = _load3(P + (n + tau * J) * 3, start, ACC)
        oG0, oG1, oG2 = _load3(G + (n + tau * J) * 3, start, ACC)
        l, g0, g1, g2 = _pair_cross(hP0, hP1, hP2, oP0, oP1, oP2, hG0, hG1, hG2, oG0, oG1, oG2, scale, start)
        loss += tl.where(start, scale * l, 0.0)
        if NEED_GP:  # da += b x gP
            c0, c1, c2 = _cross(oP0, oP1, oP2, g0, g1, g2)
            dP0 += c0
            dP1 += c1
            dP2 += c2
        if NEED_GG:  # target: gG = -gP
            c0, c1, c2 = _cross(oG0, oG1, oG2, -g0, -g1, -g2)
            dG0 += c0
            dG1 += c1
            dG2 += c2

        # End pass, gradients only: (here - tau, here) -> db.
        if NEED_GP or NEED_GG:
            end = valid & (t >= tau)
            oP0, oP1, oP2 = _load3(P + (n - tau * J) * 3, end, ACC)
            oG0, oG1, oG2 = _load3(G + (n - tau * J) * 3, end, ACC)
            _, g0, g1, g2 = _pair_cross(oP0, oP1, oP2, hP0, hP1, hP2, oG0, oG1, oG2, hG0, hG1, hG2, scale, end)
            if NEED_GP:  # db += gP x a
                c0, c1, c2 = _cross(g0, g1, g2, oP0, oP1, oP2)
                dP0 += c0
                dP1 += c1
                dP2 += c2
            if NEED_GG:
                c0, c1, c2 = _cross(-g0, -g1, -g2, oG0, oG1, oG2)
                dG0 += c0
                dG1 += c1
                dG2 += c2

    if NEED_GP:
        tl.store(DP + n * 3, dP0.to(DP.dtype.element_ty), mask=valid)
        tl.store(DP + n * 3 + 1, dP1.to(DP.dtype.element_ty), mask=valid)
        tl.store(DP + n * 3 + 2, dP2.to(DP.dtype.element_ty), mask=valid)
    if NEED_GG:
        tl.store(DG + n * 3, dG0.to(DG.dtype.element_ty), mask=valid)
        tl.store(DG + n * 3 + 1, dG1.to(DG.dtype.element_ty), mask=valid)
        tl.store(DG + n * 3 + 2, dG2.to(DG.dtype.element_ty), mask=valid)
    return loss


@triton.jit
def _pair_general(aP, bP, aG, bG, scale, pair_mask, OP: tl.constexpr):
    """One pair per row of [BLOCK_N, BLOCK_D] tiles, sub / inner (cf. _pair_cross): -> (sum_c |mP - mG|
    [BLOCK_N], gP), gP [BLOCK_N, BLOCK_D] for sub (C = D), [BLOCK_N] for inner (C = 1). Sub is never normalised,
    so its scale is the interval's scalar weight."""
    if OP == OP_SUB:
        diff = (aP - bP) - (aG - bG)
        g = tl.where(pair_mask[:, None], _upstream(diff, scale), 0.0)
        return tl.sum(tl.abs(diff), axis=1), g
    else:
        diff = tl.sum(aP * bP, axis=1) - tl.sum(aG * bG, axis=1)
        g = tl.where(pair_mask, _upstream(diff, scale), 0.0)
        return tl.abs(diff), g


@triton.jit
def _tile_general(P, G, DEN, W, INTERVALS, DP, DG, n, T, J, D, n_intervals,
                  OP: tl.constexpr, NORMALIZE: tl.constexpr, NEED_GP: tl.constexpr, NEED_GG: tl.constexpr,
                  ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Sub / inner operators (any D) on the frame-joints n of one sample: [BLOCK_N, BLOCK_D] tiles, the columns
    past D masked to 0 (they add 0 to every encoding). -> weighted loss of the pairs they start, [BLOCK_N]."""
    if OP == OP_SUB:
        tl.static_assert(NORMALIZE == NORM_NONE, "sub is never normalised: its scale is the scalar weight")
    valid = n < T * J
    t = n // J
    j = n - t * J
    d = tl.arange(0, BLOCK_D)
    cols = (d < D)[None, :]
    off = n[:, None] * D + d[None, :]
    here_mask = valid[:, None] & cols
    hP = tl.load(P + off, mask=here_mask, other=0.0).to(ACC)
    hG = tl.load(G + off, mask=here_mask, other=0.0).to(ACC)
    loss = tl.zeros([BLOCK_N], dtype=ACC)
    dP = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    dG = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    for i in range(n_intervals):
        tau = tl.load(INTERVALS + i)
        w = tl.load(W + i)
        if NORMALIZE != NORM_NONE:  # dL/d|mP - mG| of this interval: w / den, per frame-joint
            den = tl.load(DEN + i * J + j, mask=valid, other=1.0)
            scale = w * _div_rn(tl.zeros_like(den) + 1.0, den)
        else:
            scale = w
        shift = tau * J * D

        # Start pass: (here, here + tau) -> the pair's loss (counted once, by its start) and da.
        start = valid & (t + tau < T)
        oP = tl.load(P + off + shift, mask=start[:, None] & cols, other=0.0).to(ACC)
        oG = tl.load(G + off + shift, mask=start[:, None] & cols, other=0.0).to(ACC)
        l, g = _pair_general(hP, oP, hG, oG, scale, start, OP)
        loss += tl.where(start, scale * l, 0.0)
        if OP == OP_SUB:  # da += gP
            if NEED_GP:
                dP += g
            if NEED_GG:
                dG -= g
        else:  # da += gP * b
            if NEED_GP:
                dP += g[:, None] * oP
            if NEED_GG:
                dG -= g[:, None] * oG

        # End pass, gradients only: (here - tau, here) -> db.
        if NEED_GP or NEED_GG:
            end = valid & (t >= tau)
            oP = tl.load(P + off - shift, mask=end[:, None] & cols, other=0.0).to(ACC)
            oG = tl.load(G + off - shift, mask=end[:, None] & cols, other=0.0).to(ACC)
            _, g = _pair_general(oP, hP, oG, hG, scale, end, OP)
            if OP == OP_SUB:  # db -= gP
                if NEED_GP:
                    dP -= g
                if NEED_GG:
                    dG += g
            else:  # db += gP * a
                if NEED_GP:
                    dP += g[:, None] * oP
                if NEED_GG:
                    dG -= g[:, None] * oG

    if NEED_GP:
        tl.store(DP + off, dP.to(DP.dtype.element_ty), mask=here_mask)
    if NEED_GG:
        tl.store(DG + off, dG.to(DG.dtype.element_ty), mask=here_mask)
    return loss


@triton.jit
def _loss_grad_kernel(P, G, DEN, W, INTERVALS, PARTIAL, DP, DG, stride_pb, stride_gb, T, J, D, n_intervals,
                      n_tiles, OP: tl.constexpr, NORMALIZE: tl.constexpr, NEED_GP: tl.constexpr,
                      NEED_GG: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Grid (B, min(n_tiles, 65535)): program (b, p) owns tiles p, p + grid_1, ... of sample b's frame-joints
    (the loop only matters past 65535 * BLOCK_N frame-joints per sample). Writes PARTIAL[b, p], the weighted
    loss of the pairs its frame-joints start, and their unit gradients DP / DG (packed (T, J, D) per sample)."""
    ACC: tl.constexpr = W.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    n_programs = tl.num_programs(1)
    P += b * stride_pb
    G += b * stride_gb
    DEN += b * n_intervals * J
    if NEED_GP:
        DP += b * T * J * D
    if NEED_GG:
        DG += b * T * J * D
    loss = tl.zeros([BLOCK_N], dtype=ACC)
    for tile in range(p, n_tiles, n_programs):
        n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        if OP == OP_CROSS:
            loss += _tile_cross(P, G, DEN, W, INTERVALS, DP, DG, n, T, J, n_intervals,
                                NORMALIZE, NEED_GP, NEED_GG, ACC, BLOCK_N)
        else:
            loss += _tile_general(P, G, DEN, W, INTERVALS, DP, DG, n, T, J, D, n_intervals,
                                  OP, NORMALIZE, NEED_GP, NEED_GG, ACC, BLOCK_N, BLOCK_D)
    # One fixed-shape tree reduction per program: deterministic.
    tl.store(PARTIAL + b * n_programs + p, tl.sum(loss, axis=0))


# ---- launcher ----------------------------------------------------------------------------------------------------
def _packed_samples(x: Tensor) -> Tensor:
    """x itself when every x[b] is a packed (T, J, D) block (any batch stride, 0 included), else a packed copy."""
    _, T, J, D = x.shape
    expected = (J * D, D, 1)
    if all(size == 1 or stride == want for size, stride, want in zip(x.shape[1:], x.stride()[1:], expected)):
        return x
    return x.contiguous()


def _interval_weights(intervals: Sequence[int], B: int, T: int, J: int, C: int, reduction: str) -> list:
    """dL/d|d| of every element of L_tau's sum (the header's interval_weight), computed in double precision."""
    n = len(intervals)
    if reduction == "sum":
        return [1.0 / n for _ in intervals]
    batch = B if reduction == "mean" else 1
    return [1.0 / (n * batch * (T - tau) * J * C) for tau in intervals]


@functools.lru_cache(maxsize=64)
def _constants(device: torch.device, intervals: Tuple[int, ...], weights: Tuple[float, ...], eps: float,
               acc_dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """The small per-configuration tensors (intervals, interval weights, eps) on the device, made once: a fresh
    torch.tensor(..., device="cuda") per call would be a blocking host-to-device copy that stalls the CPU until
    everything queued before it has run (and cannot be captured in a CUDA graph)."""
    return (torch.tensor(intervals, dtype=torch.int32, device=device),
            torch.tensor(weights, dtype=acc_dtype, device=device),
            torch.tensor([eps], dtype=acc_dtype, device=device))


def _device_of(x: Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def motion_loss_forward(
    pred: Tensor,
    target: Tensor,
    intervals: Sequence[int],
    operator: str,
    normalize: str,
    eps: float,
    reduction: str,
    need_grad_pred: bool,
    need_grad_target: bool,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Motion loss (SPEC §1) of already validated inputs -> (loss_per_sample, grad_pred, grad_target).

    loss_per_sample: (B,) in acc (float64 for float64 inputs, else float32), L_b = sum_tau w_tau sum_{t,j,c} d;
    the loss is loss_per_sample.sum() for "mean" / "sum" and loss_per_sample itself for "none".
    grad_pred / grad_target: contiguous (B, T, J, D) in acc, the gradient for grad_output = 1 (for
    "none", of each L_b w.r.t. its own sample), or None when not requested. `normalize` is the resolved mode
    ("none" | "sample" | "joint"; treated as "none" for sub); `intervals` distinct ints with 1 <= tau < T.
    """
    if operator not in _OPERATORS or normalize not in _NORMALIZE or reduction not in _REDUCTIONS:
        raise ValueError(f"unknown configuration operator={operator!r} normalize={normalize!r} reduction={reduction!r}")
    B, T, J, D = pred.shape
    if T * J * D >= 2**31:
        raise ValueError(f"one sample must hold fewer than 2**31 elements, got T * J * D = {T * J * D}")
    intervals = tuple(int(tau) for tau in intervals)
    n_intervals = len(intervals)
    op = _OPERATORS[operator]
    norm = 0 if operator == "sub" else _NORMALIZE[normalize]
    C = {"sub": D, "inner": 1, "cross": 3}[operator]
    device = pred.device
    acc_dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32

    P = _packed_samples(pred)
    G = _packed_samples(target)
    iv, w, eps_t = _constants(device, intervals, tuple(_interval_weights(intervals, B, T, J, C, reduction)),
                              float(eps), acc_dtype)
    if device.type == "cuda":  # a cached tensor evicted while this launch's stream still reads it must wait for it
        stream = torch.cuda.current_stream(device)
        for t in (iv, w, eps_t):
            t.record_stream(stream)
    # unit gradients in the accumulation dtype: ~1 / (B T J C den) is below float16's normal range until
    # grad_output (e.g. AMP's loss scale) multiplies it
    grad_pred = torch.empty((B, T, J, D), dtype=acc_dtype, device=device) if need_grad_pred else None
    grad_target = torch.empty((B, T, J, D), dtype=acc_dtype, device=device) if need_grad_target else None
    block_d = triton.next_power_of_2(D)

    with _device_of(pred):
        # Statistics pass: den (B, n_intervals, J); without normalisation den = 1 and the loss kernel never
        # reads it (NORMALIZE is a constexpr), so nothing is launched.
        if norm == 0:
            den = torch.ones((B, n_intervals, J), dtype=acc_dtype, device=device)
        else:
            den = torch.empty((B, n_intervals, J), dtype=acc_dtype, device=device)
            block_j = min(triton.next_power_of_2(J), _MAX_BLOCK_J)
            per_point = 1 if op == _OPERATORS["cross"] else block_d  # cross: one tile per coordinate
            block_t = max(1, min(triton.next_power_of_2(T), _TILE_ELEMS // (block_j * per_point)))
            _den_kernel[(B, n_intervals)](
                G, den, eps_t, iv, G.stride(0), T, J, D, n_intervals,
                OP=op, NORMALIZE=norm, SINGLE_J_BLOCK=J <= block_j,
                BLOCK_T=block_t, BLOCK_J=block_j, BLOCK_D=block_d, num_warps=4, enable_fp_fusion=False,
            )

        # Loss-and-gradient pass over tiles of frame-joints.
        per_point = 1 if op == _OPERATORS["cross"] else block_d
        block_n = max(16, min(128, _TILE_ELEMS // per_point, triton.next_power_of_2(T * J)))
        n_tiles = triton.cdiv(T * J, block_n)
        grid_1 = min(n_tiles, _MAX_GRID_1)
        partial = torch.empty((B, grid_1), dtype=acc_dtype, device=device)
        _loss_grad_kernel[(B, grid_1)](
            P, G, den, w, iv, partial,
            grad_pred if grad_pred is not None else den,    # never dereferenced when not requested
            grad_target if grad_target is not None else den,
            P.stride(0), G.stride(0), T, J, D, n_intervals, n_tiles,
            OP=op, NORMALIZE=norm, NEED_GP=bool(need_grad_pred), NEED_GG=bool(need_grad_target),
            BLOCK_N=block_n, BLOCK_D=block_d, num_warps=4, enable_fp_fusion=False,
        )
    # Fixed-order reduction of the per-program partial sums.
    loss_per_sample = partial.sum(dim=1)
    return loss_per_sample, grad_pred, grad_target
