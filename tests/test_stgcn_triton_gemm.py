"""Triton channel-mixing kernels of the fused ST-GCN block (kernels/stgcn_gemm.py via
ugcn_fast.backends.triton_stgcn: gcn_forward and conv_frames, GEMMs with fused epilogues) against the plain-PyTorch
contract (ugcn_fast.backends.torch_stgcn).

Without a CUDA GPU the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py
before triton is imported) in float32 and float64 on tiny shapes. With a GPU they run compiled on CUDA tensors in
float32 / float16 / bfloat16 / float64. Every comparison runs the contract on the same inputs in the same dtype.
"""
from __future__ import annotations

import pytest
import torch

from _triton_env import DEVICE, INTERPRET  # noqa: F401  (first: switches on Triton's interpreter without a GPU)
from _triton_stgcn import DTYPES, TOL, adjacency as _adjacency, close as _close, rand as _rand  # noqa: F401
from _triton_stgcn import stat_tol as _stat_tol  # noqa: F401

from ugcn_fast.backends import torch_stgcn as ref  # noqa: E402
from ugcn_fast.backends import triton_stgcn as tri  # noqa: E402
from ugcn_fast.kernels import stgcn_block as kst  # noqa: E402  (the shared helpers: partial sums)
from ugcn_fast.kernels import stgcn_gemm as kgemm  # noqa: E402  (the module the backend runs)

pytestmark = pytest.mark.triton  # registered in pyproject.toml: `-m "not triton"` deselects this module


def _close_stats(got, want, dtype):
    """(sum, sum of squares) of the stored outputs: sums of the same values up to their rounding, so the sum's
    error is measured against the sum of magnitudes (a channel's sum may cancel to ~0)."""
    out, s, ss = got
    out_ref, s_ref, ss_ref = want
    assert s.dtype == ss.dtype == torch.float64 and s.data_ptr() != ss.data_ptr()
    stat = _stat_tol(dtype)
    magnitudes = out_ref.double().reshape(-1, out_ref.shape[-1]).abs().sum(0)
    _close(s, s_ref, stat, scale=magnitudes.max().item() if magnitudes.numel() else None, what="sum")
    _close(ss, ss_ref, stat, what="sumsq")


# ---- the graph convolution's forward -----------------------------------------------------------------------------
# (G, V, C_in, C_out, K): V padded from 17 and 5, C_in within one chunk, ragged (20) and past one (70), C_out from
# 1 to past one channel block (65), K = 1 and 3, one group and several
GCN = [(5, 17, 3, 20, 3), (1, 5, 70, 1, 1), (4, 5, 16, 3, 3), (3, 17, 20, 65, 3)]


def _gcn_inputs(G, V, C_in, C_out, K, dtype, bias_offset=0.0):
    x = _rand((G, V, C_in), dtype, 90)
    A = _adjacency(K, V, 91).to(dtype).to(DEVICE)
    weight = _rand((K * C_out, C_in), dtype, 92)
    bias = _rand((K * C_out,), dtype, 93, offset=bias_offset)
    return x, A, weight, bias


def _aggregates_first(C_in, C_out) -> bool:
    """The side gcn_forward's launchers pick for these widths (input: True)."""
    return kgemm._aggregate_first(C_in, kgemm._dot_block(C_in, kst._MAX_BLOCK_C), max(16, kst._block_c(C_out)))


def test_gcn_shapes_take_both_sides_of_the_aggregation():
    """The narrow side: the input for 3 -> 20 and 20 -> 65 (16 and 32 input lanes under a 32- and a 64-wide output
    block), the output for 70 -> 1 and 16 -> 3; UGCN's widest graph-first block (128 -> 256: each 64-channel
    output block would aggregate all 128 input channels) aggregates its output."""
    sides = {(c_in, c_out): _aggregates_first(c_in, c_out) for _, _, c_in, c_out, _ in GCN}
    assert sides == {(3, 20): True, (70, 1): False, (16, 3): False, (20, 65): True}
    assert _aggregates_first(16, 32) and _aggregates_first(32, 64) and not _aggregates_first(128, 256)
    assert {_aggregates_first(c_in, c_out) for _, _, _, c_in, c_out, *_ in GCN_PHASES} == {True, False}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("G,V,C_in,C_out,K", GCN)
