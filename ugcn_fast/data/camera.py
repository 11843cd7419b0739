"""Pinhole cameras in the OpenCV / Human3.6M convention (camera x right, y down, z forward), virtual cameras
placed around a subject in a z-up world, and VideoPose3D's screen normalisation."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .._checks import is_real

# Human3.6M camera 54138969 (the one shared/data/README.md suggests): focal lengths and principal point in
# pixels, image width and height.
H36M_INTRINSICS = {"f": (1145.04940459, 1143.78109572), "c": (512.54150496, 515.45148698), "size": (1000, 1002)}


@dataclass(frozen=True)
class Camera:
    """World -> camera: X_cam = R (X_world - position); camera -> pixels: u = f X / Z + c (no distortion)."""

    R: np.ndarray          # (3, 3) rows: camera x (right), y (down), z (forward) in world coordinates
    position: np.ndarray   # (3,) camera centre, world units
    f: tuple[float, float] = H36M_INTRINSICS["f"]
    c: tuple[float, float] = H36M_INTRINSICS["c"]
    size: tuple[int, int] = H36M_INTRINSICS["size"]

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.R.T

    def project(self, points_camera: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points in front of the camera -> (..., 2) pixels."""
        points_camera = np.asarray(points_camera, dtype=np.float64)
        z = points_camera[..., 2:3]
        if np.any(z <= 0):
            raise ValueError("every point must be in front of the camera (z > 0) to be projected")
        return points_camera[..., :2] / z * np.asarray(self.f) + np.asarray(self.c)


def look_at(target: Sequence[float], azimuth_deg: float, height: float, distance: float,
            up: Sequence[float] = (0.0, 0.0, 1.0), **intrinsics) -> Camera:
    """A camera `distance` away from `target` horizontally at azimuth `azimuth_deg` (around the world's `up`
    axis, z by default), `height` above it, looking at it with no roll."""
    if not distance > 0:
        raise ValueError(f"distance must be > 0, got {distance}")
    target, up = np.asarray(target, dtype=np.float64), np.asarray(up, dtype=np.float64)
    for name, point in (("target", target), ("up", up)):
        if point.shape != (3,) or not np.isfinite(point).all():
            raise ValueError(f"{name} must be one finite 3D point (shape (3,)), got shape {point.shape}")
    if not np.linalg.norm(up) > 0:
        raise ValueError("up must be a non-zero direction")
    up = up / np.linalg.norm(up)
    # two horizontal axes orthogonal to up
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = helper - up * (helper @ up)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    a = math.radians(azimuth_deg)
    position = target + distance * (math.cos(a) * e1 + math.sin(a) * e2) + height * up
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return Camera(R=np.stack([right, down, forward]), position=position, **intrinsics)


def virtual_cameras(target: Sequence[float], azimuths: Iterable[float] = (0, 90, 180, 270),
                    heights: Iterable[float] = (0.0,), distances: Iterable[float] = (4500.0,),
                    **intrinsics) -> list[Camera]:
    """Every combination of azimuth (degrees), height and distance (world units, mm by default)."""
    return [look_at(target, a, h, d, **intrinsics) for a in azimuths for h in heights for d in distances]


def normalize_screen(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """VideoPose3D's normalisation: X / w * 2 - [1, h / w] (x in [-1, 1], aspect ratio kept)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.shape[-1] != 2:
        raise ValueError(f"pixels must have shape (..., 2), got {pixels.shape}")
    for name, value in (("width", width), ("height", height)):
        if not is_real(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
    return pixels / width * 2 - np.array([1.0, height / width])
