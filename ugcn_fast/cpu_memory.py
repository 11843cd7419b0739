"""Keeping freed memory in the process on Linux/glibc, for programs that own their process (our command-line
tools call it; a library import never does).

Why. glibc's malloc gives large freed blocks back to the operating system (blocks above its mmap threshold are
unmapped; free space at the top of the heap above its trim threshold is trimmed), so a training step that frees
and reallocates the same activations pays a page fault for every 4 KiB page it writes again. Measured on the
2-core benchmark machine, one UGCN training step (B = 64, Adam) in a fresh process: fused ~100k faults, 678–690
ms; reference ~350k faults, 1550 ms. With both thresholds raised: fused 7k faults, 546–582 ms (-14 to -21 %);
reference 107k, 1110 ms (-28 %). The cost: memory freed by the program stays reserved by it (up to the trim
threshold above what it uses at its peak), as with jemalloc or tcmalloc, which give the same effect by LD_PRELOAD.
(The fused blocks' eval needs none of this: it reuses its intermediates, backends/_scratch.py.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX, 4 MiB * sizeof(long)): blocks up
# to 32 MiB come from the heap (UGCN's activations at N = 64 are below it)
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 1 << 30

DISABLE_ENV = "UGCN_FAST_KEEP_FREED_MEMORY"  # "0": keep_freed_memory() does nothing


def keep_freed_memory() -> bool:
    """Raises glibc's mmap threshold to 32 MiB and its trim threshold to 1 GiB for this process (mallopt); returns
    whether it did. False where the C library is not glibc, or when UGCN_FAST_KEEP_FREED_MEMORY=0 is set."""
    if os.environ.get(DISABLE_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None) if libc is not None else None
        gnu_version = getattr(libc, "gnu_get_libc_version", None) if libc is not None else None
    except OSError:
        return False
    if mallopt is None or gnu_version is None:  # musl and others: no glibc thresholds to set
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
