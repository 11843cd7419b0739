"""Autograd beyond one loss.backward(): second-order gradients, torch.func transforms, repeated backwards (no
aliasing between results), batched grad_outputs, dynamic-shape compile, and the loss modules' argument checks."""
import numpy as np
import pytest
import torch

import ugcn_fast
from ugcn_fast import FusedMotionLoss, UGCNLoss, position_loss, reference
from ugcn_fast.ops import motion_loss as ops

from _tolerances import assert_close_scaled

if "cpu" not in ugcn_fast.available_backends():
    pytest.skip("native CPU module not built", allow_module_level=True)

INTERVALS = (1, 2)


def _inputs(B=2, T=6, J=3, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, T, J, D, generator=g, dtype=torch.float64)
    pred = target + 0.3 * torch.randn(B, T, J, D, generator=g, dtype=torch.float64)
    return pred, target


def _fused(p, g, reduction="mean"):
    return ugcn_fast.motion_loss(p, g, INTERVALS, reduction=reduction, backend="cpu")


def _op(p, g, reduction="mean"):
    """The custom op itself (what torch.compile traces), bypassing the eager autograd.Function."""
    loss, _, _ = ops.motion_loss_op(p, g, list(INTERVALS), "cross", "sample", 0.01, reduction, "cpu",
                                    p.requires_grad, g.requires_grad)
    return loss


def _ref(p, g, reduction="mean"):
    return reference.motion_loss(p, g, INTERVALS, reduction=reduction)


# ---- second-order gradients ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_fn", [_fused, _op], ids=["eager", "op"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradgradcheck(loss_fn, reduction):
    pred, target = _inputs(B=2, T=4, J=2)
    pred.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda p: loss_fn(p, target, reduction), (pred,))


@pytest.mark.parametrize("loss_fn", [_fused, _op], ids=["eager", "op"])
def test_hessian_matches_reference(loss_fn):
    pred, target = _inputs(B=2, T=5, J=2)
    hess = torch.autograd.functional.hessian(lambda p: loss_fn(p, target), pred)
    expected = torch.autograd.functional.hessian(lambda p: _ref(p, target), pred)
    assert expected.abs().max() > 0
    assert_close_scaled(hess, expected)


@pytest.mark.parametrize("loss_fn", [_fused, _op], ids=["eager", "op"])
def test_create_graph_gradients_of_pred_and_target(loss_fn):
    """A gradient penalty: first-order values as before, second-order ones (target included) as the reference's."""
    results = []
    for fn in (loss_fn, _ref):
        pred, target = (x.clone().requires_grad_(True) for x in _inputs())
        grad_out = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
        gp, gt = torch.autograd.grad(fn(pred, target, "none"), (pred, target), grad_out, create_graph=True)
        penalty = gp.pow(2).sum() + (gt * pred).sum()
        results.append([gp, gt, *torch.autograd.grad(penalty, (pred, target, grad_out))])
    for actual, expected in zip(*results):
        assert_close_scaled(actual, expected)


# ---- torch.func transforms ----------------------------------------------------------------------------------------
def test_func_jvp_and_jacfwd():
    pred, target = _inputs()
    v = torch.randn_like(pred)
    _, tangent = torch.func.jvp(lambda p: _fused(p, target), (pred,), (v,))
    _, expected = torch.func.jvp(lambda p: _ref(p, target), (pred,), (v,))
    assert expected.abs() > 0
    assert_close_scaled(tangent, expected)
    jac = torch.func.jacfwd(lambda p: _fused(p, target, "none"))(pred)
    assert_close_scaled(jac, torch.func.jacfwd(lambda p: _ref(p, target, "none"))(pred))


def test_func_grad_vjp_jacrev_and_vmap():
    pred, target = _inputs()
    expected = torch.func.grad(lambda p: _ref(p, target))(pred)
    assert_close_scaled(torch.func.grad(lambda p: _fused(p, target))(pred), expected)
    _, vjp = torch.func.vjp(lambda p: _fused(p, target), pred)
    assert_close_scaled(vjp(torch.tensor(1.0, dtype=torch.float64))[0], expected)
    assert_close_scaled(torch.func.jacrev(lambda p: _fused(p, target))(pred), expected)
    per_sample = torch.func.vmap(lambda p, g: _fused(p[None], g[None]))(pred, target)
    assert_close_scaled(per_sample, _ref(pred, target, "none"))
    per_sample_grad = torch.func.vmap(torch.func.grad(lambda p, g: _fused(p[None], g[None])))(pred, target)
    assert_close_scaled(per_sample_grad, torch.func.vmap(torch.func.grad(lambda p, g: _ref(p[None], g[None])))(
        pred, target))


