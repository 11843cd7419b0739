"""ugcn_fast: fused kernels for *Motion Guided 3D Pose Estimation from Videos* (Wang et al., ECCV 2020).

`motion_loss` / `FusedMotionLoss` / `UGCNLoss`: the paper's motion loss on fused CPU (C++/OpenMP), Triton and
CUDA kernels; `ugcn_fast.reference` holds the plain-PyTorch definitions; `ugcn_fast.backends` says which backend
serves which device and dtype.
"""
from . import _kernels_mount  # noqa: F401  (makes ugcn_fast.kernels importable from a source checkout too)
from . import metrics, reference
from .backends import available_backends
from .fused_stgcn_block import FusedSTGCNBlock, freeze, frozen, unfreeze
from .graph import Graph
from .losses import FusedMotionLoss, UGCNLoss, position_loss
from .model import UGCN
from .ops.motion_loss import motion_loss

__version__ = "0.1.0"

__all__ = ["FusedMotionLoss", "FusedSTGCNBlock", "Graph", "UGCN", "UGCNLoss", "available_backends", "freeze", "frozen",
           "metrics", "motion_loss", "position_loss", "reference", "unfreeze"]
