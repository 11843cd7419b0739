"""Where the CUDA backend's kernels run in this test session: on the GPU (CUDA tensors, marked `cuda`), or,
without one, on the CPU through the CUDA emulator (CPU tensors, marked `cuda_emulator`; tests/conftest.py starts
it, tests/cuda_emulator/build.py says what it checks). CUDA_DEVICE is None when neither is available."""
import pytest
import torch

from ugcn_fast import _native

HAS_GPU = torch.cuda.is_available()
EMULATED = _native.cuda_emulated
CUDA_DEVICE = "cuda" if HAS_GPU else ("cpu" if EMULATED else None)
CUDA_MARK = pytest.mark.cuda if HAS_GPU else pytest.mark.cuda_emulator  # for pytest.param(..., marks=CUDA_MARK)


def cuda_kernel_test(fn):
    """Runs fn where the CUDA kernels can run (GPU or emulator); skipped elsewhere."""
    return CUDA_MARK(pytest.mark.skipif(CUDA_DEVICE is None, reason="needs a CUDA GPU or the CUDA emulator")(fn))


@pytest.fixture(autouse=True)
def nan_filled_cpu_allocations():
    """Under the emulator, every torch.empty of a test comes back NaN-filled (torch's deterministic mode), as a
    GPU test leaves NaN in the caching allocator: an output a kernel forgets to write shows. A test module
    turns it on for its tests by importing it."""
    if not EMULATED:
        yield
        return
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.utils.deterministic.fill_uninitialized_memory = fill


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
