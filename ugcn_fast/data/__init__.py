"""Data for 2D-to-3D lifting: cameras and projection, motion-capture and Human3.6M sequences, windows, loaders."""
from .keypoints import coco_to_h36m, fill_missing
from .camera import H36M_INTRINSICS, Camera, look_at, normalize_screen, virtual_cameras
from .mocap import load_mocap, lifting_pair
from .procedural import procedural_motion
from .windows import WindowDataset, flip_pose
from .h36m import ACTIONS as H36M_ACTIONS, H36MCamera, action_name, h36m_cameras, load_h36m, load_h36m_2d, load_h36m_3d
from .sources import LiftingSequence, load_sequences, mocap_split
from .loader import EpochLoader, make_loader, seed_worker

__all__ = ["Camera", "H36M_INTRINSICS", "lifting_pair", "load_mocap", "look_at", "normalize_screen",
           "procedural_motion", "virtual_cameras", "WindowDataset", "flip_pose", "coco_to_h36m", "fill_missing",
           "H36M_ACTIONS", "H36MCamera", "action_name", "h36m_cameras", "load_h36m", "load_h36m_2d", "load_h36m_3d",
           "LiftingSequence", "load_sequences", "mocap_split", "EpochLoader", "make_loader", "seed_worker"]
