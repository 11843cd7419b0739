"""Shared test setup.

Triton runs in its interpreter on machines without a CUDA GPU: the variable must be set before triton is
imported anywhere, which is why it is set here, at collection time.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import ugcn_fast  # noqa: E402
from ugcn_fast import _native  # noqa: E402


def pytest_report_header(config):
    return (f"ugcn_fast from {os.path.dirname(ugcn_fast.__file__)}; backends {ugcn_fast.available_backends()}; "
            f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}")


def pytest_sessionstart(session):
    # CI sets UGCN_FAST_REQUIRE_NATIVE=1 so that a build that silently lost its native module fails loudly
    # instead of passing on the reference fallback.
    if os.environ.get("UGCN_FAST_REQUIRE_NATIVE") == "1" and _native.cpu_module is None:
        raise pytest.UsageError(f"UGCN_FAST_REQUIRE_NATIVE=1 but ugcn_fast._C is missing: {_native.cpu_import_error}")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
