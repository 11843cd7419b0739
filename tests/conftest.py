"""Shared test setup.

Triton runs in its interpreter on machines without a CUDA GPU: the variable must be set before triton is
imported anywhere, which is why it is set here, at collection time. For the same reason the CUDA emulator
(tests/cuda_emulator: csrc/cuda built for the CPU) starts here, before the test modules list their backends:
without a GPU, backend="cuda" then runs its kernels on CPU tensors. UGCN_FAST_CUDA_EMULATOR=0 turns it off.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import ugcn_fast  # noqa: E402
from ugcn_fast import _native  # noqa: E402


CUDA_EMULATOR_WANTED = not torch.cuda.is_available() and os.environ.get("UGCN_FAST_CUDA_EMULATOR", "1") != "0"


def _start_cuda_emulator() -> str | None:
    """Builds (cached) and installs the CUDA emulator where it is wanted; returns why it did not start."""
    if not CUDA_EMULATOR_WANTED:
        return "a GPU runs the real CUDA module" if torch.cuda.is_available() else "UGCN_FAST_CUDA_EMULATOR=0"
    try:
        from cuda_emulator import build

        _native.emulate_cuda(build.load())
    except Exception as err:  # no compiler, no pybind11: the emulated tests skip, and CI fails (sessionstart)
        return f"the CUDA emulator did not build: {err}"
    return None


CUDA_EMULATOR_PROBLEM = _start_cuda_emulator()


def pytest_report_header(config):
    return (f"ugcn_fast from {os.path.dirname(ugcn_fast.__file__)}; backends {ugcn_fast.available_backends()}; "
            f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}; "
            f"CUDA emulator: {'on' if _native.cuda_emulated else 'off (' + str(CUDA_EMULATOR_PROBLEM) + ')'}")


def pytest_sessionstart(session):
    # CI sets UGCN_FAST_REQUIRE_NATIVE=1 so that a build that silently lost its native module fails loudly
    # instead of passing on the reference fallback.
    if os.environ.get("UGCN_FAST_REQUIRE_NATIVE") == "1" and _native.cpu_module is None:
        raise pytest.UsageError(f"UGCN_FAST_REQUIRE_NATIVE=1 but ugcn_fast._C is missing: {_native.cpu_import_error}")
    if os.environ.get("UGCN_FAST_REQUIRE_NATIVE") == "1" and CUDA_EMULATOR_WANTED and not _native.cuda_emulated:
        raise pytest.UsageError(f"UGCN_FAST_REQUIRE_NATIVE=1 but {CUDA_EMULATOR_PROBLEM}")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        # the marker, not the keyword: a test parametrized with backend="cuda" has "cuda" among its keywords (its
        # id) and runs in the CUDA emulator where there is no GPU
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """train() sets torch's thread count when its config asks (process-wide): no test leaves it changed for the
    tests after it (test_ddp's in-process run used to leave every later test on one thread)."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
