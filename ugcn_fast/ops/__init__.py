"""torch.library ops: the fused kernels as graph-safe, autograd-aware operators."""
