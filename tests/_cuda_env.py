"""Where the CUDA backend's kernels run in this test session: on the GPU (CUDA tensors, marked `cuda`), or,
without one, on the CPU through the CUDA emulator (CPU tensors, marked `cuda_emulator`; tests/conftest.py starts
it, tests/cuda_emulator/build.py says what it checks). CUDA_DEVICE is None when neither is available."""
import pytest
import torch

from ugcn_fast import _native

HAS_GPU = torch.cuda.is_available()
EMULATED = _native.cuda_emulated
CUDA_DEVICE = "cuda" if HAS_GPU else ("cpu" if EMULATED else None)


def cuda_kernel_test(fn):
    """Runs fn where the CUDA kernels can run (GPU or emulator); skipped elsewhere."""
    mark = pytest.mark.cuda if HAS_GPU else pytest.mark.cuda_emulator
    return mark(pytest.mark.skipif(CUDA_DEVICE is None, reason="needs a CUDA GPU or the CUDA emulator")(fn))


def gpu_test(fn):
    """Runs fn on a GPU only (streams, devices, cuDNN/TF32: what the emulator has no notion of)."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")(fn))


def built_cuda_module():
    """The real ugcn_fast._cuda (nvcc build) if this install has one, whatever serves backend="cuda" now."""
    import importlib

    try:
        return importlib.import_module("ugcn_fast._cuda")
    except ImportError:
        return None
