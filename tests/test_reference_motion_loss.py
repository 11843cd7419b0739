"""The reference motion loss against hand-computed cases and identities of SPEC §1."""
import pytest
import torch

from ugcn_fast.reference import motion_loss

torch.manual_seed(0)


def _two_frames(a, b):
    """One sample, one joint, two frames: x[0, 0, 0] = a, x[0, 1, 0] = b."""
    return torch.tensor([[[a], [b]]], dtype=torch.float64)


# pred moves from x to y (x × y = z), the target stands still at x (x × x = 0).
PRED = _two_frames([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
TARGET = _two_frames([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "operator, normalize, expected",
    [
        ("cross", "none", 1 / 3),  # |(0, 0, 1) - 0| averaged over 3 components
        ("cross", "sample", (1 / 0.01) / 3),  # mu = 0, s = |x| |x| = 1, den = 0 + 0.01 * 1
        ("cross", "joint", (1 / 0.01) / 3),  # one joint: same as sample
        ("inner", "none", 1.0),  # |<x, y> - <x, x>| = |0 - 1|
        ("inner", "sample", 1 / 1.01),  # mu = 1, s = 1, den = 1.01
        ("sub", "none", 2 / 3),  # |(1, -1, 0) - 0| / 3
        ("sub", "sample", 2 / 3),  # normalisation is ignored for sub
    ],
)
def test_hand_computed_two_frames(operator, normalize, expected):
    loss = motion_loss(PRED, TARGET, intervals=(1,), operator=operator, normalize=normalize)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_hand_computed_two_intervals_sum():
    # Three frames on one joint, intervals 1 and 2, sub operator, reduction sum, D = 1.
    pred = torch.tensor([[[[0.0]], [[1.0]], [[3.0]]]], dtype=torch.float64)
    target = torch.zeros_like(pred)
    # tau = 1: |0 - 1| + |1 - 3| = 3 ; tau = 2: |0 - 3| = 3 ; L = (3 + 3) / 2
    loss = motion_loss(pred, target, intervals=(1, 2), operator="sub", reduction="sum")
    assert loss.item() == pytest.approx(3.0)


def test_hand_computed_normalisation_statistics():
    # target frames g0 = (1, 0, 0), g1 = (0, 2, 0): mG = g0 x g1 = (0, 0, 2), mu = 2, s = 1 * 2 = 2,
    # den = 2 + 0.5 * 2 = 3 (eps = 0.5). pred frames p0 = (1, 0, 0), p1 = (0, 0, 3): mP = (0, -3, 0).
    target = _two_frames([1.0, 0.0, 0.0], [0.0, 2.0, 0.0])
    pred = _two_frames([1.0, 0.0, 0.0], [0.0, 0.0, 3.0])
    loss = motion_loss(pred, target, intervals=(1,), eps=0.5)
    assert loss.item() == pytest.approx((0 + 3 / 3 + 2 / 3) / 3)


@pytest.mark.parametrize("operator", ["cross", "inner", "sub"])
@pytest.mark.parametrize("normalize", ["sample", "joint", "none"])
def test_identical_inputs_give_zero(operator, normalize):
    x = torch.randn(2, 20, 5, 3, dtype=torch.float64)
    assert motion_loss(x, x.clone(), (1, 4, 7), operator, normalize).item() == 0.0


def test_sub_at_interval_one_is_the_derivative_loss():
    pred, target = torch.randn(2, 15, 4, 3, dtype=torch.float64), torch.randn(2, 15, 4, 3, dtype=torch.float64)
    derivative_loss = ((pred[:, :-1] - pred[:, 1:]) - (target[:, :-1] - target[:, 1:])).abs().mean()
    assert motion_loss(pred, target, (1,), "sub").item() == pytest.approx(derivative_loss.item(), rel=1e-12)


@pytest.mark.parametrize("operator", ["cross", "inner", "sub"])
def test_reductions_are_consistent(operator):
    pred, target = torch.randn(3, 20, 5, 3, dtype=torch.float64), torch.randn(3, 20, 5, 3, dtype=torch.float64)
    C = 1 if operator == "inner" else 3
    for tau in (1, 6):
        mean = motion_loss(pred, target, (tau,), operator, reduction="mean")
        total = motion_loss(pred, target, (tau,), operator, reduction="sum")
        per_sample = motion_loss(pred, target, (tau,), operator, reduction="none")
        assert per_sample.shape == (3,)
        assert total.item() == pytest.approx(mean.item() * 3 * (20 - tau) * 5 * C, rel=1e-12)
        assert per_sample.mean().item() == pytest.approx(mean.item(), rel=1e-12)
    # several intervals: the loss is the mean of the per-interval losses
    both = motion_loss(pred, target, (1, 6), operator)
    single = [motion_loss(pred, target, (tau,), operator) for tau in (1, 6)]
    assert both.item() == pytest.approx((single[0] + single[1]).item() / 2, rel=1e-12)


@pytest.mark.parametrize("operator", ["cross", "inner"])
@pytest.mark.parametrize("normalize", ["sample", "joint"])
def test_normalised_loss_is_unit_free(operator, normalize):
    metres = torch.randn(2, 30, 17, 3, dtype=torch.float64)
    pred = metres + 0.1 * torch.randn_like(metres)
    in_m = motion_loss(pred, metres, operator=operator, normalize=normalize)
    in_mm = motion_loss(pred * 1000, metres * 1000, operator=operator, normalize=normalize)
    assert in_mm.item() == pytest.approx(in_m.item(), rel=1e-9)


@pytest.mark.parametrize("normalize", ["sample", "joint"])
def test_static_and_root_relative_targets_stay_finite(normalize):
    pose = torch.randn(1, 1, 17, 3, dtype=torch.float64)
    static = pose.expand(2, 30, 17, 3)  # no motion: every cross encoding is 0, mu = 0
    pred = static + 0.01 * torch.randn(2, 30, 17, 3, dtype=torch.float64)
    loss = motion_loss(pred, static, normalize=normalize)
    assert torch.isfinite(loss)
    root_relative = torch.randn(2, 30, 17, 3, dtype=torch.float64)
    root_relative = root_relative - root_relative[:, :, :1]  # joint 0 at the origin: its mu is 0
    pred = root_relative + 0.01 * torch.randn_like(root_relative)
    pred.requires_grad_(True)
    loss = motion_loss(pred, root_relative, normalize=normalize)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_all_zero_target_uses_unit_denominator():
    pred = torch.randn(2, 10, 3, 3, dtype=torch.float64)
    zero = torch.zeros_like(pred)
    assert motion_loss(pred, zero, (2,), normalize="sample").item() == pytest.approx(
        motion_loss(pred, zero, (2,), normalize="none").item(), rel=1e-12)


def _spec_backward(pred, target, intervals, eps):
    """SPEC §1's backward written out pair by pair (cross, sample normalisation, mean reduction)."""
    from ugcn_fast.reference import normalisation

    B, T, J, _ = pred.shape
    d_pred, d_target = torch.zeros_like(pred), torch.zeros_like(target)
    for tau in intervals:
        den = normalisation(target, tau, "cross", "sample", eps)  # (B, 1, 1, 1)
        w = 1.0 / (len(intervals) * B * (T - tau) * J * 3)
        for t in range(T - tau):
            aP, bP, aG, bG = pred[:, t], pred[:, t + tau], target[:, t], target[:, t + tau]
            dn = den[:, 0]
            g = torch.sign(torch.linalg.cross(aP, bP) / dn - torch.linalg.cross(aG, bG) / dn) * w / dn
            d_pred[:, t] += torch.linalg.cross(bP, g)
            d_pred[:, t + tau] += torch.linalg.cross(g, aP)
            d_target[:, t] += torch.linalg.cross(bG, -g)
            d_target[:, t + tau] += torch.linalg.cross(-g, aG)
    return d_pred, d_target


def test_autograd_matches_the_spec_backward_with_constant_statistics():
    pred = torch.randn(2, 12, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 12, 3, 3, dtype=torch.float64, requires_grad=True)
    loss = motion_loss(pred, target, (1, 5), eps=0.1)
    g_pred, g_target = torch.autograd.grad(loss, (pred, target))
    e_pred, e_target = _spec_backward(pred.detach(), target.detach(), (1, 5), 0.1)
    torch.testing.assert_close(g_pred, e_pred)
    torch.testing.assert_close(g_target, e_target)
