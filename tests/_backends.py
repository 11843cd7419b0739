"""The fused (backend, device) pairs this machine can run, for parametrising backend tests."""
import os

import pytest
import torch

import ugcn_fast
from ugcn_fast import _native


def fused_cases():
    available = ugcn_fast.available_backends()
    cases = []
    if "cpu" in available:
        cases.append(("cpu", "cpu"))
    if "triton" in available and os.environ.get("TRITON_INTERPRET") == "1":
        cases.append(pytest.param("triton", "cpu", marks=pytest.mark.triton))
    if _native.cuda_emulated:
        cases.append(pytest.param("cuda", "cpu", marks=pytest.mark.cuda_emulator))
    if torch.cuda.is_available():
        for name in ("cuda", "triton"):
            marks = [pytest.mark.cuda] + ([pytest.mark.triton] if name == "triton" else [])
            if name in available:
                cases.append(pytest.param(name, "cuda", marks=marks))
    return cases


def dtypes_for(backend, device):
    if device == "cpu" and backend != "cuda":  # the CUDA emulator runs the half-type kernels too
        return (torch.float64, torch.float32)
    return (torch.float64, torch.float32, torch.float16, torch.bfloat16)
