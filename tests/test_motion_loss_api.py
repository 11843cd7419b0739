"""Public API of the motion loss: argument errors, backend selection, modules, layouts, NaN / Inf."""
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import ugcn_fast
from ugcn_fast import FusedMotionLoss, UGCNLoss, motion_loss, reference

from _backends import fused_cases
from _tolerances import assert_close_scaled

BACKENDS = ["reference"] + [c.values[0] if hasattr(c, "values") else c[0] for c in fused_cases()
                            if (c.values if hasattr(c, "values") else c)[1] == "cpu"]


def _x(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ---- bad input ---------------------------------------------------------------------------------------------------
GOOD = dict(intervals=(1, 2), operator="cross", normalize="sample", eps=0.01, reduction="mean")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "pred, target, overrides, error, names",
    [
        (_x(2, 5, 3), _x(2, 5, 3), {}, ValueError, "pred"),  # rank 3
        (_x(2, 5, 3, 3, 1), _x(2, 5, 3, 3, 1), {}, ValueError, "pred"),  # rank 5
        (_x(2, 5, 3, 2), _x(2, 5, 3, 2), {}, ValueError, "D = 2"),  # cross needs D = 3
        (_x(2, 5, 3, 3), _x(2, 6, 3, 3), {}, ValueError, "same shape"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": (0,)}, ValueError, "interval"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": (5,)}, ValueError, "interval"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": (-1,)}, ValueError, "interval"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": (1.5,)}, TypeError, "intervals"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": (True,)}, TypeError, "intervals"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": "12"}, TypeError, "intervals"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": ()}, ValueError, "empty"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"intervals": (2, 2)}, ValueError, "repeat"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"operator": "dot"}, ValueError, "operator"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"normalize": "batch"}, ValueError, "normalize"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"reduction": "max"}, ValueError, "reduction"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"eps": -1.0}, ValueError, "eps"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"eps": math.nan}, ValueError, "eps"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3), {"eps": "0.1"}, TypeError, "eps"),
        (_x(2, 5, 3, 3), _x(2, 5, 3, 3, dtype=torch.float32), {}, TypeError, "dtype"),
        (torch.ones(2, 5, 3, 3, dtype=torch.int64), torch.ones(2, 5, 3, 3, dtype=torch.int64), {}, TypeError,
         "floating"),
        (np.zeros((2, 5, 3, 3)), _x(2, 5, 3, 3), {}, TypeError, "pred"),
        (_x(0, 5, 3, 3), _x(0, 5, 3, 3), {}, ValueError, "empty"),
    ],
)
def test_bad_input_is_rejected_with_a_named_argument(backend, pred, target, overrides, error, names):
    with pytest.raises(error, match=names):
        motion_loss(pred, target, **{**GOOD, **overrides}, backend=backend)


def test_unknown_or_unavailable_backend():
    x = _x(2, 5, 3, 3)
    with pytest.raises(ValueError, match="backend"):
        motion_loss(x, x, (1,), backend="metal")
    with pytest.raises(TypeError, match="backend"):
        motion_loss(x, x, (1,), backend=None)
    if not torch.cuda.is_available() and not ugcn_fast._native.cuda_emulated:
        with pytest.raises(RuntimeError, match="backend='cuda'"):
            motion_loss(x, x, (1,), backend="cuda")


def test_device_mismatch_is_rejected():
    if not torch.cuda.is_available():
        pred, target = _x(1, 4, 2, 3), _x(1, 4, 2, 3).to("meta")
    else:
        pred, target = _x(1, 4, 2, 3), _x(1, 4, 2, 3).cuda()
    with pytest.raises(ValueError, match="same device"):
        motion_loss(pred, target, (1,))


@pytest.mark.skipif("cpu" not in ugcn_fast.available_backends(), reason="native CPU module not built")
def test_cpu_backend_refuses_half_types_and_auto_falls_back():
    x = _x(2, 6, 3, 3).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="dtypes"):
        motion_loss(x, x, (1,), backend="cpu")
    assert torch.isfinite(motion_loss(x, x + 1, (1,), backend="auto"))


