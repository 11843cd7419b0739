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


def close_or_as_accurate(actual, reference, exact, dtype, scale=None, what=""):
    """16-bit results of a whole block: `actual` within the dtype's tolerances of `exact` (the same computation in
    float64 on the same 16-bit data), or no further from it than twice the 16-bit `reference` block is. Measured
    against the 16-bit reference alone, the test would also charge the fused block with the reference's own rounding:
    in bfloat16 on the CPU the reference was 0.53 off a bias gradient whose exact value is 0 (the fused block's
    float32 sums: 0.02)."""
    assert actual is not None and actual.shape == exact.shape and actual.dtype == dtype, what
    rtol, atol = TOL[dtype]
    exact = exact.detach().double().cpu()
    if scale is None:
        scale = exact.abs().max().item() if exact.numel() else 1.0
    error = (actual.detach().double().cpu() - exact).abs()
    if bool((error <= atol * scale + rtol * exact.abs()).all()):
        return
    reference_error = (reference.detach().double().cpu() - exact).abs().max().item()
    assert error.max().item() <= 2 * reference_error, (
        f"{what}: {error.max().item():.3g} from the float64 result, beyond the {dtype} tolerances and more than "
        f"twice the {dtype} reference's {reference_error:.3g}")


def adjacency(K, V, seed):
    """A column-normalised random (K, V, V) adjacency with zeros, like a graph's."""
    g = torch.Generator().manual_seed(seed)
    A = torch.rand((K, V, V), generator=g, dtype=torch.float64) * (torch.rand((K, V, V), generator=g) < 0.5)
    return (A / A.sum((0, 1), keepdim=True).clamp_min(1e-3))
