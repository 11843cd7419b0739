"""Every fused backend against the reference: values and gradients over a grid of shapes and options,
gradcheck in float64, a hypothesis property test, determinism, and the CUDA kernel's gather code on the CPU."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ugcn_fast
from ugcn_fast import reference
from ugcn_fast._options import resolve_options

from _backends import dtypes_for, fused_cases
from _cuda_env import CUDA_DEVICE, CUDA_MARK
from _tolerances import assert_close_scaled

CASES = fused_cases()
if not CASES:
    pytest.skip("no fused backend available on this machine", allow_module_level=True)

# (B, T, J, intervals): T just above the largest interval, odd J, J = 1, B = 1, tau = 1 and tau = T - 1.
SHAPES = [
    (2, 25, 17, (8, 12, 16, 24)),
    (1, 9, 5, (1, 2, 8)),
    (3, 7, 1, (3,)),
    (2, 12, 4, (1, 11)),
]
OPERATOR_D = [("cross", 3), ("inner", 3), ("inner", 2), ("sub", 3), ("sub", 5)]
NORMALIZE = ["sample", "joint", "none"]
REDUCTIONS = ["mean", "sum", "none"]


def _inputs(shape, D, dtype, device, seed=0):
    B, T, J, _ = shape
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, T, J, D, generator=g, dtype=torch.float64)
    pred = target + 0.5 * torch.randn(B, T, J, D, generator=g, dtype=torch.float64)
    return (pred.to(device=device, dtype=dtype).requires_grad_(True),
            target.to(device=device, dtype=dtype).requires_grad_(True))


def _loss_and_grads(fn, pred, target, grad_output_seed=1, **kw):
    loss = fn(pred, target, **kw)
    g = torch.Generator().manual_seed(grad_output_seed)
    grad_output = (torch.rand(loss.shape, generator=g, dtype=torch.float64) + 0.5).to(loss)  # != 1 on purpose
    grads = torch.autograd.grad(loss, (pred, target), grad_output)
    return loss, grads


def check_against_reference(backend, device, dtype, shape, operator, D, normalize, reduction):
    B, T, J, intervals = shape
    pred, target = _inputs(shape, D, dtype, device)
    kw = dict(intervals=intervals, operator=operator, normalize=normalize, reduction=reduction)
    # the reference runs in float64 on the CPU: it is the oracle, not a peer
    ref_pred = pred.detach().double().cpu().requires_grad_(True)
    ref_target = target.detach().double().cpu().requires_grad_(True)
    expected, expected_grads = _loss_and_grads(reference.motion_loss, ref_pred, ref_target, **kw)
    actual, actual_grads = _loss_and_grads(ugcn_fast.motion_loss, pred, target, backend=backend, **kw)
    assert actual.dtype == dtype and actual.shape == expected.shape
    context = f"{backend}/{device} {dtype} {shape} {operator} D={D} {normalize} {reduction}"
    assert_close_scaled(actual.cpu(), expected, dtype, f"loss {context}")
    with torch.no_grad():  # the forward alone (no unit gradients computed or stored) gives the same loss
        forward_only = ugcn_fast.motion_loss(pred, target, backend=backend, **kw)
    assert_close_scaled(forward_only.cpu(), actual.detach().cpu(), dtype, f"no-grad loss {context}")
    for name, a, e in zip(("grad pred", "grad target"), actual_grads, expected_grads):
        assert a.shape == e.shape and a.dtype == dtype
        assert_close_scaled(a.cpu(), e, dtype, f"{name} {context}")


NEEDS_CPU_MODULE = pytest.mark.skipif("cpu" not in ugcn_fast.available_backends(), reason="native CPU module not built")


@NEEDS_CPU_MODULE
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("operator, D", OPERATOR_D)
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cpu_matches_reference(dtype, shape, operator, D, normalize, reduction):
    check_against_reference("cpu", "cpu", dtype, shape, operator, D, normalize, reduction)


OTHER_CASES = [c for c in CASES if c != ("cpu", "cpu")]


@pytest.mark.parametrize("backend, device", OTHER_CASES or [pytest.param("none", "none", marks=pytest.mark.skip(
    reason="no Triton or CUDA backend on this machine"))])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
@pytest.mark.parametrize("operator, D", [("cross", 3), ("inner", 2), ("sub", 5)])
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triton_and_cuda_match_reference(backend, device, shape, operator, D, normalize, reduction):
    for dtype in dtypes_for(backend, device):
        if device == "cpu" and dtype == torch.float32 and reduction != "mean":
            continue  # the interpreter is slow: float32 once per configuration is enough there
        check_against_reference(backend, device, dtype, shape, operator, D, normalize, reduction)


# ---- gradcheck in float64 -------------------------------------------------------------------------------------
# The reductions scale the same derivatives (mean: by a constant; none: per sample): every reduction with cross,
# mean with the other operators (their values and gradients meet the reference over the full grid above).
GRADCHECK_GRID = [(op, D, norm, red) for op, D in [("cross", 3), ("inner", 3), ("inner", 2), ("sub", 3)]
                  for norm in NORMALIZE for red in (REDUCTIONS if op == "cross" else ["mean"])]


@pytest.mark.parametrize("backend, device", CASES)
@pytest.mark.parametrize("operator, D, normalize, reduction", GRADCHECK_GRID)
def test_gradcheck(backend, device, operator, D, normalize, reduction):
    pred, target = _inputs((2, 7, 3, (1, 3)), D, torch.float64, device, seed=3)
    kw = dict(intervals=(1, 3), operator=operator, normalize=normalize, reduction=reduction, backend=backend)
    # The normalisation statistics are constants of the target by definition (SPEC §1): the numerical
    # derivative through them is not the loss's gradient, so the target is checked where they are absent.
    # Triton's interpreter runs a kernel in ~0.1 s: there, gradcheck checks random directional derivatives
    # (fast_mode) instead of the full Jacobian, which test_motion_loss_triton.py also checks once.
    fast = backend == "triton" and device == "cpu"
    if normalize == "none" or operator == "sub":
        assert torch.autograd.gradcheck(lambda p, t: ugcn_fast.motion_loss(p, t, **kw), (pred, target),
                                        fast_mode=fast)
    else:
        t = target.detach()
        assert torch.autograd.gradcheck(lambda p: ugcn_fast.motion_loss(p, t, **kw), (pred,), fast_mode=fast)


# ---- property test ---------------------------------------------------------------------------------------------
@st.composite
def problems(draw):
    T = draw(st.integers(2, 20))
    intervals = draw(st.lists(st.integers(1, T - 1), min_size=1, max_size=min(5, T - 1), unique=True))
    operator = draw(st.sampled_from(["cross", "inner", "sub"]))
    D = 3 if operator == "cross" else draw(st.integers(1, 6))
    return dict(B=draw(st.integers(1, 4)), T=T, J=draw(st.integers(1, 7)), D=D, intervals=tuple(intervals),
                operator=operator, normalize=draw(st.sampled_from(NORMALIZE)),
                reduction=draw(st.sampled_from(REDUCTIONS)), seed=draw(st.integers(0, 2**16)))


PROPERTY_CASES = [pytest.param("cpu", "cpu", marks=NEEDS_CPU_MODULE)] + (
    [pytest.param("cuda", CUDA_DEVICE, marks=CUDA_MARK)] if CUDA_DEVICE else [])


@pytest.mark.parametrize("backend, device", PROPERTY_CASES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_property_matches_reference(backend, device, problem):
    shape = (problem["B"], problem["T"], problem["J"], problem["intervals"])
    pred, target = _inputs(shape, problem["D"], torch.float64, device, problem["seed"])
    kw = dict(intervals=problem["intervals"], operator=problem["operator"], normalize=problem["normalize"],
              reduction=problem["reduction"])
    ref_pred, ref_target = (t.detach().cpu().requires_grad_(True) for t in (pred, target))
    expected, expected_grads = _loss_and_grads(reference.motion_loss, ref_pred, ref_target, **kw)
    actual, actual_grads = _loss_and_grads(ugcn_fast.motion_loss, pred, target, backend=backend, **kw)
    assert_close_scaled(actual.cpu(), expected, torch.float64, str(problem))
    for a, e in zip(actual_grads, expected_grads):
        assert_close_scaled(a.cpu(), e, torch.float64, str(problem))


# ---- the CUDA kernel's per-element code, run on the CPU ------------------------------------------------------
@NEEDS_CPU_MODULE
@pytest.mark.parametrize("operator, D", OPERATOR_D + [("sub", 1), ("inner", 16)])
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_gather_form_matches_scatter_form(operator, D, normalize, reduction, dtype):
    """csrc/cuda runs ugcn::gather_frame_joint per frame-joint; the CPU build exposes the same function in an
    OpenMP loop, so the GPU's per-element math and indexing are covered here against the fast CPU path and the
    reference."""
    from ugcn_fast.backends import cpu_motion_loss

    pred, target = _inputs((3, 25, 17, None), D, dtype, "cpu", seed=5)
    pred, target = pred.detach(), target.detach()
    opts = resolve_options(pred, target, (8, 12, 16, 24), operator, normalize, 0.01, reduction)
    gathered = cpu_motion_loss.forward(pred, target, opts, True, True, gather=True)
    scattered = cpu_motion_loss.forward(pred, target, opts, True, True)
    for g, s in zip(gathered, scattered):
        assert_close_scaled(g, s, dtype)
    ref_pred, ref_target = pred.double().requires_grad_(True), target.double().requires_grad_(True)
    expected = reference.motion_loss(ref_pred, ref_target, **{k: getattr(opts, k) for k in (
        "intervals", "operator", "normalize", "eps", "reduction")})
    reduced = gathered[0] if reduction == "none" else gathered[0].sum()
    assert_close_scaled(reduced, expected, dtype)


# ---- determinism -----------------------------------------------------------------------------------------------
@NEEDS_CPU_MODULE
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_cpu_is_bitwise_reproducible_across_runs_and_thread_counts(normalize):
    pred, target = _inputs((9, 40, 17, None), 3, torch.float32, "cpu", seed=7)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3, 1):
            torch.set_num_threads(n)
            loss, grads = _loss_and_grads(ugcn_fast.motion_loss, pred, target, backend="cpu", normalize=normalize)
            results.append((loss, *grads))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@NEEDS_CPU_MODULE
@pytest.mark.parametrize("wants", ["pred", "target", "both"])
@pytest.mark.parametrize("nan_in_target", [False, True], ids=["finite", "nan-target"])
@pytest.mark.parametrize("operator", ["cross", "inner", "sub"])
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_cpu_gradient_of_either_input_alone(wants, nan_in_target, operator, normalize):
    """The CPU kernel stores per-gradient planes (cross: gradient products of pred, of target, or both): each
    gradient alone and both together match the reference. Five intervals run the gather as a chunk of four and one
    of one; at T = 12 with intervals 7-11 the frames 5 and 6 are in no pair, so a NaN den (a NaN in the target)
    must leave their gradient exactly 0 while the others turn NaN, as in the reference."""
    intervals = (7, 8, 9, 10, 11)
    g = torch.Generator().manual_seed(3)
    target = torch.randn(2, 12, 5, 3, generator=g, dtype=torch.float64)
    pred = target + 0.5 * torch.randn(2, 12, 5, 3, generator=g, dtype=torch.float64)
    if nan_in_target:
        target[1, 3, 2, 0] = float("nan")
    kw = dict(intervals=intervals, operator=operator, normalize=normalize, reduction="sum")
    results = []
    for fn in (lambda p, t: ugcn_fast.motion_loss(p, t, backend="cpu", **kw),
               lambda p, t: reference.motion_loss(p, t, **kw)):
        p, t = pred.clone().requires_grad_(wants != "target"), target.clone().requires_grad_(wants != "pred")
        loss = fn(p, t)
        loss.backward()
        results.append((loss.detach(), p.grad, t.grad))
    (loss, *grads), (e_loss, *e_grads) = results
    torch.testing.assert_close(loss, e_loss, equal_nan=True)
    for name, a, e in zip(("pred", "target"), grads, e_grads):
        assert (a is None) == (e is None), name
        if a is not None:
            assert torch.equal(torch.isnan(a), torch.isnan(e)), name
            torch.testing.assert_close(a, e, equal_nan=True, msg=lambda m: f"grad {name}: {m}")
    if nan_in_target and wants != "target":
        assert torch.equal(grads[0][:, 5:7], torch.zeros_like(grads[0][:, 5:7]))


@NEEDS_CPU_MODULE
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("operator, D", [("cross", 3), ("inner", 3), ("sub", 3), ("inner", 2)])
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_cpu_scratch_kept_between_calls_starts_clean(operator, D, normalize, dtype):
    """Each OpenMP thread keeps its scratch planes between calls and the padding must read as zeros: a larger call
    in between (other T, J, intervals: every plane of the small call's layout written with non-zeros) changes
    nothing, bit for bit."""
    small = dict(intervals=(2, 5), operator=operator, normalize=normalize)
    pred, target = _inputs((3, 11, 4, None), D, dtype, "cpu", seed=3)
    first = _loss_and_grads(ugcn_fast.motion_loss, pred, target, backend="cpu", **small)
    big_pred, big_target = _inputs((4, 60, 17, None), D, dtype, "cpu", seed=4)
    _loss_and_grads(ugcn_fast.motion_loss, big_pred * 100, big_target * 100, backend="cpu", intervals=(1, 7, 30),
                    operator=operator, normalize=normalize)
    again = _loss_and_grads(ugcn_fast.motion_loss, pred, target, backend="cpu", **small)
    assert torch.equal(first[0], again[0])
    for a, b in zip(first[1], again[1]):
        assert torch.equal(a, b)


@NEEDS_CPU_MODULE
def test_cpu_scratch_beyond_the_kept_size():
    """A call whose scratch exceeds what a thread keeps (8 MiB: here ~40 MiB, a long sequence) is right, frees it
    when it ends, and the next small call is unchanged."""
    pred, target = _inputs((2, 9, 17, None), 3, torch.float32, "cpu", seed=5)
    first = _loss_and_grads(ugcn_fast.motion_loss, pred, target, backend="cpu", intervals=(2, 4))
    long_pred, long_target = _inputs((2, 20000, 17, None), 3, torch.float64, "cpu", seed=6)
    kw = dict(intervals=(8, 12, 16, 24))
    actual = _loss_and_grads(ugcn_fast.motion_loss, long_pred, long_target, backend="cpu", **kw)
    expected = _loss_and_grads(reference.motion_loss, long_pred, long_target, **kw)
    assert_close_scaled(actual[0], expected[0], torch.float64, "loss, T = 20000")
    for a, e in zip(actual[1], expected[1]):
        assert_close_scaled(a, e, torch.float64, "gradient, T = 20000")
    again = _loss_and_grads(ugcn_fast.motion_loss, pred, target, backend="cpu", intervals=(2, 4))
    assert torch.equal(first[0], again[0]) and all(torch.equal(a, b) for a, b in zip(first[1], again[1]))


@NEEDS_CPU_MODULE
def test_cpu_from_several_python_threads():
    """The kernel releases the GIL and each OpenMP thread keeps its own scratch: calls from several Python threads
    at once, of different shapes and modes, give the sequential results bit for bit."""
    from concurrent.futures import ThreadPoolExecutor
    problems = [((6, 40, 17, None), dict(normalize="sample")), ((5, 33, 9, None), dict(normalize="joint")),
                ((7, 50, 17, None), dict(normalize="none", intervals=(3, 20)))]
    inputs = [_inputs(shape, 3, torch.float32, "cpu", seed=i) for i, (shape, _) in enumerate(problems)]
    want = [_loss_and_grads(ugcn_fast.motion_loss, *xs, backend="cpu", **kw) for xs, (_, kw) in zip(inputs, problems)]

    def work(tid):  # -> [(problem index, (loss, grads))]; an exception re-raises in the test thread
        problem_ids = [(tid + rep) % len(problems) for rep in range(6)]
        return [(i, _loss_and_grads(ugcn_fast.motion_loss, *inputs[i], backend="cpu", **problems[i][1]))
                for i in problem_ids]

    with ThreadPoolExecutor(max_workers=3) as pool:
        got = [r for thread_results in pool.map(work, range(3)) for r in thread_results]
    assert len(got) == 18
    for i, (loss, grads) in got:
        assert torch.equal(loss, want[i][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, want[i][1]))