def test_gcn_forward(G, V, C_in, C_out, K, dtype):
    args = _gcn_inputs(G, V, C_in, C_out, K, dtype)
    got, want = tri.gcn_forward(*args), ref.gcn_forward(*args)
    _close(got[0], want[0], dtype, what="z")
    _close_stats(got, want, dtype)


def test_gcn_forward_empty():
    """No groups or no output channels: nothing launched, zero statistics. (The contract's channel_stats cannot
    reshape 0 channels, so those expectations are spelled out.)"""
    dtype = DTYPES[0]
    args = _gcn_inputs(0, 5, 4, 3, 3, dtype)
    for a, b in zip(tri.gcn_forward(*args), ref.gcn_forward(*args)):
        assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    z, s, ss = tri.gcn_forward(*_gcn_inputs(2, 5, 4, 0, 3, dtype))
    assert z.shape == (2, 5, 0) and z.dtype == dtype
    assert s.shape == ss.shape == (0,) and s.dtype == ss.dtype == torch.float64


def test_gcn_forward_large_mean_small_spread():
    """z with mean ~1000 and spread ~1e-2 per channel: the per-program, per-joint shift keeps the variance that
    float32 sums of z^2 would lose."""
    dtype = torch.float32
    x, A, weight, bias = _gcn_inputs(6, 5, 3, 4, 1, dtype, bias_offset=1000.0)
    A = torch.eye(5, dtype=dtype, device=DEVICE)[None]  # z = y: every joint near its channel's bias
    z, s, ss = tri.gcn_forward(x, A, weight * 1e-2, bias)
    _check_variance(z.reshape(-1, z.shape[-1]), s, ss)


def _check_variance(out, s, ss):
    """The variance from (sum, sum of squares) against the float64 variance of the stored values themselves."""
    M = out.shape[0]
    var = ss / M - (s / M) ** 2
    out64 = out.double()
    torch.testing.assert_close(var.cpu(), out64.var(0, unbiased=False).cpu(), rtol=1e-3, atol=0)
    torch.testing.assert_close(s.cpu(), out64.sum(0).cpu(), rtol=1e-12, atol=0)


# ---- the eval block's graph convolution into the phase buffer ----------------------------------------------------
# (T, N, V, C_in, C_out, K, kernel_size, stride): T = 1, 2 and odd / even, not divisible by the stride; kernel sizes
# 1, 3, 5, 9 (pad = (kernel_size - 1) // 2, Tq from phase_geometry: up to 4 padding slots per side), N = 1 and 3,
# V = 17, 5, 25, C_in < C_out and C_in > C_out (70: past one chunk), C_out ragged (3, 7, 20) and past one channel
# block (65), K = 1 and 3
GCN_PHASES = [(1, 1, 17, 3, 20, 3, 3, 1), (2, 3, 5, 20, 3, 1, 9, 2), (5, 1, 17, 4, 17, 3, 5, 2),
              (4, 3, 25, 20, 7, 1, 1, 1), (7, 1, 5, 3, 20, 3, 9, 1), (6, 3, 17, 3, 65, 3, 3, 2),
              (3, 1, 5, 70, 5, 1, 1, 2), (1, 3, 5, 4, 3, 3, 5, 1), (2, 1, 17, 3, 20, 1, 9, 2)]


@pytest.fixture
def poisoned_new_empty(monkeypatch):
    """Tensor.new_empty returns NaN-filled floating-point memory: an element the launcher or the kernel leaves
    unwritten shows (the contract allocates with zeros)."""
    new_empty = torch.Tensor.new_empty

    def poisoned(self, *args, **kwargs):
        out = new_empty(self, *args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch.Tensor, "new_empty", poisoned)


