"""Triton kernels of ugcn_fast, installed as the subpackage `ugcn_fast.kernels` (see ugcn_fast/_kernels_mount.py)."""
