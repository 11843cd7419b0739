"""The CUDA backend of the fused ST-GCN block's passes (csrc/cuda/stgcn_block.cu through
ugcn_fast/backends/cuda_stgcn.py) against the plain-PyTorch contract (ugcn_fast/backends/torch_stgcn.py), pass by
pass on a grid of awkward shapes, then the whole block against the reference block. Tests marked `cuda` need a GPU
and skip without one; the tests at the end run everywhere: the module imports and explains a missing device, and
the Python layer and the module refuse bad arguments with clear errors.

The check_* helpers take the device as an argument and compare in float64 where the dtype is narrower, so the same
checks drive the kernels wherever the launcher accepts tensors."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ugcn_fast import Graph, _native
from ugcn_fast.backends import cuda_stgcn
from ugcn_fast.backends import torch_stgcn as contract
from ugcn_fast.backends.torch_stgcn import phase_geometry

from _cuda_env import (CUDA_DEVICE, EMULATED, HAS_GPU, built_cuda_module, cuda_kernel_test, gpu_test,
                       nan_filled_cpu_allocations)  # noqa: F401 (an autouse fixture)
from _piece_bad_args import BAD_PIECE_ARGUMENTS
from _relu_kinks import assert_16_bit_step, clear_relu_kinks, float64_twin_step
from _stgcn import (NON_FINITE_CASES, NON_FINITE_CONFIGS, assert_non_finite_like_reference, dense_graph,
                    give_reference_the_fused_mask, non_finite_step_inputs, output_shape, reference_and_fused)
from _tolerances import RTOL, SCALED_ATOL, assert_close_scaled

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
EPS = {torch.float64: 2.0 ** -52, torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


@pytest.fixture(autouse=True)
def _exact_float32_reference():
    """The reference block's cuDNN convolutions must not use TF32, or float32 comparisons measure TF32."""
    if not HAS_GPU:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ---- helpers ---------------------------------------------------------------------------------------------------
def _randn(shape, gen, device, dtype, scale=1.0, shift=0.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift).to(device=device, dtype=dtype)


def _poison_allocator(device) -> None:
    """Leaves NaN in the memory the caching allocator hands out next, so outputs a kernel forgets to write show."""
    if torch.device(device).type != "cuda":
        return
    blocks = [torch.full((1 << 18,), float("nan"), device=device) for _ in range(32)]  # small pool (1 MiB each)
    blocks += [torch.full((1 << 24,), float("nan"), device=device) for _ in range(2)]  # large pool
    del blocks


def _f64(*tensors):
    return [None if t is None else t.double() for t in tensors]


def _adjacency(K, V, gen, device, density=0.3):
    """Random (K, V, V) adjacency with the sparsity of a skeleton graph (self-loops in subset 0)."""
    A = torch.rand((K, V, V), generator=gen, dtype=torch.float64)
    A = A * (torch.rand((K, V, V), generator=gen, dtype=torch.float64) < density)
    A[0] += torch.eye(V, dtype=torch.float64)
    return A.to(device=device, dtype=torch.float32)


def _close(actual, expected, dtype, what, atol=None):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.device == expected.device, f"{what}: device {actual.device} != {expected.device}"
    if atol is None:
        assert_close_scaled(actual, expected, dtype, msg=what)
    else:
        torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=RTOL[dtype], atol=atol, equal_nan=True,
                                   msg=lambda m: f"{what}\n{m}")


def _sum_tolerance(terms_abs_sum: torch.Tensor, dtype) -> float:
    """A sum the contract takes over rounded terms (sum of du, of dz per joint) differs from its closed form by at
    most the terms' rounding: eps(dtype) * sum |term|."""
    return 4 * EPS[dtype] * float(terms_abs_sum.max()) + 1e-12


def _batch_stats(x2d: torch.Tensor, eps=1e-5):
    x = x2d.double()
    mean = x.mean(0)
    var = x.var(0, unbiased=False)
    return mean, torch.rsqrt(var + eps)


