"""The native CPU channel-mixing kernels (csrc/cpu/stgcn_gemm.cpp via ugcn_fast.backends.cpu_stgcn: conv_frames and
gcn_forward, GEMMs with fused epilogues) against the plain-PyTorch contract (ugcn_fast.backends.torch_stgcn), in
float64 (tight) and float32, on awkward shapes: ragged channel blocks, row tiles that straddle frames, 1 to 9 taps,
the stride-2 phase layout and the strided residual; plus statistics, determinism and argument checks."""
from __future__ import annotations

import itertools

import pytest
import torch

import ugcn_fast
from ugcn_fast import Graph

if "cpu" not in ugcn_fast.available_backends():
    pytest.skip("the native CPU module ugcn_fast._C is not built", allow_module_level=True)

from ugcn_fast import _native  # noqa: E402
from ugcn_fast.backends import cpu_stgcn as cpu  # noqa: E402
from ugcn_fast.backends import torch_stgcn as ref  # noqa: E402

DTYPES = [torch.float64, torch.float32]
# (rtol, atol relative to the largest expected magnitude)
TOL = {torch.float64: (1e-9, 1e-11), torch.float32: (2e-4, 2e-5)}

A17 = Graph(layout="h36m").A                                                    # K = 3, V = 17
A5 = Graph(num_nodes=5, edges=[(0, 1), (1, 2), (2, 3), (3, 4)], center=2).A     # K = 3, V = 5 (a chain)
A1 = Graph(layout="coco", strategy="uniform").A                                 # K = 1, V = 17
# K = 3, V = 6, hand-made so that the kernels' per-joint subset patterns meet every awkward case: subset 2 empty,
# joint 5 isolated (no row or column anywhere), joints 1 and 3 only destinations and 0 and 2 only sources of
# subset 1, joint 4 only its self-loop.
A_SPARSE = torch.zeros(3, 6, 6)
A_SPARSE[0, range(5), range(5)] = torch.tensor([1.0, 0.5, 0.25, 2.0, 1.5])
A_SPARSE[1, 0, 1], A_SPARSE[1, 2, 3], A_SPARSE[1, 0, 3] = 0.5, 0.75, -1.25


def _rand(shape, dtype, seed, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)


def _close(actual, expected, dtype, scale=None, what=""):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (what, actual.shape, expected.shape,
                                                                               actual.dtype, expected.dtype)
    assert actual.is_contiguous(), what
    rtol, atol = TOL[dtype]
    if scale is None:
        scale = expected.abs().max().item() if expected.numel() else 1.0
    scale = scale if scale > 0 else 1.0
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale,
                               msg=lambda m: f"{what}\n{m}")


def _close_outputs(got, want, dtype, stats=True):
    """(out, sum, sum of squares) against the contract's; the sums are of values equal up to their rounding, so the
    sum's error is measured against the sum of magnitudes (a channel's sum may cancel to ~0)."""
    out, s, ss = got
    out_ref, s_ref, ss_ref = want
    _close(out, out_ref, dtype, what="output")
    assert s.dtype == ss.dtype == torch.float64 and s.shape == s_ref.shape and ss.shape == ss_ref.shape
    if not stats or s_ref.numel() == 0:
        return
    assert s.data_ptr() != ss.data_ptr()
    magnitudes = out_ref.double().reshape(-1, out_ref.shape[-1]).abs().sum(0)
    _close(s, s_ref, dtype, scale=magnitudes.max().item(), what="sum")
    _close(ss, ss_ref, dtype, what="sum of squares")


