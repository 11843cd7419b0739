"""torch.library.opcheck of every pass of the fused ST-GCN block (`ugcn_fast::stgcn_*`): schema, fake
(meta) implementation against the real outputs' shapes, dtypes and strides, and AOT dispatch, for the plain-PyTorch
contract and the native CPU kernels. (The block's autograd is an autograd.Function around these ops, tested in
test_stgcn_fused.py; the ops themselves carry no autograd.)"""
import re

import pytest
import torch

import ugcn_fast
from ugcn_fast import Graph
from ugcn_fast.backends import torch_stgcn
from ugcn_fast.ops import stgcn_pieces as pieces

BACKENDS = ["torch"] + (["cpu"] if "cpu" in ugcn_fast.available_backends() else [])
T, N, V, C, K, KT, STRIDE = 5, 2, 5, 4, 3, 5, 2
PAD, T_OUT, TQ = pieces.phase_geometry(T, KT, STRIDE)
NV = N * V


def _r(*shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _stats(seed):
    return _r(C, seed=seed).abs() + 0.5


def _cases(backend):
    A = Graph(num_nodes=V, edges=[(0, 1), (1, 2), (2, 3), (3, 4)], center=2).A.double()
    z = _r(T, NV, C, seed=1)
    scale, shift_map = _stats(2), _r(V, C, seed=3)
    u, dout = _r(T_OUT * NV, C, seed=4), _r(T_OUT * NV, C, seed=5)
    out = torch.relu(_r(T_OUT * NV, C, seed=6))
    mean, invstd, weight = _r(C, seed=7), _stats(8), _stats(9)
    seed = torch.tensor(1234, dtype=torch.int64)
    h_ph = torch.relu(_r(STRIDE, TQ, NV, C, seed=10))
    h_zero_padded = torch_stgcn.bn_relu_phases(z, scale, shift_map, V, STRIDE, PAD, TQ)
    cases = {
        "graph_aggregate": (pieces.graph_aggregate, (backend, _r(T * N, V, K * C, seed=12), A, True, False,
                                                     shift_map)),
        "graph_aggregate_expand": (pieces.graph_aggregate, (backend, _r(T * N, V, C, seed=13), A, False, True, None)),
        "channel_stats": (pieces.channel_stats, (backend, u)),
        "time_major": (pieces.time_major, (backend, _r(N, C, T, V, seed=24))),
        "bias_map_stats": (pieces.bias_map_stats, (backend, z.view(T * N, V, C), shift_map)),
        "bn_relu_phases": (pieces.bn_relu_phases, (backend, z, scale, shift_map, V, STRIDE, PAD, TQ)),
        "block_output": (pieces.block_output, (backend, u, scale, mean, _r(T_OUT * NV, C, seed=14).sign() + 1,
                                               u.clone(), invstd, weight)),
        "block_output_backward": (pieces._block_output_backward, (backend, dout, out, u, None, mean, invstd, weight,
                                                                  "conv", u.clone(), mean, invstd, weight)),
        "bn_relu_phases_backward": (pieces.bn_relu_phases_backward, (backend, h_ph.clone(), h_ph, z, mean, invstd,
                                                                     weight, V, STRIDE, PAD)),
        "gcn_forward": (pieces.gcn_forward, (backend, _r(T * N, V, 3, seed=15), A, _r(K * C, 3, seed=16),
                                             _r(K * C, seed=17))),
        "gcn_relu_phases": (pieces.gcn_relu_phases, (backend, _r(T, N, V, 3, seed=21), A, _r(K * C, 3, seed=22),
                                                     _r(K * C, seed=23), shift_map, STRIDE, PAD, TQ)),
        "conv_frames": (pieces.conv_frames, (backend, h_ph.view(STRIDE * TQ, NV, C), _r(KT, C, C, seed=18),
                                             _r(C, seed=19), [(j % STRIDE) * TQ + j // STRIDE for j in range(KT)], 1,
                                             T_OUT, u, True, True)),
        "conv_frames_residual": (pieces.conv_frames, (backend, z, _r(1, C, 3, seed=20), None, [0], STRIDE, T_OUT,
                                                      None, False, False)),
        # the taps' spans over a phase buffer whose padding is zero, as the block passes them
        "conv_frames_spans": (pieces.conv_frames, (backend, h_zero_padded.view(STRIDE * TQ, NV, C),
                                                   _r(KT, C, C, seed=18), _r(C, seed=19),
                                                   [(j % STRIDE) * TQ + j // STRIDE for j in range(KT)], 1, T_OUT, u,
                                                   True, True, pieces.tap_spans(T, KT, STRIDE))),
        # the eval block's convolution residual as conv_frames' pointwise term
        "conv_frames_term": (pieces.conv_frames, (backend, h_zero_padded.view(STRIDE * TQ, NV, C),
                                                  _r(KT, C, C, seed=18), _r(C, seed=19),
                                                  [(j % STRIDE) * TQ + j // STRIDE for j in range(KT)], 1, T_OUT, None,
                                                  True, False, pieces.tap_spans(T, KT, STRIDE), _r(T, NV, 3, seed=25),
                                                  _r(3, C, seed=26), STRIDE)),
    }
    if backend in pieces.HASHED_DROPOUT:
        cases["block_output_hashed"] = (pieces.block_output_hashed, (backend, u, scale, mean, seed, 0.5, None, None,
                                                                     None))
        cases["block_output_backward_hashed"] = (
            pieces._block_output_backward_hashed, (backend, dout, out, u, seed, 0.5, mean, invstd, weight, "identity",
                                                   None, None, None, None))
    return cases


def _case_or_skip(backend: str, name: str):
    """(piece, args) of case `name` on `backend`; skips where the backend does not implement that piece."""
    cases = _cases(backend)
    piece_name = re.sub(r"_(expand|residual|spans|term)$", "", name)  # a variant's suffix
    if name not in cases or not hasattr(pieces._impl(backend), piece_name):
        pytest.skip(f"{backend} has no {name}")
    return cases[name]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(_cases("cpu")))
def test_opcheck(backend, name):
    piece, args = _case_or_skip(backend, name)
    torch.library.opcheck(piece.op, args)  # the torch.library op behind the eager fast path


def _flat(x):
    return [t for item in x for t in _flat(item)] if isinstance(x, (list, tuple)) else [x]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(_cases("cpu")))
def test_eager_fast_path_equals_the_op(backend, name):
    """Eager calls run the op's Python body directly (pieces._op): the same results as through the op."""
    fn, args = _case_or_skip(backend, name)
    with torch.no_grad():
        assert not pieces._needs_op(args)
        fast, via_op = _flat(fn(*args)), _flat(fn.op(*args))
    assert len(fast) == len(via_op)
    for a, b in zip(fast, via_op):
        assert torch.equal(a, b), name


def test_calls_that_autograd_or_tracing_need_take_the_op():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    assert pieces._needs_op(("torch", x))  # grad mode and a tensor that requires grad: the registered backward
    with torch.no_grad():
        assert not pieces._needs_op(("torch", x))
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        assert pieces._needs_op(("torch", mode.from_tensor(torch.randn(2))))
