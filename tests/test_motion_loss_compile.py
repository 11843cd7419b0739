"""The fused op under torch.compile(fullgraph=True) and torch.library.opcheck."""
import pytest
import torch

import ugcn_fast
from ugcn_fast import reference
from ugcn_fast.ops.motion_loss import motion_loss_op

from _backends import fused_cases
from _tolerances import assert_close_scaled

CPU_CASES = [c for c in fused_cases() if (c.values if hasattr(c, "values") else c) == ("cpu", "cpu")]
if not CPU_CASES:
    pytest.skip("native CPU module not built", allow_module_level=True)


def _inputs(B=2, T=20, J=5, D=3, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, T, J, D, generator=g, dtype=dtype)
    pred = target + 0.3 * torch.randn(B, T, J, D, generator=g, dtype=dtype)
    return pred.to(device), target.to(device)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph_training_step(reduction):
    torch._dynamo.reset()
    net = torch.nn.Linear(3, 3, dtype=torch.float64)
    pred_in, target = _inputs()

    def step(x, t):
        pred = net(x)
        loss = ugcn_fast.motion_loss(pred, t, (1, 4), reduction=reduction, backend="cpu")
        return (loss * 2).sum() + pred.pow(2).mean()

    compiled = torch.compile(step, fullgraph=True)
    out = compiled(pred_in, target)
    out.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()

    def reference_step(x, t):
        pred = net(x)
        return (reference.motion_loss(pred, t, (1, 4), reduction=reduction) * 2).sum() + pred.pow(2).mean()

    expected = reference_step(pred_in, target)
    expected.backward()
    assert_close_scaled(out.detach(), expected.detach())
    for g, p in zip(grads, net.parameters()):
        assert_close_scaled(g, p.grad)


@pytest.mark.parametrize("fullgraph", [True, False])
def test_compiled_func_grad_runs_the_reference(fullgraph):
    """torch.compile of torch.func.grad over the loss (per-sample gradients compiled): the transform's body takes
    the reference, as in eager (the op's autograd cannot serve functorch transforms; it raised torch's
    setup_context error)."""
    torch._dynamo.reset()
    pred, target = _inputs()

    def grad_of(loss):
        return torch.func.grad(lambda p: loss(p, target, (1, 4)))(pred)

    got = torch.compile(lambda: grad_of(lambda *a: ugcn_fast.motion_loss(*a, backend="cpu")), fullgraph=fullgraph,
                        backend="aot_eager")()
    assert_close_scaled(got, grad_of(reference.motion_loss))


def test_compile_fullgraph_module_without_graph_breaks():
    torch._dynamo.reset()
    loss_fn = ugcn_fast.FusedMotionLoss(intervals=(1, 3), backend="cpu")
    pred, target = _inputs()
    pred.requires_grad_(True)
    explanation = torch._dynamo.explain(loss_fn)(pred, target)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(loss_fn, fullgraph=True)
    assert_close_scaled(compiled(pred, target), reference.motion_loss(pred, target, (1, 3)))


def test_backend_selection_looks_nothing_up_at_call_time(monkeypatch):
    """Selecting a backend runs inside compiled code: no importlib lookup there (dynamo in torch 2.11 refused
    find_spec under fullgraph=True, found on an H200 with backend="triton")."""
    import importlib.util

    from ugcn_fast import backends

    def no_lookups(*args, **kwargs):
        raise AssertionError("importlib.util.find_spec called while selecting a backend")

    monkeypatch.setattr(importlib.util, "find_spec", no_lookups)
    for name in backends.BACKENDS:
        backends.unsupported_reason(name, torch.device("cpu"), torch.float32, 3, 4)
    for name in backends.BLOCK_BACKENDS:
        backends.block_unsupported_reason(name, torch.device("cpu"), torch.float32, 17, 5)
    pred, target = _inputs()
    ugcn_fast.motion_loss(pred, target, (1, 3), backend="auto")


@pytest.mark.parametrize("need_grad_pred, need_grad_target", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("operator, D, normalize", [("cross", 3, "sample"), ("inner", 2, "joint"), ("sub", 4, "none")])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_opcheck(need_grad_pred, need_grad_target, operator, D, normalize, reduction):
    pred, target = _inputs(D=D)
    pred.requires_grad_(need_grad_pred)
    target.requires_grad_(need_grad_target)
    args = (pred, target, [1, 3], operator, normalize, 0.01, reduction, "cpu", need_grad_pred, need_grad_target)
    torch.library.opcheck(motion_loss_op, args)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("wrt", ["pred", "target", "both"])
def test_eager_function_matches_op(reduction, wrt):
    """Eager calls skip the op's dispatch (an autograd.Function around the same kernels): bitwise the op's loss and
    gradients, grad_output != 1 included."""
    from ugcn_fast.ops import motion_loss as ops

    pred, target = _inputs(B=3, T=14, J=4)
    grad_out = torch.rand(3 if reduction == "none" else (), dtype=torch.float64) + 0.5
    results = []
    for call in ("eager", "op"):
        p = pred.clone().requires_grad_(wrt in ("pred", "both"))
        t = target.clone().requires_grad_(wrt in ("target", "both"))
        if call == "eager":
            loss = ugcn_fast.motion_loss(p, t, (2, 5), reduction=reduction, backend="cpu")
        else:
            loss, _, _ = ops.motion_loss_op(p, t, [2, 5], "cross", "sample", 0.01, reduction, "cpu", p.requires_grad,
                                            t.requires_grad)
        loss.backward(grad_out)
        results.append([loss.detach()] + [x.grad for x in (p, t)])
    for a, b in zip(*results):
        assert (a is None and b is None) or torch.equal(a, b)
    from ugcn_fast.ops._eager import needs_registrations
    assert not needs_registrations((pred, target))  # so the eager calls above took the Function
