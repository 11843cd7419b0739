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


# ---- non-finite values ----------------------------------------------------------------------------------------------
NON_FINITE_CASES = ["nan", "inf", "-inf", "nan dout"]
NON_FINITE_CONFIGS = [(4, 4, 1, True), (3, 6, 2, True), (4, 2, 1, False)]  # (C_in, C_out, stride, residual)


def dense_graph(K: int = 2, V: int = 5) -> torch.Tensor:
    """Every joint connected in every subset (positive weights): the fused kernels skip the adjacency's zeros, where
    the reference's dense product makes 0 * inf = NaN (a documented difference), so the comparison of non-finite
    values needs a graph without them."""
    return torch.rand(K, V, V, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.1


def non_finite_step_inputs(reference, case: str, N: int, C_in: int, T: int, V: int, dtype, device=None):
    """(x, dout) for one training step: x with one NaN / +inf / -inf element, or ("nan dout") a finite x and dout
    NaN at an element where the reference's output is 0 (ReLU's backward stops even a NaN gradient there)."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(N, C_in, T, V, generator=g, dtype=torch.float64)
    if case != "nan dout":
        x[N - 1, C_in // 2, T // 2, 1] = float(case)
    x = x.to(device=device, dtype=dtype)
    reference.train()
    with torch.no_grad():
        out = reference(x)
    dout = torch.randn(out.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    if case == "nan dout":
        zeros = (out == 0).nonzero()
        assert len(zeros) > 0, "the ReLU has no zero output to put a NaN gradient on"
        dout[tuple(zeros[len(zeros) // 2])] = float("nan")
    return x, dout


def assert_non_finite_like_reference(reference, fused, x, dout) -> None:
    """One training step and then an eval forward of both blocks (the same state, dropout 0): every output,
    gradient and running statistic is NaN, +inf and -inf exactly where the reference's is. What this pins: ReLU's
    backward as autograd's (the gradient passes at a NaN activation; 0 at a non-positive one, even for a NaN
    gradient) and statistics that sum +-inf to +-inf (not to NaN)."""
    results = []
    for block in (reference, fused):
        block.train()
        x_in = x.clone().requires_grad_()
        out = block(x_in)
        out.backward(dout)
        values = {"output": out.detach(), "input gradient": x_in.grad}
        values.update({f"{name} gradient": p.grad for name, p in block.named_parameters()})
        values.update({name: b.clone() for name, b in block.named_buffers() if b.is_floating_point()})
        block.eval()
        with torch.no_grad():
            values["eval output"] = block(x)
        results.append(values)
    want, got = results
    assert want.keys() == got.keys()
    for name in want:
        for kind in (torch.isnan, torch.isposinf, torch.isneginf):
            assert torch.equal(kind(got[name]), kind(want[name])), f"{name}: {kind.__name__} differs"
