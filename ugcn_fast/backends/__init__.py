"""Which backend serves which device and dtype: the one place to look.

| backend     | device                                   | dtypes                              | module                 |
|-------------|------------------------------------------|-------------------------------------|------------------------|
| `reference` | any                                      | any floating                        | ugcn_fast.reference    |
| `cpu`       | CPU                                      | float32, float64                    | ugcn_fast._C (C++/OpenMP) |
| `triton`    | CUDA; CPU too when TRITON_INTERPRET=1    | float32, float16, bfloat16, float64 (interpreter: float32, float64) | ugcn_fast.kernels |
| `cuda`      | CUDA; CPU under the tests' CUDA emulator | float32, float64, float16, bfloat16 | ugcn_fast._cuda (CUDA C++) |

The fused ST-GCN block (`FusedSTGCNBlock`, ugcn_fast/ops/stgcn_block.py) runs its memory-bound passes through
`ugcn_fast.backends.<name>_stgcn` and its GEMMs through torch, except where ugcn_fast.ops.stgcn_pieces.FUSED_GEMMS
says the backend's own kernels mix the channels with the neighbouring passes fused in (cpu: csrc/cpu/stgcn_gemm.cpp,
triton: kernels/stgcn_gemm.py; the forward's graph and temporal convolutions):

| backend     | device                                   | dtypes                                      |
|-------------|------------------------------------------|---------------------------------------------|
| `reference` | any                                      | any floating (the unfused reference block)  |
| `torch`     | any                                      | any floating (the passes in plain PyTorch)  |
| `cpu`       | CPU                                      | float32, float64                            |
| `triton`    | CUDA; CPU too when TRITON_INTERPRET=1    | float32, float64, float16, bfloat16 (interpreter: float32, float64) |
| `cuda`      | CUDA; CPU under the tests' CUDA emulator | float32, float64, float16, bfloat16         |

`auto` picks, per call, the first available entry of AUTO_PREFERENCE for the tensors' device that supports the
dtype and shape, and the reference otherwise. Every fused backend has the same launcher contract:
`forward(pred, target, opts, need_grad_pred, need_grad_target) -> (loss_per_sample, grad_pred, grad_target)`,
with `loss_per_sample[b]` the sample's weighted loss L_b (the reduced loss is their sum, or the vector itself for
reduction="none") and the gradients of the loss for grad_output = 1 (None where not requested).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Callable

import torch

from .. import _native
from .torch_stgcn import CONV_FRAMES_MAX_TAPS

BACKENDS = ("auto", "reference", "cpu", "triton", "cuda")

# On CUDA tensors: the native CUDA kernel first, Triton second. bench/speed.py measures both side by side
# (bench/results/); change this order if a GPU's results say otherwise.
AUTO_PREFERENCE = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}

_FLOAT = (torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)


def release_cpu_buffers() -> None:
    """Frees the calling thread's reused CPU buffers of the eval block's intermediates (backends/_scratch.py: at
    most the largest block's, ~23 MiB for UGCN at N = 64); the next eval call allocates them again."""
    from . import _scratch
    _scratch.release()


# TRITON_INTERPRET as last read outside compiled code: traced code reads this copy, not os.environ (torch 2.11's
# dynamo refused an importlib call in backend selection; the environment is kept out of the trace as well).
_interpret_seen = [os.environ.get("TRITON_INTERPRET", "0") == "1"]


def triton_interpreted() -> bool:
    if not torch.compiler.is_compiling():
        _interpret_seen[0] = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return _interpret_seen[0]


# Looked up once, at import: backend selection runs inside torch.compile'd code, and dynamo refuses to trace
# importlib's find_spec (torch 2.11 raised Unsupported under fullgraph=True).
try:
    _TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
except ValueError:  # a module object without a spec already in sys.modules (a stub): it is what `import` gets
    _TRITON_INSTALLED = True


def _devices(name: str) -> tuple[str, ...]:
    if name == "cpu":
        return ("cpu",) if _native.cpu_module is not None else ()
    if name == "cuda":
        if _native.cuda_emulated:
            return ("cpu",)  # the CPU build of csrc/cuda (tests/cuda_emulator): CPU tensors only
        return ("cuda",) if torch.cuda.is_available() and _native.cuda_runtime_problem() == "" else ()
    if name == "triton":
        if not _TRITON_INSTALLED:
            return ()
        if triton_interpreted():
            return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        return ("cuda",) if torch.cuda.is_available() else ()
    return ("any",)


def _dtypes(name: str, device: str) -> tuple[torch.dtype, ...]:
    if name == "cpu":
        return _FLOAT
    if name == "triton" and (device == "cpu" or triton_interpreted()):
        return _FLOAT  # the interpreter runs numpy arithmetic, which has no bfloat16
    return _FLOAT + _HALF


def available_backends() -> list[str]:
    """The backends this install can run on this machine (the reference always)."""
    return ["reference"] + [name for name in ("cpu", "triton", "cuda") if _devices(name)]


def _max_d(name: str) -> int | None:
    """Largest D the backend serves for sub / inner: per-thread scratch in the native kernels; in Triton, wider
    tiles would spill. Larger D runs on the reference under auto."""
    if name == "cpu":
        return int(_native.cpu_module.max_d)
    if name == "cuda":
        return int(_native.cuda_module.max_d)
    if name == "triton":
        return 16
    return None


def unsupported_reason(name: str, device: torch.device, dtype: torch.dtype, D: int, n_intervals: int) -> str | None:
    """Why backend `name` cannot serve these tensors, or None if it can."""
    devices = _devices(name)
    if not devices:
        return f"backend={name!r} is not available in this install (available: {available_backends()})"
    if name == "reference":
        return None
    if device.type not in devices:
        return f"backend={name!r} runs on {', '.join(devices)} tensors, got a {device.type} tensor"
    if dtype not in _dtypes(name, device.type):
        return f"backend={name!r} on {device.type} takes dtypes {_dtypes(name, device.type)}, got {dtype}"
    max_d = _max_d(name)
    if max_d is not None and D > max_d:
        return f"backend={name!r} supports D <= {max_d} coordinates per joint, got D = {D}"
    if n_intervals > 64:
        return f"backend={name!r} supports at most 64 intervals, got {n_intervals}"
    return None


def select(backend: str, device: torch.device, dtype: torch.dtype, D: int, n_intervals: int) -> str:
    """Resolves `backend` for tensors on `device` with `dtype`; an explicit request that cannot be served raises."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        reason = unsupported_reason(backend, device, dtype, D, n_intervals)
        if reason is not None:
            raise RuntimeError(reason)
        return backend
    for name in AUTO_PREFERENCE.get(device.type, ()):
        if unsupported_reason(name, device, dtype, D, n_intervals) is None:
            return name
    if device.type == "cpu" and dtype in _FLOAT and _native.cpu_module is None:
        _native.warn_missing_cpu_module()
    return "reference"


BLOCK_BACKENDS = ("auto", "reference", "torch", "cpu", "triton", "cuda")
BLOCK_AUTO_PREFERENCE = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}


def block_unsupported_reason(name: str, device: torch.device, dtype: torch.dtype, V: int = 1,
                             kernel_size: int = 1) -> str | None:
    """Why backend `name` cannot run the fused ST-GCN block's passes on these tensors (V joints) with a temporal
    kernel of `kernel_size` taps, or None if it can."""
    if name in ("reference", "torch"):
        return None
    if kernel_size > CONV_FRAMES_MAX_TAPS and name in _fused_gemm_backends():
        return (f"backend={name!r} runs the temporal convolution in kernels of 1 to {CONV_FRAMES_MAX_TAPS} taps, "
                f"got kernel_size = {kernel_size}")
    devices = _devices(name)
    if not devices:
        return f"backend={name!r} is not available in this install (available: {available_backends()})"
    if device.type not in devices:
        return f"backend={name!r} runs on {', '.join(devices)} tensors, got a {device.type} tensor"
    if dtype not in _dtypes(name, device.type):
        return f"backend={name!r} on {device.type} takes dtypes {_dtypes(name, device.type)}, got {dtype}"
    max_v = int(_native.cuda_module.stgcn_max_joints) if name == "cuda" else None
    if max_v is not None and V > max_v:
        return f"backend='cuda' stages a group's joints in shared memory: V <= {max_v}, got V = {V}"
    return None


def _fused_gemm_backends():
    from ..ops.stgcn_pieces import FUSED_GEMMS  # (imported here: the ops import this module)
    return FUSED_GEMMS


def select_block(backend: str, device: torch.device, dtype: torch.dtype, V: int = 1, kernel_size: int = 1) -> str:
    """Resolves the fused block's `backend` for x on `device` with `dtype` (V joints, `kernel_size` taps); an
    explicit request that cannot be served raises. `auto` falls back to the reference block."""
    if backend not in BLOCK_BACKENDS:
        raise ValueError(f"backend must be one of {BLOCK_BACKENDS}, got {backend!r}")
    if backend != "auto":
        reason = block_unsupported_reason(backend, device, dtype, V, kernel_size)
        if reason is not None:
            raise RuntimeError(reason)
        return backend
    for name in BLOCK_AUTO_PREFERENCE.get(device.type, ()):
        if block_unsupported_reason(name, device, dtype, V, kernel_size) is None:
            return name
    if device.type == "cpu" and dtype in _FLOAT and _native.cpu_module is None:
        _native.warn_missing_cpu_module()
    return "reference"


def launcher(name: str) -> Callable:
    """The forward launcher of fused backend `name` (imported lazily: triton is a heavy import)."""
    module = importlib.import_module(f"ugcn_fast.backends.{name}_motion_loss")
    return module.forward
