"""Test helpers for the fused ST-GCN block: graphs, block configurations and tolerances, a reference block and a fused
one with the same state, and the reference block fed the dropout mask the fused block draws."""
import torch

from ugcn_fast import FusedSTGCNBlock, Graph
from ugcn_fast.backends.torch_stgcn import phase_geometry
from ugcn_fast.fused_stgcn_block import dropout_masks
from ugcn_fast.ops.stgcn_block import draw_dropout_seed
from ugcn_fast.reference import STGCNBlock

A17 = Graph(layout="h36m").A
A5 = Graph(num_nodes=5, edges=[(0, 1), (1, 2), (2, 3), (3, 4)], center=2).A  # a chain: V != 17, other centre
A1 = Graph(layout="coco", strategy="uniform").A  # K = 1, V = 17 (COCO-17)
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-4)}

# (C_in, C_out, stride, residual, T, A): every configuration UGCN uses, plus awkward ones
CONFIGS = [
    (2, 16, 1, False, 16, A17),    # UGCN's first block: no residual, C_in < C_out (graph-first)
    (16, 32, 2, True, 16, A17),    # stride 2, conv residual
    (8, 8, 1, True, 9, A17),       # identity residual, C_in == C_out (GEMM-first)
    (12, 6, 1, True, 7, A5),       # C_in > C_out, conv residual at stride 1, V = 5
    (6, 6, 2, True, 7, A5),        # T not divisible by the stride, conv residual because of the stride
    (3, 5, 2, False, 5, A1),       # K = 1, stride 2, no residual
    (4, 4, 1, True, 1, A17),       # T = 1
]


def config_id(c) -> str:
    return f"{c[0]}-{c[1]}-s{c[2]}-res{int(c[3])}-T{c[4]}-V{c[5].shape[-1]}-K{c[5].shape[0]}"


def reference_and_fused(c_in, c_out, stride, residual, A, dropout, backend, dtype, kernel_size=5):
    ref = STGCNBlock(c_in, c_out, A, kernel_size, stride, dropout, residual).to(dtype)
    for m in ref.modules():  # non-trivial BatchNorm affine parameters and running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    fused = FusedSTGCNBlock(c_in, c_out, A, kernel_size, stride, dropout, residual, backend=backend).to(dtype)
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused


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