def _phases_inputs(T, N, V, C_in, C_out, K, dtype):
    x, A, weight, bias = _gcn_inputs(T * N, V, C_in, C_out, K, dtype)
    shift_map = _rand((V, C_out), dtype, 94, scale=0.5, offset=-0.3)  # negative enough that the ReLU zeroes some
    return x.view(T, N, V, C_in), A, weight, bias, shift_map


def _padding_slots(T, stride, pad, Tq):
    """(phase, slot) of the phase buffer that no frame fills."""
    phase, slot, stored = ref._phase_index(T, pad, stride, Tq, "cpu")
    filled = set(zip(phase[stored].tolist(), slot[stored].tolist()))
    return [(q, j) for q in range(stride) for j in range(Tq) if (q, j) not in filled]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,N,V,C_in,C_out,K,kernel_size,stride", GCN_PHASES)
def test_gcn_relu_phases(T, N, V, C_in, C_out, K, kernel_size, stride, dtype, poisoned_new_empty):
    pad, _, Tq = ref.phase_geometry(T, kernel_size, stride)
    args = _phases_inputs(T, N, V, C_in, C_out, K, dtype)
    got, want = tri.gcn_relu_phases(*args, stride, pad, Tq), ref.gcn_relu_phases(*args, stride, pad, Tq)
    assert got.shape == (stride, Tq, N * V, C_out)
    _close(got, want, dtype, what="h")
    padding = _padding_slots(T, stride, pad, Tq)
    assert padding or pad == 0
    for q, j in padding:  # exactly zero, though new_empty's memory was NaN
        assert torch.equal(got[q, j], torch.zeros_like(got[q, j])), (q, j)
    assert (want == 0).sum() > len(padding) * N * V * C_out and (want > 0).any()  # the ReLU zeroed some values


def test_gcn_relu_phases_relu_matters():
    """A shift that puts part of every channel below zero: exactly those values are zero (the stored value is
    relu(z + shift), not z + shift), and with the shift raised above every value the output is z + shift itself."""
    dtype = DTYPES[0]
    T, N, V, C_in, C_out, K, stride = 3, 2, 5, 4, 6, 3, 2
    pad, _, Tq = ref.phase_geometry(T, 3, stride)
    x, A, weight, bias, _ = _phases_inputs(T, N, V, C_in, C_out, K, dtype)
    z = ref.gcn_forward(x.reshape(T * N, V, C_in), A, weight, bias)[0]
    shift_map = -z.median(0).values  # about half of every (v, c) below zero
    got = tri.gcn_relu_phases(x, A, weight, bias, shift_map, stride, pad, Tq)
    want = ref.gcn_relu_phases(x, A, weight, bias, shift_map, stride, pad, Tq)
    _close(got, want, dtype, what="h")
    phase, slot, _ = ref._phase_index(T, pad, stride, Tq, x.device)
    pre = (z + shift_map).view(T, N * V, C_out)
    clear = pre.abs() > 1e-6 * pre.abs().max()  # the median itself may round either way
    assert (pre[clear] < 0).any() and (pre[clear] > 0).any()
    assert torch.equal((got[phase, slot] == 0)[clear], (pre < 0)[clear])
    lifted = tri.gcn_relu_phases(x, A, weight, bias, shift_map + 100.0, stride, pad, Tq)
    _close(lifted[phase, slot], pre + 100.0, dtype, what="no ReLU")