def test_module_checks_configuration_at_construction():
    with pytest.raises(ValueError, match="operator"):
        FusedMotionLoss(operator="outer")
    with pytest.raises(ValueError, match="repeat"):
        FusedMotionLoss(intervals=(8, 8))
    with pytest.raises(ValueError, match="position"):
        UGCNLoss(position="l1")
    with pytest.raises(ValueError, match="lambda_motion"):
        UGCNLoss(lambda_motion=float("nan"))


def test_available_backends_lists_reference_and_what_is_built():
    names = ugcn_fast.available_backends()
    assert names[0] == "reference"
    assert ("cpu" in names) == (ugcn_fast._native.cpu_module is not None)
    has_cuda = ugcn_fast._native.cuda_module is not None and (torch.cuda.is_available() or ugcn_fast._native.cuda_emulated)
    assert ("cuda" in names) == has_cuda


# ---- modules -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_motion_loss_module_matches_functional(backend):
    pred, target = _x(2, 30, 17, 3), _x(2, 30, 17, 3, seed=1)
    module = FusedMotionLoss(intervals=(8, 12, 16, 24), operator="cross", normalize=True, backend=backend)
    assert "intervals=(8, 12, 16, 24)" in repr(module)
    assert_close_scaled(module(pred, target), reference.motion_loss(pred, target))


@pytest.mark.parametrize("position", ["l2sq", "mpjpe"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ugcn_loss_is_position_plus_lambda_motion(position, reduction):
    pred = _x(2, 30, 17, 3).requires_grad_(True)
    target = _x(2, 30, 17, 3, seed=1)
    loss = UGCNLoss(lambda_motion=0.5, position=position, reduction=reduction)(pred, target)
    err = (pred - target).pow(2).sum(-1)
    err = err if position == "l2sq" else err.sqrt()
    lp = err.mean() if reduction == "mean" else err.mean(dim=(1, 2))
    expected = lp + 0.5 * reference.motion_loss(pred, target, reduction=reduction)
    assert_close_scaled(loss, expected)
    (g,) = torch.autograd.grad(loss.sum(), pred)
    (e,) = torch.autograd.grad(expected.sum(), pred)
    assert_close_scaled(g, e)


# ---- layouts -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_broadcast_inputs(backend):
    base = _x(4, 20, 5, 3)
    layouts = {
        "transposed view": base.transpose(1, 2).contiguous().transpose(1, 2),
        "slice of a wider D": torch.cat([base, _x(4, 20, 5, 2)], dim=-1)[..., :3],
        "every other sample": _x(8, 20, 5, 3)[::2],
        "batch broadcast": base[:1].expand(4, 20, 5, 3),
        "fully broadcast joint": _x(1, 20, 1, 3).expand(4, 20, 5, 3),
    }
    target_base = _x(4, 20, 5, 3, seed=2)
    for name, pred in layouts.items():
        for target in (target_base, target_base[:1].expand(4, 20, 5, 3)):
            p = pred.clone().requires_grad_(True) if pred.is_contiguous() else pred.detach().requires_grad_(True)
            t = target.detach().requires_grad_(True)
            for red in ("mean", "none"):
                loss = motion_loss(p, t, (1, 7), reduction=red, backend=backend)
                gp, gt = torch.autograd.grad(loss.sum(), (p, t))
                pc, tc = p.detach().contiguous().requires_grad_(True), t.detach().contiguous().requires_grad_(True)
                expected = reference.motion_loss(pc, tc, (1, 7), reduction=red)
                ep, et = torch.autograd.grad(expected.sum(), (pc, tc))
                assert_close_scaled(loss, expected, msg=name)
                assert_close_scaled(gp, ep, msg=name)
                assert_close_scaled(gt if t.is_contiguous() else gt, et, msg=name)


# ---- NaN and Inf -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where, value", [("pred", math.nan), ("target", math.nan), ("pred", math.inf),
                                          ("target", -math.inf)])
