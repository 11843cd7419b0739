"""Triton backend of the fused ST-GCN block's passes (kernels/stgcn_block.py via ugcn_fast.backends.triton_stgcn)
against the plain-PyTorch contract (ugcn_fast.backends.torch_stgcn), then the whole block
(FusedSTGCNBlock(backend="triton")) against the reference block (ugcn_fast.reference.STGCNBlock).

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

import ugcn_fast  # noqa: E402
from ugcn_fast.backends import torch_stgcn as ref  # noqa: E402
from ugcn_fast.backends import triton_stgcn as tri  # noqa: E402
from ugcn_fast.fused_stgcn_block import FusedSTGCNBlock  # noqa: E402
from ugcn_fast.reference import STGCNBlock  # noqa: E402
from _relu_kinks import assert_16_bit_step, clear_relu_kinks, float64_twin_step  # noqa: E402
from _stgcn import (NON_FINITE_CASES, NON_FINITE_CONFIGS, assert_non_finite_like_reference,  # noqa: E402
                    dense_graph, give_reference_the_fused_mask, non_finite_step_inputs, output_shape,
                    reference_and_fused)
from ugcn_fast.kernels import stgcn_block as kst  # noqa: E402  (the module the backend runs)

pytestmark = pytest.mark.triton  # registered in pyproject.toml: `-m "not triton"` deselects this module


# ---- graph aggregation -------------------------------------------------------------------------------------------
# (K, V, C, G): V padded from 5 and 17 (and 25), K = 1 and 3, C = 1, 3, 16, 20 and past one channel block (70),
# G = 1 and several (the tile's group columns partly masked).
AGGREGATE = [(3, 17, 3, 4), (1, 5, 1, 1), (3, 5, 16, 3), (1, 17, 20, 2), (3, 25, 1, 6), (3, 5, 70, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("K,V,C,G", AGGREGATE)
def test_graph_aggregate(K, V, C, G, dtype):
    A = _adjacency(K, V, K * V).to(dtype).to(DEVICE)
    for i, (contract, transpose, with_bias) in enumerate([(False, False, False), (False, True, False),
                                                          (True, False, True), (True, True, False)]):
        src = _rand((G, V, K * C if contract else C), dtype, 10 + i)
        bias_map = _rand((V, C), dtype, 20 + i) if with_bias else None
        _close(tri.graph_aggregate(src, A, contract, transpose, bias_map),
               ref.graph_aggregate(src, A, contract, transpose, bias_map), dtype,
               what=f"contract={contract} transpose={transpose} bias={with_bias}")


# ---- statistics --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("R,C", [(1, 1), (37, 3), (8, 16), (50, 20), (3, 70)])
def test_channel_stats(R, C, dtype):
    x = _rand((R, C), dtype, 1)
    stat = _stat_tol(dtype)
    scales = (x.double().abs().sum(0).max().item(), None)  # a sum's error is relative to the sum of magnitudes
    for a, b, scale, what in zip(tri.channel_stats(x), ref.channel_stats(x), scales, ("sum", "sumsq")):
        assert a.dtype == torch.float64
        _close(a, b, stat, scale=scale, what=what)


def test_channel_stats_large_mean_small_spread():
    """Variance from (sum, sum of squares) of values with mean 1000 and spread 1e-3: float32 accumulation of x^2
    would lose every digit of the variance; the per-program shift keeps the float64 sums as good as the
    contract's."""
    dtype = torch.float32
    x = _rand((300, 5), dtype, 2, scale=1e-3, offset=1000.0)
    M = x.shape[0]
    (s, ss), (s_ref, ss_ref) = tri.channel_stats(x), ref.channel_stats(x)
    var, var_ref = ss / M - (s / M) ** 2, ss_ref / M - (s_ref / M) ** 2
    torch.testing.assert_close(var.cpu(), var_ref.cpu(), rtol=1e-3, atol=0)
    torch.testing.assert_close(s.cpu(), s_ref.cpu(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("G,V,C", [(1, 5, 1), (7, 5, 3), (3, 17, 16), (4, 17, 20)])
def test_bias_map_stats(G, V, C, dtype):
    x = _rand((G, V, C), dtype, 3, offset=2.0)
    bias_map = _rand((V, C), dtype, 4)
    y, s, ss = tri.bias_map_stats(x, bias_map)
    y_ref, s_ref, ss_ref = ref.bias_map_stats(x, bias_map)
    _close(y, y_ref, dtype, what="y")
    # The statistics of the stored y: exact sums of the same rounded values, up to float32 accumulation.
    stat_dtype = _stat_tol(dtype)
    _close(s, s_ref, stat_dtype, scale=y_ref.double().abs().sum(0).sum(0).max().item(), what="sum")
    _close(ss, ss_ref, stat_dtype, what="sumsq")


# ---- BN1 + ReLU into the phase buffer and its backward -----------------------------------------------------------
# (T, N, V, C, kernel_size, stride): T divisible by the stride or not, pad 2 and 1, frames no tap reads (T = 8,
# stride 2, kt = 3: the last frame lands past Tq).
PHASES = [(5, 2, 5, 3, 5, 1), (7, 1, 5, 1, 5, 2), (6, 2, 17, 20, 5, 2), (8, 1, 5, 16, 3, 2), (4, 3, 17, 3, 3, 1)]


def _phase_inputs(T, N, V, C, kernel_size, stride, dtype):
    pad, _, Tq = ref.phase_geometry(T, kernel_size, stride)
    z = _rand((T, N * V, C), dtype, 5)
    scale = _rand((C,), dtype, 6)
    shift_map = _rand((V, C), dtype, 7)
    return z, scale, shift_map, pad, Tq


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,N,V,C,kernel_size,stride", PHASES)
def test_bn_relu_phases(T, N, V, C, kernel_size, stride, dtype):
    z, scale, shift_map, pad, Tq = _phase_inputs(T, N, V, C, kernel_size, stride, dtype)
    h_ph = tri.bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq)
    _close(h_ph, ref.bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq), dtype)


