"""`ugcn_fast::motion_loss`: the fused motion loss as a torch.library op, and the functional API around it.

The op computes the loss and, when autograd will need them, the gradients in the same pass over the data
(SPEC §1: one pass for the target's statistics, one for loss and gradient). Backward only scales the saved
unit gradients by grad_output: the loss of sample b depends on sample b alone, so for reduction="none" the
per-sample scale is exact too. A backward with create_graph=True (second-order gradients) recomputes the gradients
differentiably from the reference instead, and torch.func transforms run the reference outright. The Python
wrapper decides which gradients to compute from requires_grad, which torch.compile guards on, so compiled graphs
carry no wasted work.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .. import backends
from .._options import MotionLossOptions, resolve_options
from ._eager import differentiable_backward, is_batched, needs_registrations, needs_plain_torch
from ..reference.motion_loss import motion_loss as reference_motion_loss


@torch.library.custom_op("ugcn_fast::motion_loss", mutates_args=())
def motion_loss_op(
    pred: Tensor,
    target: Tensor,
    intervals: list[int],
    operator: str,
    normalize: str,
    eps: float,
    reduction: str,
    backend: str,
    need_grad_pred: bool,
    need_grad_target: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (loss, unit grad of pred or an empty tensor, unit grad of target or an empty tensor)."""
    raise NotImplementedError(f"ugcn_fast::motion_loss has no kernel for {pred.device.type} tensors")


def _launch(pred, target, opts: MotionLossOptions, backend, need_grad_pred, need_grad_target):
    """The backend's kernel on the tensors' device -> (the loss reduced as opts.reduction says, in pred's dtype;
    the unit gradients of pred and target, or None where not requested)."""
    launch = backends.launcher(backend)
    if pred.device.type == "cuda":
        with torch.cuda.device(pred.device):
            loss, grad_pred, grad_target = launch(pred, target, opts, need_grad_pred, need_grad_target)
    else:
        loss, grad_pred, grad_target = launch(pred, target, opts, need_grad_pred, need_grad_target)
    loss = loss if opts.reduction == "none" else loss.sum()
    return loss.to(pred.dtype), grad_pred, grad_target


def _run(pred, target, intervals, operator, normalize, eps, reduction, backend, need_grad_pred, need_grad_target):
    opts = resolve_options(pred, target, intervals, operator, normalize, eps, reduction)
    loss, grad_pred, grad_target = _launch(pred, target, opts, backend, need_grad_pred, need_grad_target)
    empty = pred.new_empty((0,), dtype=unit_grad_dtype(pred.dtype))
    return (
        loss,
        grad_pred if grad_pred is not None else empty,
        grad_target if grad_target is not None else empty.clone(),
    )


@motion_loss_op.register_kernel("cpu")
def _motion_loss_cpu(pred, target, intervals, operator, normalize, eps, reduction, backend, need_grad_pred,
                     need_grad_target):
    return _run(pred, target, intervals, operator, normalize, eps, reduction, backend, need_grad_pred,
                need_grad_target)


@motion_loss_op.register_kernel("cuda")
def _motion_loss_cuda(pred, target, intervals, operator, normalize, eps, reduction, backend, need_grad_pred,
                      need_grad_target):
    return _run(pred, target, intervals, operator, normalize, eps, reduction, backend, need_grad_pred,
                need_grad_target)


