"""Argument checks shared by the public entry points: one wording for one mistake."""
from __future__ import annotations

import numbers

import torch
from torch import Tensor


def is_int(value) -> bool:
    """A Python or numpy integer (numbers.Integral), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A Python or numpy real number (numbers.Real: ints too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_float_tensor(name: str, x, layout: str | None = None, ndim: int | None = None) -> None:
    """x must be a floating-point torch.Tensor, with exactly `ndim` dimensions when given (`layout` names them
    in the error, e.g. "(B, T, J, D)")."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided or x.is_nested:  # sparse or nested (a strided nested tensor's layout says strided)
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {x.dim()} dimensions {tuple(x.shape)}")
