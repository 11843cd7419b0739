"""The memory-bound passes of the fused ST-GCN block in plain PyTorch: the executable contract that every native
backend (csrc/cpu, csrc/cuda, kernels/) implements, and the fallback for dtypes and devices they do not serve.

Layout (see ugcn_fast/ops/stgcn_block.py for why): activations are time-major, channels-last matrices,
rows (t, n, v) and channels contiguous; a "group" is the V rows of one (t, n). Statistics are per channel sums in
float64. The temporal convolution's input (relu(BN1(z))) is written by the BN1 pass into the phase buffer
`h_ph (s, Tq, N*V, C)`: padded frame tp = t + pad lives in phase tp % s at slot tp // s, zero where t is outside
[0, T), so tap j of a stride-s convolution is the contiguous slice `h_ph[j % s, j // s : j // s + T_out]` (one
GEMM per tap over the rows, or conv_frames reading every tap in place), the input stored once.
"""
from __future__ import annotations

import torch
from torch import Tensor


def graph_aggregate(src: Tensor, A: Tensor, contract: bool, transpose: bool, bias_map: Tensor | None) -> Tensor:
    """Applies the K adjacency subsets along the joints of every group, M = A or A^T (transpose):
    contract: src (G, V, K*C) -> out (G, V, C),   out[g, w, c]     = sum_k sum_v M[k, v, w] src[g, v, k*C + c]
    expand:   src (G, V, C)   -> out (G, V, K*C), out[g, w, k*C+c] = sum_v M[k, v, w] src[g, v, c]
    bias_map (V, C), contract only: added to out."""
    K, V, _ = A.shape
    M = (A.transpose(1, 2) if transpose else A).to(src.dtype)
    G = src.shape[0]
    if contract:
        C = src.shape[2] // K
        out = torch.einsum("gvkc,kvw->gwc", src.view(G, V, K, C), M)
        return (out if bias_map is None else out + bias_map).contiguous()
    return torch.einsum("gvc,kvw->gwkc", src, M).reshape(G, V, -1).contiguous()


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """(R, C) -> per-channel (sum, sum of squares) in float64."""
    x64 = x.double().flatten(0, -2)  # (rows, C); unlike reshape(-1, C), fine with C = 0
    return x64.sum(0), (x64 * x64).sum(0)


