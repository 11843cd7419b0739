"""Reused CPU buffers for intermediates that live within one call: the eval block's time-major copy of its input
and its phase buffer (ugcn_fast/ops/stgcn_block.py asks for them by slot name; eager calls on the backends of
stgcn_pieces.SCRATCH_RESULTS get them).

Why: a fresh torch.empty of a few MiB is returned to the OS when freed (glibc's malloc trims and unmaps large
blocks), so the next call pays a page fault per 4 KiB page it writes: ~10k faults per pass of UGCN's 14 eval
blocks at N = 64; without them the pass ran 1.13x faster (150 -> 133 ms, interleaved A/B, benchmark machine).

One growable buffer per named slot and thread, so a slot is reused, never shared between threads; a caller takes
a slot only for what is dead when it returns, and never holds two buffers of one slot at once. The buffers stay
allocated (at most the largest block's intermediates, ~23 MiB for UGCN at N = 64 in float32) until `release()`.
"""
from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

_local = threading.local()


def buffer(slot: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A contiguous CPU tensor of `shape` and `dtype` on this thread's buffer for `slot` (grown when too small;
    its contents are whatever the last user left)."""
    slots = _local.__dict__.setdefault("slots", {})
    nbytes = math.prod(shape) * dtype.itemsize
    held = slots.get(slot)
    if held is None or held.numel() < nbytes:
        held = slots[slot] = torch.empty(max(nbytes, 1), dtype=torch.uint8)
    return held[:nbytes].view(dtype).view(shape)


def release() -> None:
    """Frees this thread's buffers (the next call that needs one allocates it again)."""
    _local.__dict__.pop("slots", None)


def held_bytes() -> int:
    """Bytes this thread's buffers hold."""
    return sum(b.numel() for b in _local.__dict__.get("slots", {}).values())
