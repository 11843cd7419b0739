"""The CPU launchers of the block's memory-bound pieces (ugcn_fast/backends/cpu_stgcn.py): they check their
arguments as the CUDA launchers do (tests/_piece_bad_args.py, shared with test_stgcn_cuda.py), and a tensor of any
layout gives the result its contiguous copy gives (the pieces are torch.library ops anyone can call, and a
saved-tensor hook can hand the block's backward tensors of any layout: the native passes read raw pointers)."""
import pytest
import torch

from ugcn_fast import _native
from ugcn_fast.backends import cpu_stgcn
from ugcn_fast.backends.torch_stgcn import phase_geometry

from _piece_bad_args import BAD_PIECE_ARGUMENTS

pytestmark = pytest.mark.skipif(_native.cpu_module is None, reason="the native CPU module is not built")


@pytest.mark.parametrize("call, error, match", BAD_PIECE_ARGUMENTS)
def test_cpu_launchers_reject_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(cpu_stgcn)


@pytest.mark.parametrize("call, error, match", [
    (lambda: cpu_stgcn.channel_stats(torch.zeros(4, 3, dtype=torch.float16)), TypeError, "float16"),
    (lambda: cpu_stgcn.block_output(torch.zeros(4, 3), torch.zeros(3, dtype=torch.float64), torch.zeros(3), None,
                                    None, None, None), TypeError, "scale2"),
    (lambda: cpu_stgcn.bn_relu_phases_backward(torch.zeros(1, 4, 10, 3, dtype=torch.float64),
                                               torch.zeros(1, 4, 10, 3), torch.zeros(4, 10, 3),
                                               *[torch.zeros(3)] * 3, 5, 1, 0), TypeError, "dh_ph"),
    (lambda: cpu_stgcn.channel_stats(torch.zeros(4, 3, device="meta")), ValueError, "CPU tensors"),
])
def test_cpu_launchers_reject_other_dtypes_and_devices(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _strided(t):
    """The same values in a non-contiguous layout (the first and last dimensions' strides swapped)."""
    return None if t is None else t.transpose(0, -1).contiguous().transpose(0, -1)


def _pieces(dtype):
    """(name, call taking a tensor transform) of every memory-bound piece on small random operands."""
    g = torch.Generator().manual_seed(0)

    def r(*shape, positive=False):
        t = torch.randn(*shape, generator=g, dtype=torch.float64)
        return (t.abs() + 0.5 if positive else t).to(dtype)

    T, N, V, C, K, stride = 6, 2, 5, 3, 3, 2
    pad, T_out, Tq = phase_geometry(T, 5, stride)
    R = T_out * N * V
    z, h_ph = r(T, N * V, C), r(stride, Tq, N * V, C)
    A = torch.rand(K, V, V, generator=g, dtype=torch.float64)
    u, dout, out = r(R, C), r(R, C), r(R, C).relu()
    mask, res, r0 = (r(R, C) > 0).to(dtype) * 2, r(R, C), r(R, C)
    vec = [r(C, positive=True) for _ in range(6)]
    stats = [v.double() for v in vec]
    wide, x, per_joint, dh_ph = r(T * N, V, K * C), r(T * N, V, C), r(V, C), r(stride, Tq, N * V, C)
    return [
        ("graph_aggregate contract", lambda f: cpu_stgcn.graph_aggregate(f(wide), A, True, True, f(per_joint))),
        ("graph_aggregate expand", lambda f: cpu_stgcn.graph_aggregate(f(x), A, False, False, None)),
        ("channel_stats", lambda f: cpu_stgcn.channel_stats(f(z))),
        ("bias_map_stats", lambda f: cpu_stgcn.bias_map_stats(f(x), f(per_joint))),
        ("bn_relu_phases", lambda f: cpu_stgcn.bn_relu_phases(f(z), vec[0], f(per_joint), V, stride, pad, Tq)),
        ("block_output", lambda f: cpu_stgcn.block_output(f(u), vec[0], vec[1], f(mask), f(res), vec[2], vec[3])),
        ("block_output_backward", lambda f: cpu_stgcn.block_output_backward(
            f(dout), f(out), f(u), f(mask), stats[0], stats[1], vec[2], "conv", f(r0), stats[3], stats[4], vec[5])),
        ("bn_relu_phases_backward", lambda f: cpu_stgcn.bn_relu_phases_backward(
            f(dh_ph), f(h_ph), f(z), stats[0], stats[1], vec[2], V, stride, pad)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_pieces_read_any_layout(dtype):
    for name, call in _pieces(dtype):
        expected, got = call(lambda t: t), call(_strided)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = got if isinstance(got, tuple) else (got,)
        for e, g in zip(expected, got, strict=True):
            assert (e is None) == (g is None), name
            assert e is None or torch.equal(e, g), name
