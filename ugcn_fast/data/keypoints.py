"""2D keypoints from detectors: COCO-17 to the Human3.6M 17 joints, and filling of missing or low-confidence
keypoints by temporal interpolation.

COCO-17 (Detectron2, HRNet, MMPose) has no hip centre, spine, thorax or head top. The conversion uses the common
approximations: hip = mid-hips, thorax = mid-shoulders, spine = midway between hip and thorax, neck/nose = nose,
head = mid-eyes; the limbs map one to one. A derived joint's confidence is the lowest of its sources'.
"""
from __future__ import annotations

import numpy as np

COCO_NUM_JOINTS = 17
# H36M joint -> COCO joints averaged to make it (one index: copied)
COCO_TO_H36M = {
    0: (11, 12), 1: (12,), 2: (14,), 3: (16,), 4: (11,), 5: (13,), 6: (15,),
    8: (5, 6), 9: (0,), 10: (1, 2), 11: (5,), 12: (7,), 13: (9,), 14: (6,), 15: (8,), 16: (10,),
}  # 7 (spine) = mean of the converted 0 and 8


def _check(keypoints: np.ndarray, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (COCO_NUM_JOINTS, 2):
        raise ValueError(f"keypoints must have shape (T, 17, 2), got {keypoints.shape}")
    if scores is None:
        scores = np.where(np.isfinite(keypoints).all(axis=-1), 1.0, 0.0)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != keypoints.shape[:2]:
        raise ValueError(f"scores must have shape {keypoints.shape[:2]} (T, 17), got {scores.shape}")
    return keypoints, scores


def coco_to_h36m(keypoints: np.ndarray, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T, 17, 2) COCO keypoints (+ (T, 17) confidences) -> (T, 17, 2) Human3.6M-order keypoints and confidences."""
    keypoints, scores = _check(keypoints, scores)
    out = np.empty_like(keypoints)
    out_scores = np.empty_like(scores)
    for h36m, coco in COCO_TO_H36M.items():
        out[:, h36m] = keypoints[:, list(coco)].mean(axis=1)
        out_scores[:, h36m] = scores[:, list(coco)].min(axis=1)
    out[:, 7] = (out[:, 0] + out[:, 8]) / 2
    out_scores[:, 7] = np.minimum(out_scores[:, 0], out_scores[:, 8])
    return out, out_scores


def fill_missing(keypoints: np.ndarray, scores: np.ndarray | None = None, threshold: float = 0.3) -> np.ndarray:
    """Replaces keypoints that are NaN / Inf or whose confidence is below `threshold` by linear interpolation in
    time between the joint's nearest valid frames (the nearest valid value before the first / after the last).
    A joint with no valid frame at all is an error that names it."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or len(keypoints) == 0:
        raise ValueError(f"keypoints must have shape (T, J, 2) with T >= 1, got {keypoints.shape}")
    valid = np.isfinite(keypoints).all(axis=-1)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != keypoints.shape[:2]:
            raise ValueError(f"scores must have shape {keypoints.shape[:2]}, got {scores.shape}")
        valid &= scores >= threshold
    filled = keypoints.copy()
    frames = np.arange(len(keypoints))
    for j in range(keypoints.shape[1]):
        good = valid[:, j]
        if not good.any():
            raise ValueError(f"joint {j} has no keypoint with confidence >= {threshold} in any frame: "
                             "cannot fill it (check the layout and the detector output)")
        if good.all():
            continue
        for c in range(keypoints.shape[2]):
            filled[:, j, c] = np.interp(frames, frames[good], keypoints[good, j, c])
    return filled