def test_forward_mode_ad_with_dual_tensors():
    """torch.autograd.forward_ad and forward-mode Jacobians: the reference's tangents (the fused op has no jvp; it
    raised torch's "You must implement the jvp function")."""
    import torch.autograd.forward_ad as fwAD
    pred, target = _inputs()
    v = torch.randn_like(pred)
    tangents = []
    for fn in (_fused, _ref):
        with fwAD.dual_level():
            tangents.append(fwAD.unpack_dual(fn(fwAD.make_dual(pred, v), target)).tangent)
    assert tangents[1].abs() > 0
    assert_close_scaled(tangents[0], tangents[1])
    jac = torch.autograd.functional.jacobian(lambda p: _fused(p, target, "none"), pred, vectorize=True,
                                             strategy="forward-mode")
    assert_close_scaled(jac, torch.autograd.functional.jacobian(lambda p: _ref(p, target, "none"), pred))


# ---- inputs that do not require grad ------------------------------------------------------------------------------
def test_target_made_under_inference_mode():
    """A target computed under torch.inference_mode() (a teacher model's output): the fused loss backpropagates to
    pred as the reference does (saving it for backward raised "Inference tensors cannot be saved")."""
    pred, target = _inputs()
    with torch.inference_mode():
        target = target.clone()
    grads = []
    for fn in (_fused, _ref, lambda p, g: UGCNLoss(intervals=INTERVALS)(p, g)):
        p = pred.clone().requires_grad_()
        fn(p, target).backward()
        grads.append(p.grad)
    assert_close_scaled(grads[0], grads[1])
    p = pred.clone().requires_grad_()
    (UGCNLoss(intervals=INTERVALS, backend="reference")(p, target)).backward()
    assert_close_scaled(grads[2], p.grad)


def test_target_changed_in_place_after_the_forward_is_caught():
    """A target that is not an inference tensor is saved for backward as before (freed by the backward, seen by
    saved-tensor hooks): changing it in place before the backward is autograd's error, never a silent number."""
    pred, target = _inputs()
    p, g = pred.clone().requires_grad_(), target.clone()
    loss = _fused(p, g)
    g.mul_(2)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_a_dual_level_without_dual_tensors_keeps_the_fused_loss():
    """torch.autograd.forward_ad's level is process-wide: only inputs that carry a tangent send the loss to the
    reference (a long-lived dual level elsewhere would otherwise slow every loss down)."""
    import torch.autograd.forward_ad as fwAD
    pred, target = _inputs()
    pred.requires_grad_(True)
    with fwAD.dual_level():
        loss = _fused(pred, target)
    assert "EagerMotionLoss" in type(loss.grad_fn).__name__


# ---- repeated backwards: results never share memory ---------------------------------------------------------------
def _inputs_with_reference_grad():
    """(pred requiring grad, target, the reference loss's gradient with respect to pred)."""
    pred, target = _inputs()
    pred.requires_grad_(True)
    (expected,) = torch.autograd.grad(_ref(pred, target), pred)
    return pred, target, expected


@pytest.mark.parametrize("loss_fn", [_fused, _op], ids=["eager", "op"])
def test_repeated_grad_results_do_not_alias(loss_fn):
    pred, target, expected = _inputs_with_reference_grad()
    loss = loss_fn(pred, target)
    (g1,) = torch.autograd.grad(loss, pred, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, pred, retain_graph=True)
    assert g1.untyped_storage().data_ptr() != g2.untyped_storage().data_ptr()
    g2.mul_(10)
    (g3,) = torch.autograd.grad(loss, pred)
    assert_close_scaled(g1, expected)
    assert_close_scaled(g3, expected)


def test_modifying_the_first_result_then_backward_again_raises():
    """The first backward may hand out the saved gradient itself; changing it then is caught, never silent."""
    pred, target = _inputs()
    pred.requires_grad_(True)
    loss = _fused(pred, target)
    (g1,) = torch.autograd.grad(loss, pred, retain_graph=True)
    g1.mul_(10)
    with pytest.raises(RuntimeError, match="inplace"):
        torch.autograd.grad(loss, pred)


@pytest.mark.parametrize("loss_fn", [_fused, _op], ids=["eager", "op"])
def test_backward_twice_accumulates(loss_fn):
    pred, target, expected = _inputs_with_reference_grad()
    loss = loss_fn(pred, target)
    loss.backward(retain_graph=True)
    loss.backward()
    assert_close_scaled(pred.grad, 2 * expected)


# ---- batched grad_outputs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_fn", [_fused, _op], ids=["eager", "op"])
def test_is_grads_batched_and_vectorized_jacobian(loss_fn):
    pred, target = _inputs()
    pred.requires_grad_(True)
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    results = []
    for fn in (loss_fn, _ref):
        (batched,) = torch.autograd.grad(fn(pred, target), pred, grad_outputs=v, is_grads_batched=True)
        jac = torch.autograd.functional.jacobian(lambda p: fn(p, target, "none"), pred, vectorize=True)
        results.append((batched, jac))
    for actual, expected in zip(*results):
        assert_close_scaled(actual, expected)


