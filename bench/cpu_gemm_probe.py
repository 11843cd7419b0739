"""Times the native CPU channel-mixing kernels (csrc/cpu/stgcn_gemm.cpp) against torch's GEMMs around the native
passes (the route of the block's backends without their own channel mixing, ugcn_fast/ops/stgcn_block.py
eval_forward), on every ST-GCN block shape of UGCN in eval (bench/ugcn_cases.UGCN_BLOCKS, N = 64, V = 17,
kernel 5). Not a test.

- tcn: the temporal convolution with its input pass. torch route: bn_relu_phases + one torch addmm per tap
  accumulating onto the residual + ReLU. Native: bn_relu_phases + conv_frames (5 taps read in place, bias +
  residual + ReLU in the epilogue). (Before the native kernels, the CPU wrote a kt-times larger im2col matrix
  for one wide GEMM; against that route they measured 1.32x (tcn) and 1.20x (gcn) in total.)
- gcn: the graph convolution. torch route: C_in < C_out: aggregate x (graph_aggregate, expand) + torch GEMM;
  else torch GEMM + graph_aggregate (contract). Native: gcn_forward
  (which also adds the bias and returns the channel statistics); both of its orders are timed, "auto" is the one
  it picks.

Medians of time.perf_counter over repeats, milliseconds; ratio = torch route / native (> 1: native faster).
Run: PYTHONPATH=/work/main python bench/cpu_gemm_probe.py [--repeats 15] [--threads 2] [--dtype float32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ugcn_cases import UGCN_BLOCKS  # noqa: E402

from ugcn_fast import Graph  # noqa: E402
from ugcn_fast.backends import cpu_stgcn  # noqa: E402
from ugcn_fast.backends.torch_stgcn import phase_geometry  # noqa: E402

V, KT, N = 17, 5, 64


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, page faults)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def tcn_case(c_in, c_out, stride, T, residual, dtype, repeats):
    pad, T_out, Tq = phase_geometry(T, KT, stride)
    rows = N * V
    g = torch.Generator().manual_seed(0)
    z = torch.randn(T, rows, c_out, generator=g, dtype=dtype)
    ones = torch.ones(c_out, dtype=dtype)
    shift_map = torch.randn(V, c_out, generator=g, dtype=dtype) * 0.1
    w = torch.randn(c_out, c_out, KT, generator=g, dtype=dtype) / (KT * c_out) ** 0.5  # tcn.2.weight (C_out, C, kt)
    w_taps = w.permute(2, 1, 0)  # (kt, C, C_out), non-contiguous as the block passes it
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    add = torch.randn(T_out * rows, c_out, generator=g, dtype=dtype) if residual else None
    offsets = [(j % stride) * Tq + j // stride for j in range(KT)]

    def current():
        h = cpu_stgcn.bn_relu_phases(z, ones, shift_map, V, stride, pad, Tq)
        u = add.clone() if add is not None else bias.expand(T_out * rows, c_out).clone()
        for j in range(KT):
            u.addmm_(h[j % stride, j // stride: j // stride + T_out].reshape(-1, c_out), w_taps[j])
        return torch.relu_(u)

    def native():
        h_ph = cpu_stgcn.bn_relu_phases(z, ones, shift_map, V, stride, pad, Tq)
        return cpu_stgcn.conv_frames(h_ph.view(stride * Tq, rows, c_out), w_taps, bias, offsets, 1, T_out, add, True,
                                     False)[0]

    def native_gemm_only():
        return cpu_stgcn.conv_frames(h_ph.view(stride * Tq, rows, c_out), w_taps, bias, offsets, 1, T_out, add, True,
                                     False)[0]

    h_ph = cpu_stgcn.bn_relu_phases(z, ones, shift_map, V, stride, pad, Tq)
    cur, nat, gemm = (median_ms(f, repeats) for f in (current, native, native_gemm_only))
    gflops = 2.0 * T_out * rows * KT * c_out * c_out / (gemm * 1e-3) / 1e9
    return cur, nat, gemm, gflops


def gcn_case(c_in, c_out, T, A, dtype, repeats):
    K = A.shape[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T * N, V, c_in, generator=g, dtype=dtype)
    A = A.to(dtype)
    w = torch.randn(K * c_out, c_in, generator=g, dtype=dtype) / c_in ** 0.5  # (K*C_out, C_in)
    b = torch.randn(K * c_out, generator=g, dtype=dtype)
    w_sub = w.view(K, c_out, c_in).permute(0, 2, 1).reshape(K * c_in, c_out).contiguous()

    def current():
        if c_in < c_out:
            xa = cpu_stgcn.graph_aggregate(x, A, False, False, None)
            return xa.view(-1, K * c_in) @ w_sub
        y = x.view(-1, c_in) @ w.t()
        return cpu_stgcn.graph_aggregate(y.view(T * N, V, K * c_out), A, True, False, None)

    times = [median_ms(current, repeats)]
    for order in ("auto", "aggregate_first", "gemm_first"):
        times.append(median_ms(lambda: cpu_stgcn.gcn_forward_ordered(x, A, w, b, order), repeats))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--blocks", default=None, help="comma-separated block names (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    A = Graph(layout="h36m").A
    blocks = [b for b in UGCN_BLOCKS if args.blocks is None or b[0] in args.blocks.split(",")]
    print(f"N={N} V={V} kernel={KT} {args.dtype} threads={torch.get_num_threads()} repeats={args.repeats}; "
          "ms medians; ratio = torch route / native")
    head = (f"{'block':6} {'Cin':>4} {'Cout':>4} {'s':>1} {'T':>3} | {'tcn cur':>8} {'tcn nat':>8} {'ratio':>5} "
            f"{'conv':>7} {'GF/s':>5} | {'gcn cur':>8} {'gcn nat':>8} {'ratio':>5} {'aggr1st':>8} {'gemm1st':>8}")
    print(head)
    print("-" * len(head))
    totals = [0.0] * 4
    for name, c_in, c_out, stride, T, residual in blocks:
        cur, nat, gemm, gf = tcn_case(c_in, c_out, stride, T, residual, dtype, args.repeats)
        gcur, gauto, gagg, ggemm = gcn_case(c_in, c_out, T, A, dtype, args.repeats)
        totals = [a + b for a, b in zip(totals, (cur, nat, gcur, gauto))]
        print(f"{name:6} {c_in:4d} {c_out:4d} {stride:1d} {T:3d} | {cur:8.2f} {nat:8.2f} {cur / nat:5.2f} "
              f"{gemm:7.2f} {gf:5.0f} | {gcur:8.2f} {gauto:8.2f} {gcur / gauto:5.2f} {gagg:8.2f} {ggemm:8.2f}",
              flush=True)
    print("-" * len(head))
    print(f"{'total':22} | {totals[0]:8.2f} {totals[1]:8.2f} {totals[0] / totals[1]:5.2f} {'':13} | "
          f"{totals[2]:8.2f} {totals[3]:8.2f} {totals[2] / totals[3]:5.2f}")
    print("tcn: cur = bn_relu_phases + one addmm per tap + relu; native = bn_relu_phases + conv_frames (conv: "
          "conv_frames alone, GF/s its rate). gcn: cur = torch GEMM + graph_aggregate; native = gcn_forward (auto "
          "order; both orders timed)")


if __name__ == "__main__":
    main()