def _bn_stats(x, eps=1e-5):
    x64 = x.double().reshape(-1, x.shape[-1])
    mean = x64.mean(0)
    return mean, torch.rsqrt(x64.var(0, unbiased=False) + eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,N,V,C,kernel_size,stride", PHASES)
def test_bn_relu_phases_backward(T, N, V, C, kernel_size, stride, dtype):
    z, scale, shift_map, pad, Tq = _phase_inputs(T, N, V, C, kernel_size, stride, dtype)
    h_ph = ref.bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq)
    dh_ph = _rand(h_ph.shape, dtype, 8)
    mean1, invstd1 = _bn_stats(z)
    weight1 = _rand((C,), dtype, 9)
    got = tri.bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, weight1, V, stride, pad)
    want = ref.bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, weight1, V, stride, pad)
    assert [t.dtype for t in got[1:]] == [torch.float64] * 3
    stat = _stat_tol(dtype)
    _close(got[0], want[0], dtype, what="dz")
    _close(got[1], want[1], stat, what="dweight1")
    _close(got[2], want[2], stat, what="dbias1")
    # joint sums of dz: BatchNorm's backward makes them sums of cancelling terms; measure against sum |dz|
    _close(got[3], want[3], dtype, scale=want[0].double().abs().sum().item(), what="joint_sums")


# ---- block output and its backward -------------------------------------------------------------------------------
OUTPUT = [(r, m, R, C) for r in ("none", "identity", "conv") for m in (False, True) for R, C in ((45, 3), (6, 20))]