# ---- the passes --------------------------------------------------------------------------------------------------
def check_graph_aggregate(device, dtype, V, K, C, G, contract_, transpose, with_bias, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = _adjacency(K, V, gen, device)
    src = _randn((G, V, K * C if contract_ else C), gen, device, dtype)
    bias_map = _randn((V, C), gen, device, dtype) if with_bias else None
    _poison_allocator(device)
    out = cuda_stgcn.graph_aggregate(src, A, contract_, transpose, bias_map)
    A_rounded = A.to(dtype).double()  # both sides use A in the activations' dtype
    expected = contract.graph_aggregate(src.double(), A_rounded, contract_, transpose, *_f64(bias_map))
    assert out.dtype == dtype
    _close(out, expected, dtype, f"graph_aggregate V={V} K={K} C={C} G={G} contract={contract_} T={transpose}")


def check_channel_stats(device, dtype, R, C, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = _randn((R, C), gen, device, dtype, scale=2.0, shift=3.0)
    total, squares = cuda_stgcn.channel_stats(x)
    e_total, e_squares = contract.channel_stats(x)  # exact float64 sums of the same values
    assert total.dtype == squares.dtype == torch.float64 and total.shape == (C,)
    _close(total, e_total, torch.float64, f"channel_stats sum R={R} C={C}", atol=1e-12 * (R + 1) * 5)
    _close(squares, e_squares, torch.float64, f"channel_stats sumsq R={R} C={C}")


def check_bias_map_stats(device, dtype, G, V, C, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = _randn((G, V, C), gen, device, dtype)
    bias_map = _randn((V, C), gen, device, dtype, shift=1.0)
    _poison_allocator(device)
    y, total, squares = cuda_stgcn.bias_map_stats(x, bias_map)
    e_y, _, _ = contract.bias_map_stats(x, bias_map)
    _close(y, e_y.double(), dtype, f"bias_map_stats y G={G} V={V} C={C}")
    e_total, e_squares = contract.channel_stats(y)  # the statistics of the y written
    _close(total, e_total, torch.float64, "bias_map_stats sum", atol=1e-12 * (G * V + 1) * 5)
    _close(squares, e_squares, torch.float64, "bias_map_stats sumsq")


def check_bn_relu_phases(device, dtype, T, N, V, C, kt, stride, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pad, _, Tq = phase_geometry(T, kt, stride)
    z = _randn((T, N * V, C), gen, device, dtype)
    scale = _randn((C,), gen, device, dtype)
    shift_map = _randn((V, C), gen, device, dtype, scale=0.5)
    _poison_allocator(device)
    h_ph = cuda_stgcn.bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq)
    expected = contract.bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq)
    _close(h_ph, expected.double(), dtype, f"bn_relu_phases T={T} N={N} V={V} C={C} kt={kt} s={stride}")


def _block_output_inputs(gen, device, dtype, R, C, with_mask, res_kind):
    u = _randn((R, C), gen, device, dtype, shift=0.5)
    scale2, shift2 = _randn((C,), gen, device, dtype), _randn((C,), gen, device, dtype, scale=0.3)
    mask = None
    if with_mask:
        mask = ((torch.rand((R, C), generator=gen) > 0.3).double() / 0.7).to(device=device, dtype=dtype)
    res = scale3 = shift3 = None
    if res_kind != "none":
        res = _randn((R, C), gen, device, dtype)
    if res_kind == "conv":
        scale3, shift3 = _randn((C,), gen, device, dtype), _randn((C,), gen, device, dtype, scale=0.3)
    return u, scale2, shift2, mask, res, scale3, shift3


def check_block_output(device, dtype, R, C, with_mask, res_kind, seed=0):
    gen = torch.Generator().manual_seed(seed)
    args = _block_output_inputs(gen, device, dtype, R, C, with_mask, res_kind)
    _poison_allocator(device)
    out = cuda_stgcn.block_output(*args)
    expected = contract.block_output(*args)
    _close(out, expected.double(), dtype, f"block_output R={R} C={C} mask={with_mask} res={res_kind}")


def check_block_output_backward(device, dtype, R, C, with_mask, res_kind, stats_offset=0.0, seed=0):
    """stats_offset shifts the means away from the batch means (in units of the standard deviation), so the sums
    of du and dres, ~0 with batch statistics, are large and their closed form is checked too."""
    gen = torch.Generator().manual_seed(seed)
    u, scale2, shift2, mask, res, scale3, shift3 = _block_output_inputs(gen, device, dtype, R, C, with_mask, res_kind)
    out = contract.block_output(u, scale2, shift2, mask, res, scale3, shift3)
    dout = _randn((R, C), gen, device, dtype)
    mean2, invstd2 = _batch_stats(u)
    mean2 = mean2 + stats_offset / invstd2
    weight2 = _randn((C,), gen, device, torch.float32)
    r0 = mean3 = invstd3 = weight3 = None
    if res_kind == "conv":
        r0 = res
        mean3, invstd3 = _batch_stats(r0)
        mean3 = mean3 - stats_offset / invstd3
        weight3 = _randn((C,), gen, device, torch.float32)
    args = (dout, out, u, mask, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3, weight3)
    _poison_allocator(device)
    got = cuda_stgcn.block_output_backward(*args)
    expected = contract.block_output_backward(*args)  # in the dtype: it rounds g * mask and du as the kernels do
    names = ("du", "dres", "dweight2", "dbias2", "dweight3", "dbias3", "dbias_t", "dbias_r")
    what = f"block_output_backward R={R} C={C} mask={with_mask} res={res_kind} offset={stats_offset}"
    for i, (name, a, e) in enumerate(zip(names, got, expected)):
        if e is None:
            assert a is None, f"{what}: {name} should be None"
            continue
        assert a.dtype == (dtype if i < 2 else torch.float64), f"{what}: {name} dtype {a.dtype}"
        if name == "dbias_t":  # sum of du: ~0 up to rounding; the contract sums rounded terms
            _close(a, e, dtype, f"{what}: {name}", atol=_sum_tolerance(expected[0].double().abs().sum(0), dtype))
        elif name == "dbias_r":
            _close(a, e, dtype, f"{what}: {name}", atol=_sum_tolerance(expected[1].double().abs().sum(0), dtype))
        else:  # du, dres in the dtype; BatchNorm gradients: float64 sums of the same terms in another order
            _close(a, e, dtype if i < 2 else torch.float64 if dtype == torch.float64 else torch.float32,
                   f"{what}: {name}")


def check_hashed_dropout(device, dtype, R, C, with_res, p, seed):
    """block_output_hashed / block_output_backward_hashed against the contract fed the multipliers
    torch_stgcn.dropout_multipliers materialises (the same hash)."""
    gen = torch.Generator().manual_seed(1)
    res_kind = "conv" if with_res else "none"
    u, scale2, shift2, _, res, scale3, shift3 = _block_output_inputs(gen, device, dtype, R, C, False, res_kind)
    mask = contract.dropout_multipliers(seed, p, R, C, dtype, device)
    ones = torch.ones((R, C), dtype=dtype, device=device)
    one, zero = torch.ones(C, dtype=dtype, device=device), torch.zeros(C, dtype=dtype, device=device)
    assert torch.equal(cuda_stgcn.block_output_hashed(ones, one, zero, seed, p, None, None, None), mask)
    _poison_allocator(device)
    out = cuda_stgcn.block_output_hashed(u, scale2, shift2, seed, p, res, scale3, shift3)
    expected = contract.block_output(u, scale2, shift2, mask, res, scale3, shift3)
    what = f"hashed dropout R={R} C={C} res={res_kind} p={p} seed={seed}"
    _close(out, expected.double(), dtype, f"{what}: out")
    dout = _randn((R, C), gen, device, dtype)
    mean2, invstd2 = _batch_stats(u)
    weight2 = _randn((C,), gen, device, torch.float32)
    r0 = res
    mean3, invstd3 = _batch_stats(r0) if with_res else (None, None)
    weight3 = _randn((C,), gen, device, torch.float32) if with_res else None
    tail = (mean2, invstd2, weight2, res_kind, r0, mean3, invstd3, weight3)
    got = cuda_stgcn.block_output_backward_hashed(dout, expected, u, seed, p, *tail)
    want = cuda_stgcn.block_output_backward(dout, expected, u, mask, *tail)
    for name, a, b in zip(("du", "dres", "dweight2", "dbias2", "dweight3", "dbias3", "dbias_t", "dbias_r"), got, want):
        assert (a is None) == (b is None), f"{what}: {name}"
        assert a is None or torch.equal(a, b), f"{what}: {name} differs from the materialised mask's"


def check_bn_relu_phases_backward(device, dtype, T, N, V, C, kt, stride, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pad, _, Tq = phase_geometry(T, kt, stride)
    z = _randn((T, N * V, C), gen, device, dtype, shift=0.2)
    mean1, invstd1 = _batch_stats(z.reshape(-1, C))
    weight1 = _randn((C,), gen, device, torch.float32)
    scale = (weight1.double() * invstd1).to(dtype)
    shift_map = (_randn((C,), gen, device, torch.float64, scale=0.1) - mean1 * scale.double()).to(dtype)
    h_ph = contract.bn_relu_phases(z, scale, shift_map.expand(V, C).contiguous(), V, stride, pad, Tq)
    dh_ph = _randn(h_ph.shape, gen, device, dtype)
    _poison_allocator(device)
    dz, dweight1, dbias1, joint_sums = cuda_stgcn.bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, weight1, V,
                                                                          stride, pad)
    e_dz, e_dw, e_db, e_js = contract.bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, weight1, V, stride,
                                                              pad)
    what = f"bn_relu_phases_backward T={T} N={N} V={V} C={C} kt={kt} s={stride}"
    stat_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    _close(dz, e_dz.double(), dtype, f"{what}: dz")
    _close(dweight1, e_dw, stat_dtype, f"{what}: dweight1")
    _close(dbias1, e_db, stat_dtype, f"{what}: dbias1")
    assert joint_sums.shape == (V, C) and joint_sums.dtype == torch.float64
    terms = e_dz.double().abs().view(T, N, V, C).sum((0, 1))
    tol = max(_sum_tolerance(terms, dtype), SCALED_ATOL[stat_dtype] * float(e_js.abs().max() if e_js.numel() else 0))
    _close(joint_sums, e_js, stat_dtype, f"{what}: joint_sums", atol=tol)


GRAPH_CASES = [  # V, K, C, G
    (5, 1, 1, 1), (5, 3, 3, 7), (17, 3, 16, 5), (17, 3, 20, 3), (25, 3, 130, 2), (17, 2, 130, 1),
    (25, 1, 16, 9), (33, 3, 20, 2), (64, 3, 16, 2), (64, 1, 3, 3), (7, 5, 33, 4),
    (25, 3, 130, 300),  # more units than blocks: each block loops over units
]
STATS_CASES = [(1, 1), (5, 3), (17, 16), (300, 20), (1000, 130), (40000, 3), (9000, 16)]  # rows, C
PHASE_CASES = [  # T, N, V, C, kt, stride
    (7, 2, 5, 3, 5, 2), (9, 1, 17, 20, 5, 2), (8, 3, 25, 1, 5, 1), (5, 2, 17, 130, 3, 2), (1, 1, 5, 16, 5, 1),
    (6, 1, 17, 16, 1, 2), (11, 2, 5, 16, 9, 3), (12, 4, 17, 16, 5, 2), (3, 2, 25, 3, 5, 2),
    (6, 2, 5, 3, 3, 3), (8, 1, 17, 16, 3, 4),  # stride > kt - 1: trailing frames no tap reads
    (40, 32, 25, 130, 5, 2),  # more rows than one grid covers: threads walk several rows
]
OUTPUT_CASES = [(1, 1), (7, 3), (85, 16), (170, 20), (120, 130), (5000, 16), (30000, 130)]  # rows, C
RESIDUALS = ["none", "identity", "conv"]


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("V, K, C, G", GRAPH_CASES)
@pytest.mark.parametrize("contract_, transpose, with_bias", [(True, False, True), (True, True, False),
                                                            (False, False, False), (False, True, False)])
def test_graph_aggregate(dtype, V, K, C, G, contract_, transpose, with_bias):
    check_graph_aggregate(CUDA_DEVICE, dtype, V, K, C, G, contract_, transpose, with_bias)


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("R, C", STATS_CASES)
def test_channel_stats(dtype, R, C):
    check_channel_stats(CUDA_DEVICE, dtype, R, C)


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("G, V, C", [(1, 5, 1), (7, 17, 3), (30, 25, 16), (4, 17, 20), (3, 5, 130), (600, 17, 16)])
def test_bias_map_stats(dtype, G, V, C):
    check_bias_map_stats(CUDA_DEVICE, dtype, G, V, C)


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T, N, V, C, kt, stride", PHASE_CASES)
def test_bn_relu_phases(dtype, T, N, V, C, kt, stride):
    check_bn_relu_phases(CUDA_DEVICE, dtype, T, N, V, C, kt, stride)


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("R, C", OUTPUT_CASES)
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("res_kind", RESIDUALS)
def test_block_output(dtype, R, C, with_mask, res_kind):
    check_block_output(CUDA_DEVICE, dtype, R, C, with_mask, res_kind)


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("R, C", OUTPUT_CASES)
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("res_kind", RESIDUALS)
@pytest.mark.parametrize("stats_offset", [0.0, 0.5])
def test_block_output_backward(dtype, R, C, with_mask, res_kind, stats_offset):
    if EMULATED and R * C > 10 ** 6 and dtype in (torch.float16, torch.bfloat16):
        pytest.skip("emulator: the multi-grid shape runs in float32 and float64 (same indexing; ~2 s a case)")
    check_block_output_backward(CUDA_DEVICE, dtype, R, C, with_mask, res_kind, stats_offset)


HASHED_CASES = [  # R, C, with_res, p, seed
    (1, 1, False, 0.5, 0), (170, 20, True, 0.3, 12345), (5000, 16, False, 0.9, (1 << 62) - 1),
    (120, 130, True, 0.1, 987654321987), (64, 3, True, 0.0, 7),
]


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("R, C, with_res, p, seed", HASHED_CASES)
def test_hashed_dropout(dtype, R, C, with_res, p, seed):
    check_hashed_dropout(CUDA_DEVICE, dtype, R, C, with_res, p, seed)


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T, N, V, C, kt, stride", PHASE_CASES)
def test_bn_relu_phases_backward(dtype, T, N, V, C, kt, stride):
    check_bn_relu_phases_backward(CUDA_DEVICE, dtype, T, N, V, C, kt, stride)


@cuda_kernel_test
def test_empty_inputs():
    check_empty(CUDA_DEVICE)


def check_empty(device):
    """Zero rows or channels: empty outputs, zero statistics, no launch error."""
    for R, C in ((0, 5), (4, 0)):
        x = torch.zeros((R, C), device=device)
        total, squares = cuda_stgcn.channel_stats(x)
        assert total.shape == (C,) and torch.equal(total, torch.zeros_like(total))
        assert torch.equal(squares, torch.zeros_like(squares))
    src = torch.zeros((0, 5, 6), device=device)
    assert cuda_stgcn.graph_aggregate(src, torch.ones((3, 5, 5), device=device), True, False, None).shape == (0, 5, 2)
    z = torch.zeros((0, 10, 4), device=device)
    h = cuda_stgcn.bn_relu_phases(z, torch.ones(4, device=device), torch.zeros((5, 4), device=device), 5, 2, 2, 2)
    assert h.shape == (2, 2, 10, 4) and torch.equal(h, torch.zeros_like(h))
    u = torch.zeros((0, 3), device=device)
    stats = torch.ones(3, dtype=torch.float64, device=device)
    got = cuda_stgcn.block_output_backward(u, u, u, None, stats, stats, stats, "conv", u, stats, stats, stats)
    assert got[0].shape == (0, 3) and all(torch.equal(t, torch.zeros_like(t)) for t in got[2:])


# ---- the whole block -------------------------------------------------------------------------------------------
def _graph(V):
    if V == 17:
        return Graph(layout="h36m").A
    if V == 25:
        return Graph(layout="ntu").A
    return Graph(num_nodes=V, edges=[(i, i + 1) for i in range(V - 1)], center=V // 2).A


def _blocks(C_in, C_out, V, stride, residual, dropout, device, dtype, seed=0, kernel_size=5):
    from ugcn_fast.fused_stgcn_block import FusedSTGCNBlock
    from ugcn_fast.reference import STGCNBlock

    torch.manual_seed(seed)
    A = _graph(V)
    kw = dict(kernel_size=kernel_size, stride=stride, dropout=dropout, residual=residual)
    ref = STGCNBlock(C_in, C_out, A, **kw)
    fused = FusedSTGCNBlock(C_in, C_out, A, **kw, backend="cuda")
    with torch.no_grad():  # non-trivial BatchNorm affine parameters and running statistics
        for bn in [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref.to(device=device, dtype=dtype), fused.to(device=device, dtype=dtype)


def _grad_scale(grads: dict, name: str, dout: torch.Tensor) -> float:
    """Magnitude a gradient is compared at: its own, or its layer's weight gradient for the biases. The
    convolution biases feed a batch-statistics BatchNorm, so their true gradient is 0 and both sides hold rounding
    noise of a sum that cancels: at least dout's magnitude times sqrt(its count) (a 5-element batch once had a
    weight gradient smaller than that noise). So does a weight whose BatchNorm channel reads one weight element
    (the residual 1x1 from one input channel, a 1-tap temporal convolution of one channel): BatchNorm is
    invariant to that element's scale but for its eps, so the gradient is ~eps / var of its size, and can sink
    below the noise (found by hypothesis: 1 -> 1 channels, stride 3, three rows; a gradient of 2.5e-11)."""
    own = float(grads[name].abs().max())
    layer = name.rsplit(".", 1)[0]
    weight = grads.get(layer + ".weight")
    scale = max(own, float(weight.abs().max()) if weight is not None else 0.0)
    one_element = layer in ("residual.0", "tcn.2") and weight is not None and weight[0].numel() == 1
    if weight is not None and weight.dim() > 1 and (name.endswith(".bias") or one_element):
        scale = max(scale, float(dout.abs().max()) * dout.numel() ** 0.5)
    return scale


def _relu_inputs_clear_of_zero(ref, x, rel=1e-6) -> bool:
    """Whether every ReLU input of `ref` on x, computed in float64, lies more than rel * its tensor's RMS away
    from zero. Closer than that, a float32 block and a float32 reference may round to opposite sides of the kink,
    and both are right: one flipped element moves a whole upstream gradient value into ~100 elements of dx.
    (It happened: a BatchNorm output of -4.7e-9, +4.3e-8 in the float32 reference with one thread.)"""
    twin = copy.deepcopy(ref).double()
    inputs = []
    hooks = [m.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach().clone()))
             for m in twin.modules() if isinstance(m, torch.nn.ReLU)]
    with torch.no_grad():
        twin(x.detach().double())
    for hook in hooks:
        hook.remove()
    return all(bool((t.abs() > rel * t.pow(2).mean().sqrt()).all()) for t in inputs)


def check_block(device, dtype, C_in, C_out, V, stride, residual, dropout, N=3, T=11, seed=0, kernel_size=5):
    """Two training steps and eval of the fused block against the reference. In 16-bit the data is kept off the
    ReLUs' kinks and every result is measured against the same block in float64 (tests/_relu_kinks.py)."""
    ref, fused = _blocks(C_in, C_out, V, stride, residual, dropout, device, dtype, seed, kernel_size)
    what = f"block {C_in}->{C_out} V={V} s={stride} res={residual} p={dropout} {dtype}"
    half = dtype in (torch.float16, torch.bfloat16)
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(2):  # two training steps: outputs, gradients, running statistics
        for _ in range(20):  # float32: inputs whose ReLUs have no element at the kink within rounding
            x = _randn((N, C_in, T, V), gen, device, dtype).requires_grad_(True)
            give_reference_the_fused_mask(ref, fused, x, 100 + step)  # dropout: the mask the fused block will draw
            if dtype != torch.float32 or _relu_inputs_clear_of_zero(ref, x):
                break
        if half:
            dout = clear_relu_kinks(ref, fused, x, _randn(output_shape(ref, x), gen, device, dtype), dtype)
        out_r = ref(x)
        torch.manual_seed(100 + step)
        out_f = fused(x)
        if not half:
            dout = _randn(out_r.shape, gen, device, dtype)
        names = [n for n, _ in ref.named_parameters()]
        g_r = torch.autograd.grad(out_r, [x] + [p for _, p in ref.named_parameters()], dout)
        g_f = torch.autograd.grad(out_f, [x] + [p for _, p in fused.named_parameters()], dout)
        if half:
            assert_16_bit_step((out_f, g_f[0], g_f[1:]), (out_r, g_r[0], g_r[1:]), float64_twin_step(ref, x, dout),
                               names, dtype, f"{what} (step {step})")
            continue
        _close(out_f, out_r.detach(), dtype, f"{what}: output (step {step})")
        _close(g_f[0], g_r[0], dtype, f"{what}: dx (step {step})")
        grads = dict(zip(names, g_r[1:]))
        for name, a, e in zip(names, g_f[1:], g_r[1:]):
            atol = SCALED_ATOL[dtype] * _grad_scale(grads, name, dout)
            _close(a, e, dtype, f"{what}: d{name} (step {step})", atol=atol)
    buffers = dict(ref.named_buffers())
    for (name, b_r), (_, b_f) in zip(ref.named_buffers(), fused.named_buffers()):
        if not b_r.dtype.is_floating_point:
            assert torch.equal(b_f, b_r), f"{what}: buffer {name}"
        elif half and name.endswith("running_mean"):  # a mean of 16-bit values: rounded at their spread's scale
            spread = float((b_r.abs() + buffers[name[:-4] + "var"].sqrt()).max())
            _close(b_f, b_r, dtype, f"{what}: buffer {name}", atol=SCALED_ATOL[dtype] * spread)
        else:
            _close(b_f, b_r, dtype, f"{what}: buffer {name}")
    ref.eval()
    fused.eval()
    with torch.no_grad():
        x = _randn((N, C_in, T, V), gen, device, dtype)
        _close(fused(x), ref(x), dtype, f"{what}: eval output")


BLOCK_CASES = [  # C_in, C_out, V, stride, residual, dropout
    (3, 16, 17, 1, True, 0.0),    # graph-first, conv residual
    (16, 16, 17, 1, True, 0.3),   # GEMM-first, identity residual, dropout
    (20, 16, 25, 2, True, 0.0),   # GEMM-first, strided conv residual
    (3, 20, 5, 2, False, 0.2),    # graph-first, no residual, dropout, stride 2
    (16, 1, 17, 1, True, 0.0),    # one output channel
    (2, 130, 5, 2, True, 0.5),    # wide, strided
]


@cuda_kernel_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("C_in, C_out, V, stride, residual, dropout", BLOCK_CASES)
def test_block_matches_reference(dtype, C_in, C_out, V, stride, residual, dropout):
    check_block(CUDA_DEVICE, dtype, C_in, C_out, V, stride, residual, dropout)


@cuda_kernel_test
@pytest.mark.parametrize("case", NON_FINITE_CASES)
@pytest.mark.parametrize("c_in,c_out,stride,residual", NON_FINITE_CONFIGS)
def test_non_finite_values_propagate_as_in_the_reference(case, c_in, c_out, stride, residual):
    """NaN and +-inf where the reference has them (tests/_stgcn.py says what this pins)."""
    torch.manual_seed(5)
    blocks = reference_and_fused(c_in, c_out, stride, residual, dense_graph(), 0.0, "cuda", torch.float64)
    ref, fused = (b.to(CUDA_DEVICE) for b in blocks)
    x, dout = non_finite_step_inputs(ref, case, 2, c_in, 8, 5, torch.float64, CUDA_DEVICE)
    assert_non_finite_like_reference(ref, fused, x, dout)


@cuda_kernel_test
def test_block_default_ugcn_shape():
    check_block(CUDA_DEVICE, torch.float32, 32, 64, 17, 2, True, 0.5, N=8, T=24)


@cuda_kernel_test
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(C_in=st.integers(1, 24), C_out=st.integers(1, 24), V=st.integers(2, 20), stride=st.integers(1, 3),
       kernel_size=st.sampled_from([1, 3, 5, 7]), residual=st.booleans(), dropout=st.sampled_from([0.0, 0.4]),
       N=st.integers(1, 3), T=st.integers(1, 16), seed=st.integers(0, 2 ** 16))
@example(C_in=1, C_out=1, V=5, stride=2, kernel_size=3, residual=True, dropout=0.4, N=1, T=1, seed=0)  # found once
@example(C_in=1, C_out=1, V=3, stride=3, kernel_size=7, residual=True, dropout=0.0, N=1, T=3, seed=22059)  # and this
def test_property_block_matches_reference(C_in, C_out, V, stride, kernel_size, residual, dropout, N, T, seed):
    check_block(CUDA_DEVICE, torch.float64, C_in, C_out, V, stride, residual, dropout, N=N, T=T, seed=seed,
                kernel_size=kernel_size)


def check_gradcheck(device):
    from ugcn_fast.fused_stgcn_block import FusedSTGCNBlock

    torch.manual_seed(0)
    block = FusedSTGCNBlock(2, 3, _graph(5), kernel_size=3, stride=2, residual=True, backend="cuda")
    block = block.to(device=device, dtype=torch.float64)
    names = [n for n, _ in block.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in block.named_parameters())
    x = torch.randn((2, 2, 5, 5), dtype=torch.float64, device=device, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(block, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


@cuda_kernel_test
def test_gradcheck_float64():
    check_gradcheck(CUDA_DEVICE)


def check_deterministic(device):
    ref, fused = _blocks(16, 32, 17, 2, True, 0.0, device, torch.float32)
    gen = torch.Generator().manual_seed(3)
    x = _randn((8, 16, 23, 17), gen, device, torch.float32)
    dout = None
    runs = []
    for _ in range(2):
        xr = x.clone().requires_grad_(True)
        out = fused(xr)
        dout = _randn(out.shape, torch.Generator().manual_seed(4), device, torch.float32) if dout is None else dout
        grads = torch.autograd.grad(out, [xr] + list(fused.parameters()), dout)
        runs.append((out.detach(), *grads))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    big = _randn((60000, 48), gen, device, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(cuda_stgcn.channel_stats(big), cuda_stgcn.channel_stats(big)))


@cuda_kernel_test
def test_bitwise_deterministic():
    check_deterministic(CUDA_DEVICE)


@gpu_test
def test_non_default_stream():
    gen = torch.Generator().manual_seed(0)
    x = _randn((5000, 20), gen, "cuda", torch.float32)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        total, squares = cuda_stgcn.channel_stats(x)
    stream.synchronize()
    e_total, e_squares = contract.channel_stats(x)
    _close(total, e_total, torch.float64, "sum on a side stream", atol=1e-6)
    _close(squares, e_squares, torch.float64, "sumsq on a side stream")


@gpu_test
def test_auto_backend_selects_cuda():
    from ugcn_fast import backends

    assert backends.select_block("auto", torch.device("cuda"), torch.float32) == "cuda"


# ---- without a GPU -----------------------------------------------------------------------------------------------
needs_module = pytest.mark.skipif(built_cuda_module() is None, reason="ugcn_fast._cuda is not built")
_NO_DROPOUT = (False, 0, 0, 1.0)  # the module's (hashed, seed, threshold, keep_scale) without hashed dropout


@needs_module
def test_module_imports_and_exports_the_passes():
    m = built_cuda_module()
    for name in ("stgcn_graph_aggregate", "stgcn_channel_stats", "stgcn_bn_relu_phases", "stgcn_block_output",
                 "stgcn_block_output_backward", "stgcn_bn_relu_phases_backward", "stgcn_stats_workspace"):
        assert callable(getattr(m, name)), name
    assert m.stgcn_max_joints == cuda_stgcn.MAX_JOINTS
    assert m.stgcn_stats_workspace(0, 0) == 0 and m.stgcn_stats_workspace(1000, 16) > 0


@needs_module
@pytest.mark.skipif(HAS_GPU, reason="checks the message given where there is no GPU")
def test_runtime_problem_explains_the_missing_device():
    problem = built_cuda_module().runtime_problem()
    assert isinstance(problem, str) and problem != ""
    from ugcn_fast import backends

    if not EMULATED:  # under the emulator, backend="cuda" is served on CPU tensors
        assert _native.cuda_runtime_problem() == problem
        assert "cuda" not in backends.available_backends()
    with pytest.raises(RuntimeError, match="cuda"):
        backends.select_block("cuda", torch.device("cuda"), torch.float32)


def test_contract_functions_all_present_with_the_same_signatures():
    import inspect

    for name in ("graph_aggregate", "channel_stats", "bias_map_stats", "bn_relu_phases", "block_output",
                 "block_output_backward", "bn_relu_phases_backward"):
        ours, theirs = inspect.signature(getattr(cuda_stgcn, name)), inspect.signature(getattr(contract, name))
        assert list(ours.parameters) == list(theirs.parameters), name
    from ugcn_fast.backends import cpu_stgcn  # the hashed-dropout entry points: as the CPU backend's

    for name in ("block_output_hashed", "block_output_backward_hashed"):
        ours, theirs = inspect.signature(getattr(cuda_stgcn, name)), inspect.signature(getattr(cpu_stgcn, name))
        assert list(ours.parameters) == list(theirs.parameters), name


@pytest.mark.parametrize("call, error, match", [
    (lambda: cuda_stgcn.graph_aggregate(torch.zeros(2, 65, 3), torch.zeros(3, 65, 65), False, False, None),
     ValueError, "V = 65"),
    *[(lambda case=case: case(cuda_stgcn), error, match) for case, error, match in BAD_PIECE_ARGUMENTS],
    *[pytest.param(*case, marks=pytest.mark.skipif(EMULATED, reason="the emulator serves CPU tensors")) for case in [
        (lambda: cuda_stgcn.channel_stats(torch.zeros(4, 3)), ValueError, "CUDA tensors"),
        (lambda: cuda_stgcn.graph_aggregate(torch.zeros(2, 5, 6), torch.zeros(3, 5, 5), True, False, None),
         ValueError, "CUDA tensors"),
    ]],
])
def test_python_layer_rejects_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@needs_module
@pytest.mark.parametrize("call, match", [
    (lambda m: m.stgcn_graph_aggregate("float32", 1, 1, 0, 1, 2, 3, 65, 4, True, False, 0, 0), "V <= 64"),
    (lambda m: m.stgcn_graph_aggregate("float32", 0, 1, 0, 1, 2, 3, 5, 4, True, False, 0, 0), "null pointer"),
    (lambda m: m.stgcn_graph_aggregate("int8", 1, 1, 0, 1, 2, 3, 5, 4, True, False, 0, 0), "dtype"),
    (lambda m: m.stgcn_channel_stats("float32", 1, 0, 0, 100, 4, 1, 1, 1, 1, 3, 0, 0), "workspace"),
    (lambda m: m.stgcn_channel_stats("float32", 1, 1, 0, 10, 4, 3, 1, 1, 1, 10 ** 6, 0, 0), "multiple of V"),
    (lambda m: m.stgcn_block_output_backward("float32", 1, 1, 1, 0, *_NO_DROPOUT, 1, 1, 1, 3, *[1] * 12, 4, 4, 1,
                                             10 ** 6, 0, 0), "residual"),
    (lambda m: m.stgcn_block_output_backward("float32", 1, 1, 1, 1, True, 5, 9, 2.0, 1, 1, 1, 0, *[1] * 12, 4, 4, 1,
                                             10 ** 6, 0, 0), "not both"),
    (lambda m: m.stgcn_bn_relu_phases("float32", 1, 1, 1, 1, 2, 1, 5, 4, 0, 2, 4, 0, 0), "stride"),
    (lambda m: m.stgcn_block_output("float32", 1, 1, 1, 0, *_NO_DROPOUT, 0, 1, 0, 1, 4, 4, 0, 0), "scale3"),
    (lambda m: m.stgcn_block_output("float32", 1, 1, 1, 0, *_NO_DROPOUT, 0, 0, 0, 1, 4, 4, 0, -1), "device_index"),
    (lambda m: m.stgcn_block_output("float32", 1, 1, 1, 0, True, 5, (1 << 24) + 1, 2.0, 0, 0, 0, 1, 4, 4, 0, 0),
     "threshold"),
    (lambda m: m.stgcn_block_output("float32", 1, 1, 1, 0, True, 5, 9, 0.5, 0, 0, 0, 1, 4, 4, 0, 0), "keep_scale"),
])
def test_module_refuses_bad_arguments_before_touching_a_device(call, match):
    with pytest.raises(ValueError, match=match):
        call(_native.cuda_module)


@needs_module
def test_module_accepts_empty_work_without_a_device():
    m = _native.cuda_module
    m.stgcn_graph_aggregate("float32", 0, 0, 0, 0, 0, 3, 5, 4, True, False, 0, 0)  # G = 0: nothing to launch
    m.stgcn_channel_stats("float32", 0, 0, 0, 10, 0, 1, 0, 0, 0, 0, 0, 0)  # C = 0
    m.stgcn_block_output("float16", 0, 0, 0, 0, *_NO_DROPOUT, 0, 0, 0, 0, 0, 8, 0, 0)  # rows = 0
