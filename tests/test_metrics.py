"""SPEC §5 metrics against hand-computed values and invariances."""
import math

import pytest
import torch

from ugcn_fast import metrics


def _pose(seed=0, shape=(17, 3)):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 100


def _rotation(seed=0):
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q * torch.sign(torch.linalg.det(q))  # a proper rotation


def test_mpjpe_hand_computed_and_root_relative():
    target = torch.zeros(1, 3, 3, dtype=torch.float64)
    pred = torch.tensor([[[0, 0, 0], [3, 4, 0], [0, 0, 1]]], dtype=torch.float64)
    assert metrics.mpjpe(pred, target).item() == pytest.approx((0 + 5 + 1) / 3)
    # a global translation is removed by the root-relative step
    assert metrics.mpjpe(pred + 1000, target).item() == pytest.approx((0 + 5 + 1) / 3)


def test_p_mpjpe_removes_similarity_transforms_but_not_reflections():
    target = _pose(0, (5, 17, 3))
    R = _rotation(1)
    moved = 1.7 * target @ R + torch.tensor([10.0, -20.0, 5.0], dtype=torch.float64)
    assert metrics.p_mpjpe(moved, target).item() == pytest.approx(0.0, abs=1e-8)
    assert metrics.mpjpe(moved, target).item() > 1.0
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert metrics.p_mpjpe(mirrored, target).item() > 1.0
    noisy = target + _pose(3, (5, 17, 3)) * 0.05
    assert 0 < metrics.p_mpjpe(noisy, target).item() <= metrics.mpjpe(noisy, target).item() + 1e-9


def test_procrustes_alignment_is_optimal_against_nearby_transforms():
    target, pred = _pose(4, (17, 3)), _pose(5, (17, 3))
    aligned = metrics.procrustes_align(pred, target)
    best = (aligned - target).pow(2).sum()
    for seed in range(5):
        R = torch.linalg.matrix_exp(0.01 * (lambda a: a - a.T)(_pose(10 + seed, (3, 3)) / 100))
        other = ((aligned - aligned.mean(0)) @ R) * 1.01 + aligned.mean(0)
        assert (other - target).pow(2).sum() >= best


def test_mpjve_hand_computed():
    target = torch.zeros(4, 2, 3, dtype=torch.float64)
    pred = target.clone()
    pred[:, 1, 0] = torch.tensor([0.0, 1.0, 3.0, 6.0])  # joint 1 moves along x with speeds 1, 2, 3
    assert metrics.mpjve(pred, target).item() == pytest.approx((0 + 0 + 0 + 1 + 2 + 3) / 6)
    assert metrics.mpjve(pred + 5.0, target).item() == pytest.approx(metrics.mpjve(pred, target).item())
    with pytest.raises(ValueError, match="2 frames"):
        metrics.mpjve(pred[:1], target[:1])


def test_pck_and_auc_hand_computed():
    target = torch.zeros(17, 3, dtype=torch.float64)
    pred = target.clone()
    errors = torch.arange(17, dtype=torch.float64) * 10  # joint j off by 10 j mm along x
    pred[:, 0] = errors
    pred[0, 0] = 0.0  # root
    rel = errors  # root stays at 0, so root-relative errors are 10 j
    kept = [j for j in range(17) if j not in (0, 7, 10)]
    assert len(kept) == 14
    expected_pck = sum(float(rel[j] < 150) for j in kept) / 14
    assert metrics.pck(pred, target).item() == pytest.approx(expected_pck)
    assert metrics.pck(pred, target, threshold=10.0).item() == pytest.approx(0.0)  # strictly below
    expected_auc = sum(sum(float(rel[j] < th) for j in kept) / 14 for th in range(0, 151, 5)) / 31
    assert metrics.auc(pred, target).item() == pytest.approx(expected_auc)


def test_average_over_actions():
    assert metrics.average_over_actions({"Walking": 40.0, "Sitting": 60.0, "Eating": 50.0}) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        metrics.average_over_actions({})


@pytest.mark.parametrize("fn", [metrics.mpjpe, metrics.p_mpjpe, metrics.pck, metrics.auc])
def test_bad_inputs(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(17, 3), torch.zeros(16, 3))
    with pytest.raises(ValueError, match="J, 3"):
        fn(torch.zeros(17, 2), torch.zeros(17, 2))
    with pytest.raises(TypeError, match="floating"):
        fn(torch.zeros(17, 3, dtype=torch.int64), torch.zeros(17, 3, dtype=torch.int64))


@pytest.mark.parametrize("fn", [metrics.mpjpe, metrics.p_mpjpe, metrics.mpjve, metrics.pck, metrics.auc])
def test_root_is_a_joint_index(fn):
    """root counts from the end when negative, as Python indexing does; out of range or not an int, a clear error."""
    torch.manual_seed(0)
    pred, target = torch.randn(4, 17, 3, dtype=torch.float64), torch.randn(4, 17, 3, dtype=torch.float64)
    assert fn(pred, target, root=-1) == fn(pred, target, root=16)
    for root, error in ((17, ValueError), (-18, ValueError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="root"):
            fn(pred, target, root=root)


@pytest.mark.parametrize("fn", [metrics.pck, metrics.auc])
def test_pck_joints_are_checked(fn):
    pose = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="17-joint order; the poses have 5 joints"):
        fn(pose, pose)  # the default joints are Human3.6M's
    assert fn(pose, pose, joints=[1, 2, -1]) == fn(pose, pose, joints=[1, 2, 4])
    with pytest.raises(ValueError, match="joints = 5 is out of range"):
        fn(pose, pose, joints=[1, 5])
    with pytest.raises(ValueError, match="joints must not be empty"):
        fn(pose, pose, joints=[])


def test_auc_needs_thresholds():
    pose = torch.zeros(17, 3)
    with pytest.raises(ValueError, match="thresholds"):
        metrics.auc(pose, pose, thresholds=[])
    assert metrics.auc(pose, pose, thresholds=iter([10.0, 20.0])) == 1.0  # any iterable, read once
