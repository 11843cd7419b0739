"""The motion loss on real motion capture (../shared/data, beside the checkout; skipped where it is absent)."""
import pathlib

import numpy as np
import pytest
import torch

import ugcn_fast
from ugcn_fast import reference

from _backends import fused_cases
from _tolerances import assert_close_scaled

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_17j_50fps.npz"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"real motion capture not found at {DATA}")
CPU_BACKENDS = [c.values[0] if hasattr(c, "values") else c[0] for c in fused_cases()
                if (c.values if hasattr(c, "values") else c)[1] == "cpu"]


def _windows(T=96, stride=48):
    """Root-relative 96-frame windows of every sequence, in millimetres, as a (B, T, 17, 3) batch."""
    with np.load(DATA) as data:
        names = [k for k in data.files if k.startswith("CMU_")]
        windows = []
        for name in names:
            seq = data[name].astype(np.float64)
            seq = seq - seq[:, :1]
            windows += [seq[s:s + T] for s in range(0, len(seq) - T + 1, stride)]
    return torch.from_numpy(np.stack(windows))


@pytest.mark.parametrize("backend", CPU_BACKENDS or [pytest.param("cpu", marks=pytest.mark.skip("no fused CPU backend"))])
@pytest.mark.parametrize("normalize", ["sample", "joint"])
def test_real_motion_matches_reference_and_is_unit_free(backend, normalize):
    target = _windows()
    if backend == "triton":
        target = target[:4]  # the interpreter is slow
    g = torch.Generator().manual_seed(0)
    pred = (target + 20 * torch.randn(target.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    loss = ugcn_fast.motion_loss(pred, target, normalize=normalize, backend=backend)
    (grad,) = torch.autograd.grad(loss, pred)
    p2 = pred.detach().requires_grad_(True)
    expected = reference.motion_loss(p2, target, normalize=normalize)
    (e_grad,) = torch.autograd.grad(expected, p2)
    assert_close_scaled(loss, expected)
    assert_close_scaled(grad, e_grad)
    # metres give the same loss as millimetres (root joint at the origin: its mu is 0, the eps * s floor holds)
    in_m = ugcn_fast.motion_loss(pred.detach() / 1000, target / 1000, normalize=normalize, backend=backend)
    assert_close_scaled(in_m, loss.detach())
    assert torch.isfinite(loss) and 0.0 < loss.item() < 10.0