def bias_map_stats(x: Tensor, bias_map: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x (G, V, C) + bias_map (V, C), and its channel statistics."""
    y = x + bias_map
    return (y, *channel_stats(y))


def phase_geometry(T: int, kernel_size: int, stride: int) -> tuple[int, int, int]:
    """(pad, T_out, Tq) of a stride-`stride` temporal convolution with zero padding (kernel_size - 1) / 2."""
    pad = (kernel_size - 1) // 2
    T_out = (T + 2 * pad - kernel_size) // stride + 1
    return pad, T_out, T_out + (kernel_size - 1) // stride


def tap_spans(T: int, kernel_size: int, stride: int) -> list[int]:
    """conv_frames' tap_spans for the temporal convolution on the phase buffer of T frames: tap j reads input frame
    t * stride + j - pad for output frame t, a real frame for t in [first_j, end_j) and the zero padding elsewhere;
    flattened (first_0, end_0, first_1, ...)."""
    pad, T_out, _ = phase_geometry(T, kernel_size, stride)
    spans = []
    for j in range(kernel_size):
        first = min(T_out, max(0, -((j - pad) // stride)))
        end = min(T_out, (T - 1 + pad - j) // stride + 1)
        spans += [first, max(first, end)]
    return spans


def _phase_index(T: int, pad: int, stride: int, Tq: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """For every input frame t: (phase, slot, stored) with stored False for frames no tap reads."""
    tp = torch.arange(T, device=device) + pad
    phase, slot = tp % stride, tp // stride
    return phase, slot, slot < Tq


def time_major(x: Tensor) -> Tensor:
    """The block's input (N, C, T, V) in its contiguous time-major layout (T, N, V, C)."""
    return x.permute(2, 0, 3, 1).contiguous()


def bn_relu_phases(z: Tensor, scale: Tensor, shift_map: Tensor, V: int, stride: int, pad: int, Tq: int) -> Tensor:
    """h = relu(z * scale[c] + shift_map[v, c]) for z (T, N*V, C), written to the phase buffer (stride, Tq, N*V, C)."""
    T, NV, C = z.shape
    h = torch.relu(z.view(T, NV // V, V, C) * scale + shift_map).view(T, NV, C)
    h_ph = z.new_zeros((stride, Tq, NV, C))
    phase, slot, stored = _phase_index(T, pad, stride, Tq, z.device)
    h_ph[phase[stored], slot[stored]] = h[stored]
    return h_ph


def relu_backward(grad: Tensor, out: Tensor) -> Tensor:
    """ReLU's backward as autograd's threshold_backward: 0 where out <= 0 (even for a NaN grad), grad elsewhere, a
    NaN out included (a product with (out > 0) would differ on both)."""
    return torch.where(out <= 0, torch.zeros((), dtype=grad.dtype, device=grad.device), grad)


def _bn_backward(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-statistics BatchNorm backward over rows: (dx, dweight, dbias) for y = weight * (x - mean) * invstd + b."""
    M = dy.numel() // dy.shape[-1]
    xhat = (x.double() - mean) * invstd
    dy64 = dy.double()
    dbias = dy64.reshape(-1, dy.shape[-1]).sum(0)
    dweight = (dy64 * xhat).reshape(-1, dy.shape[-1]).sum(0)
    dx = (weight.double() * invstd / M) * (M * dy64 - dbias - xhat * dweight)
    return dx.to(dy.dtype), dweight, dbias


# splitmix64's constants as int64 (torch has no uint64 arithmetic; int64 multiplication wraps the same way)
_GOLDEN, _MIX1, _MIX2 = (c - (1 << 64) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right_logical(z: Tensor, k: int) -> Tensor:
    return (z >> k) & ((1 << (64 - k)) - 1)


def dropout_multipliers(seed: int | Tensor, p: float, rows: int, C: int, dtype: torch.dtype, device) -> Tensor:
    """Dropout's multipliers (0 or 1 / (1 - p)) of a time-major (rows, C) activation, hashed from `seed`: element e
    is kept when 24 bits of splitmix64(seed + (e + 1) * golden) are >= round(p * 2^24). The same function as
    csrc/stgcn_block_math.h's dropout_multiplier, which the CPU kernels evaluate on the fly instead of storing."""
    e = torch.arange(1, rows * C + 1, dtype=torch.int64, device=device)
    z = torch.as_tensor(seed, dtype=torch.int64).to(device) + e * _GOLDEN
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    z = z ^ _shift_right_logical(z, 31)
    keep = _shift_right_logical(z, 40) >= int(p * (1 << 24) + 0.5)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype, device=device)
    return torch.where(keep, scale, torch.zeros((), dtype=dtype, device=device)).view(rows, C)


def block_output(u: Tensor, scale2: Tensor, shift2: Tensor, mask: Tensor | None, res: Tensor | None,
                 scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    """out = relu((u * scale2 + shift2) * mask + residual) over (R, C) rows, residual = res * scale3 + shift3
    (convolution residual), res (identity) or 0 (res None). mask holds dropout's multipliers (0 or 1 / (1 - p))."""
    y = u * scale2 + shift2
    if mask is not None:
        y = y * mask
    if res is not None:
        y = y + (res * scale3 + shift3 if scale3 is not None else res)
    return torch.relu(y)


def block_output_backward(dout: Tensor, out: Tensor, u: Tensor, mask: Tensor | None, mean2: Tensor, invstd2: Tensor,
                          weight2: Tensor, res_kind: str, r0: Tensor | None, mean3: Tensor | None,
                          invstd3: Tensor | None, weight3: Tensor | None) -> tuple[Tensor, ...]:
    """Backward of block_output in training (BN2 and BN3 with batch statistics): returns (du, dres, dweight2,
    dbias2, dweight3, dbias3, dbias_t, dbias_r). dres is dL/d(res) for the identity residual, dL/d(r0) for the
    convolution residual (BN3 backward applied), None without residual; dbias_t = sum(du), dbias_r = sum(dres)
    (conv), the gradients of the biases of the convolutions feeding BN2 / BN3. Unused entries are None."""
    g = relu_backward(dout, out)
    d_bn2 = g * mask if mask is not None else g
    du, dweight2, dbias2 = _bn_backward(d_bn2, u, mean2, invstd2, weight2)
    dres = dweight3 = dbias3 = dbias_r = None
    if res_kind == "identity":
        dres = g
    elif res_kind == "conv":
        dres, dweight3, dbias3 = _bn_backward(g, r0, mean3, invstd3, weight3)
        dbias_r = dres.double().reshape(-1, dres.shape[-1]).sum(0)
    dbias_t = du.double().reshape(-1, du.shape[-1]).sum(0)
    return du, dres, dweight2, dbias2, dweight3, dbias3, dbias_t, dbias_r


def bn_relu_phases_backward(dh_ph: Tensor, h_ph: Tensor, z: Tensor, mean1: Tensor, invstd1: Tensor, weight1: Tensor,
                            V: int, stride: int, pad: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward of bn_relu_phases in training (BN1 with batch statistics) for z (T, N*V, C): returns
    (dz (T, N*V, C), dweight1, dbias1, joint_sums (V, C) = sum over (t, n) of dz, in float64). Frames no tap reads
    receive no gradient through h (their dz is BatchNorm's mean terms only)."""
    T, NV, C = z.shape
    Tq = h_ph.shape[1]
    phase, slot, stored = _phase_index(T, pad, stride, Tq, z.device)
    g = z.new_zeros(z.shape)
    g[stored] = relu_backward(dh_ph[phase[stored], slot[stored]], h_ph[phase[stored], slot[stored]])
    dz, dweight1, dbias1 = _bn_backward(g, z, mean1, invstd1, weight1)
    joint_sums = dz.double().view(T, NV // V, V, C).sum((0, 1))
    return dz, dweight1, dbias1, joint_sums


# ---- channel mixing with fused epilogues (served natively by backends listed in stgcn_pieces.FUSED_GEMMS) -------
def gcn_forward(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The graph convolution of SPEC §3 on groups, with its output's channel statistics:
    x (G, V, C_in), A (K, V, V), weight (K*C_out, C_in), bias (K*C_out,) -> (z (G, V, C_out), sum, sum of squares),
    z[g, w, c] = sum_k sum_v A[k, v, w] (x[g, v] . weight[k*C_out + c] + bias[k*C_out + c]); the 1x1 convolution's
    output is rounded to x's dtype before the aggregation, as the unfused convolution's is."""
    G, V, C_in = x.shape
    K = A.shape[0]
    y = torch.addmm(bias, x.reshape(-1, C_in), weight.t()).view(G, V, weight.shape[0])
    z = graph_aggregate(y, A, True, False, None)
    return (z, *channel_stats(z))


def gcn_relu_phases(x: Tensor, A: Tensor, weight: Tensor, bias: Tensor, shift_map: Tensor, stride: int, pad: int,
                    Tq: int) -> Tensor:
    """The eval block's graph convolution written straight into the temporal convolution's phase buffer, with B1
    folded in: x (T, N, V, C_in) -> h (stride, Tq, N*V, C_out), h = relu(z + shift_map[v, c]) where z =
    gcn_forward(x) (B1's scale folded into weight and bias by the caller; shift_map (V, C_out) the rest), frame t at
    phase (t + pad) % stride, slot (t + pad) // stride (frames past the last slot dropped), as bn_relu_phases;
    slots no frame fills are zero. No statistics (eval needs none)."""
    T, N, V, C_in = x.shape
    z, _, _ = gcn_forward(x.reshape(T * N, V, C_in), A, weight, bias)
    C_out = z.shape[-1]
    return bn_relu_phases(z.view(T, N * V, C_out), z.new_ones(C_out), shift_map, V, stride, pad, Tq)


CONV_FRAMES_MAX_TAPS = 9


def check_conv_frames(src: Tensor, weight: Tensor, bias: Tensor | None, frame_offsets: list[int], frame_step: int,
                      T_out: int, add: Tensor | None, tap_spans: list[int] | None = None, src2: Tensor | None = None,
                      weight2: Tensor | None = None, frame_step2: int = 1) -> list[int]:
    """The arguments every conv_frames implementation accepts (ValueError naming the one that is wrong); returns
    the frame offsets as ints."""
    if (src2 is None) != (weight2 is None):
        raise ValueError("src2 and weight2 come together (the pointwise term) or not at all")
    return check_conv_frames_shapes(
        tuple(src.shape), tuple(weight.shape), None if bias is None else tuple(bias.shape), frame_offsets,
        frame_step, T_out, None if add is None else add.numel(), tap_spans,
        None if src2 is None else tuple(src2.shape), None if weight2 is None else tuple(weight2.shape), frame_step2)


def check_conv_frames_shapes(src: tuple, weight: tuple, bias: tuple | None, frame_offsets: list[int],
                             frame_step: int, T_out: int, add_numel: int | None, tap_spans: list[int] | None = None,
                             src2: tuple | None = None, weight2: tuple | None = None, frame_step2: int = 1
                             ) -> list[int]:
    """check_conv_frames on the tensors' shapes (and add's size): for callers that hold no weight tensor (packed
    weights)."""
    F, R, C_in = src
    kt, _, C_out = weight
    offsets = [int(o) for o in frame_offsets]
    if not 1 <= len(offsets) <= CONV_FRAMES_MAX_TAPS or len(offsets) != kt or weight[1] != C_in:
        raise ValueError(f"conv_frames takes 1 to {CONV_FRAMES_MAX_TAPS} taps, one frame offset per weight tap, "
                         f"weight (kt, C_in, C_out); got {len(offsets)} offsets for weight {weight} and "
                         f"src {src}")
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    if T_out > 0 and any(o < 0 or o + (T_out - 1) * frame_step >= F for o in offsets):
        raise ValueError(f"frame offsets {offsets} with step {frame_step} and T_out {T_out} read past the {F} "
                         f"frames of src")
    if add_numel is not None and add_numel != T_out * R * C_out:
        raise ValueError(f"add must hold (T_out * R, C_out) = ({T_out * R}, {C_out}) values, got {add_numel}")
    if bias is not None and bias != (C_out,):
        raise ValueError(f"bias must have shape ({C_out},), got {bias}")
    if tap_spans is not None:
        spans = [int(v) for v in tap_spans]
        pairs = list(zip(spans[::2], spans[1::2]))
        if len(spans) != 2 * kt or any(not 0 <= first <= end <= T_out for first, end in pairs):
            raise ValueError(f"tap_spans must hold one (first, end) pair per tap with 0 <= first <= end <= T_out = "
                             f"{T_out}; got {list(tap_spans)} for {kt} taps")
    if src2 is not None:
        if len(src2) != 3 or src2[1] != R or weight2 != (src2[2], C_out):
            raise ValueError(f"the pointwise term needs src2 (F2, R = {R}, C_in2) and weight2 (C_in2, C_out = "
                             f"{C_out}); got src2 {src2}, weight2 {weight2}")
        if frame_step2 < 1 or (T_out > 0 and (T_out - 1) * frame_step2 >= src2[0]):
            raise ValueError(f"frame_step2 {frame_step2} with T_out {T_out} must be >= 1 and read within the "
                             f"{src2[0]} frames of src2")
    return offsets


def conv_frames(src: Tensor, weight: Tensor, bias: Tensor | None, frame_offsets: list[int], frame_step: int,
                T_out: int, add: Tensor | None, relu: bool, stats: bool, tap_spans: list[int] | None = None,
                src2: Tensor | None = None, weight2: Tensor | None = None, frame_step2: int = 1
                ) -> tuple[Tensor, Tensor, Tensor]:
    """A temporal (or pointwise) convolution over time-major frames as a sum of per-tap GEMMs, with an epilogue:
    src (F, R, C_in): F frames of R rows; weight (kt, C_in, C_out); bias (C_out,) or None; add (T_out * R, C_out)
    or None; optionally a pointwise term, src2 (F2, R, C_in2) and weight2 (C_in2, C_out);
        u[t * R + r] = sum_j src[frame_offsets[j] + t * frame_step, r] @ weight[j]
                       + src2[t * frame_step2, r] @ weight2 + bias + add[t * R + r],
    then relu(u) when `relu`. Returns (u (T_out * R, C_out) in src's dtype, per-channel sum and sum of squares of
    the returned u in float64 when `stats`, else two empty float64 tensors).
    Tap j of a stride-s temporal convolution on the phase buffer h_ph (s, Tq, R, C) is src = h_ph.view(s * Tq, R, C),
    frame_offsets[j] = (j % s) * Tq + j // s, frame_step 1; a stride-s 1x1 residual on x (T, R, C) is src = x,
    frame_offsets [0], frame_step s.
    tap_spans: None, or (first, end) per tap, flattened: the caller's word that tap j reads zero frames (a
    convolution's padding) for the output frames outside [first_j, end_j) (tap_spans() gives them for the phase
    buffer). An implementation may skip those products (the CPU kernel does); this one reads the zeros. With finite
    weights the result is the same either way. The eval block's convolution residual is its pointwise term:
    src2 = x (T, R, C_in), frame_step2 = the stride."""
    check_conv_frames(src, weight, bias, frame_offsets, frame_step, T_out, add, tap_spans, src2, weight2, frame_step2)
    R = src.shape[1]
    out_dtype = src.dtype
    u = None
    for j, first in enumerate(frame_offsets):
        frames = src[first:][::frame_step][:T_out].reshape(T_out * R, src.shape[2])
        u = frames @ weight[j] if u is None else u.addmm_(frames, weight[j])
    if src2 is not None:
        u.addmm_(src2[::frame_step2][:T_out].reshape(T_out * R, src2.shape[2]), weight2)
    if bias is not None:
        u += bias
    if add is not None:
        u += add
    if relu:
        u = torch.relu_(u)
    u = u.to(out_dtype).contiguous()
    if stats:
        return (u, *channel_stats(u))
    empty = u.new_empty((0,), dtype=torch.float64)
    return u, empty, empty.clone()