def test_gcn_relu_phases_nan():
    """A NaN in x spreads over its group as in the contract (y's NaN row reaches every joint through the
    aggregation, 0 * NaN included) and survives the ReLU; the other groups are untouched."""
    dtype = DTYPES[1]
    T, N, V, C_in, C_out, K, stride = 4, 3, 5, 4, 17, 3, 2
    pad, _, Tq = ref.phase_geometry(T, 5, stride)
    x, A, weight, bias, shift_map = _phases_inputs(T, N, V, C_in, C_out, K, dtype)
    x = x.clone()
    x[1, 2, 3, 1] = float("nan")
    got = tri.gcn_relu_phases(x, A, weight, bias, shift_map, stride, pad, Tq)
    want = ref.gcn_relu_phases(x, A, weight, bias, shift_map, stride, pad, Tq)
    nan = want.isnan()
    assert nan.any() and torch.equal(got.isnan(), nan)
    _close(torch.where(nan, 0.0, got), torch.where(nan, 0.0, want), dtype, what="h outside the NaN group")


def test_gcn_relu_phases_dropped_frames(poisoned_new_empty):
    """A Tq shorter than phase_geometry's: the frames past the last slot are not stored (the kernel's mask), the
    buffer holds only what the contract's does."""
    dtype = DTYPES[0]
    T, N, V, C_in, C_out, K = 7, 2, 5, 3, 5, 3
    for stride, pad, Tq in ((1, 1, 3), (2, 2, 2), (2, 0, 1)):
        args = _phases_inputs(T, N, V, C_in, C_out, K, dtype)
        got, want = tri.gcn_relu_phases(*args, stride, pad, Tq), ref.gcn_relu_phases(*args, stride, pad, Tq)
        _close(got, want, dtype, what=f"h stride {stride} pad {pad} Tq {Tq}")


def test_gcn_relu_phases_empty(poisoned_new_empty):
    """No frames (T = 0: the buffer is all padding, zeros), no samples (N = 0) or no output channels: the
    contract's shapes, nothing launched."""
    dtype = DTYPES[0]
    for T, N, C_out in ((0, 2, 3), (3, 0, 3), (3, 2, 0)):
        x, A, weight, bias, shift_map = _phases_inputs(max(T, 1), max(N, 1), 5, 4, C_out, 3, dtype)
        x = x[:T, :N]
        pad, _, Tq = ref.phase_geometry(T, 3, 2)
        got = tri.gcn_relu_phases(x, A, weight, bias, shift_map, 2, pad, Tq)
        want = ref.gcn_relu_phases(x, A, weight, bias, shift_map, 2, pad, Tq)
        assert got.shape == want.shape and got.dtype == want.dtype and torch.equal(got, want), (T, N, C_out)


# ---- temporal / pointwise convolution over frames ----------------------------------------------------------------
# (R, C_in, C_out, T_out, kt, stride) on the phase buffer of a stride-`stride` convolution: R = 17 and 5 (rows of
# a tile straddle frames), C_in within one K chunk (3), ragged (20) and past two (70), C_out from 1 to past one N
# tile (65), T_out = 1, kt = 1, 3, 5, 9, and 68 rows (a second, ragged row tile)
CONV = [(17, 3, 17, 2, 3, 1), (5, 20, 1, 3, 5, 2), (17, 70, 65, 1, 9, 1), (5, 20, 65, 4, 9, 2), (17, 3, 1, 4, 1, 1),
        (5, 70, 17, 3, 5, 1)]
# (bias, add, relu, stats): the training forward (bias, stats), the eval forward (bias, residual add, relu), and
# the combinations around them
FLAGS = [(True, False, False, True), (False, True, True, True), (True, True, True, False), (False, False, False, False)]