def _output_inputs(res_kind, with_mask, R, C, dtype):
    u = _rand((R, C), dtype, 11, offset=0.3)
    scale2, shift2 = _rand((C,), dtype, 12), _rand((C,), dtype, 13)
    mask = None
    if with_mask:
        g = torch.Generator().manual_seed(14)
        mask = ((torch.rand((R, C), generator=g) > 0.4).double() / 0.6).to(dtype).to(DEVICE)
    res = _rand((R, C), dtype, 15) if res_kind != "none" else None
    scale3 = _rand((C,), dtype, 16) if res_kind == "conv" else None
    shift3 = _rand((C,), dtype, 17) if res_kind == "conv" else None
    return u, scale2, shift2, mask, res, scale3, shift3


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("res_kind,with_mask,R,C", OUTPUT)
def test_block_output(res_kind, with_mask, R, C, dtype):
    args = _output_inputs(res_kind, with_mask, R, C, dtype)
    _close(tri.block_output(*args), ref.block_output(*args), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("res_kind,with_mask,R,C", OUTPUT)
def test_block_output_backward(res_kind, with_mask, R, C, dtype):
    u, scale2, shift2, mask, res, scale3, shift3 = _output_inputs(res_kind, with_mask, R, C, dtype)
    out = ref.block_output(u, scale2, shift2, mask, res, scale3, shift3)
    dout = _rand((R, C), dtype, 18)
    mean2, invstd2 = _bn_stats(u)
    weight2 = _rand((C,), dtype, 19)
    r0, mean3, invstd3, weight3 = None, None, None, None
    if res_kind == "conv":
        r0 = res
        mean3, invstd3 = _bn_stats(r0)
        weight3 = _rand((C,), dtype, 20)
    args = (dout, out, u, mask, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3, weight3)
    got, want = tri.block_output_backward(*args), ref.block_output_backward(*args)
    names = ("du", "dres", "dweight2", "dbias2", "dweight3", "dbias3", "dbias_t", "dbias_r")
    stat = _stat_tol(dtype)
    for name, a, b in zip(names, got, want):
        if b is None:
            assert a is None, name
        elif name in ("du", "dres"):
            _close(a, b, dtype, what=name)
        elif name in ("dbias_t", "dbias_r"):
            # sums of BatchNorm input gradients: exactly 0 in exact arithmetic, so both sides are rounding noise;
            # measure against the sum of magnitudes they cancel
            grad = got[0] if name == "dbias_t" else got[1]
            assert a.dtype == torch.float64
            _close(a, b, dtype, scale=grad.double().abs().sum(0).max().item(), what=name)
        else:
            assert a.dtype == torch.float64
            _close(a, b, stat, what=name)


# ---- multi-program paths, determinism ----------------------------------------------------------------------------
def test_many_programs_and_row_loops(monkeypatch):
    """Tiny tiles and few programs force what the small shapes above never reach: several programs per reduction,
    several tiles per program, more partials than one step of the partial reduction, several channel blocks."""
    monkeypatch.setattr(kst, "_TILE_ELEMS", 32)
    monkeypatch.setattr(kst, "_MAX_ROW_PROGRAMS", 3)
    monkeypatch.setattr(kst, "_BLOCK_P", 2)
    monkeypatch.setattr(kst, "_MAX_BLOCK_C", 4)
    monkeypatch.setattr(kst, "_DOT_COLS", 16)
    dtype = DTYPES[0]
    T, N, V, C, kt, stride = 7, 3, 5, 6, 5, 2
    z, scale, shift_map, pad, Tq = _phase_inputs(T, N, V, C, kt, stride, dtype)
    for a, b in zip(tri.channel_stats(z), ref.channel_stats(z)):
        _close(a, b, dtype)
    for a, b in zip(tri.bias_map_stats(z.view(T * N, V, C), shift_map), ref.bias_map_stats(z.view(T * N, V, C),
                                                                                          shift_map)):
        _close(a, b, dtype)
    A = _adjacency(3, V, 1).to(dtype).to(DEVICE)
    _close(tri.graph_aggregate(z.view(T * N, V, C), A, False, True, None),
           ref.graph_aggregate(z.view(T * N, V, C), A, False, True, None), dtype)
    h_ph = tri.bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq)
    _close(h_ph, ref.bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq), dtype)
    dh_ph = _rand(h_ph.shape, dtype, 30)
    mean1, invstd1 = _bn_stats(z)
    w = _rand((C,), dtype, 31)
    for a, b in zip(tri.bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, w, V, stride, pad),
                    ref.bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, w, V, stride, pad)):
        _close(a, b, dtype, scale=1.0)
    rows = z.view(-1, C)
    args = (_rand(rows.shape, dtype, 32), torch.relu(rows), rows, None, mean1, invstd1, w, "conv", rows.flip(0),
            mean1, invstd1, w.flip(0))
    for a, b in zip(tri.block_output_backward(*args), ref.block_output_backward(*args)):
        _close(a, b, dtype, scale=10.0)


