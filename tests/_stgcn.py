"""Test helpers for the fused ST-GCN block: the reference block fed the dropout mask the fused block draws."""
import torch

from ugcn_fast.backends.torch_stgcn import phase_geometry
from ugcn_fast.fused_stgcn_block import dropout_masks
from ugcn_fast.ops.stgcn_block import draw_dropout_seed


class FixedMask(torch.nn.Module):
    """Dropout with given multipliers, in place of the reference block's nn.Dropout (identity in eval)."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask if self.training else x


def output_shape(block, x):
    N, _, T, V = x.shape
    _, T_out, _ = phase_geometry(T, block.kernel_size, block.stride)
    return (N, block.out_channels, T_out, V)


def give_reference_the_fused_mask(reference, fused, x, seed: int) -> None:
    """Before `torch.manual_seed(seed); fused(x)`: makes `reference` apply the dropout mask that call will draw
    (the fused block's first draw after seeding is its dropout seed)."""
    p = fused.tcn[4].p
    if p > 0:
        torch.manual_seed(seed)
        mask = dropout_masks(draw_dropout_seed(), p, output_shape(fused, x), x.dtype, x.device)
        reference.tcn[4] = FixedMask(mask)
