"""COCO-17 to Human3.6M conversion and temporal filling of missing keypoints."""
import numpy as np
import pytest

from ugcn_fast.data.keypoints import coco_to_h36m, fill_missing


def test_coco_to_h36m_by_hand():
    coco = np.zeros((1, 17, 2))
    coco[0, :, 0] = np.arange(17)      # x = COCO index
    coco[0, :, 1] = np.arange(17) * 10
    scores = np.ones((1, 17))
    scores[0, 5] = 0.2                  # left shoulder unsure
    h36m, conf = coco_to_h36m(coco, scores)
    x = h36m[0, :, 0]
    assert x[0] == 11.5 and x[8] == 5.5 and x[7] == (11.5 + 5.5) / 2   # hip, thorax, spine
    assert x[9] == 0 and x[10] == 1.5                                  # nose, mid-eyes
    assert list(x[[1, 2, 3, 4, 5, 6]]) == [12, 14, 16, 11, 13, 15]      # right leg, left leg
    assert list(x[[11, 12, 13, 14, 15, 16]]) == [5, 7, 9, 6, 8, 10]     # left arm, right arm
    assert conf[0, 8] == 0.2 and conf[0, 7] == 0.2 and conf[0, 11] == 0.2 and conf[0, 0] == 1.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\(T, 17, 2\)"):
        coco_to_h36m(np.zeros((10, 18, 2)))
    with pytest.raises(ValueError, match="scores"):
        coco_to_h36m(np.zeros((10, 17, 2)), np.ones((10, 16)))


def test_fill_missing_interpolates_in_time():
    k = np.zeros((5, 2, 2))
    k[:, 0, 0] = [0.0, np.nan, np.nan, 3.0, 4.0]
    k[:, 1, 1] = [1.0, 2.0, 3.0, 4.0, 5.0]
    scores = np.ones((5, 2))
    scores[4, 1] = 0.1  # low confidence: replaced by the last valid value
    filled = fill_missing(k, scores)
    assert np.allclose(filled[:, 0, 0], [0, 1, 2, 3, 4])
    assert np.allclose(filled[:, 1, 1], [1, 2, 3, 4, 4])
    assert np.isfinite(filled).all()


def test_fill_missing_refuses_a_joint_that_is_never_seen():
    k = np.zeros((4, 3, 2))
    k[:, 2] = np.nan
    with pytest.raises(ValueError, match="joint 2"):
        fill_missing(k)


def test_fill_missing_needs_a_frame():
    with pytest.raises(ValueError, match=r"T >= 1, got \(0, 17, 2\)"):
        fill_missing(np.zeros((0, 17, 2)))
