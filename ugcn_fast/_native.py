"""Loads the compiled modules: `_C` (CPU, always built by `pip install .`) and `_cuda` (built when a CUDA toolkit
was found). A pure-Python install still imports: the CPU kernel is then missing and `backend="auto"` falls back
to the reference with one warning.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import torch

_warned = False


def _load(name: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(f"ugcn_fast.{name}"), None
    except ImportError as err:  # not built, or built against a missing library
        return None, str(err)


cpu_module, cpu_import_error = _load("_C")
cuda_module, cuda_import_error = _load("_cuda")
# True when cuda_module is the CPU build of csrc/cuda (the CUDA emulator of the tests): backend="cuda" then
# takes CPU tensors, as backend="triton" does under TRITON_INTERPRET=1.
cuda_emulated = False


def warn_missing_cpu_module() -> None:
    """One warning per process when auto selection has to fall back to the reference on the CPU."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "ugcn_fast was installed without its native CPU module (ugcn_fast._C could not be imported: "
            f"{cpu_import_error}); falling back to the pure-PyTorch reference. Reinstall with `pip install .` "
            "and a C++ compiler to get the fused kernels.",
            RuntimeWarning,
            stacklevel=3,
        )


_cuda_problem: str | None = None


def cuda_runtime_problem() -> str:
    """Why the CUDA module cannot run here ('' when it can): not built, no device, or a driver older than the
    CUDA runtime it links. Asked once per process."""
    global _cuda_problem
    if _cuda_problem is None:
        if cuda_module is None:
            _cuda_problem = f"ugcn_fast._cuda is not built ({cuda_import_error})"
        else:
            _cuda_problem = cuda_module.runtime_problem()
    return _cuda_problem


def emulate_cuda(module: ModuleType) -> None:
    """Serves backend="cuda" on CPU tensors with `module`, a CPU build of csrc/cuda with the real module's
    functions (tests/cuda_emulator/build.py): the CUDA kernels then run, thread by thread, where there is no GPU.
    For testing; it replaces the real module for the rest of the process."""
    global cuda_module, cuda_import_error, cuda_emulated, _cuda_problem
    cuda_module, cuda_import_error, cuda_emulated, _cuda_problem = module, None, True, module.runtime_problem()


def cuda_launch_context(device) -> tuple[int, int]:
    """(stream, device index) the CUDA module launches on for tensors on `device`: the device's current stream,
    or (0, 0) for CPU tensors under the emulator, whose launches run synchronously on the calling thread."""
    if cuda_emulated and device.type == "cpu":
        return 0, 0
    return torch.cuda.current_stream(device).cuda_stream, device.index
