"""Triton backend of the motion loss (kernels/motion_loss.py) against the plain-PyTorch oracle (SPEC §1).

Without a CUDA GPU the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set below before
triton is imported), in float32 and float64 on small shapes. With a GPU they run compiled on CUDA tensors in
float32 / float16 / bfloat16 (and float64), with tolerances for the 16-bit storage of the gradients.

The oracle is always evaluated in float64 on the same (upcast) inputs, so every comparison measures the kernel's
own error. "Unit" gradients are torch.autograd.grad of the oracle with grad_outputs = ones (per sample for
reduction="none"), which is what motion_loss_forward returns.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from _triton_env import DEVICE, INTERPRET  # noqa: E402  (first: switches on Triton's interpreter without a GPU)

pytestmark = pytest.mark.triton  # registered in pyproject.toml: `-m "not triton"` deselects this module

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import kernels.motion_loss as ml  # noqa: E402
from kernels.motion_loss import motion_loss_forward  # noqa: E402

DTYPES = [torch.float32, torch.float64] if INTERPRET else [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# (rtol, atol) of the loss and of the gradients, per input dtype. 16-bit inputs: the kernel returns float32 loss
# and gradients computed in float32 from the rounded inputs (the oracle takes the same rounded values in float64),
# so the 16-bit bounds are generous first guesses, not yet tightened on a GPU run.
TOL = {
    torch.float64: dict(loss=(1e-10, 1e-12), grad=(1e-9, 1e-12)),
    torch.float32: dict(loss=(2e-5, 1e-6), grad=(1e-4, 1e-7)),
    torch.float16: dict(loss=(2e-4, 1e-5), grad=(2e-3, 1e-6)),
    torch.bfloat16: dict(loss=(2e-4, 1e-5), grad=(1.6e-2, 1e-5)),
}


def _load_reference():
    """The oracle; if the package's __init__ is missing or mid-edit, load the two files it needs by path."""
    try:
        from ugcn_fast.reference.motion_loss import motion_loss

        return motion_loss
    except Exception:
        pass
    pkg_dir = ROOT / "ugcn_fast"
    for name, path in (("_ugcn_ref", pkg_dir), ("_ugcn_ref.reference", pkg_dir / "reference")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    spec = importlib.util.spec_from_file_location("_ugcn_ref.reference.motion_loss",
                                                  pkg_dir / "reference" / "motion_loss.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.motion_loss


reference_motion_loss = _load_reference()

OPERATOR_D = [("cross", 3), ("inner", 3), ("inner", 2), ("inner", 5), ("sub", 3), ("sub", 2), ("sub", 5)]
NORMALIZE = ["none", "sample", "joint"]
REDUCTIONS = ["mean", "sum", "none"]


# ---- helpers -----------------------------------------------------------------------------------------------------
def _rand(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def _reference(pred, target, intervals, operator, normalize, eps, reduction):
    """Oracle loss and unit gradients in float64 on the same values (upcast, packed copies), per (b, t, j, d): for a
    batch-broadcast target that is the gradient of each row, which is what the kernel returns (autograd sums it)."""
    p = pred.detach().double().clone().requires_grad_()
    g = target.detach().double().clone().requires_grad_()
    loss = reference_motion_loss(p, g, intervals, operator, normalize, eps, reduction)
    gp, gg = torch.autograd.grad(loss, (p, g), torch.ones_like(loss))
    return loss.detach(), gp, gg


def _triton(pred, target, intervals, operator, normalize, eps, reduction, need_p=True, need_g=True):
    per_sample, gp, gg = motion_loss_forward(pred, target, intervals, operator, normalize, eps, reduction,
                                             need_p, need_g)
    loss = per_sample if reduction == "none" else per_sample.sum()
    return loss, per_sample, gp, gg


def _check(pred, target, intervals, operator, normalize, reduction, eps=0.01):
    dtype = pred.dtype
    loss, per_sample, gp, gg = _triton(pred, target, intervals, operator, normalize, eps, reduction)
    ref_loss, ref_gp, ref_gg = _reference(pred, target, intervals, operator, normalize, eps, reduction)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    B, T, J, D = pred.shape
    assert per_sample.shape == (B,) and per_sample.dtype == acc and per_sample.device == pred.device
    for grad in (gp, gg):
        assert grad.shape == (B, T, J, D) and grad.dtype == acc and grad.is_contiguous()
    (lr, la), (gr, ga) = TOL[dtype]["loss"], TOL[dtype]["grad"]
    # Gradients scale like w / den; measure the absolute tolerance against their size.
    g_scale = max(ref_gp.abs().max().item(), 1e-30)
    torch.testing.assert_close(loss.double().cpu(), ref_loss.cpu(), rtol=lr, atol=la)
    torch.testing.assert_close(gp.double().cpu(), ref_gp.cpu(), rtol=gr, atol=ga * g_scale)
    torch.testing.assert_close(gg.double().cpu(), ref_gg.cpu(), rtol=gr, atol=ga * g_scale)


# ---- the grid: operators x normalisation x reduction -------------------------------------------------------------
# sub is never normalised: one reduction per normalize mode is enough to show that normalize is ignored.
GRID = [(op, D, norm, red) for op, D in OPERATOR_D for norm in NORMALIZE for red in REDUCTIONS
        if op != "sub" or norm == "none" or red == "mean"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("operator,D,normalize,reduction", GRID)
def test_matches_reference(operator, D, normalize, reduction, dtype):
    shape = (2, 6, 3, D)
    _check(_rand(shape, dtype, 1), _rand(shape, dtype, 2), (1, 2), operator, normalize, reduction)


# ---- shapes and interval sets ------------------------------------------------------------------------------------
SHAPES = [
    # (B, T, J, intervals): T = max(intervals) + 1, odd J (17), J = 1, B = 1, the paper's intervals at T = 25
    pytest.param(2, 4, 3, (3,), id="T=max+1"),
    pytest.param(1, 5, 17, (1, 4), id="B=1,J=17"),
    pytest.param(3, 7, 1, (2, 3), id="J=1"),
    pytest.param(2, 25, 2, (8, 12, 16, 24), id="paper-intervals"),
    pytest.param(1, 2, 2, (1,), id="T=2"),
]


@pytest.mark.parametrize("B,T,J,intervals", SHAPES)
@pytest.mark.parametrize("operator,normalize", [("cross", "sample"), ("cross", "joint"), ("inner", "joint"),
                                                ("sub", "none")])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_shapes(B, T, J, intervals, operator, normalize, reduction):
    D = 3
    dtype = DTYPES[0]
    _check(_rand((B, T, J, D), dtype, 3), _rand((B, T, J, D), dtype, 4), intervals, operator, normalize, reduction)


# ---- memory layouts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("operator,normalize", [("cross", "joint"), ("inner", "sample"), ("sub", "none")])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_batch_broadcast_target(operator, normalize, reduction):
    B, T, J, D = 3, 6, 5, 3
    dtype = DTYPES[0]
    pred = _rand((B, T, J, D), dtype, 5)
    target = _rand((1, T, J, D), dtype, 6).expand(B, T, J, D)
    assert target.stride(0) == 0
    assert ml._packed_samples(target) is target  # a broadcast batch is read in place, not copied
    _check(pred, target, (1, 3), operator, normalize, reduction)


def _transposed_view(x):
    """The same values as x, but with (T, J) strides swapped: each sample is not a packed block."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


@pytest.mark.parametrize("layout", ["transposed", "d-slice", "batch-step"])
@pytest.mark.parametrize("operator,D", [("cross", 3), ("inner", 2), ("sub", 3)])
def test_non_contiguous(layout, operator, D):
    B, T, J = 2, 5, 3
    dtype = DTYPES[0]
    target = _rand((B, T, J, D), dtype, 8)
    if layout == "transposed":
        pred = _transposed_view(_rand((B, T, J, D), dtype, 7))
        target = _transposed_view(target)
        assert ml._packed_samples(pred) is not pred
    elif layout == "d-slice":  # a slice along D: samples are strided inside
        pred = _rand((B, T, J, D + 2), dtype, 7)[..., 1:D + 1]
        assert ml._packed_samples(pred) is not pred
    else:  # every other sample of a larger batch: packed samples, batch stride 2 * T * J * D, read in place
        pred = _rand((2 * B, T, J, D), dtype, 7)[::2]
        assert not pred.is_contiguous() and ml._packed_samples(pred) is pred
    _check(pred, target, (1, 2), operator, "sample" if operator != "sub" else "none", "mean")


# ---- degenerate targets: den = eps * s (static) and den = 1 (all zero) -------------------------------------------
@pytest.mark.parametrize("kind", ["static", "zero"])
@pytest.mark.parametrize("operator,normalize", [("cross", "sample"), ("cross", "joint"), ("inner", "sample"),
                                                ("inner", "joint")])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_degenerate_target(kind, operator, normalize, reduction):
    B, T, J, D = 2, 6, 3, 3
    dtype = DTYPES[0]
    pred = _rand((B, T, J, D), dtype, 9)
    if kind == "static":  # one pose held still: the cross encoding x × x is exactly 0, so mu = 0
        target = _rand((B, 1, J, D), dtype, 10).expand(B, T, J, D).contiguous()
    else:
        target = torch.zeros((B, T, J, D), dtype=dtype, device=DEVICE)
    loss, _, gp, gg = _triton(pred, target, (1, 4), operator, normalize, 0.01, reduction)
    assert torch.isfinite(loss).all() and torch.isfinite(gp).all() and torch.isfinite(gg).all()
    _check(pred, target, (1, 4), operator, normalize, reduction)


def test_pred_equals_target_is_exactly_zero():
    """|m̂P - m̂G| = 0 exactly (no FMA contraction), so the loss and the subgradient sign(0) = 0 are exactly 0."""
    x = _rand((2, 6, 3, 3), DTYPES[0], 11)
    for operator, normalize in (("cross", "sample"), ("inner", "joint"), ("sub", "none")):
        loss, _, gp, gg = _triton(x, x, (1, 2), operator, normalize, 0.01, "mean")
        assert loss.item() == 0.0 and not gp.any() and not gg.any()


# ---- NaN and Inf -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("operator,normalize", [("cross", "sample"), ("cross", "joint"), ("cross", "none"),
                                                ("inner", "sample"), ("sub", "none")])
@pytest.mark.parametrize("where,value", [("pred", math.nan), ("target", math.nan), ("pred", math.inf),
                                         ("target", -math.inf)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy on inf * 0
def test_nan_and_inf_propagate_like_the_reference(operator, normalize, where, value, reduction):
    """NaN / Inf reach the loss and both gradients exactly where they do through the reference: torch's abs
    backward has sign(NaN) = 0, but 0 / den stays NaN for a NaN den (a NaN in a target sample's statistics), and
    autograd's cross / inner backward multiplies that zero by the pair's other point (NaN * 0 = NaN)."""
    B, T, J, D = 2, 7, 3, 3
    dtype = DTYPES[0]
    pred = _rand((B, T, J, D), dtype, 12)
    target = _rand((B, T, J, D), dtype, 13)
    # An Inf in the last frame: the pairs it would start do not exist and must not turn its Inf loss into NaN.
    (pred if where == "pred" else target)[1, T - 1 if math.isinf(value) else 3, 1, 0] = value
    loss, _, gp, gg = _triton(pred, target, (1, 2), operator, normalize, 0.01, reduction)
    ref_loss, ref_gp, ref_gg = _reference(pred, target, (1, 2), operator, normalize, 0.01, reduction)
    (lr, la), (gr, ga) = TOL[dtype]["loss"], TOL[dtype]["grad"]
    assert torch.equal(torch.isnan(loss).cpu(), torch.isnan(ref_loss).cpu())
    torch.testing.assert_close(loss.double().cpu(), ref_loss.cpu(), rtol=lr, atol=la, equal_nan=True)
    for grad, ref in ((gp.double().cpu(), ref_gp.cpu()), (gg.double().cpu(), ref_gg.cpu())):
        assert torch.equal(torch.isnan(grad), torch.isnan(ref))
        scale = ref[torch.isfinite(ref)].abs().max().item()
        torch.testing.assert_close(grad, ref, rtol=gr, atol=ga * scale, equal_nan=True)


# ---- launcher contract -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("operator,normalize", [("cross", "joint"), ("inner", "sample"), ("sub", "none")])
def test_grad_flags_and_determinism(operator, normalize):
    """Requested gradients only; the loss does not depend on which gradients are requested; bitwise repeatable."""
    pred = _rand((3, 6, 5, 3), DTYPES[0], 14)
    target = _rand((3, 6, 5, 3), DTYPES[0], 15)
    args = (pred, target, (1, 2, 5), operator, normalize, 0.01, "none")
    full = motion_loss_forward(*args, True, True)
    again = motion_loss_forward(*args, True, True)
    for x, y in zip(full, again):
        assert torch.equal(x, y)
    for need_p, need_g in ((True, False), (False, True), (False, False)):
        per_sample, gp, gg = motion_loss_forward(*args, need_p, need_g)
        assert torch.equal(per_sample, full[0])
        assert (gp is not None) == need_p and (gg is not None) == need_g
        if need_p:
            assert torch.equal(gp, full[1])
        if need_g:
            assert torch.equal(gg, full[2])


@pytest.mark.parametrize("normalize", ["sample", "joint"])
@pytest.mark.parametrize("operator", ["cross", "inner"])
def test_joint_blocks_and_tile_loop(monkeypatch, operator, normalize):
    """Forces the paths that real skeletons never take: more joints than one statistics block (the extra pass for s),
    and more tiles than grid programs (each program loops over several tiles of its sample)."""
    monkeypatch.setattr(ml, "_MAX_BLOCK_J", 4)
    monkeypatch.setattr(ml, "_MAX_GRID_1", 2)
    B, T, J, D = 2, 16, 19, 3  # T * J = 304 frame-joints: 3 tiles of 128 on 2 programs; J = 19: 5 blocks of 4
    pred = _rand((B, T, J, D), DTYPES[0], 16)
    target = _rand((B, T, J, D), DTYPES[0], 17)
    _check(pred, target, (1, 5), operator, normalize, "mean")


# ---- gradcheck through an autograd.Function wrapping the launcher ------------------------------------------------
class _TritonMotionLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, target, intervals, operator, normalize, eps, reduction):
        per_sample, gp, gg = motion_loss_forward(pred.detach(), target.detach(), intervals, operator, normalize, eps,
                                                 reduction, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.reduction = reduction
        ctx.save_for_backward(gp, gg)
        return per_sample if reduction == "none" else per_sample.sum()

    @staticmethod
    def backward(ctx, grad_output):
        gp, gg = ctx.saved_tensors
        scale = grad_output.view(-1, 1, 1, 1) if ctx.reduction == "none" else grad_output
        return (None if gp is None else gp * scale, None if gg is None else gg * scale,
                None, None, None, None, None)


GRADCHECK = [
    # (operator, D, normalize, reduction, wrt): the target only without normalisation, since den is a function of
    # the target that the loss deliberately treats as a constant (SPEC §1), which finite differences would see.
    ("cross", 3, "sample", "mean", "pred"),
    ("cross", 3, "joint", "none", "pred"),
    ("cross", 3, "none", "sum", "target"),
    ("inner", 2, "joint", "mean", "pred"),
    ("inner", 3, "none", "none", "target"),
    ("sub", 3, "none", "mean", "both"),
]


@pytest.mark.parametrize("operator,D,normalize,reduction,wrt", GRADCHECK)
def test_gradcheck(operator, D, normalize, reduction, wrt):
    shape = (2, 5, 2, D)
    pred = _rand(shape, torch.float64, 18).requires_grad_(wrt in ("pred", "both"))
    target = _rand(shape, torch.float64, 19).requires_grad_(wrt in ("target", "both"))
    fn = lambda p, g: _TritonMotionLoss.apply(p, g, (1, 3), operator, normalize, 0.01, reduction)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pred, target), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_gradcheck_full_jacobian():
    """One full (not fast-mode) gradcheck of both inputs, small enough for the interpreter."""
    pred = _rand((1, 4, 2, 3), torch.float64, 20).requires_grad_()
    target = _rand((1, 4, 2, 3), torch.float64, 21).requires_grad_()
    fn = lambda p, g: _TritonMotionLoss.apply(p, g, (1, 2), "cross", "none", 0.01, "none")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pred, target), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_compile_fullgraph_through_the_public_api():
    """motion_loss(..., backend="triton") under torch.compile(fullgraph=True), backend selection included (on an
    H200 torch 2.11's dynamo refused a find_spec call there; os.environ is read outside the trace too)."""
    ugcn_fast = pytest.importorskip("ugcn_fast")
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(5)
    target = torch.randn(2, 12, 5, 3, generator=g, dtype=torch.float64).to(DEVICE)
    pred = (target + 0.3 * torch.randn(2, 12, 5, 3, generator=g, dtype=torch.float64).to(DEVICE)).requires_grad_()
    fn = torch.compile(lambda p, t: ugcn_fast.motion_loss(p, t, (1, 3), backend="triton") * 3, fullgraph=True)
    out = fn(pred, target)
    (grad,) = torch.autograd.grad(out, pred)
    p64 = pred.detach().requires_grad_()
    expected = reference_motion_loss(p64, target, (1, 3)) * 3
    (e_grad,) = torch.autograd.grad(expected, p64)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, e_grad, rtol=1e-9, atol=1e-12)
