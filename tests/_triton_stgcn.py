"""Comparison helpers of the Triton ST-GCN tests (test_stgcn_triton.py, test_stgcn_triton_gemm.py): dtypes,
per-dtype tolerances against the plain-PyTorch contract, seeded inputs on the test device."""
import torch

from _triton_env import DEVICE, INTERPRET

DTYPES = [torch.float64, torch.float32] if INTERPRET else [torch.float64, torch.float32, torch.float16,
                                                           torch.bfloat16]
# (rtol, atol relative to the largest expected magnitude) per dtype: the contract itself rounds 16-bit
# intermediates where the kernels keep float32, so 16-bit tolerances are a few units of the last place.
TOL = {torch.float64: (1e-9, 1e-11), torch.float32: (2e-4, 2e-5), torch.float16: (2e-2, 5e-3),
       torch.bfloat16: (5e-2, 2e-2)}


def stat_tol(dtype):
    """Tolerances of float64 sums accumulated per program in acc (float32 unless float64) over values of dtype."""
    return dtype if dtype in (torch.float64, torch.float16, torch.bfloat16) else torch.float32


def rand(shape, dtype, seed, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype).to(DEVICE)


def close(actual, expected, dtype, scale=None, what=""):
    """actual vs expected with the dtype's tolerances; atol relative to `scale` (default: max |expected|)."""
    assert actual is not None and actual.device == expected.device, what
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (what, actual.shape, expected.shape,
                                                                               actual.dtype, expected.dtype)
    assert actual.is_contiguous(), what
    rtol, atol = TOL[dtype]
    if scale is None:
        scale = expected.detach().abs().max().item() if expected.numel() else 1.0
    scale = scale if scale > 0 else 1.0
    torch.testing.assert_close(actual.detach().double().cpu(), expected.detach().double().cpu(), rtol=rtol,
                               atol=atol * scale, msg=lambda m: f"{what}\n{m}")


def adjacency(K, V, seed):
    """A column-normalised random (K, V, V) adjacency with zeros, like a graph's."""
    g = torch.Generator().manual_seed(seed)
    A = torch.rand((K, V, V), generator=g, dtype=torch.float64) * (torch.rand((K, V, V), generator=g) < 0.5)
    return (A / A.sum((0, 1), keepdim=True).clamp_min(1e-3))