@pytest.mark.parametrize("normalize", ["sample", "joint", "none"])
@pytest.mark.parametrize("operator", ["cross", "inner"])
# (7, 9) at T = 12: frames 5 and 6 are in no pair, and their gradient stays 0 even where den is NaN
@pytest.mark.parametrize("intervals, frame", [((1, 3), 5), ((7, 9), 2)], ids=["short", "long"])
def test_nan_and_inf_propagate_like_the_reference(backend, where, value, normalize, operator, intervals, frame):
    pred, target = _x(2, 12, 4, 3), _x(2, 12, 4, 3, seed=1)
    (pred if where == "pred" else target)[1, frame, 2, 1] = value
    pred.requires_grad_(True)
    kw = dict(operator=operator, normalize=normalize, reduction="none")
    loss = motion_loss(pred, target, intervals, backend=backend, **kw)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    p2 = pred.detach().requires_grad_(True)
    expected = reference.motion_loss(p2, target, intervals, **kw)
    (e_grad,) = torch.autograd.grad(expected.sum(), p2)
    assert torch.equal(torch.isnan(loss), torch.isnan(expected))
    assert torch.equal(torch.isnan(grad), torch.isnan(e_grad))
    torch.testing.assert_close(loss, expected, equal_nan=True)
    torch.testing.assert_close(grad, e_grad, equal_nan=True)


