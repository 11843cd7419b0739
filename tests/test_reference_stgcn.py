"""Graph (SPEC §2) and the reference ST-GCN block (SPEC §3) against hand-written loops and ST-GCN's equations."""
import itertools

import pytest
import torch

from ugcn_fast import Graph
from ugcn_fast.graph import H36M_PARENTS, LAYOUTS
from ugcn_fast.reference import STGCNBlock


# ---- graph -----------------------------------------------------------------------------------------------------
def test_h36m_spatial_partition_matches_stgcn():
    A = Graph(layout="h36m", strategy="spatial", center=0).A
    assert A.shape == (3, 17, 17) and A.dtype == torch.float32
    assert [int(torch.count_nonzero(a)) for a in A] == [17, 26, 6]
    # subset 0 holds the self-loops; centrifugal entries are the three hip-centred bones and their children
    assert torch.equal(torch.nonzero(A[0])[:, 0], torch.nonzero(A[0])[:, 1])
    further = {tuple(ij) for ij in torch.nonzero(A[2]).tolist()}
    assert further == {(0, 1), (0, 4), (0, 7), (1, 2), (4, 5), (7, 8)}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("strategy", ["uniform", "distance", "spatial"])
def test_every_column_is_normalised(layout, strategy):
    A = Graph(layout=layout, strategy=strategy).A
    torch.testing.assert_close(A.sum(dim=(0, 1)), torch.ones(A.shape[-1]))
    assert A.shape[0] == {"uniform": 1, "distance": 2, "spatial": 3}[strategy]


def test_column_normalisation_by_degree():
    A = Graph(layout="h36m", strategy="uniform").A[0]
    degree = torch.tensor([1 + sum(1 for j, p in enumerate(H36M_PARENTS) if p == i) + (H36M_PARENTS[i] >= 0)
                           for i in range(17)], dtype=torch.float32)
    torch.testing.assert_close(A, (A > 0).float() / degree[None, :])


def test_custom_edges_reproduce_a_layout_and_other_skeletons_work():
    custom = Graph(num_nodes=17, edges=LAYOUTS["h36m"]["edges"], center=0)
    assert torch.equal(custom.A, Graph(layout="h36m").A)
    chain = Graph(num_nodes=5, edges=[(0, 1), (1, 2), (2, 3), (3, 4)], center=2)
    assert chain.A.shape == (3, 5, 5)
    assert Graph(layout="ntu").A.shape == (3, 25, 25)


@pytest.mark.parametrize("kwargs, error", [
    (dict(layout="openpose"), "layout"), (dict(strategy="random"), "strategy"), (dict(center=17), "center"),
    (dict(num_nodes=3), "num_nodes and edges"), (dict(num_nodes=3, edges=[(0, 3)]), "edges"),
    (dict(max_hop=0), "max_hop"),
])
def test_bad_graph_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        Graph(**kwargs)


# ---- block against hand-written loops ----------------------------------------------------------------------------
def _loop_block(block: STGCNBlock, x: torch.Tensor) -> torch.Tensor:
    """SPEC §3 written as loops over every index, BatchNorm with running statistics (eval mode)."""
    A = block.A.double()
    K, V = A.shape[0], A.shape[-1]
    N, C_in, T, _ = x.shape
    C, kt, s = block.out_channels, block.kernel_size, block.stride
    p = (kt - 1) // 2
    W1, b1 = block.gcn.conv.weight[:, :, 0, 0].double(), block.gcn.conv.bias.double()

    def bn(module, value, c):
        return ((value - module.running_mean[c]) / torch.sqrt(module.running_var[c] + module.eps)
                * module.weight[c] + module.bias[c]).item()

    g = torch.zeros(N, C, T, V, dtype=torch.float64)
    for n, c, t, w in itertools.product(range(N), range(C), range(T), range(V)):
        total = 0.0
        for k, v in itertools.product(range(K), range(V)):
            conv = b1[k * C + c] + sum(W1[k * C + c, ci] * x[n, ci, t, v] for ci in range(C_in))
            total += conv * A[k, v, w]
        g[n, c, t, w] = max(bn(block.tcn[0], total, c), 0.0)
    T_out = (T + 2 * p - kt) // s + 1
    W2, b2 = block.tcn[2].weight[:, :, :, 0].double(), block.tcn[2].bias.double()
    out = torch.zeros(N, C, T_out, V, dtype=torch.float64)
    for n, c, to, v in itertools.product(range(N), range(C), range(T_out), range(V)):
        z = b2[c].item()
        for c2, dt in itertools.product(range(C), range(kt)):
            t = to * s + dt - p
            if 0 <= t < T:
                z += W2[c, c2, dt] * g[n, c2, t, v]
        z = bn(block.tcn[3], z, c)
        if block.residual_kind == "identity":
            z += x[n, c, to, v].item()
        elif block.residual_kind == "conv":
            W3, b3 = block.residual[0].weight[:, :, 0, 0].double(), block.residual[0].bias.double()
            r = b3[c] + sum(W3[c, ci] * x[n, ci, to * s, v] for ci in range(C_in))
            z += bn(block.residual[1], r, c)
        out[n, c, to, v] = max(z, 0.0)
    return out