def _phase_src(R, C_in, T_out, kt, stride, dtype):
    """The phase buffer seen as frames, and tap j's first frame: (j % stride) * Tq + j // stride."""
    Tq = T_out + (kt - 1) // stride
    src = _rand((stride * Tq, R, C_in), dtype, 100)
    return src, [(j % stride) * Tq + j // stride for j in range(kt)]


def _epilogue_inputs(M, C_out, dtype, with_bias, with_add):
    bias = _rand((C_out,), dtype, 102, offset=0.2) if with_bias else None
    add = _rand((M, C_out), dtype, 103) if with_add else None
    return bias, add


def _check_conv_frames(src, weight, bias, offsets, step, T_out, add, relu, stats, dtype):
    got = tri.conv_frames(src, weight, bias, offsets, step, T_out, add, relu, stats)
    want = ref.conv_frames(src, weight, bias, offsets, step, T_out, add, relu, stats)
    _close(got[0], want[0], dtype, what="u")
    if stats:
        _close_stats(got, want, dtype)
    else:
        assert got[1].shape == got[2].shape == (0,) and got[1].dtype == got[2].dtype == torch.float64
    return got


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_bias,with_add,relu,stats", FLAGS)
@pytest.mark.parametrize("R,C_in,C_out,T_out,kt,stride", CONV)
def test_conv_frames_phases(R, C_in, C_out, T_out, kt, stride, with_bias, with_add, relu, stats, dtype):
    src, offsets = _phase_src(R, C_in, T_out, kt, stride, dtype)
    weight = _rand((kt, C_in, C_out), dtype, 101)
    bias, add = _epilogue_inputs(T_out * R, C_out, dtype, with_bias, with_add)
    _check_conv_frames(src, weight, bias, offsets, 1, T_out, add, relu, stats, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,R,C_in,C_out", [(7, 5, 3, 17), (6, 17, 20, 1), (8, 5, 70, 65), (1, 17, 3, 3)])
def test_conv_frames_strided_residual(T, R, C_in, C_out, dtype):
    """A stride-2 1x1 residual reads every other frame of x in place: frame_offsets [0], frame_step 2."""
    x = _rand((T, R, C_in), dtype, 110)
    T_out = (T - 1) // 2 + 1
    weight = _rand((C_out, C_in), dtype, 111).t().unsqueeze(0)  # the orchestration's w_r.t(): used in place
    bias = _rand((C_out,), dtype, 112)
    _check_conv_frames(x, weight, bias, [0], 2, T_out, None, False, True, dtype)


def test_conv_frames_weight_layouts():
    """The weights the orchestration passes: tcn.2.weight (C_out, C, kt, 1) permuted to (kt, C, C_out) (neither
    channel dimension contiguous: copied), the same scaled (strides kept), the residual's transposed 1x1 weight
    (input channels contiguous: read in place), and a contiguous one."""
    dtype = DTYPES[0]
    R, C, C_out, T_out, kt, stride = 5, 20, 17, 3, 3, 2
    src, offsets = _phase_src(R, C, T_out, kt, stride, dtype)
    w_t = _rand((C_out, C, kt, 1), dtype, 120)
    taps = w_t[:, :, :, 0].permute(2, 1, 0)
    for weight in (taps, taps * _rand((C_out,), dtype, 121), taps.contiguous()):
        _check_conv_frames(src, weight, None, offsets, 1, T_out, None, False, True, dtype)
    w_r = _rand((C_out, C), dtype, 122)
    _check_conv_frames(src, w_r.t().unsqueeze(0), None, [1], stride, T_out, None, True, True, dtype)


def test_conv_frames_empty():
    """No rows (T_out = 0 or R = 0) or no output channels: nothing launched, zero statistics. (The contract
    cannot reshape 0 rows or 0 channels with a -1, so the expectations are spelled out.)"""
    dtype = DTYPES[0]
    weight, bias = _rand((3, 4, 6), dtype, 130), _rand((6,), dtype, 131)
    for T_out, R, C_out in ((0, 5, 6), (2, 0, 6), (2, 5, 0)):
        src = _rand((4, R, 4), dtype, 132)
        for stats in (True, False):
            u, s, ss = tri.conv_frames(src, weight[:, :, :C_out], bias[:C_out], [0, 1, 2], 1, T_out, None, True,
                                       stats)
            assert u.shape == (T_out * R, C_out) and u.dtype == dtype and not u.any()
            zeros = torch.zeros(C_out if stats else 0, dtype=torch.float64, device=DEVICE)
            assert torch.equal(s, zeros) and torch.equal(ss, zeros)
            assert not zeros.numel() or s.data_ptr() != ss.data_ptr()


def test_conv_frames_large_mean_small_spread():
    """u with mean ~1000 and spread ~1e-2 per channel over three row tiles: the per-tile shift keeps the variance
    that float32 sums of u^2 would lose."""
    dtype = torch.float32
    R, C_in, C_out, T_out, kt = 17, 5, 3, 9, 3
    src, offsets = _phase_src(R, C_in, T_out, kt, 1, dtype)
    weight = _rand((kt, C_in, C_out), dtype, 140, scale=1e-2)
    bias = _rand((C_out,), dtype, 141, offset=1000.0)
    u, s, ss = _check_conv_frames(src, weight, bias, offsets, 1, T_out, None, False, True, dtype)
    _check_variance(u, s, ss)


@pytest.mark.parametrize("max_row_programs", [None, 2])
def test_conv_frames_many_tiles(monkeypatch, max_row_programs):
    """Tiny tiles force what the shapes above reach only partly: several row, column and K tiles per tap, more
    partials than one step of the partial reduction, and (few row programs) several row tiles per program with a
    ragged last one."""
    monkeypatch.setattr(kgemm, "_GEMM_BLOCK_M", 16)
    monkeypatch.setattr(kgemm, "_GEMM_MAX_BLOCK_N", 16)
    monkeypatch.setattr(kgemm, "_GEMM_MAX_BLOCK_K", 16)
    monkeypatch.setattr(kst, "_BLOCK_P", 2)
    if max_row_programs is not None:
        monkeypatch.setattr(kst, "_MAX_ROW_PROGRAMS", max_row_programs)
    dtype = DTYPES[0]
    R, C_in, C_out, T_out, kt, stride = 7, 40, 35, 5, 3, 2
    src, offsets = _phase_src(R, C_in, T_out, kt, stride, dtype)
    weight = _rand((kt, C_in, C_out), dtype, 150)
    bias, add = _epilogue_inputs(T_out * R, C_out, dtype, True, True)
    _check_conv_frames(src, weight, bias, offsets, 1, T_out, add, True, True, dtype)


def test_conv_frames_deterministic_and_no_aliasing():
    dtype = DTYPES[1]
    src, offsets = _phase_src(17, 20, 4, 3, 1, dtype)
    weight = _rand((3, 20, 17), dtype, 160)
    bias, add = _epilogue_inputs(4 * 17, 17, dtype, True, True)
    first = tri.conv_frames(src, weight, bias, offsets, 1, 4, add, False, True)
    again = tri.conv_frames(src, weight, bias, offsets, 1, 4, add, False, True)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ptrs = [t.data_ptr() for t in first]
    assert len(set(ptrs)) == len(ptrs)  # a custom op's outputs must not alias each other


def test_conv_frames_rejects_bad_arguments():
    dtype = DTYPES[0]
    src = _rand((4, 5, 3), dtype, 170)
    weight = _rand((2, 3, 4), dtype, 171)
    with pytest.raises(ValueError, match="read past"):
        tri.conv_frames(src, weight, None, [0, 2], 1, 3, None, False, False)
    with pytest.raises(ValueError, match="one frame offset per weight tap"):
        tri.conv_frames(src, weight, None, [0], 1, 2, None, False, False)
    with pytest.raises(ValueError, match="1 to 9 taps"):
        tri.conv_frames(src, _rand((10, 3, 4), dtype, 172), None, [0] * 10, 1, 2, None, False, False)
    with pytest.raises(ValueError, match="add must hold"):
        tri.conv_frames(src, weight, None, [0, 1], 1, 2, _rand((4,), dtype, 173), False, False)