def test_deterministic_and_no_aliasing():
    dtype = DTYPES[1] if len(DTYPES) > 1 else DTYPES[0]
    x = _rand((40, 7), dtype, 40)
    first, again = tri.channel_stats(x), tri.channel_stats(x)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].data_ptr() != first[1].data_ptr()
    rows = x
    mean, invstd = _bn_stats(x)
    w = _rand((7,), dtype, 41)
    args = (_rand(x.shape, dtype, 42), torch.relu(rows), rows, None, mean, invstd, w, "conv", rows * 2, mean * 2,
            invstd / 2, w)
    first, again = tri.block_output_backward(*args), tri.block_output_backward(*args)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ptrs = [t.data_ptr() for t in first]
    assert len(set(ptrs)) == len(ptrs)  # a custom op's outputs must not alias each other


# ---- the whole block ---------------------------------------------------------------------------------------------
def _graph(V):
    return ugcn_fast.Graph(num_nodes=V, edges=[(i, i + 1) for i in range(V - 1)], center=V // 2).A


def _randomise(block, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in block.state_dict().items():
            if tensor.dtype.is_floating_point:
                values = torch.rand(tensor.shape, generator=g, dtype=tensor.dtype)
                tensor.copy_(values + 0.5 if "running_var" in name else values - 0.5)
    return block


def _pair(C_in, C_out, V, stride, residual, dropout, dtype, kernel_size=5, backend="triton"):
    A = ugcn_fast.Graph(layout="h36m").A if V == 17 else _graph(V)
    reference = _randomise(STGCNBlock(C_in, C_out, A, kernel_size, stride, dropout, residual), 1).to(dtype)
    fused = FusedSTGCNBlock(C_in, C_out, A, kernel_size, stride, dropout, residual, backend=backend).to(dtype)
    fused.load_state_dict(reference.state_dict())
    return reference.to(DEVICE), fused.to(DEVICE)


BLOCKS = [
    # (N, C_in, C_out, T, V, stride, residual, dropout): graph-first (C_in < C_out) and GEMM-first, every residual,
    # stride 2 with T odd, dropout (the reference given the fused block's mask), the 17-joint skeleton
    (2, 3, 4, 7, 5, 2, True, 0.0),     # conv residual (stride), graph-first
    (2, 3, 3, 6, 5, 1, True, 0.3),     # identity residual, GEMM-first, dropout
    (1, 4, 2, 5, 17, 1, True, 0.0),    # conv residual (channels), GEMM-first, V = 17
    (2, 2, 3, 6, 5, 2, False, 0.5),    # no residual, dropout, stride 2
    (2, 3, 20, 6, 5, 1, True, 0.0),    # gcn_forward aggregates its input (16 input lanes, a 32-wide output block)
]


@pytest.fixture
def no_tf32():
    """On a GPU the reference block's nn.Conv2d would run in TF32 (cuDNN's default on Ampere and later), 1e-3 off
    float32; compare float32 with float32."""
    if INTERPRET or not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# the whole block in every dtype the backend serves here (interpreter: float64, float32; GPU: float32 and the
# 16-bit types, the reference block computing in the same dtype)
BLOCK_DTYPES = [torch.float64, torch.float32] if INTERPRET else [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("dtype", BLOCK_DTYPES, ids=str)
@pytest.mark.parametrize("N,C_in,C_out,T,V,stride,residual,dropout", BLOCKS)
def test_block_matches_reference(N, C_in, C_out, T, V, stride, residual, dropout, dtype):
    _check_block(*_pair(C_in, C_out, V, stride, residual, dropout, dtype), N, C_in, T, V, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("N,C_in,C_out,T,V,stride,residual,dropout", BLOCKS)
def test_16_bit_block_check_on_the_contract(N, C_in, C_out, T, V, stride, residual, dropout, dtype):
    """The 16-bit whole-block check above runs only on a GPU; here it runs everywhere, on the plain-PyTorch passes
    the Triton kernels implement (the interpreter has no bfloat16): the orchestration in 16-bit, and the check's
    own machinery."""
    _check_block(*_pair(C_in, C_out, V, stride, residual, dropout, dtype, backend="torch"), N, C_in, T, V, dtype)


def _check_block(reference, fused, N, C_in, T, V, dtype):
    """Two training steps (output, input and parameter gradients, running statistics), then eval. In 16-bit the data
    is kept away from the ReLUs' kinks and the results are measured against the block in float64 (_relu_kinks.py)."""
    rtol, atol = TOL[dtype]
    half = dtype in (torch.float16, torch.bfloat16)
    for step in range(2):
        x = _rand((N, C_in, T, V), dtype, 50 + step, offset=0.2)
        give_reference_the_fused_mask(reference, fused, x, seed=100 + step)
        dout = _rand(output_shape(reference, x), dtype, 60 + step)
        if half:
            dout = clear_relu_kinks(reference, fused, x, dout, dtype)
        names = [name for name, _ in reference.named_parameters()]
        steps = []  # (output, input gradient, parameter gradients) of the reference, then of the fused block
        for block in (reference, fused):
            x_in = x.clone().requires_grad_()
            torch.manual_seed(100 + step)
            out = block(x_in)
            out.backward(dout)
            params = dict(block.named_parameters())
            steps.append((out.contiguous(), x_in.grad, [params[name].grad for name in names]))
        if half:
            assert_16_bit_step(steps[1], steps[0], float64_twin_step(reference, x, dout), names, dtype,
                               f"step {step}")
        else:
            (out_ref, x_grad_ref, grads_ref), (out, x_grad, grads) = steps
            _close(out, out_ref, dtype, what=f"output, step {step}")
            _close(x_grad, x_grad_ref, dtype, what=f"input grad, step {step}")
            # the biases feeding BatchNorm (tcn.2.bias, residual.0.bias) have a zero gradient up to rounding: every
            # gradient is measured against the largest one of the reference block
            grad_scale = max(g.abs().max().item() for g in grads_ref)
            for name, g, g_ref in zip(names, grads, grads_ref):
                _close(g, g_ref, dtype, scale=grad_scale, what=f"grad of {name}, step {step}")
        reference.zero_grad()
        fused.zero_grad()
    for (name, b_ref), (_, b) in zip(reference.named_buffers(), fused.named_buffers()):
        if name.endswith("num_batches_tracked"):
            assert torch.equal(b, b_ref), name
        else:
            torch.testing.assert_close(b, b_ref, rtol=rtol, atol=atol, msg=name)
    reference.eval()
    fused.eval()
    x = _rand((N, C_in, T, V), dtype, 70)
    with torch.no_grad():
        _close(fused(x).contiguous(), reference(x), dtype, what="eval output")


@pytest.mark.parametrize("C_in,C_out,stride", [(2, 3, 2), (3, 3, 1)])
def test_block_gradcheck(C_in, C_out, stride):
    """float64 gradcheck of the training block (batch statistics) w.r.t. the input and every parameter."""
    _, fused = _pair(C_in, C_out, 5, stride, True, 0.0, torch.float64)
    names = [name for name, _ in fused.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in fused.parameters()]
    x = _rand((2, C_in, 5, 5), torch.float64, 80).requires_grad_()

    def fn(x, *ps):
        return torch.func.functional_call(fused, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("case", NON_FINITE_CASES)
@pytest.mark.parametrize("c_in,c_out,stride,residual", NON_FINITE_CONFIGS)
def test_non_finite_values_propagate_as_in_the_reference(case, c_in, c_out, stride, residual):
    """NaN and +-inf where the reference has them (tests/_stgcn.py says what this pins); the statistics' shifted
    sums take no non-finite shift."""
    torch.manual_seed(5)
    blocks = reference_and_fused(c_in, c_out, stride, residual, dense_graph(), 0.0, "triton", torch.float64)
    ref, fused = (b.to(DEVICE) for b in blocks)
    x, dout = non_finite_step_inputs(ref, case, 2, c_in, 8, 5, torch.float64, DEVICE)
    assert_non_finite_like_reference(ref, fused, x, dout)
