"""When an eager call may bypass a torch.library op and run its Python body directly (the motion loss and the ST-GCN
block's pieces both do, to skip the dispatcher's round trip)."""
from __future__ import annotations

import torch
from torch import Tensor


def needs_registrations(tensors) -> bool:
    """True for traced code (torch.compile, jit tracing, functorch transforms) and for tensor subclasses (fake or
    functional tensors): they need the op's schema and fake kernel. Non-tensors in `tensors` are ignored."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._are_functorch_transforms_active():
        return True
    return any(isinstance(t, Tensor) and type(t) is not Tensor and type(t) is not torch.nn.Parameter
               for t in tensors)
