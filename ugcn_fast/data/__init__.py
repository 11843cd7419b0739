"""Data for 2D-to-3D lifting: cameras and projection, motion-capture sequences."""
from .keypoints import coco_to_h36m, fill_missing
from .camera import H36M_INTRINSICS, Camera, look_at, normalize_screen, virtual_cameras
from .mocap import load_mocap, lifting_pair
from .procedural import procedural_motion
from .windows import WindowDataset, flip_pose

__all__ = ["Camera", "H36M_INTRINSICS", "lifting_pair", "load_mocap", "look_at", "normalize_screen",
           "procedural_motion", "virtual_cameras", "WindowDataset", "flip_pose", "coco_to_h36m", "fill_missing"]