# ---- torch.compile with dynamic shapes ----------------------------------------------------------------------------
def test_compile_fullgraph_dynamic(monkeypatch):
    """eps is a symbolic float then; the compiled backward keeps the fused gradients (not the reference's)."""
    def no_reference(*args):
        raise AssertionError("a compiled first-order backward took the double-backward path")

    monkeypatch.setattr(ops, "_reference_input_grads", no_reference)
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, g: ugcn_fast.motion_loss(p, g, (1, 3), backend="cpu"), fullgraph=True,
                             dynamic=True)
    pred, target = _inputs(T=8)
    pred.requires_grad_(True)
    loss = compiled(pred, target)
    (grad,) = torch.autograd.grad(loss, pred)
    expected_pred = pred.detach().clone().requires_grad_(True)
    expected = reference.motion_loss(expected_pred, target, (1, 3))
    expected.backward()
    assert_close_scaled(loss, expected)
    assert_close_scaled(grad, expected_pred.grad)


def test_eps_check_still_rejects_bad_values():
    pred, target = _inputs()
    for eps in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="eps"):
            ugcn_fast.motion_loss(pred, target, INTERVALS, eps=eps, backend="cpu")
    with pytest.raises(TypeError, match="eps"):
        FusedMotionLoss(eps=True)
    assert FusedMotionLoss(eps=np.float32(0.5)).eps == 0.5


# ---- argument checks of the loss modules --------------------------------------------------------------------------
def test_position_loss_rejects_unknown_position_and_reduction():
    pred, target = _inputs()
    with pytest.raises(ValueError, match="position"):
        position_loss(pred, target, position="l1")
    with pytest.raises(ValueError, match="reduction"):
        position_loss(pred, target, reduction="avg")


def test_position_loss_checks_its_inputs():
    """No broadcasting (a (1, T, J, D) target against B samples would be a wrong number, silently): pred and target
    are (B, T, J, D) floating tensors of one shape, dtype and device, as for the motion loss."""
    pred, target = _inputs()
    with pytest.raises(ValueError, match="same shape"):
        position_loss(pred, target[:1])
    with pytest.raises(ValueError, match="pred must have shape"):
        position_loss(pred[0], target[0], reduction="none")
    with pytest.raises(TypeError, match="pred must have a floating-point dtype"):
        position_loss(pred.long(), target.long())
    with pytest.raises(TypeError, match="same dtype"):
        position_loss(pred.float(), target.double())
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        position_loss(pred, target.numpy())
    nested = torch.nested.nested_tensor([pred[0], pred[1]], layout=torch.strided)
    with pytest.raises(TypeError, match="dense"):
        position_loss(nested, nested)


def test_ugcn_loss_validates_inputs_whatever_lambda():
    pred, target = _inputs(T=8)
    for lam in (0, 0.5):
        with pytest.raises(ValueError, match="same shape"):
            UGCNLoss(lambda_motion=lam, intervals=(1, 5))(pred, target[:1])
    assert torch.equal(UGCNLoss(lambda_motion=0, intervals=(1, 5))(pred, target), position_loss(pred, target))
    short = pred[:, :4], target[:, :4]  # T = 4 <= the largest interval: without a motion term that is no error
    assert torch.equal(UGCNLoss(lambda_motion=0, intervals=(1, 5))(*short), position_loss(*short))


def test_ugcn_loss_accepts_numpy_and_real_scalars():
    pred, target = _inputs(T=8)
    for lam in (np.float32(0.5), np.float64(0.5), np.int64(2), 1):
        loss = UGCNLoss(lambda_motion=lam, intervals=(1, 5), backend="cpu")
        assert loss.lambda_motion == float(lam)
        expected = position_loss(pred, target) + float(lam) * reference.motion_loss(pred, target, (1, 5))
        assert_close_scaled(loss(pred, target), expected)
    for bad in (True, "0.5", None, float("nan")):
        with pytest.raises(ValueError, match="lambda_motion"):
            UGCNLoss(lambda_motion=bad)


def test_module_checks_backend_name_at_construction():
    with pytest.raises(ValueError, match="backend"):
        FusedMotionLoss(backend="gpu")
    with pytest.raises(TypeError, match="backend"):
        FusedMotionLoss(backend=None)
    with pytest.raises(ValueError, match="backend"):
        UGCNLoss(backend="gpu")
    for name in ("auto", "reference", "cpu", "triton", "cuda"):  # availability stays a per-call check
        FusedMotionLoss(backend=name)


def test_sparse_inputs_are_refused_by_name():
    pred, target = _inputs()
    with pytest.raises(TypeError, match="pred must be a dense"):
        ugcn_fast.motion_loss(pred.to_sparse(), target)
    with pytest.raises(TypeError, match="target must be a dense"):
        ugcn_fast.motion_loss(pred, target.to_sparse())
