"""The fused ST-GCN block (SPEC §3): the orchestration of its passes, in training and in eval.

Layout. Inside the block activations are *time-major, channels-last* matrices: rows (t, n, v), channels
contiguous, i.e. a (T, N, V, C) tensor. Three reasons: every channel-mixing convolution (the graph convolution's
1x1, the residual 1x1, each tap of the temporal convolution) is then one dense GEMM over all rows with no permute;
a temporal shift of the input by `j` frames is a shift by whole `N * V`-row blocks, so tap j of the temporal
convolution reads a contiguous slice of its input (stride s: of one phase of it, see torch_stgcn.py) instead of
a kt-times larger im2col copy; and the graph aggregation works on the V contiguous rows of one (t, n). The
block's output is a (N, C, T, V)-shaped *view* of the time-major result, so a following fused block reads it without a copy.

Passes, training forward (M rows, B = BatchNorm):
  gcn     graph-first (C_in < C_out, aggregate the smaller side): xa = aggregate(x) (M, K*C_in);
          z = xa @ W (M, C_out); z += bias map + B1 statistics (one pass)
          GEMM-first: y = x @ W^T + b (M, K*C_out); z = aggregate(y); B1 statistics (one pass)
  h       relu(B1(z)) written once, zero padding included, into the phase buffer: tap j a contiguous slice
  tcn     u = ... + bt; B2 statistics
  res     r0 = x[::s] @ Wr^T + br; B3 statistics (convolution residual only)
  out     relu(B2(u) * dropout mask + residual) in one pass
Backward mirrors it: one reduction and one apply pass for B2 / B3 / dropout / ReLU, GEMMs for the taps, one
reduction and one apply pass for B1 + ReLU (which also sums dz per joint for the graph convolution's bias), GEMMs
and one aggregation for the graph convolution. Eval folds every BatchNorm into the adjacent convolution: one
aggregation pass that also applies bias map and ReLU into the phase buffer, GEMMs accumulating onto the residual,
one ReLU.

The GEMMs are torch's (MKL / cuBLAS), and the passes between them are what the native kernels fuse, except where
stgcn_pieces.FUSED_GEMMS says so (Triton and the CPU): there the backend's own kernels run the forward's channel
mixing, with the neighbouring passes in their prologue/epilogue:
gcn_forward (1x1 + aggregation + bias + B1 statistics; having saved no aggregated input, a graph-first backward
aggregates x once more, the narrow side) and conv_frames (the taps on the phase buffer, or the strided residual
1x1, + bias, + B2 / B3 statistics in training; in eval + the residual, the convolution one as a pointwise term in
the same accumulators, and the final ReLU). The taps skip the output frames where they read the zero padding.
Gradients and sums are gathered per output element or per channel in a fixed order: results are reproducible run
to run for a given thread count.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backends.torch_stgcn import dropout_multipliers
from . import stgcn_pieces as pieces
from ._eager import differentiable_backward, is_batched
from .stgcn_pieces import phase_geometry


@dataclass(frozen=True)
class BlockConfig:
    kernel_size: int
    stride: int
    residual: str  # "none" | "identity" | "conv"
    eps: tuple[float, float, float]
    backend: str  # the passes' implementation: "torch", "cpu", "triton", "cuda"
    dropout: float = 0.0


def to_time_major(x: Tensor, backend: str = "torch", scratch: bool = False) -> Tensor:
    """(N, C, T, V) -> contiguous (T, N, V, C); free when x is the view a fused block returned, a native transpose
    where the backend has one (pieces.NATIVE_TIME_MAJOR; on the CPU 1.7-2x faster than torch's permuted copy).
    `scratch`: the caller drops the result before it returns (eval), so an eager CPU call may reuse a buffer."""
    x_tm = x.permute(2, 0, 3, 1)
    if x_tm.is_contiguous():
        return x_tm
    if backend in pieces.NATIVE_TIME_MAJOR and x.is_contiguous():
        return pieces.time_major(backend, x, scratch="time_major" if scratch else None)
    return x_tm.contiguous()


def from_time_major(x_tm: Tensor) -> Tensor:
    return x_tm.permute(1, 3, 0, 2)


def _gcn_weight_by_subset(w_gcn: Tensor, K: int) -> Tensor:
    """gcn.conv.weight (K*C_out, C_in, 1, 1) -> (K*C_in, C_out), rows (k, c_in): the graph-first GEMM's operand."""
    KC, C_in = w_gcn.shape[:2]
    return w_gcn.view(K, KC // K, C_in).permute(0, 2, 1).reshape(K * C_in, KC // K)


def _bias_map(A: Tensor, b_gcn: Tensor) -> Tensor:
    """(V, C_out): what the 1x1 convolution's bias becomes after aggregation, sum_k colsum(A_k)[w] * b[k, c]."""
    K = A.shape[0]
    return A.sum(1).t() @ b_gcn.view(K, -1)


def _bn_from_sums(s: Tensor, ss: Tensor, M: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, biased var, invstd) in float64 from channel sums."""
    mean = s / M
    var = (ss / M - mean * mean).clamp_min(0.0)
    return mean, var, torch.rsqrt(var + eps)


def _affine(weight: Tensor, bias: Tensor, mean: Tensor, invstd: Tensor, dtype) -> tuple[Tensor, Tensor]:
    scale = weight.double() * invstd
    return scale.to(dtype), (bias.double() - mean * scale).to(dtype)


def _tcn_taps(h: Tensor, kernel_size: int, stride: int, T_out: int) -> list[Tensor]:
    """Tap j's input rows: a contiguous (T_out * N * V, C) slice of the phase buffer."""
    C = h.shape[-1]
    return [h[j % stride, j // stride: j // stride + T_out].reshape(-1, C) for j in range(kernel_size)]


def _live_frames(T: int, kernel_size: int, stride: int) -> list[range]:
    """Per tap, the output frames for which it reads a real input frame (elsewhere the padding's zeros)."""
    spans = pieces.tap_spans(T, kernel_size, stride)
    return [range(spans[2 * j], spans[2 * j + 1]) for j in range(kernel_size)]


def _frame_rows(frames: list[range], rows_per_frame: int) -> list[slice]:
    """The rows (of _tcn_taps, or of the output) of each tap's output frames."""
    return [slice(r.start * rows_per_frame, r.stop * rows_per_frame) for r in frames]


def _add_taps(u: Tensor, taps: list[Tensor], weights: list[Tensor], rows: list[slice], skip: int) -> Tensor:
    """u[rows_j] += taps[j][rows_j] @ weights[j] for every tap j but `skip` (the centre tap, which reads a real frame
    for every output frame and is the caller's first GEMM): the rows where a tap reads the padding are skipped."""
    for j, (tap, weight, r) in enumerate(zip(taps, weights, rows)):
        if j != skip:
            u[r].addmm_(tap[r], weight)
    return u


def _phase_buffer_like(h: Tensor) -> Tensor:
    """The temporal convolution's input gradient buffer, uninitialised (a seam for the test that fills it with NaN)."""
    return torch.empty_like(h)


def _tcn_input_grad(du: Tensor, w_t: Tensor, h: Tensor, T: int, live: list[range], stride: int, pad: int,
                    T_out: int) -> Tensor:
    """dh (h's phase-buffer shape): tap j's rows over its live output frames += du @ W_j. Only the slots of real
    frames are written, which are all bn_relu_phases_backward reads: per phase, the tap that reads the most frames
    writes its rows (torch.mm into the buffer: no zero fill, no read of zeros), the phase's other stored frames are
    zeroed (none for UGCN's 5 taps at stride 1 or 2, where one tap of each phase reads all of them), the phase's
    other taps accumulate."""
    kt, Tq, NV = len(live), h.shape[1], h.shape[2]
    dh = _phase_buffer_like(h)
    dtaps = _tcn_taps(dh, kt, stride, T_out)
    rows = _frame_rows(live, NV)
    for phase in range(stride):
        # the phase's slots that hold a frame (torch_stgcn._phase_index's rule, in Python ints: constants when traced)
        stored = {(f + pad) // stride for f in range(T) if (f + pad) % stride == phase} & set(range(Tq))
        taps = [j for j in range(phase, kt, stride) if len(live[j])]
        lead = max(taps, key=lambda j: len(live[j])) if taps else None
        written = {lead // stride + t for t in live[lead]} if taps else set()
        if stored - written:
            dh[phase, sorted(stored - written)] = 0
        if taps:
            torch.mm(du[rows[lead]], w_t[:, :, lead, 0], out=dtaps[lead][rows[lead]])
        for j in taps:
            if j != lead:
                dtaps[j][rows[j]].addmm_(du[rows[j]], w_t[:, :, j, 0])
    return dh


def _tcn_weight_taps(w_t: Tensor) -> Tensor:
    """tcn.2.weight (C_out, C, kt, 1) -> (kt, C, C_out): conv_frames' operand, tap j's GEMM weight."""
    return w_t[:, :, :, 0].permute(2, 1, 0)


def _tap_frame_offsets(kernel_size: int, stride: int, Tq: int) -> list[int]:
    """Tap j's first frame in the phase buffer seen as (stride * Tq) frames: conv_frames' frame offsets."""
    return [(j % stride) * Tq + j // stride for j in range(kernel_size)]


def _residual_input(x_tm: Tensor, stride: int) -> Tensor:
    return x_tm if stride == 1 else x_tm[::stride].contiguous()


# _TrainingBlock saves the tensors its fused backward reads first, then (for a double backward only) the biases
_FUSED_SAVED = 25


class _TrainingBlock(torch.autograd.Function):
    """Training-mode block on time-major x; returns (out, batch mean and biased var of B1, B2, B3)."""

    @staticmethod
    def forward(ctx, x, A, w_gcn, b_gcn, w1, b1, w_t, b_t, w2, b2, w_r, b_r, w3, b3, dropout_seed,
                cfg: BlockConfig):
        be = cfg.backend
        T, N, V, C_in = x.shape
        K = A.shape[0]
        C_out = w_t.shape[0]
        dtype = x.dtype
        A = A.to(dtype)
        rows = x.view(T * N * V, C_in)
        # fused_gemms: the backend's kernel mixes channels and aggregates in registers, B1 statistics in its
        # epilogue (it saves no aggregated input: a graph-first backward aggregates x again, the narrow side)
        fused = pieces.fused_gemms(be, training=True)
        graph_first = C_in < C_out
        if fused:
            xa = None
            z, s1, ss1 = pieces.gcn_forward(be, x.view(T * N, V, C_in), A, w_gcn.view(K * C_out, C_in), b_gcn)
        elif graph_first:
            xa = pieces.graph_aggregate(be, x.view(T * N, V, C_in), A, False, False, None)
            z = (xa.view(-1, K * C_in) @ _gcn_weight_by_subset(w_gcn, K)).view(T * N, V, C_out)
            z, s1, ss1 = pieces.bias_map_stats(be, z, _bias_map(A, b_gcn))
        else:
            xa = None
            y = torch.addmm(b_gcn, rows, w_gcn.view(K * C_out, C_in).t())
            z = pieces.graph_aggregate(be, y.view(T * N, V, K * C_out), A, True, False, None)
            s1, ss1 = pieces.channel_stats(be, z)
        M1 = T * N * V
        mean1, var1, invstd1 = _bn_from_sums(s1, ss1, M1, cfg.eps[0])
        scale1, shift1 = _affine(w1, b1, mean1, invstd1, dtype)
        pad, T_out, Tq = phase_geometry(T, cfg.kernel_size, cfg.stride)
        z = z.view(T, N * V, C_out)
        shift_map = shift1.expand(V, C_out).contiguous()
        h = pieces.bn_relu_phases(be, z, scale1, shift_map, V, cfg.stride, pad, Tq)
        if fused:
            u, s2, ss2 = pieces.conv_frames(be, h.view(-1, N * V, C_out), _tcn_weight_taps(w_t), b_t,
                                            _tap_frame_offsets(cfg.kernel_size, cfg.stride, Tq), 1, T_out, None,
                                            False, True, pieces.tap_spans(T, cfg.kernel_size, cfg.stride))
        else:
            taps = _tcn_taps(h, cfg.kernel_size, cfg.stride, T_out)
            weights = [w_t[:, :, j, 0].t() for j in range(cfg.kernel_size)]
            u = torch.addmm(b_t, taps[pad], weights[pad])
            _add_taps(u, taps, weights, _frame_rows(_live_frames(T, cfg.kernel_size, cfg.stride), N * V), pad)
        if not fused:
            s2, ss2 = pieces.channel_stats(be, u)
        M2 = T_out * N * V
        mean2, var2, invstd2 = _bn_from_sums(s2, ss2, M2, cfg.eps[1])
        scale2, shift2 = _affine(w2, b2, mean2, invstd2, dtype)

        xs = r0 = mean3 = var3 = invstd3 = scale3 = shift3 = None
        if cfg.residual == "conv":
            if fused:  # the strided frames read in place; backward re-slices them
                r0, s3, ss3 = pieces.conv_frames(be, x.view(T, N * V, C_in), w_r.view(C_out, C_in).t().unsqueeze(0),
                                                 b_r, [0], cfg.stride, T_out, None, False, True)
            else:
                xs = _residual_input(x, cfg.stride).view(M2, C_in)
                r0 = torch.addmm(b_r, xs, w_r.view(C_out, C_in).t())
                s3, ss3 = pieces.channel_stats(be, r0)
            mean3, var3, invstd3 = _bn_from_sums(s3, ss3, M2, cfg.eps[2])
            scale3, shift3 = _affine(w3, b3, mean3, invstd3, dtype)
            res = r0
        elif cfg.residual == "identity":
            res = rows
        else:
            res = None
        mask_rows = None
        if dropout_seed is None:
            out = pieces.block_output(be, u, scale2, shift2, None, res, scale3, shift3)
        elif be in pieces.HASHED_DROPOUT:
            out = pieces.block_output_hashed(be, u, scale2, shift2, dropout_seed, cfg.dropout, res, scale3, shift3)
        else:
            mask_rows = dropout_multipliers(dropout_seed, cfg.dropout, M2, C_out, dtype, x.device)
            out = pieces.block_output(be, u, scale2, shift2, mask_rows, res, scale3, shift3)

        ctx.cfg, ctx.graph_first, ctx.shape = cfg, graph_first, (T, N, V, C_in, C_out, T_out, pad)
        ctx.save_for_backward(x, A, w_gcn, w1, w_t, w2, w_r, w3, mask_rows, dropout_seed, xa, z, h, u, out, xs, r0,
                              mean1, invstd1, mean2, invstd2, mean3, invstd3, scale1, shift_map,
                              b_gcn, b1, b_t, b2, b_r, b3)  # the biases: for a double backward only
        stats = [mean1, var1, mean2, var2]
        stats += [mean3, var3] if mean3 is not None else [mean1.new_empty(0), var1.new_empty(0)]
        ctx.mark_non_differentiable(*stats)
        return (out.view(T_out, N, V, C_out), *stats)

    @staticmethod
    def backward(ctx, dout, *_stat_grads):
        # in the input's dtype whatever autocast says, as the forward (FusedSTGCNBlock.forward turns it off there):
        # a compiled graph's backward is traced inside the caller's autocast region
        with torch.autocast(dout.device.type, enabled=False):
            return _TrainingBlock._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        if differentiable_backward((dout,)):  # create_graph=True: the gradients must be differentiable themselves
            return _differentiable_grads(ctx, dout)
        if not torch.compiler.is_compiling() and is_batched(dout):
            return _differentiable_grads(ctx, dout)  # batched grad_outputs (is_grads_batched, vectorized Jacobians)
        with torch.no_grad():
            return _fused_grads(ctx, dout)


def _fused_grads(ctx, dout: Tensor) -> tuple:
    """The block's backward from the forward's saved intermediates (first order: no graph)."""
    (x, A, w_gcn, w1, w_t, w2, w_r, w3, mask, dropout_seed, xa, z, h, u, out, xs, r0,
     mean1, invstd1, mean2, invstd2, mean3, invstd3, scale1, shift_map) = ctx.saved_tensors[:_FUSED_SAVED]
    cfg, be = ctx.cfg, ctx.cfg.backend
    T, N, V, C_in, C_out, T_out, pad = ctx.shape
    K = A.shape[0]
    kt, stride = cfg.kernel_size, cfg.stride
    dout = dout.reshape(-1, C_out).contiguous()
    dropout = (dropout_seed, cfg.dropout) if dropout_seed is not None and mask is None else mask
    du, dres, dw2, db2, dw3, db3, db_t, db_r = pieces.block_output_backward(
        be, dout, out, u, dropout, mean2, invstd2, w2, cfg.residual, r0, mean3, invstd3, w3)

    # temporal convolution: one GEMM per tap for the weight, one per tap accumulating into the phase buffer
    # (MKL accumulates in place; a transposed conv_frames over zero-padded du measured slower), each over the
    # output frames where the tap reads a real frame: its other rows of h are the padding's zeros (no weight
    # gradient) and their rows of dh are never read back
    taps = _tcn_taps(h, kt, stride, T_out)
    live = _live_frames(T, kt, stride)
    rows = _frame_rows(live, N * V)
    dw_t = torch.stack([(taps[j][rows[j]].t() @ du[rows[j]]).t() for j in range(kt)], dim=2).unsqueeze(-1)
    dh = _tcn_input_grad(du, w_t, h, T, live, stride, pad, T_out)
    dz, dw1, db1, joint_sums = pieces.bn_relu_phases_backward(be, dh, h, z, mean1, invstd1, w1, V, stride, pad)

    # graph convolution
    rows = x.view(-1, C_in)
    dz_rows = dz.view(-1, C_out)
    colsum = A.sum(1).double()  # (K, W)
    db_gcn = (colsum @ joint_sums).reshape(-1).to(w_gcn.dtype)
    if ctx.graph_first:  # aggregate the narrow side (C_in < C_out): x, and the gradient of xa
        if xa is None:  # the fused forward aggregated in registers: once more here (K * C_in wide)
            xa = pieces.graph_aggregate(be, x.view(T * N, V, C_in), A, False, False, None)
        w_cat = _gcn_weight_by_subset(w_gcn, K)
        dw_cat = xa.view(-1, K * C_in).t() @ dz_rows  # (K*C_in, C_out)
        dw_gcn = dw_cat.view(K, C_in, C_out).permute(0, 2, 1).reshape(K * C_out, C_in, 1, 1)
        dxa = dz_rows @ w_cat.t()
        dx = pieces.graph_aggregate(be, dxa.view(T * N, V, K * C_in), A, True, True, None).view(-1, C_in)
    else:
        w_mat = w_gcn.view(K * C_out, C_in)
        dy = pieces.graph_aggregate(be, dz.view(T * N, V, C_out), A, False, True, None).view(-1, K * C_out)
        dw_gcn = (dy.t() @ rows).view(K * C_out, C_in, 1, 1)
        # the identity residual's gradient enters as the GEMM's accumulator: no extra pass
        dx = torch.addmm(dres, dy, w_mat) if cfg.residual == "identity" else dy @ w_mat

    dw_r = db_r_out = None
    if cfg.residual == "conv":
        if xs is None:
            xs = _residual_input(x, stride).view(-1, C_in)
        dw_r = (dres.t() @ xs).view(C_out, C_in, 1, 1)
        db_r_out = db_r.to(w_r.dtype)
        # accumulate dres @ Wr into the frames the strided residual read, in place
        dx_read = dx.view(T, N * V, C_in)[::stride]
        dx_read.baddbmm_(dres.view(T_out, N * V, C_out), w_r.view(C_out, C_in).expand(T_out, C_out, C_in))
    p_dtype = w1.dtype
    grads = (dx.view(T, N, V, C_in), None, dw_gcn, db_gcn, dw1.to(p_dtype), db1.to(p_dtype), dw_t,
             db_t.to(w_t.dtype), dw2.to(p_dtype), db2.to(p_dtype), dw_r, db_r_out,
             dw3.to(p_dtype) if dw3 is not None else None, db3.to(p_dtype) if db3 is not None else None,
             None, None)
    return grads


def _differentiable_grads(ctx, dout: Tensor) -> tuple:
    """The block's vector-Jacobian product recomputed in plain PyTorch at the saved inputs, with its own graph, so
    that second-order gradients (gradient penalties, Hessian-vector products) are right: SPEC §3 in training mode
    (batch statistics; the forward's dropout multipliers). Runs only for a backward with create_graph=True."""
    saved = ctx.saved_tensors
    x, A, w_gcn, w1, w_t, w2, w_r, w3, mask, dropout_seed = saved[:10]
    b_gcn, b1, b_t, b2, b_r, b3 = saved[_FUSED_SAVED:]
    cfg = ctx.cfg
    T, N, V, C_in, C_out, T_out, pad = ctx.shape
    inputs = (x, A, w_gcn, b_gcn, w1, b1, w_t, b_t, w2, b2, w_r, b_r, w3, b3)
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i]]
    grads: list = [None] * 16
    if not wanted:
        return tuple(grads)
    if mask is None and dropout_seed is not None:
        mask = dropout_multipliers(dropout_seed, cfg.dropout, T_out * N * V, C_out, x.dtype, x.device)
    with torch.enable_grad():
        out = _block_in_plain_torch(x, A, w_gcn, b_gcn, w1, b1, w_t, b_t, w2, b2, w_r, b_r, w3, b3, mask, cfg, pad)
        found = torch.autograd.grad(out, [inputs[i] for i in wanted], dout.reshape(out.shape), create_graph=True,
                                    allow_unused=True)
    for i, g in zip(wanted, found):
        grads[i] = g
    return tuple(grads)


def _block_in_plain_torch(x_tm, A, w_gcn, b_gcn, w1, b1, w_t, b_t, w2, b2, w_r, b_r, w3, b3, mask, cfg: BlockConfig,
                          pad: int) -> Tensor:
    """The training-mode block of SPEC §3 on time-major x (T, N, V, C_in) -> (T_out, N, V, C_out), in differentiable
    torch ops; dropout multiplies by `mask` (time-major (rows, C_out) multipliers) or not at all (None)."""
    F = torch.nn.functional
    T, N, V, _ = x_tm.shape
    K = A.shape[0]
    x = x_tm.permute(1, 3, 0, 2)  # (N, C_in, T, V)
    y = F.conv2d(x, w_gcn, b_gcn)
    z = torch.einsum("nkctv,kvw->nctw", y.view(N, K, -1, T, V), A)
    h = F.relu(F.batch_norm(z, None, None, w1, b1, True, 0.0, cfg.eps[0]))
    u = F.batch_norm(F.conv2d(h, w_t, b_t, (cfg.stride, 1), (pad, 0)), None, None, w2, b2, True, 0.0, cfg.eps[1])
    if mask is not None:
        u = u * mask.view(u.shape[2], N, V, -1).permute(1, 3, 0, 2)
    if cfg.residual == "identity":
        u = u + x
    elif cfg.residual == "conv":
        r = F.conv2d(x, w_r, b_r, (cfg.stride, 1))
        u = u + F.batch_norm(r, None, None, w3, b3, True, 0.0, cfg.eps[2])
    return F.relu(u).permute(2, 0, 3, 1)


def training_forward(x_tm: Tensor, A: Tensor, params: dict, dropout_seed: Tensor | None, cfg: BlockConfig):
    """-> (out_tm, [(batch mean, biased batch var) of B1, B2 and, with a convolution residual, B3]). Dropout (with
    probability cfg.dropout) keeps the elements torch_stgcn.dropout_multipliers(dropout_seed, ...) keeps."""
    p = params
    out, m1, v1, m2, v2, m3, v3 = _TrainingBlock.apply(
        x_tm, A, p["gcn.conv.weight"], p["gcn.conv.bias"], p["tcn.0.weight"], p["tcn.0.bias"], p["tcn.2.weight"],
        p["tcn.2.bias"], p["tcn.3.weight"], p["tcn.3.bias"], p.get("residual.0.weight"), p.get("residual.0.bias"),
        p.get("residual.1.weight"), p.get("residual.1.bias"), dropout_seed, cfg)
    stats = [(m1, v1), (m2, v2)] + ([(m3, v3)] if cfg.residual == "conv" else [])
    return out, stats


def _fold(bn: dict, eps: float, dtype) -> tuple[Tensor, Tensor]:
    """Running-statistics BatchNorm as y = x * scale + shift."""
    scale = bn["weight"].double() * torch.rsqrt(bn["running_var"].double() + eps)
    return scale.to(dtype), (bn["bias"].double() - bn["running_mean"].double() * scale).to(dtype)


@dataclass(frozen=True)
class EvalWeights:
    """The eval block's operands: every BatchNorm folded into the convolution before it, each tensor contiguous in
    the layout its pass reads. fold_eval_weights builds them (traced code, and the backends without packed eval
    weights); a frozen block keeps them between calls (FusedSTGCNBlock.freeze)."""
    A: Tensor                       # (K, V, V) in the activations' dtype
    gcn_weight: Tensor              # B1's scale folded in: (K*C_out, C_in), or (K*C_in, C_out) where the unfused
    #                                 path aggregates first (see graph_first)
    gcn_bias: Tensor | None         # (K*C_out,) with B1's scale (fused GEMMs); None where phase_shift holds it
    phase_shift: Tensor             # (V, C_out): added before the ReLU that writes the phase buffer
    taps: Tensor                    # (kt, C_out, C_out): tap j's GEMM weight, B2's scale folded in
    bias: Tensor                    # (C_out,): the temporal convolution's bias with B2, + the conv residual's with B3
    residual_weight: Tensor | None  # (C_in, C_out) with B3's scale (convolution residual only)
    graph_first: bool               # the unfused path aggregates the input first (C_in < C_out)


def fold_eval_weights(A: Tensor, params: dict, bns: list[dict], cfg: BlockConfig, dtype) -> EvalWeights:
    """The block's parameters and running statistics -> EvalWeights for cfg.backend's eval passes."""
    fused = pieces.fused_gemms(cfg.backend, training=False)
    K = A.shape[0]
    A = A.to(dtype)
    w_gcn, b_gcn, w_t, b_t = (params[k] for k in ("gcn.conv.weight", "gcn.conv.bias", "tcn.2.weight", "tcn.2.bias"))
    C_out, C_in = w_t.shape[0], w_gcn.shape[1]
    V = A.shape[-1]
    scale1, shift1 = _fold(bns[0], cfg.eps[0], dtype)
    scale2, shift2 = _fold(bns[1], cfg.eps[1], dtype)
    graph_first = not fused and C_in < C_out
    gcn_bias = None
    if graph_first:
        gcn_weight = _gcn_weight_by_subset(w_gcn, K) * scale1
    else:
        gcn_weight = (w_gcn.view(K, C_out, C_in) * scale1.view(1, C_out, 1)).view(K * C_out, C_in)
    if fused:  # the kernel adds the scaled bias before aggregating, B1's shift in its epilogue
        gcn_bias = (b_gcn.view(K, C_out) * scale1).view(-1)
        phase_shift = shift1.expand(V, C_out)
    else:
        phase_shift = _bias_map(A, b_gcn) * scale1 + shift1
    bias = b_t * scale2 + shift2
    residual_weight = None
    if cfg.residual == "conv":
        scale3, shift3 = _fold(bns[2], cfg.eps[2], dtype)
        residual_weight = (params["residual.0.weight"].view(C_out, C_in) * scale3.view(-1, 1)).t()
        bias = bias + params["residual.0.bias"] * scale3 + shift3

    def ready(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().contiguous()

    return EvalWeights(ready(A), ready(gcn_weight), ready(gcn_bias), ready(phase_shift),
                       ready(_tcn_weight_taps(w_t) * scale2), ready(bias), ready(residual_weight), graph_first)


@dataclass(frozen=True)
class PackedEvalWeights:
    """The eval block's operands folded and packed by the backend's own call (pieces.PACKED_EVAL): opaque objects
    for its *_packed kernels, which only eager calls take. Folding in torch (~35 small operations a block) and
    packing in every kernel call were most of a small batch's eval time; a frozen block keeps these between calls
    (FusedSTGCNBlock.freeze)."""
    graph: object     # gcn_relu_phases_packed's weights: B1 folded in, its shift in the epilogue
    temporal: object  # conv_frames_packed's: B2 folded into the taps, the convolution residual's 1x1 with B3
    C_out: int


def eval_weights(A: Tensor, params: dict, bns: list[dict], cfg: BlockConfig, dtype) -> EvalWeights | PackedEvalWeights:
    """The operands of an eager eval call: folded and packed in one call of the backend where it has one (the
    same operands as fold_eval_weights, bitwise), else fold_eval_weights'. Traced code calls fold_eval_weights:
    its folding is part of the graph."""
    impl = pieces.packed_eval(cfg.backend)
    if impl is not None and pieces.fused_gemms(cfg.backend, training=False):
        packed = impl.pack_eval_block(A, params, bns, cfg.eps[:len(bns)], cfg.kernel_size, cfg.residual == "conv")
        if packed is not None:
            return PackedEvalWeights(*packed, C_out=params["tcn.2.weight"].shape[0])
    return fold_eval_weights(A, params, bns, cfg, dtype)


def eval_forward(x_tm: Tensor, w: EvalWeights | PackedEvalWeights, cfg: BlockConfig) -> Tensor:
    """Eval-mode block on time-major x: one pass into the phase buffer (graph convolution, bias map, B1 and ReLU;
    on an unfused backend an aggregation pass and a GEMM before it), the temporal convolution accumulating onto
    the residual, one ReLU. Packed weights (eval_weights) only in eager calls of the backend that packed them."""
    if isinstance(w, PackedEvalWeights) or pieces.fused_gemms(cfg.backend, training=False):
        return _eval_forward_fused_gemms(x_tm, w, cfg)
    be = cfg.backend
    T, N, V, C_in = x_tm.shape
    K = w.A.shape[0]
    C_out = w.taps.shape[2]
    rows = x_tm.view(-1, C_in)
    if w.graph_first:
        xa = pieces.graph_aggregate(be, x_tm.view(T * N, V, C_in), w.A, False, False, None)
        z = xa.view(-1, K * C_in) @ w.gcn_weight
    else:
        z = pieces.graph_aggregate(be, (rows @ w.gcn_weight.t()).view(T * N, V, K * C_out), w.A, True, False, None)
    pad, T_out, Tq = phase_geometry(T, cfg.kernel_size, cfg.stride)
    ones = torch.ones(C_out, dtype=x_tm.dtype, device=x_tm.device)
    h = pieces.bn_relu_phases(be, z.view(T, N * V, C_out), ones, w.phase_shift, V, cfg.stride, pad, Tq)

    if cfg.residual == "conv":
        u = torch.addmm(w.bias, _residual_input(x_tm, cfg.stride).view(-1, C_in), w.residual_weight)
    elif cfg.residual == "identity":
        u = None  # the GEMM below accumulates onto x itself; the bias goes into the final pass
    else:
        u = w.bias.expand(T_out * N * V, C_out).clone()
    taps = _tcn_taps(h, cfg.kernel_size, cfg.stride, T_out)
    weights = list(w.taps)
    u = torch.addmm(rows, taps[pad], weights[pad]) if u is None else u.addmm_(taps[pad], weights[pad])
    _add_taps(u, taps, weights, _frame_rows(_live_frames(T, cfg.kernel_size, cfg.stride), N * V), pad)
    if cfg.residual == "identity":  # relu(u + bias) in one pass
        return pieces.block_output(be, u, ones, w.bias, None, None, None, None).view(T_out, N, V, C_out)
    return torch.relu_(u).view(T_out, N, V, C_out)


def _eval_forward_fused_gemms(x_tm: Tensor, w: EvalWeights | PackedEvalWeights, cfg: BlockConfig) -> Tensor:
    """eval_forward on a backend whose kernels mix channels (pieces.FUSED_GEMMS): the graph convolution with B1
    folded into its weights and bias, B1's shift and ReLU in its epilogue, straight into the phase buffer (one
    kernel), and the temporal convolution with B2 folded in, the convolution residual (B3 folded in) as a pointwise
    term in the same accumulators, reading the strided frames in place, in one kernel whose epilogue adds the bias
    and the identity residual and applies the final ReLU."""
    be = cfg.backend
    T, N, V, C_in = x_tm.shape
    pad, T_out, Tq = phase_geometry(T, cfg.kernel_size, cfg.stride)
    identity = x_tm.view(T * N * V, C_in) if cfg.residual == "identity" else None
    x_read = x_tm.view(T, N * V, C_in) if cfg.residual == "conv" else None
    offsets = _tap_frame_offsets(cfg.kernel_size, cfg.stride, Tq)
    spans = pieces.tap_spans(T, cfg.kernel_size, cfg.stride)
    # the phase buffer dies here (a reused buffer where the backend has one); the output is the caller's
    if isinstance(w, PackedEvalWeights):
        impl, C_out = pieces.packed_eval(be), w.C_out
        h = impl.gcn_relu_phases_packed(x_tm, w.graph, cfg.stride, pad, Tq, scratch="phases")
        out = impl.conv_frames_packed(h.view(-1, N * V, C_out), w.temporal, offsets, 1, T_out, identity, True, spans,
                                      x_read, cfg.stride)
        return out.view(T_out, N, V, C_out)
    C_out = w.taps.shape[2]
    h = pieces.gcn_relu_phases(be, x_tm, w.A, w.gcn_weight, w.gcn_bias, w.phase_shift, cfg.stride, pad, Tq,
                               scratch="phases")
    out, _, _ = pieces.conv_frames(be, h.view(-1, N * V, C_out), w.taps, w.bias, offsets, 1, T_out, identity, True,
                                   False, spans, x_read, w.residual_weight, cfg.stride)
    return out.view(T_out, N, V, C_out)


def draw_dropout_seed() -> Tensor:
    """A dropout seed from torch's default generator (torch.manual_seed reproduces it): a 0-dim int64 tensor, so
    torch.compile traces it without reading its value."""
    return torch.randint(0, 1 << 62, (), dtype=torch.int64)