# ---- inside a bigger graph ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_inside_a_bigger_graph(backend):
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 3, dtype=torch.float64)
    x, target = _x(3, 16, 5, 2), _x(3, 16, 5, 3, seed=1)

    def objective(loss_fn):
        net.zero_grad()
        pred = torch.tanh(net(x)) * 2
        per_sample = loss_fn(pred, target)
        total = (per_sample * torch.arange(1.0, 4.0, dtype=torch.float64)).sum() + 0.1 * pred.pow(2).mean()
        total.backward()
        return total.detach(), net.weight.grad.clone(), net.bias.grad.clone()

    fused = objective(lambda p, t: motion_loss(p, t, (1, 4), reduction="none", backend=backend))
    ref = objective(lambda p, t: reference.motion_loss(p, t, (1, 4), reduction="none"))
    for a, e in zip(fused, ref):
        assert_close_scaled(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_and_inference_mode(backend):
    pred, target = _x(2, 10, 3, 3).requires_grad_(True), _x(2, 10, 3, 3, seed=1)
    with torch.no_grad():
        a = motion_loss(pred, target, (1, 2), backend=backend)
    with torch.inference_mode():
        b = motion_loss(pred, target, (1, 2), backend=backend)
    assert not a.requires_grad and not b.requires_grad
    assert_close_scaled(a, reference.motion_loss(pred.detach(), target, (1, 2)))
    assert_close_scaled(b, a)


# ---- a pure-Python install ---------------------------------------------------------------------------------------
def test_missing_native_module_falls_back_with_one_warning():
    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["ugcn_fast._C"] = None       # what a pure-Python install looks like
        sys.modules["ugcn_fast._cuda"] = None
        import torch, ugcn_fast
        assert ugcn_fast.available_backends()[:1] == ["reference"] and "cpu" not in ugcn_fast.available_backends()
        x = torch.randn(2, 10, 3, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = ugcn_fast.motion_loss(x, x + 1, (1, 2))
            b = ugcn_fast.motion_loss(x, x + 1, (1, 2))
        messages = [str(w.message) for w in caught if "native CPU module" in str(w.message)]
        assert len(messages) == 1, messages
        assert torch.equal(a, ugcn_fast.reference.motion_loss(x, x + 1, (1, 2)))
        try:
            ugcn_fast.motion_loss(x, x, (1,), backend="cpu")
        except RuntimeError as err:
            assert "not available" in str(err)
        else:
            raise AssertionError("backend='cpu' without the native module must raise")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "TRITON_INTERPRET": "0"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_kernels_are_importable_as_a_subpackage():
    import ugcn_fast.kernels

    assert ugcn_fast.kernels.__name__ == "ugcn_fast.kernels"
    assert callable(getattr(__import__("ugcn_fast.kernels.motion_loss", fromlist=["x"]), "motion_loss_forward"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("operator, D", [("cross", 3), ("inner", 3), ("sub", 2)])
@pytest.mark.parametrize("normalize", ["sample", "joint", "none"])
def test_identical_inputs_give_exactly_zero_loss_and_gradient(backend, operator, D, normalize):
    x = _x(3, 20, 5, D, dtype=torch.float32)
    pred = x.clone().requires_grad_(True)
    loss = motion_loss(pred, x, (1, 4, 7), operator, normalize, backend=backend)
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_twice_with_retain_graph_and_accumulation(backend):
    """backward hands the saved unit gradient on when grad_output is 1: it must never be modified later."""
    pred, target = _x(2, 12, 4, 3).requires_grad_(True), _x(2, 12, 4, 3, seed=1)
    expected_pred = pred.detach().clone().requires_grad_(True)
    (unit,) = torch.autograd.grad(reference.motion_loss(expected_pred, target, (1, 3)), expected_pred)
    loss = motion_loss(pred, target, (1, 3), backend=backend)
    loss.backward(retain_graph=True)
    assert_close_scaled(pred.grad, unit)
    pred.grad.mul_(10)  # a user (or an optimizer) touching .grad must not reach the saved gradient
    loss.backward(retain_graph=True)
    assert_close_scaled(pred.grad, 11 * unit)
    (3 * loss).backward()
    assert_close_scaled(pred.grad, 14 * unit)
    pred.grad = None
    motion_loss(pred, target, (1, 3), backend=backend).backward()
    first = pred.grad
    motion_loss(pred, target, (1, 3), backend=backend).backward()
    assert_close_scaled(pred.grad, 2 * unit)
    assert_close_scaled(first, 2 * unit)  # accumulated in place into the first .grad, as torch does


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", ["sample", "joint"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_static_target_with_zero_eps(backend, normalize, dtype):
    """x × x must be exactly 0 (no FMA contraction): with eps = 0 a static target then has mu = 0 and den = 1
    (SPEC §1), i.e. the unnormalised loss, instead of a noise-sized den that blows the loss up."""
    pose = _x(1, 1, 17, 3, dtype=dtype) * 1000
    static = pose.expand(2, 30, 17, 3).contiguous()
    pred = (static + 10 * _x(2, 30, 17, 3, dtype=dtype, seed=3)).requires_grad_(True)
    loss = motion_loss(pred, static, normalize=normalize, eps=0.0, backend=backend)
    (grad,) = torch.autograd.grad(loss, pred)
    p2 = pred.detach().requires_grad_(True)
    expected = reference.motion_loss(p2, static, normalize=normalize, eps=0.0)
    (e_grad,) = torch.autograd.grad(expected, p2)
    assert_close_scaled(loss, expected)
    assert_close_scaled(grad, e_grad)
    assert_close_scaled(loss, reference.motion_loss(p2, static, normalize="none"))


def test_intervals_may_be_any_sequence_of_ints():
    pred, target = _x(2, 30, 5, 3), _x(2, 30, 5, 3, seed=1)
    expected = reference.motion_loss(pred, target, (8, 12))
    for intervals in ([8, 12], range(8, 13, 4), np.array([8, 12]), torch.tensor([8, 12])):
        assert_close_scaled(motion_loss(pred, target, intervals), expected)
    assert_close_scaled(motion_loss(pred, target, 8), reference.motion_loss(pred, target, (8,)))
    with pytest.raises(TypeError, match="intervals"):
        motion_loss(pred, target, np.array([8.0, 12.0]))
