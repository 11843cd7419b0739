"""Per-dtype tolerances for comparing a fused backend with the reference.

Errors are relative to the largest magnitude of the expected tensor: the unit gradients are ~1 / (B T J C),
so a fixed atol would be meaningless for them.
"""
import torch

RTOL = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}
SCALED_ATOL = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def assert_close_scaled(actual, expected, dtype=None, msg=""):
    dtype = dtype or expected.dtype
    expected = expected.detach()
    scale = expected.abs().max().item() if expected.numel() else 1.0
    scale = scale if scale == scale and scale not in (0.0, float("inf")) else 1.0
    torch.testing.assert_close(actual.detach().to(expected.dtype), expected, rtol=RTOL[dtype],
                               atol=SCALED_ATOL[dtype] * scale, equal_nan=True, msg=lambda m: f"{msg}\n{m}")
