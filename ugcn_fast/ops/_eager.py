"""When an eager call may bypass a torch.library op and run its Python body directly (the motion loss and the ST-GCN
block's pieces both do, to skip the dispatcher's round trip)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import forward_ad


def needs_registrations(tensors) -> bool:
    """True for traced code (torch.compile, jit tracing, functorch transforms) and for tensor subclasses (fake or
    functional tensors): they need the op's schema and fake kernel. Non-tensors in `tensors` are ignored."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._are_functorch_transforms_active():
        return True
    return any(is_subclass_tensor(t) for t in tensors)


def differentiable_backward(tensors) -> bool:
    """True for an eager backward with create_graph=True (grad mode is on inside it then): its results must carry
    their own graph, so an op whose backward reuses forward-time results recomputes them differentiably. Traced
    backwards (AOTAutograd's joint graph: functional or fake tensors) keep the fused gradients: compiled graphs do
    not support double backward anyway."""
    if not torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return not any(is_subclass_tensor(t) for t in tensors)


def is_subclass_tensor(t) -> bool:
    """A Tensor subclass other than Parameter: fake or functional tensors while AOTAutograd traces, say."""
    return isinstance(t, Tensor) and type(t) is not Tensor and type(t) is not torch.nn.Parameter


def needs_plain_torch(tensors, more_tensors=None) -> bool:
    """True in eager code under a torch.func transform (grad, vjp, jvp, vmap, jacrev, ...), given a tensor one of
    them wrapped, or given a dual tensor (forward-mode AD: torch.autograd.forward_ad). The fused ops' autograd
    formulas reuse forward-time results and have no forward-mode formula, so they cannot serve those (forward mode
    would raise, or, where an input carries a tangent but no requires_grad, drop the tangent): callers fall back to
    plain torch ops. `more_tensors`: a callable giving further tensors (a module's parameters) that only the dual
    check looks at. While compiling, an active transform counts, and so does an open dual level (traced tensors
    cannot be asked for a tangent)."""
    if torch._C._are_functorch_transforms_active():
        return True  # (also while compiling: a compiled torch.func.grad of the loss traces the transform's body)
    dual_level_open = forward_ad._current_level >= 0
    if torch.compiler.is_compiling():
        return dual_level_open
    if any(isinstance(t, Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
        return True
    if not dual_level_open:  # (a process-wide level: checking the tensors keeps code in a long-lived one fused)
        return False
    extra = more_tensors() if more_tensors is not None else ()
    return any(isinstance(t, Tensor) and forward_ad.unpack_dual(t).tangent is not None
               for group in (tensors, extra) for t in group)


def is_batched(t: Tensor) -> bool:
    """t is wrapped by a torch.func transform or is a legacy batched tensor (autograd.grad(is_grads_batched=True)
    and the vectorized autograd.functional Jacobians still batch grad_outputs that way, with no transform active):
    it has no storage for a native kernel to read."""
    functorch = torch._C._functorch
    legacy = getattr(functorch, "is_legacy_batchedtensor", None)
    return functorch.is_functorch_wrapped_tensor(t) or (legacy is not None and legacy(t))