def unit_grad_dtype(dtype: torch.dtype) -> torch.dtype:
    """Unit gradients are ~1 / (B T J C den): below float16's normal range until grad_output (AMP's loss scale,
    say) multiplies them. Half types therefore keep them in float32 and cast after scaling."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@motion_loss_op.register_fake
def _motion_loss_fake(pred, target, intervals, operator, normalize, eps, reduction, backend, need_grad_pred,
                      need_grad_target):
    loss = pred.new_empty((pred.shape[0],) if reduction == "none" else ())
    grad_dtype = unit_grad_dtype(pred.dtype)
    grad_pred = pred.new_empty(pred.shape if need_grad_pred else (0,), dtype=grad_dtype)
    grad_target = pred.new_empty(pred.shape if need_grad_target else (0,), dtype=grad_dtype)
    return loss, grad_pred, grad_target


def _setup_context(ctx, inputs, output):
    _, grad_pred, grad_target = output
    pred, target, intervals, operator, normalize, eps, reduction = inputs[:7]
    _save(ctx, pred, target, grad_pred, grad_target, MotionLossOptions(tuple(intervals), operator, normalize, eps,
                                                                      reduction), (inputs[8], inputs[9]))
    ctx.mark_non_differentiable(grad_pred, grad_target)
    ctx.set_materialize_grads(False)  # the unit-gradient outputs never receive gradients: no zeros to build


def _save(ctx, pred, target, grad_pred, grad_target, opts: MotionLossOptions, need_grad, eager: bool = False) -> None:
    """What both backwards need. pred and target are saved (inputs: no copy) for a double backward only, which
    recomputes the gradients differentiably from the reference. In eager calls an inference tensor (a target
    computed under torch.inference_mode()), which cannot be saved, is kept as a plain reference instead: a
    first-order backward never reads it, and it cannot be changed in place outside inference mode."""
    ctx.opts, ctx.input_dtype, ctx.need_grad = opts, pred.dtype, need_grad
    kept = (None, None)
    if eager:
        kept = tuple(t if t.is_inference() else None for t in (pred, target))
        pred, target = (None if k is not None else t for t, k in zip((pred, target), kept))
    ctx.save_for_backward(pred, target, grad_pred, grad_target)
    ctx.kept = kept
    ctx.handed_out = False  # whether a backward of this node already returned a saved unit gradient itself


def _input_grads(ctx, grad_loss) -> tuple[Tensor | None, Tensor | None]:
    """(dL/dpred, dL/dtarget): the saved unit gradients scaled by grad_output, None where not needed. With
    create_graph=True the result must itself be differentiable, which scaled constants are not: the reference
    recomputes it then."""
    if grad_loss is None:
        return None, None
    need_pred = ctx.need_grad[0] and ctx.needs_input_grad[0]
    need_target = ctx.need_grad[1] and ctx.needs_input_grad[1]
    pred, target, grad_pred, grad_target = ctx.saved_tensors
    if differentiable_backward((pred, target, grad_loss)):
        pred, target = (saved if kept is None else kept for saved, kept in zip((pred, target), ctx.kept))
        return _reference_input_grads(pred, target, ctx.opts, grad_loss, need_pred, need_target)
    scale = grad_loss.view(-1, 1, 1, 1) if ctx.opts.reduction == "none" else grad_loss
    may_alias, ctx.handed_out = not ctx.handed_out, True
    return (
        _scaled(grad_pred, scale, ctx.input_dtype, may_alias) if need_pred else None,
        _scaled(grad_target, scale, ctx.input_dtype, may_alias) if need_target else None,
    )


def _reference_input_grads(pred, target, opts: MotionLossOptions, grad_loss, need_pred, need_target):
    """The vector-Jacobian product of the reference loss at the saved inputs, with its own graph (so second-order
    gradients, Hessians and gradient penalties are right)."""
    wrt = [t for t, need in ((pred, need_pred), (target, need_target)) if need]
    if not wrt:
        return None, None
    with torch.enable_grad():
        loss = reference_motion_loss(pred, target, opts.intervals, opts.operator, opts.normalize, opts.eps,
                                     opts.reduction)
        grads = iter(torch.autograd.grad(loss, wrt, grad_outputs=grad_loss, create_graph=True))
    return next(grads) if need_pred else None, next(grads) if need_target else None


def _backward(ctx, grad_loss, _grad_of_grad_pred, _grad_of_grad_target):
    return (*_input_grads(ctx, grad_loss), None, None, None, None, None, None, None, None)


def _scaled(unit_grad: Tensor, scale: Tensor, dtype: torch.dtype, may_alias: bool) -> Tensor:
    """unit_grad * scale in the input's dtype. `loss.backward()` on a CPU scalar loss passes scale = 1: the saved
    gradient is then handed on as it is, as autograd does for an addition, instead of paying for a fresh (B, T, J, D)
    tensor (on the CPU, mostly page faults). Only the node's first backward may do so (may_alias): a later one
    (retain_graph) returns a fresh tensor, so no two results share memory. A caller who modifies the first result
    in place and runs backward again gets autograd's "modified by an inplace operation" error, not wrong numbers.
    Compiled graphs, GPU tensors (where reading the value would synchronise) and functorch-batched grad_outputs
    (is_grads_batched, vectorized jacobians: no .item()) always multiply; so does anything traced (fake or
    functional tensors are Tensor subclasses)."""
    if may_alias and unit_grad.dtype == dtype and _is_plain_cpu_one(scale):
        return unit_grad
    return (unit_grad * scale).to(dtype)


def _is_plain_cpu_one(scale: Tensor) -> bool:
    """scale is an eager, unbatched CPU tensor holding exactly one 1 (reading it costs no synchronisation)."""
    if type(scale) is not Tensor or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch._C._are_functorch_transforms_active() or is_batched(scale):
        return False
    return scale.device.type == "cpu" and scale.numel() == 1 and scale.item() == 1


motion_loss_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerMotionLoss(torch.autograd.Function):
    """The op's forward and backward as a plain autograd.Function, for eager calls: the same kernels and the same
    backward, without the custom op's dispatch (its Python autograd wrapper, redispatch, a second argument check
    and the placeholder outputs cost ~0.15 ms a call, ~9 % of the fused loss at the default shape). Traced code
    (torch.compile, fake tensors) takes the op; torch.func transforms take the reference."""

    @staticmethod
    def forward(ctx, pred, target, opts, backend, need_grad_pred, need_grad_target):
        loss, grad_pred, grad_target = _launch(pred, target, opts, backend, need_grad_pred, need_grad_target)
        _save(ctx, pred, target, grad_pred, grad_target, opts, (need_grad_pred, need_grad_target), eager=True)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*_input_grads(ctx, grad_loss), None, None, None, None)


def motion_loss(
    pred: Tensor,
    target: Tensor,
    intervals: Sequence[int] = (8, 12, 16, 24),
    operator: str = "cross",
    normalize: str | bool | None = "sample",
    eps: float = 0.01,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """Motion loss of SPEC §1 (pairwise motion encoding over several intervals), fused.

    pred, target: (B, T, J, D) poses. Returns a scalar (reduction "mean" / "sum") or a (B,) tensor ("none").
    backend: "auto" (see ugcn_fast.backends), "reference", "cpu", "triton" or "cuda".
    """
    opts: MotionLossOptions = resolve_options(pred, target, intervals, operator, normalize, eps, reduction)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    chosen = backends.select(backend, pred.device, pred.dtype, pred.shape[-1], len(opts.intervals))
    if chosen == "reference" or needs_plain_torch((pred, target)):  # torch.func, forward-mode AD
        return reference_motion_loss(pred, target, opts.intervals, opts.operator, opts.normalize, opts.eps,
                                     opts.reduction)
    grad_enabled = torch.is_grad_enabled()
    need_grad_pred, need_grad_target = grad_enabled and pred.requires_grad, grad_enabled and target.requires_grad
    if not needs_registrations((pred, target)):
        return _EagerMotionLoss.apply(pred, target, opts, chosen, need_grad_pred, need_grad_target)
    loss, _, _ = motion_loss_op(pred, target, list(opts.intervals), opts.operator, opts.normalize, opts.eps,
                                opts.reduction, chosen, need_grad_pred, need_grad_target)
    return loss
