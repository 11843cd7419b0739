"""Pure-PyTorch references that read like the paper: the oracle of every test and the benchmark's eager row."""
from .motion_loss import encode, motion_loss, normalisation
from .stgcn_block import GraphConvolution, STGCNBlock

__all__ = ["GraphConvolution", "STGCNBlock", "encode", "motion_loss", "normalisation"]