# ---- conv_frames ---------------------------------------------------------------------------------------------------
def _conv_inputs(C_in, C_out, R, T_out, kt, frame_step, dtype, seed, bias=True, add=True, layout="taps"):
    """src, weight (kt, C_in, C_out) non-contiguous as the block passes it, bias, frame offsets, add."""
    if layout == "phases":  # a stride-2 temporal convolution on the phase buffer (2, Tq, R, C)
        Tq = T_out + (kt - 1) // 2
        offsets = [(j % 2) * Tq + j // 2 for j in range(kt)]
        F = 2 * Tq
    else:  # tap j reads frame j + t * frame_step
        offsets = list(range(kt))
        F = (T_out - 1) * frame_step + kt
    src = _rand((F, R, C_in), dtype, seed)
    weight = _rand((C_out, C_in, kt), dtype, seed + 1, scale=(kt * C_in) ** -0.5).permute(2, 1, 0)
    b = _rand((C_out,), dtype, seed + 2) if bias else None
    a = _rand((T_out * R, C_out), dtype, seed + 3) if add else None
    return src, weight, b, offsets, a


def _check_conv(C_in, C_out, R, T_out, kt, frame_step, dtype, bias=True, add=True, relu=True, stats=True,
                layout="taps", seed=0):
    src, weight, b, offsets, a = _conv_inputs(C_in, C_out, R, T_out, kt, frame_step, dtype, seed, bias, add, layout)
    got = cpu.conv_frames(src, weight, b, offsets, frame_step, T_out, a, relu, stats)
    want = ref.conv_frames(src, weight, b, offsets, frame_step, T_out, a, relu, stats)
    _close_outputs(got, want, dtype, stats)
    return got


C_INS = [1, 2, 3, 16, 20, 70]
C_OUTS = [1, 16, 17, 33, 65]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("C_in,C_out", list(itertools.product(C_INS, C_OUTS)))
def test_conv_frames_channel_grid(C_in, C_out, dtype):
    # every (C_in, C_out): ragged channel blocks of every width; R and T_out, the taps and the options rotate
    i = C_INS.index(C_in) * len(C_OUTS) + C_OUTS.index(C_out)
    R, T_out, kt = (17, 5)[i % 2], (1, 4, 7)[i % 3], (1, 3, 5, 9)[i % 4]
    _check_conv(C_in, C_out, R, T_out, kt, 1, dtype, bias=i % 3 != 1, add=i % 2 == 0, relu=i % 5 != 2,
                stats=i % 7 != 3, seed=i)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kt", [1, 3, 5, 9])
@pytest.mark.parametrize("R,T_out", [(17, 1), (17, 9), (5, 1), (5, 23)])
def test_conv_frames_taps_and_frames(kt, R, T_out, dtype):
    # row tiles straddle frames (R = 5, 17 rows per frame against 96-row tiles)
    _check_conv(16, 16, R, T_out, kt, 1, dtype, seed=kt + R + T_out)
    _check_conv(20, 33, R, T_out, kt, 1, dtype, seed=kt + R + T_out + 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kt", [1, 3, 5, 9])
@pytest.mark.parametrize("R,T_out", [(17, 1), (17, 6), (5, 11)])
def test_conv_frames_stride2_phase_offsets(kt, R, T_out, dtype):
    # frame_offsets (j % 2) * Tq + j // 2 on the phase buffer seen as (2 * Tq) frames
    _check_conv(16, 32, R, T_out, kt, 1, dtype, layout="phases", seed=kt * R + T_out)
    _check_conv(3, 17, R, T_out, kt, 1, dtype, layout="phases", add=False, seed=kt * R + T_out + 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("C_in,C_out,R,T_out", [(16, 32, 17, 5), (70, 65, 5, 7), (2, 16, 17, 1), (33, 1, 5, 3)])
def test_conv_frames_strided_residual(C_in, C_out, R, T_out, dtype):
    # a stride-2 1x1 residual reading x (T, R, C) in place: frame_offsets [0], frame_step 2 (T odd and even)
    for extra in (0, 1):
        T = 2 * (T_out - 1) + 1 + extra
        x = _rand((T, R, C_in), dtype, C_in + extra)
        w = _rand((C_out, C_in), dtype, C_out, scale=C_in ** -0.5).t().unsqueeze(0)
        b = _rand((C_out,), dtype, 7)
        for stats in (False, True):
            got = cpu.conv_frames(x, w, b, [0], 2, T_out, None, False, stats)
            want = ref.conv_frames(x, w, b, [0], 2, T_out, None, False, stats)
            _close_outputs(got, want, dtype, stats)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias,add,relu,stats", list(itertools.product([False, True], repeat=4)))
def test_conv_frames_epilogue_options(bias, add, relu, stats, dtype):
    got = _check_conv(20, 33, 17, 4, 5, 1, dtype, bias=bias, add=add, relu=relu, stats=stats, seed=3)
    if not stats:
        assert got[1].numel() == 0 and got[2].numel() == 0
    if relu:
        assert (got[0] >= 0).all()


# ---- conv_frames: the padding taps skipped (tap_spans) ----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("C_out,R,T_out", [(130, 17, 6), (256, 17, 6), (70, 5, 3), (129, 17, 50), (64, 17, 1)])
def test_conv_frames_small_problems_split_by_channel_blocks(C_out, R, T_out, dtype):
    """Without statistics, few rows and several channel blocks (a batch of one window) are split between the
    threads by channel block instead of row tile: the contract's values, bitwise the same for every thread count
    (each output element is one accumulator's sum in a fixed order, whichever thread computes it)."""
    src, weight, b, offsets, a = _conv_inputs(24, C_out, R, T_out, 5, 1, dtype, seed=C_out + T_out)
    want = ref.conv_frames(src, weight, b, offsets, 1, T_out, a, True, False)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3, 4):
            torch.set_num_threads(n)
            outs.append(cpu.conv_frames(src, weight, b, offsets, 1, T_out, a, True, False))
    finally:
        torch.set_num_threads(threads)
    _close_outputs(outs[0], want, dtype, stats=False)
    assert all(torch.equal(out[0], outs[0][0]) for out in outs)


def _padded_phase_buffer(T, N, V, C, stride, kt, dtype, seed, padding_value=0.0):
    """The temporal convolution's phase buffer (stride, Tq, N * V, C) of T random frames, the padding slots filled
    with padding_value; and (pad, T_out, Tq)."""
    pad, T_out, Tq = ref.phase_geometry(T, kt, stride)
    h = torch.full((stride, Tq, N * V, C), padding_value, dtype=dtype)
    frames = _rand((T, N * V, C), dtype, seed)
    for t in range(T):
        phase, slot = (t + pad) % stride, (t + pad) // stride
        if slot < Tq:
            h[phase, slot] = frames[t]
    return h, pad, T_out, Tq


@pytest.mark.parametrize("T", [1, 2, 3, 5, 6, 7, 12, 13])
@pytest.mark.parametrize("kt", [1, 3, 5, 9])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_tap_spans_are_the_real_frames(T, kt, stride):
    # by the definition: tap j reads input frame t * stride + j - pad for output frame t
    pad, T_out, _ = ref.phase_geometry(T, kt, stride)
    spans = ref.tap_spans(T, kt, stride)
    assert len(spans) == 2 * kt
    for j in range(kt):
        real = [t for t in range(T_out) if 0 <= t * stride + j - pad < T]
        first, end = spans[2 * j], spans[2 * j + 1]
        assert real == list(range(first, end)) or (not real and first == end), (j, real, first, end)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,stride", [(1, 1), (2, 1), (6, 1), (12, 1), (2, 2), (7, 2), (12, 2), (13, 2), (6, 3)])
@pytest.mark.parametrize("kt", [3, 5, 9])
def test_conv_frames_tap_spans_match_contract(T, stride, kt, dtype):
    # R = 3 * 17 rows per frame: row tiles straddle frames, so a tile takes the union of its frames' taps
    N, V, C_in, C_out = 3, 17, 20, 33
    h, pad, T_out, Tq = _padded_phase_buffer(T, N, V, C_in, stride, kt, dtype, seed=T * 10 + stride)
    weight = _rand((C_out, C_in, kt), dtype, 1, scale=(kt * C_in) ** -0.5).permute(2, 1, 0)
    bias, add = _rand((C_out,), dtype, 2), _rand((T_out * N * V, C_out), dtype, 3)
    offsets = [(j % stride) * Tq + j // stride for j in range(kt)]
    src = h.view(stride * Tq, N * V, C_in)
    want = ref.conv_frames(src, weight, bias, offsets, 1, T_out, add, True, True)
    got = cpu.conv_frames(src, weight, bias, offsets, 1, T_out, add, True, True, ref.tap_spans(T, kt, stride))
    _close_outputs(got, want, dtype)


@pytest.mark.parametrize("T,stride", [(6, 1), (12, 2), (3, 1), (13, 2)])
def test_conv_frames_skips_the_padding_taps(T, stride):
    # garbage in the padding slots: the result is the contract's on zero padding, so the padded products are not
    # computed (and nothing else is skipped); without tap_spans the garbage is read. R = N * V = 288 rows per frame,
    # whole row tiles (24, 48, 72 or 96 rows): a tile that straddles frames takes the union of their taps.
    N, V, C, kt, dtype = 18, 16, 16, 5, torch.float64
    h, pad, T_out, Tq = _padded_phase_buffer(T, N, V, C, stride, kt, dtype, seed=5, padding_value=1e3)
    h0, _, _, _ = _padded_phase_buffer(T, N, V, C, stride, kt, dtype, seed=5)
    weight = _rand((C, C, kt), dtype, 1, scale=(kt * C) ** -0.5).permute(2, 1, 0)
    offsets = [(j % stride) * Tq + j // stride for j in range(kt)]
    spans = ref.tap_spans(T, kt, stride)
    want = ref.conv_frames(h0.view(stride * Tq, N * V, C), weight, None, offsets, 1, T_out, None, False, True)
    got = cpu.conv_frames(h.view(stride * Tq, N * V, C), weight, None, offsets, 1, T_out, None, False, True, spans)
    _close_outputs(got, want, dtype)
    dense = cpu.conv_frames(h.view(stride * Tq, N * V, C), weight, None, offsets, 1, T_out, None, False, True)
    assert not torch.allclose(dense[0], want[0])


# ---- conv_frames: the pointwise term (the eval block's convolution residual) --------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("C_in2,step2,T2", [(16, 2, 12), (3, 1, 6), (33, 3, 17), (70, 2, 11), (1, 1, 6)])
@pytest.mark.parametrize("add,stats", [(False, False), (True, True)])
def test_conv_frames_pointwise_term(C_in2, step2, T2, add, stats, dtype):
    # T_out frames of a 5-tap convolution on the phase buffer plus src2[t * step2] @ weight2, in one pass: equal to
    # the contract, and to the two convolutions summed (the contract's own check)
    R, C_in, C_out, kt = 2 * 17, 20, 33, 5
    T_out = (T2 - 1) // step2 + 1
    src, weight, b, offsets, a = _conv_inputs(C_in, C_out, R, T_out, kt, 1, dtype, seed=C_in2 + step2)
    src2 = _rand((T2, R, C_in2), dtype, 7)
    weight2 = _rand((C_out, C_in2), dtype, 8, scale=C_in2 ** -0.5).t()  # transposed, as the block passes it
    a = a if add else None
    want = ref.conv_frames(src, weight, b, offsets, 1, T_out, a, True, stats, None, src2, weight2, step2)
    got = cpu.conv_frames(src, weight, b, offsets, 1, T_out, a, True, stats, None, src2, weight2, step2)
    _close_outputs(got, want, dtype, stats)
    term, _, _ = ref.conv_frames(src2, weight2.unsqueeze(0), None, [0], step2, T_out, a, False, False)
    two_passes = ref.conv_frames(src, weight, b, offsets, 1, T_out, term, True, stats)
    _close_outputs(want, two_passes, dtype, stats)


def test_conv_frames_pointwise_term_rejects_bad_arguments():
    src, w = _rand((6, 5, 4), torch.float32, 0), _rand((3, 4, 8), torch.float32, 1)
    src2, w2 = _rand((7, 5, 3), torch.float32, 2), _rand((3, 8), torch.float32, 3)
    call = lambda *term: cpu.conv_frames(src, w, None, [0, 1, 2], 1, 4, None, False, False, None, *term)  # noqa: E731
    call(src2, w2, 2)  # frames 0, 2, 4, 6 of src2
    for bad, what in (((src2, None, 1), "together"), ((None, w2, 1), "together"),
                      ((src2, _rand((4, 8), torch.float32, 4), 1), "pointwise term"),
                      ((_rand((7, 6, 3), torch.float32, 5), w2, 1), "pointwise term"),
                      ((src2, _rand((3, 7), torch.float32, 6), 1), "pointwise term"),
                      ((src2, w2, 3), "frame_step2"), ((src2, w2, 0), "frame_step2")):
        with pytest.raises(ValueError, match=what):
            call(*bad)
    with pytest.raises(ValueError, match="dtype"):
        call(src2.double(), w2.double(), 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv_frames_stats_large_mean_small_spread(dtype):
    # u ~ 1000 + 1e-2 noise over many rows and several threads' partials: the float64 sums must be those of the
    # stored values (no float32 accumulation), so the variance survives sumsq / M - mean^2
    R, T_out, C_in, C_out = 17, 600, 16, 33
    src = _rand((T_out, R, C_in), dtype, 1, scale=1e-2)
    weight = _rand((1, C_in, C_out), dtype, 2, scale=0.25)
    bias = torch.full((C_out,), 1000.0, dtype=dtype)
    u, s, ss = cpu.conv_frames(src, weight, bias, [0], 1, T_out, None, True, True)
    u64 = u.double()
    M = u.shape[0]
    torch.testing.assert_close(s, u64.sum(0), rtol=1e-13, atol=0)
    torch.testing.assert_close(ss, (u64 * u64).sum(0), rtol=1e-13, atol=0)
    var = ss / M - (s / M) ** 2
    torch.testing.assert_close(var, u64.var(0, unbiased=False), rtol=1e-3, atol=0)
    assert (u64.var(0) > 1e-7).all()
    _, s_ref, ss_ref = ref.conv_frames(src, weight, bias, [0], 1, T_out, None, True, True)
    _close(s, s_ref, dtype, what="sum")
    _close(ss, ss_ref, dtype, what="sum of squares")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv_frames_deterministic(dtype):
    src, weight, b, offsets, a = _conv_inputs(33, 65, 17, 40, 5, 1, dtype, seed=11)
    first = cpu.conv_frames(src, weight, b, offsets, 1, 40, a, True, True)
    second = cpu.conv_frames(src, weight, b, offsets, 1, 40, a, True, True)
    for x, y in zip(first, second):
        assert torch.equal(x, y)


def test_conv_frames_thread_counts_agree():
    src, weight, b, offsets, a = _conv_inputs(16, 32, 17, 30, 5, 1, torch.float64, seed=12)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(cpu.conv_frames(src, weight, b, offsets, 1, 30, a, True, True))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        _close_outputs(other, results[0], torch.float64)


@pytest.mark.parametrize("case", ["T_out=0", "C_out=0", "C_in=0"])
@pytest.mark.parametrize("stats", [False, True])
def test_conv_frames_empty(case, stats):
    T_out, C_in, C_out = {"T_out=0": (0, 4, 5), "C_out=0": (3, 4, 0), "C_in=0": (3, 0, 5)}[case]
    src = _rand((4, 5, C_in), torch.float64, 0)
    w = _rand((C_out, C_in, 2), torch.float64, 1).permute(2, 1, 0)
    b = _rand((C_out,), torch.float64, 2)
    a = _rand((T_out * 5, C_out), torch.float64, 3)
    got = cpu.conv_frames(src, w, b, [0, 1], 1, T_out, a, True, stats)
    want = ref.conv_frames(src, w, b, [0, 1], 1, T_out, a, True, stats)
    _close_outputs(got, want, torch.float64, stats)


def test_conv_frames_rejects_bad_arguments():
    src = _rand((6, 5, 4), torch.float32, 0)
    w = _rand((3, 4, 8), torch.float32, 1)
    with pytest.raises(ValueError, match="taps"):
        cpu.conv_frames(src, w, None, [0, 1], 1, 2, None, False, False)  # 2 offsets, 3 taps
    with pytest.raises(ValueError, match="taps"):
        cpu.conv_frames(src, _rand((10, 4, 8), torch.float32, 1), None, list(range(10)), 1, 1, None, False, False)
    with pytest.raises(ValueError, match="read past"):
        cpu.conv_frames(src, w, None, [0, 1, 4], 1, 3, None, False, False)  # 4 + 2 >= 6 frames
    with pytest.raises(ValueError, match="read past"):
        cpu.conv_frames(src, w, None, [-1, 0, 1], 1, 2, None, False, False)
    with pytest.raises(ValueError, match="frame_step"):
        cpu.conv_frames(src, w, None, [0, 1, 2], 0, 2, None, False, False)
    with pytest.raises(ValueError, match="add"):
        cpu.conv_frames(src, w, None, [0, 1, 2], 1, 2, torch.zeros(3, 8), False, False)
    with pytest.raises(ValueError, match="dtype"):
        cpu.conv_frames(src, w.double(), None, [0, 1, 2], 1, 2, None, False, False)
    for spans in ([0, 2], [0, 2, 0, 2, 0], [0, 2, 0, 2, 1, 3], [0, 2, -1, 1, 0, 2], [0, 2, 2, 1, 0, 2]):
        with pytest.raises(ValueError, match="tap_spans"):
            cpu.conv_frames(src, w, None, [0, 1, 2], 1, 2, None, False, False, spans)
    # the binding itself refuses what would read or write out of bounds
    C = _native.cpu_module
    u = torch.empty(10, 8)
    w2 = _rand((4, 8), torch.float32, 2)
    ok = dict(frames=6, R=5, C_in=4, C_out=8, T_out=2, frame_step=1, offsets=[0, 1, 2], spans=[], src2=0, w2=0,
              frames2=0, C_in2=0, step2=1)

    def call(src_ptr=src.data_ptr(), w_ptr=w.data_ptr(), u_ptr=u.data_ptr(), dtype="float32", **kw):
        a = {**ok, **kw}
        C.stgcn_conv_frames(dtype, src_ptr, w_ptr, 0, 0, u_ptr, 0, a["frames"], a["R"], a["C_in"], a["C_out"],
                            a["T_out"], a["frame_step"], a["offsets"], a["spans"], a["src2"], a["w2"], a["frames2"],
                            a["C_in2"], a["step2"], False, 1)

    call()  # valid
    call(spans=[-5, 9, 1, 1, 2, 0])  # spans only select taps: any values read inside src
    term = dict(src2=src.data_ptr(), w2=w2.data_ptr(), frames2=6, C_in2=4, step2=5)  # frames 0 and 5 of src
    call(**term)
    for bad in (dict(term, w2=0), dict(term, frames2=5), dict(term, C_in2=0), dict(term, step2=0),
                dict(term, frames2=0)):
        with pytest.raises(ValueError):
            call(**bad)
    for bad in (dict(src_ptr=0), dict(w_ptr=0), dict(u_ptr=0), dict(offsets=[]), dict(offsets=list(range(10))),
                dict(offsets=[0, 1, 5]), dict(offsets=[0, -1, 2]), dict(frame_step=0), dict(T_out=0), dict(C_in=0),
                dict(R=0), dict(dtype="float16"), dict(frame_step=3, offsets=[0, 1, 3]), dict(spans=[0, 2]),
                dict(spans=[0, 2] * 4)):
        with pytest.raises(ValueError):
            call(**bad)


# ---- gcn_forward ---------------------------------------------------------------------------------------------------
GRAPHS = {"K3V17": A17, "K3V5": A5, "K1V17": A1, "K3V6sparse": A_SPARSE}
ORDERS = ["auto", "aggregate_first", "gemm_first"]


def _gcn_inputs(G, A, C_in, C_out, dtype, seed, offset=0.0, spread=1.0):
    K, V, _ = A.shape
    x = _rand((G, V, C_in), dtype, seed, scale=spread, offset=offset)
    w = _rand((K * C_out, C_in), dtype, seed + 1, scale=max(C_in, 1) ** -0.5)
    b = _rand((K * C_out,), dtype, seed + 2)
    return x, A.to(dtype), w, b


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("C_in,C_out", [(2, 16), (3, 17), (16, 16), (20, 70), (32, 16), (70, 33), (17, 1), (1, 5)])
def test_gcn_forward_matches_contract(C_in, C_out, graph, order, dtype):
    x, A, w, b = _gcn_inputs(7, GRAPHS[graph], C_in, C_out, dtype, seed=C_in * C_out)
    got = cpu.gcn_forward_ordered(x, A, w, b, order)
    _close_outputs(got, ref.gcn_forward(x, A, w, b), dtype)
    if order == "auto":
        for a, c in zip(got, cpu.gcn_forward(x, A, w, b)):
            assert torch.equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("G", [1, 2, 40])
def test_gcn_forward_group_counts(G, dtype):
    # chunks of groups per thread: one group, fewer groups than threads, many chunks
    for C_in, C_out in ((4, 32), (64, 16)):
        x, A, w, b = _gcn_inputs(G, A17, C_in, C_out, dtype, seed=G)
        _close_outputs(cpu.gcn_forward(x, A, w, b), ref.gcn_forward(x, A, w, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("order", ORDERS[1:])
def test_gcn_forward_stats_large_mean_small_spread(order, dtype):
    x, A, w, b = _gcn_inputs(300, A17, 8, 24, dtype, seed=5, offset=0.0, spread=1e-2)
    b = b + 1000.0
    z, s, ss = cpu.gcn_forward_ordered(x, A, w, b, order)
    z64 = z.double().reshape(-1, z.shape[-1])
    torch.testing.assert_close(s, z64.sum(0), rtol=1e-13, atol=0)
    torch.testing.assert_close(ss, (z64 * z64).sum(0), rtol=1e-13, atol=0)
    M = z64.shape[0]
    # mean ~1e3 against a variance ~1e-3: float32 sums would lose it entirely, float64 ones keep ~1e-6 of it
    torch.testing.assert_close(ss / M - (s / M) ** 2, z64.var(0, unbiased=False), rtol=1e-4, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("order", ORDERS[1:])
def test_gcn_forward_deterministic(order, dtype):
    x, A, w, b = _gcn_inputs(50, A17, 12, 40, dtype, seed=9)
    first = cpu.gcn_forward_ordered(x, A, w, b, order)
    second = cpu.gcn_forward_ordered(x, A, w, b, order)
    for p, q in zip(first, second):
        assert torch.equal(p, q)


@pytest.mark.parametrize("case", ["G=0", "C_out=0", "C_in=0"])
def test_gcn_forward_empty(case):
    G, C_in, C_out = {"G=0": (0, 4, 6), "C_out=0": (3, 4, 0), "C_in=0": (3, 0, 6)}[case]
    x, A, w, b = _gcn_inputs(G, A17, C_in, C_out, torch.float64, seed=1)
    if C_in == 0:  # the contract's reshape cannot infer a 0-wide view: z is the aggregated bias, as with a zero input
        want = ref.gcn_forward(x.new_zeros((G, 17, 1)), A, w.new_zeros((w.shape[0], 1)), b)
    else:
        want = ref.gcn_forward(x, A, w, b)
    _close_outputs(cpu.gcn_forward(x, A, w, b), want, torch.float64)


# ---- gcn_relu_phases (the eval block's graph convolution, straight into the phase buffer) ---------------------------
def _phases_inputs(T, N, A, C_in, C_out, dtype, seed):
    K, V, _ = A.shape
    x, A, w, b = _gcn_inputs(T * N, A, C_in, C_out, dtype, seed)
    shift = _rand((V, C_out), dtype, seed + 3)  # about half the outputs negative before the ReLU
    return x.view(T, N, V, C_in), A, w, b, shift


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("C_in,C_out", [(2, 16), (16, 16), (20, 70), (70, 33), (3, 1)])
@pytest.mark.parametrize("T,N,kernel_size,stride", [(12, 3, 5, 1), (11, 2, 5, 2), (1, 1, 3, 1), (2, 1, 9, 2),
                                                    (7, 1, 1, 2), (6, 4, 3, 2)])
def test_gcn_relu_phases_matches_contract(T, N, kernel_size, stride, C_in, C_out, graph, order, dtype):
    x, A, w, b, shift = _phases_inputs(T, N, GRAPHS[graph], C_in, C_out, dtype, seed=T * C_in + C_out)
    pad, _, Tq = ref.phase_geometry(T, kernel_size, stride)
    want = ref.gcn_relu_phases(x, A, w, b, shift, stride, pad, Tq)
    torch.manual_seed(0)
    got = cpu.gcn_relu_phases(x, A, w, b, shift, stride, pad, Tq, order)
    _close(got, want, dtype, what="h")
    assert (want == 0).any() and (want > 0).any()  # the ReLU cut something and kept something
    if order == "auto":
        assert torch.equal(got, cpu.gcn_relu_phases(x, A, w, b, shift, stride, pad, Tq))  # deterministic
    # the slots no frame fills are exact zeros even where the buffer held garbage
    phase, slot, stored = ref._phase_index(T, pad, stride, Tq, "cpu")
    filled = {(int(p), int(q)) for p, q in zip(phase[stored], slot[stored])}
    for p, q in itertools.product(range(stride), range(Tq)):
        if (p, q) not in filled:
            assert torch.equal(got[p, q], torch.zeros_like(got[p, q])), (p, q)


def test_gcn_relu_phases_padding_zeroed_over_garbage(monkeypatch):
    # the output buffer comes from new_empty: hand the kernel a buffer full of NaN and check only real frames changed
    x, A, w, b, shift = _phases_inputs(5, 2, A17, 4, 24, torch.float32, seed=3)
    pad, _, Tq = ref.phase_geometry(5, 5, 1)
    real_new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: real_new_empty(self, *a, **k).fill_(float("nan")))
    got = cpu.gcn_relu_phases(x, A, w, b, shift, 1, pad, Tq)
    monkeypatch.undo()
    torch.testing.assert_close(got, ref.gcn_relu_phases(x, A, w, b, shift, 1, pad, Tq), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("order", ORDERS[1:])
def test_gcn_relu_phases_nan_propagates(order):
    x, A, w, b, shift = _phases_inputs(4, 2, A17, 20, 24, torch.float64, seed=4)
    x[1, 0, 3, 2] = float("nan")
    pad, _, Tq = ref.phase_geometry(4, 3, 1)
    got = cpu.gcn_relu_phases(x, A, w, b, shift, 1, pad, Tq, order)
    want = ref.gcn_relu_phases(x, A, w, b, shift, 1, pad, Tq)
    # the native aggregation visits the adjacency's non-zeros only, so a NaN reaches the joint's neighbours, not (as
    # through the contract's dense 0 * NaN) every joint of its frame; as gcn_forward
    assert got.isnan().any() and (got.isnan() <= want.isnan()).all()
    finite = ~want.isnan()
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", ["N=0", "T=0", "C_out=0", "C_in=0"])
def test_gcn_relu_phases_empty(case):
    T, N, C_in, C_out = {"N=0": (4, 0, 3, 5), "T=0": (0, 2, 3, 5), "C_out=0": (4, 2, 3, 0), "C_in=0": (4, 2, 0, 5)}[case]
    x, A, w, b, shift = _phases_inputs(T, N, A17, C_in, C_out, torch.float64, seed=1)
    pad, _, Tq = ref.phase_geometry(max(T, 1), 3, 1)
    if C_in == 0:  # as gcn_forward: the contract cannot view a 0-wide input; a zero channel computes the same
        want = ref.gcn_relu_phases(x.new_zeros((T, N, 17, 1)), A, w.new_zeros((w.shape[0], 1)), b, shift, 1, pad, Tq)
    else:
        want = ref.gcn_relu_phases(x, A, w, b, shift, 1, pad, Tq)
    got = cpu.gcn_relu_phases(x, A, w, b, shift, 1, pad, Tq)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gcn_relu_phases_rejects_bad_arguments():
    x, A, w, b, shift = _phases_inputs(3, 2, A17, 4, 6, torch.float32, seed=1)
    with pytest.raises(ValueError, match="shapes"):
        cpu.gcn_relu_phases(x, A, w, b, shift[:, :-1], 1, 1, 5)
    with pytest.raises(ValueError, match="shapes"):
        cpu.gcn_relu_phases(x, A[:, :5, :5], w, b, shift, 1, 1, 5)
    with pytest.raises(ValueError, match="dtype"):
        cpu.gcn_relu_phases(x, A, w, b, shift.double(), 1, 1, 5)
    with pytest.raises(ValueError, match="stride"):
        cpu.gcn_relu_phases(x, A, w, b, shift, 0, 1, 5)
    C = _native.cpu_module
    h, A64 = torch.empty(1, 5, 2 * 17, 6), A.double()
    args = [x.data_ptr(), A64.data_ptr(), w.data_ptr(), b.data_ptr(), shift.data_ptr(), h.data_ptr()]
    C.stgcn_gcn_relu_phases("float32", *args, 3, 2, 17, 3, 4, 6, 1, 1, 5, 0, 1)  # valid
    for i in range(len(args)):
        bad = list(args)
        bad[i] = 0
        with pytest.raises(ValueError):
            C.stgcn_gcn_relu_phases("float32", *bad, 3, 2, 17, 3, 4, 6, 1, 1, 5, 0, 1)
    for sizes in ((0, 2, 17, 3, 4, 6, 1, 1, 5, 0), (3, 2, 17, 3, 4, 6, 0, 1, 5, 0), (3, 2, 17, 3, 4, 6, 1, -1, 5, 0),
                  (3, 2, 17, 3, 4, 6, 1, 1, 0, 0), (3, 2, 17, 3, 4, 6, 1, 1, 5, 3)):
        with pytest.raises(ValueError):
            C.stgcn_gcn_relu_phases("float32", *args, *sizes, 1)


def test_gcn_forward_rejects_bad_arguments():
    x, A, w, b = _gcn_inputs(3, A17, 4, 6, torch.float32, seed=1)
    with pytest.raises(ValueError, match="shapes"):
        cpu.gcn_forward(x, A, w[:-1], b)
    with pytest.raises(ValueError, match="shapes"):
        cpu.gcn_forward(x, A[:, :5, :5], w, b)
    with pytest.raises(ValueError, match="dtype"):
        cpu.gcn_forward(x, A, w.double(), b)
    C = _native.cpu_module
    z, sums, A64 = torch.empty(3, 17, 6), torch.empty(2, 6, dtype=torch.float64), A.double()
    args = [x.data_ptr(), A64.data_ptr(), w.data_ptr(), b.data_ptr(), z.data_ptr(), sums.data_ptr()]
    C.stgcn_gcn_forward("float32", *args, 3, 17, 3, 4, 6, 0, 1)  # valid
    for i in range(len(args)):
        bad = list(args)
        bad[i] = 0
        with pytest.raises(ValueError):
            C.stgcn_gcn_forward("float32", *bad, 3, 17, 3, 4, 6, 0, 1)
    for sizes in ((0, 17, 3, 4, 6, 0), (3, 17, 0, 4, 6, 0), (3, 17, 3, 4, 6, 3), (3, 17, 3, 0, 6, 0)):
        with pytest.raises(ValueError):
            C.stgcn_gcn_forward("float32", *args, *sizes, 1)


# ---- packed weights (a frozen eval block's: built once, reused from call to call) -----------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("C_in,C_out", [(2, 16), (16, 16), (20, 70), (70, 33), (3, 1)])
def test_gcn_relu_phases_packed_is_the_unpacked_call(C_in, C_out, graph, order, dtype):
    """Bitwise the per-call kernel, over several inputs and geometries of one packing; the packing owns copies:
    overwriting every tensor it was packed from changes nothing."""
    x, A, w, b, shift = _phases_inputs(7, 2, GRAPHS[graph], C_in, C_out, dtype, seed=C_in + C_out)
    sources = [t.clone() for t in (A, w, b, shift)]  # (A may be the module's graph itself: never overwritten)
    packed = cpu.pack_gcn_relu_phases(*sources, order)
    assert (packed.kind, packed.dtype) == ("gcn_relu_phases", str(dtype).removeprefix("torch."))
    want = {}
    for T, N, kernel_size, stride in [(7, 2, 5, 1), (7, 2, 5, 2), (1, 1, 3, 1), (12, 3, 9, 2)]:
        xt = _rand((T, N, A.shape[-1], C_in), dtype, seed=T + N)
        pad, _, Tq = ref.phase_geometry(T, kernel_size, stride)
        want[T, N, stride] = cpu.gcn_relu_phases(xt, A, w, b, shift, stride, pad, Tq, order)
        assert torch.equal(cpu.gcn_relu_phases_packed(xt, packed, stride, pad, Tq), want[T, N, stride])
    for t in sources:
        t.fill_(float("nan"))
    T, N, stride = 12, 3, 2
    pad, _, Tq = ref.phase_geometry(T, 9, stride)
    xt = _rand((T, N, x.shape[2], C_in), dtype, seed=T + N)
    assert torch.equal(cpu.gcn_relu_phases_packed(xt, packed, stride, pad, Tq), want[T, N, stride])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("C_in,C_out,kt", [(1, 1, 1), (16, 16, 5), (20, 33, 3), (70, 65, 9), (3, 17, 5)])
@pytest.mark.parametrize("bias,add,term,spans", [(True, False, False, False), (False, True, False, True),
                                                 (True, True, True, True), (True, False, True, False)])
def test_conv_frames_packed_is_the_unpacked_call(C_in, C_out, kt, bias, add, term, spans, dtype):
    R, T_out, T2, step2 = 17, 6, 12, 2
    src, weight, b, offsets, a = _conv_inputs(C_in, C_out, R, T_out, kt, 1, dtype, seed=C_in * kt, bias=bias, add=add)
    src2 = _rand((T2, R, 5), dtype, 7) if term else None
    weight2 = _rand((C_out, 5), dtype, 8).t() if term else None
    tap_spans = ref.tap_spans(T_out, kt, 1) if spans else None
    want, _, _ = cpu.conv_frames(src, weight, b, offsets, 1, T_out, a, True, False, tap_spans, src2, weight2, step2)
    sources = [None if t is None else t.clone() for t in (weight, b, weight2)]
    packed = cpu.pack_conv_frames(*sources)
    for t in sources:
        if t is not None:
            t.fill_(float("nan"))  # the packing holds copies
    got = cpu.conv_frames_packed(src.contiguous(), packed, offsets, 1, T_out, a, True, tap_spans, src2, step2)
    assert torch.equal(got, want)


def test_packed_weights_reject_what_they_were_not_packed_for():
    x, A, w, b, shift = _phases_inputs(4, 2, A17, 16, 32, torch.float32, seed=1)
    graph = cpu.pack_gcn_relu_phases(A, w, b, shift)
    src, weight, bias, offsets, _ = _conv_inputs(16, 32, 17, 4, 3, 1, torch.float32, seed=2)
    src = src.contiguous()
    conv = cpu.pack_conv_frames(weight, bias)
    assert "conv_frames" in repr(conv) and list(conv.sizes) == [3, 16, 32, 0]
    cpu.gcn_relu_phases_packed(x, graph, 1, 2, 8)
    cpu.conv_frames_packed(src, conv, offsets, 1, 4, None, True)
    with pytest.raises(ValueError, match="does not match"):  # C_in
        cpu.gcn_relu_phases_packed(x[..., :8].contiguous(), graph, 1, 2, 8)
    with pytest.raises(ValueError, match="does not match"):  # dtype
        cpu.gcn_relu_phases_packed(x.double(), graph, 1, 2, 8)
    with pytest.raises(ValueError, match="does not match"):  # V
        cpu.gcn_relu_phases_packed(x[:, :, :5].contiguous(), graph, 1, 2, 8)
    with pytest.raises(ValueError, match="weight"):  # C_in of the weight
        cpu.conv_frames_packed(src[..., :8].contiguous(), conv, offsets, 1, 4, None, True)
    with pytest.raises(ValueError, match="contiguous float32"):
        cpu.conv_frames_packed(src.double(), conv, offsets, 1, 4, None, True)
    with pytest.raises(ValueError, match="pointwise term"):  # a term the weights do not hold
        cpu.conv_frames_packed(src, conv, offsets, 1, 4, None, True, None, src[:, :, :2].contiguous(), 1)
    # the native layer checks on its own: another kernel's packing, sizes that differ from the packed ones
    C = _native.cpu_module
    with pytest.raises(ValueError, match="another kernel"):
        C.stgcn_conv_frames_packed(graph, src.data_ptr(), 0, src.data_ptr(), 0, 6, 17, 16, 32, 4, 1, offsets, [], 0,
                                   0, 0, 1, True, 1)
    with pytest.raises(ValueError, match="differ from the packed"):
        C.stgcn_conv_frames_packed(conv, src.data_ptr(), 0, src.data_ptr(), 0, 6, 17, 16, 64, 4, 1, offsets, [], 0,
                                   0, 0, 1, True, 1)
    with pytest.raises(ValueError, match="another kernel"):
        C.stgcn_gcn_relu_phases_packed(conv, x.data_ptr(), x.data_ptr(), 4, 2, 17, 16, 32, 1, 2, 8, 1)
    with pytest.raises(ValueError, match="differ from the packed"):
        C.stgcn_gcn_relu_phases_packed(graph, x.data_ptr(), x.data_ptr(), 4, 2, 17, 16, 64, 1, 2, 8, 1)
    with pytest.raises(ValueError, match="dtype"):
        C.stgcn_pack_conv_frames("float16", weight.data_ptr(), 0, 3, 16, 32, 0, 0)