def _randomise(block: STGCNBlock, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in block.state_dict().items():
            if tensor.dtype.is_floating_point:
                values = torch.rand(tensor.shape, generator=g, dtype=tensor.dtype)
                tensor.copy_(values + 0.5 if "running_var" in name else values - 0.5)
    return block


@pytest.mark.parametrize("C_in, C_out, stride, residual, T", [
    (2, 3, 1, True, 5),   # conv residual (C_in != C_out)
    (3, 3, 1, True, 5),   # identity residual
    (3, 3, 2, True, 7),   # conv residual for the stride, T not divisible by it
    (2, 3, 2, False, 6),  # no residual
])
def test_block_matches_hand_written_loops(C_in, C_out, stride, residual, T):
    A = Graph(num_nodes=4, edges=[(0, 1), (1, 2), (1, 3)], center=1).A
    block = _randomise(STGCNBlock(C_in, C_out, A, kernel_size=3, stride=stride, residual=residual)).double().eval()
    x = torch.randn(2, C_in, T, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(block(x), _loop_block(block, x))


@pytest.mark.parametrize("T, stride, kernel_size", [(96, 1, 5), (96, 2, 5), (95, 2, 5), (7, 2, 3), (1, 1, 5)])
def test_output_length(T, stride, kernel_size):
    block = STGCNBlock(4, 8, Graph().A, kernel_size=kernel_size, stride=stride)
    p = (kernel_size - 1) // 2
    assert block(torch.randn(1, 4, T, 17)).shape == (1, 8, (T + 2 * p - kernel_size) // stride + 1, 17)


def test_parameter_names_of_the_common_stgcn_block():
    block = STGCNBlock(64, 128, Graph().A, kernel_size=5, stride=2, dropout=0.5)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes["gcn.conv.weight"] == (3 * 128, 64, 1, 1) and shapes["tcn.2.weight"] == (128, 128, 5, 1)
    assert {k.rsplit(".", 1)[0] for k in shapes} == {"gcn.conv", "tcn.0", "tcn.2", "tcn.3", "residual.0",
                                                     "residual.1"}
    assert "A" not in shapes  # a non-persistent buffer
    identity = STGCNBlock(64, 64, Graph().A)
    assert not any(k.startswith("residual") for k in identity.state_dict())


def test_training_mode_uses_batch_statistics_and_updates_running_ones():
    block = STGCNBlock(3, 4, Graph().A, dropout=0.0)
    x = torch.randn(4, 3, 12, 17)
    block.train()
    y = block(x)
    assert block.tcn[0].num_batches_tracked.item() == 1
    assert not torch.equal(block.tcn[0].running_mean, torch.zeros(4))
    block.eval()
    assert not torch.equal(block(x), y)


@pytest.mark.parametrize("x, error, match", [
    (torch.randn(2, 3, 12), ValueError, "shape"),
    (torch.randn(2, 3, 12, 16), ValueError, "V = 16"),
    (torch.randn(2, 5, 12, 17), ValueError, "channels"),
    (torch.ones(2, 3, 12, 17, dtype=torch.int64), TypeError, "floating"),
    (torch.randn(2, 3, 12, 17, device="meta"), ValueError, "device"),
])
def test_bad_block_input(x, error, match):
    block = STGCNBlock(3, 4, Graph().A)
    with pytest.raises(error, match=match):
        block(x)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kernel_size=4), ValueError, "odd"), (dict(stride=0), ValueError, "stride"),
    (dict(dropout=1.0), ValueError, "dropout"), (dict(A=torch.ones(17, 17)), ValueError, "A must"),
    (dict(residual="conv"), TypeError, "residual"),
])
def test_bad_block_configuration(kwargs, error, match):
    args = dict(in_channels=3, out_channels=4, A=Graph().A)
    with pytest.raises(error, match=match):
        STGCNBlock(**{**args, **kwargs})
