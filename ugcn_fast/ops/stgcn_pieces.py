"""The memory-bound passes of the fused ST-GCN block as torch.library ops (`ugcn_fast::stgcn_*`), so the block's
forward and backward trace under torch.compile without graph breaks. Each op takes the backend name first and
runs that backend's implementation (ugcn_fast.backends.<backend>_stgcn, all with the signatures of the plain
PyTorch contract in ugcn_fast.backends.torch_stgcn). Optional outputs come back as empty tensors (a custom op
cannot return None); `block_output_backward` below turns them back into None.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

import torch
from torch import Tensor

from ._eager import needs_registrations
from ..backends.torch_stgcn import phase_geometry, tap_spans  # noqa: F401  (re-exported for the orchestration)


@lru_cache(maxsize=None)
def _impl(backend: str):
    return importlib.import_module(f"ugcn_fast.backends.{backend}_stgcn")


# Where a backend's own kernels do the forward's channel mixing (gcn_forward, conv_frames), per mode; elsewhere
# torch's GEMMs run between the passes. CPU: the native register-blocked kernels beat MKL plus the pass that wrote
# an im2col matrix for it (the CPU's route before them) on every UGCN block shape: in eval 1.3x on the temporal
# and 1.2x on the graph convolutions (bench/cpu_gemm_probe.py), in training forward + backward 1.14x over UGCN's
# blocks, with the phase buffer saved for backward instead of the kt-times larger im2col matrix. Plain
# containers: torch.compile traces the lookups.
FUSED_GEMMS = {"triton": ("training", "eval"), "cpu": ("training", "eval")}


def fused_gemms(backend: str, training: bool) -> bool:
    return ("training" if training else "eval") in FUSED_GEMMS.get(backend, ())


# Backends whose output passes hash dropout's multipliers from the seed on the fly (no mask tensor); the others
# get the same multipliers materialised by torch_stgcn.dropout_multipliers.
HASHED_DROPOUT = ("cpu", "cuda")


# Backends with a native transpose of the block's input to its time-major layout (ugcn_fast.ops.stgcn_block
# .to_time_major); elsewhere torch's permuted copy.
NATIVE_TIME_MAJOR = ("cpu",)


# Backends whose launchers can write a result into a per-thread buffer reused from call to call (`scratch=` of the
# calls below; backends/_scratch.py): for results the caller drops before it returns, whose fresh allocation of a
# few MiB would cost its page faults on every call (UGCN's 14 eval blocks ran 1.13x faster without them).
SCRATCH_RESULTS = ("cpu",)


# Backends whose eval channel mixing takes weights folded and packed by one call of theirs (pack_eval_block,
# csrc/cpu/stgcn_gemm.h; ugcn_fast.ops.stgcn_block.eval_weights), which a frozen block keeps. Folding and packing are
# a fixed cost of every unfrozen call, which dominates a batch of one window.
PACKED_EVAL = ("cpu",)


def packed_eval(backend: str):
    """The backend module with pack_* and *_packed calls, or None (eager calls only: packed weights are opaque
    objects, not tensors, and pass through no op)."""
    return _impl(backend) if backend in PACKED_EVAL else None


def _needs_op(args) -> bool:
    """Whether a call must go through the op: traced code and tensor subclasses need its registrations, and a call
    autograd must see (grad mode on, a tensor argument that requires grad) its registered backward."""
    if needs_registrations(args):
        return True
    return torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)


def _op(name: str):
    """Registers the body as torch.library op "ugcn_fast::stgcn_<name>" and returns the call the orchestration
    uses: the op for traced code and autograd, the body itself otherwise (the same backend function, without the
    dispatcher's round trip: -1 % on UGCN's eval blocks, -2 % in training). `.op` is the op (fake kernels,
    autograd, opcheck). `scratch`: a slot name for a result the caller drops before it returns; a body call on a
    backend of SCRATCH_RESULTS writes it into that slot's reused buffer (the backend function of the same name
    takes it), any other call allocates it."""
    def register(body):
        op = torch.library.custom_op(f"ugcn_fast::stgcn_{name}", mutates_args=())(body)

        def call(*args, scratch: str | None = None):
            if _needs_op(args):
                return op(*args)
            if scratch is not None and args[0] in SCRATCH_RESULTS:
                return getattr(_impl(args[0]), name)(*args[1:], scratch=scratch)
            return body(*args)

        call.op = op
        call.__name__, call.__doc__ = body.__name__, body.__doc__
        return call
    return register


def _stats_like(x: Tensor, C: int) -> Tensor:
    return x.new_empty((C,), dtype=torch.float64)


@_op("graph_aggregate")
def graph_aggregate(backend: str, src: Tensor, A: Tensor, contract: bool, transpose: bool,
                    bias_map: Tensor | None) -> Tensor:
    return _impl(backend).graph_aggregate(src, A, contract, transpose, bias_map)


@graph_aggregate.op.register_fake
def _(backend, src, A, contract, transpose, bias_map):
    K = A.shape[0]
    G, V, C = src.shape
    return src.new_empty((G, V, C // K if contract else C * K))


@_op("channel_stats")
def channel_stats(backend: str, x: Tensor) -> tuple[Tensor, Tensor]:
    return _impl(backend).channel_stats(x)


@channel_stats.op.register_fake
def _(backend, x):
    return _stats_like(x, x.shape[-1]), _stats_like(x, x.shape[-1])


@_op("time_major")
def time_major(backend: str, x: Tensor) -> Tensor:
    return _impl(backend).time_major(x)


@time_major.op.register_fake
def _(backend, x):
    N, C, T, V = x.shape
    return x.new_empty((T, N, V, C))


def _time_major_backward(ctx, grad):
    return None, grad.permute(1, 3, 0, 2)


time_major.op.register_autograd(_time_major_backward)


@_op("bias_map_stats")
def bias_map_stats(backend: str, x: Tensor, bias_map: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return _impl(backend).bias_map_stats(x, bias_map)


@bias_map_stats.op.register_fake
def _(backend, x, bias_map):
    return torch.empty_like(x), _stats_like(x, x.shape[-1]), _stats_like(x, x.shape[-1])


@_op("bn_relu_phases")
def bn_relu_phases(backend: str, z: Tensor, scale: Tensor, shift_map: Tensor, V: int, stride: int, pad: int,
                   Tq: int) -> Tensor:
    return _impl(backend).bn_relu_phases(z, scale, shift_map, V, stride, pad, Tq)


@bn_relu_phases.op.register_fake
def _(backend, z, scale, shift_map, V, stride, pad, Tq):
    return z.new_empty((stride, Tq, z.shape[1], z.shape[2]))


@_op("block_output")
def block_output(backend: str, u: Tensor, scale2: Tensor, shift2: Tensor, mask: Tensor | None, res: Tensor | None,
                 scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    return _impl(backend).block_output(u, scale2, shift2, mask, res, scale3, shift3)


@block_output.op.register_fake
def _(backend, u, scale2, shift2, mask, res, scale3, shift3):
    return torch.empty_like(u)


@_op("block_output_hashed")
def block_output_hashed(backend: str, u: Tensor, scale2: Tensor, shift2: Tensor, seed: Tensor, p: float,
                        res: Tensor | None, scale3: Tensor | None, shift3: Tensor | None) -> Tensor:
    return _impl(backend).block_output_hashed(u, scale2, shift2, int(seed), p, res, scale3, shift3)


@block_output_hashed.op.register_fake
def _(backend, u, scale2, shift2, seed, p, res, scale3, shift3):
    return torch.empty_like(u)


def _with_empties(results, u: Tensor) -> list[Tensor]:
    empty = u.new_empty((0,))
    return [r if r is not None else empty.clone() for r in results]


def _fake_backward_results(u: Tensor, res_kind: str) -> list[Tensor]:
    C = u.shape[-1]
    stat, none = _stats_like(u, C), u.new_empty((0,))
    conv = res_kind == "conv"
    return [torch.empty_like(u), torch.empty_like(u) if res_kind != "none" else none, stat, stat.clone(),
            stat.clone() if conv else none.clone(), stat.clone() if conv else none.clone(), stat.clone(),
            stat.clone() if conv else none.clone()]


@_op("block_output_backward")
def _block_output_backward(backend: str, dout: Tensor, out: Tensor, u: Tensor, mask: Tensor | None, mean2: Tensor,
                           invstd2: Tensor, weight2: Tensor, res_kind: str, r0: Tensor | None, mean3: Tensor | None,
                           invstd3: Tensor | None, weight3: Tensor | None) -> list[Tensor]:
    return _with_empties(_impl(backend).block_output_backward(dout, out, u, mask, mean2, invstd2, weight2, res_kind,
                                                              r0, mean3, invstd3, weight3), u)


@_block_output_backward.op.register_fake
def _(backend, dout, out, u, mask, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3, weight3):
    return _fake_backward_results(u, res_kind)


@_op("block_output_backward_hashed")
def _block_output_backward_hashed(backend: str, dout: Tensor, out: Tensor, u: Tensor, seed: Tensor, p: float,
                                  mean2: Tensor, invstd2: Tensor, weight2: Tensor, res_kind: str, r0: Tensor | None,
                                  mean3: Tensor | None, invstd3: Tensor | None, weight3: Tensor | None
                                  ) -> list[Tensor]:
    return _with_empties(_impl(backend).block_output_backward_hashed(dout, out, u, int(seed), p, mean2, invstd2,
                                                                     weight2, res_kind, r0, mean3, invstd3, weight3), u)


@_block_output_backward_hashed.op.register_fake
def _(backend, dout, out, u, seed, p, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3, weight3):
    return _fake_backward_results(u, res_kind)


def block_output_backward(backend, dout, out, u, dropout, mean2, invstd2, weight2, res_kind, r0, mean3, invstd3,
                          weight3) -> tuple[Tensor | None, ...]:
    """dropout: None, a multipliers tensor, or (seed, p) for the hashed backends."""
    if isinstance(dropout, tuple):
        results = _block_output_backward_hashed(backend, dout, out, u, *dropout, mean2, invstd2, weight2, res_kind, r0,
                                                mean3, invstd3, weight3)
    else:
        results = _block_output_backward(backend, dout, out, u, dropout, mean2, invstd2, weight2, res_kind, r0, mean3,
                                         invstd3, weight3)
    absent = {1} if res_kind == "none" else set()
    if res_kind != "conv":
        absent |= {4, 5, 7}
    return tuple(None if i in absent else r for i, r in enumerate(results))


@_op("bn_relu_phases_backward")
def bn_relu_phases_backward(backend: str, dh_ph: Tensor, h_ph: Tensor, z: Tensor, mean1: Tensor, invstd1: Tensor,
                            weight1: Tensor, V: int, stride: int, pad: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _impl(backend).bn_relu_phases_backward(dh_ph, h_ph, z, mean1, invstd1, weight1, V, stride, pad)


@bn_relu_phases_backward.op.register_fake
def _(backend, dh_ph, h_ph, z, mean1, invstd1, weight1, V, stride, pad):
    C = z.shape[-1]
    return torch.empty_like(z), _stats_like(z, C), _stats_like(z, C), z.new_empty((V, C), dtype=torch.float64)


@_op("gcn_forward")
def gcn_forward(backend: str, x: Tensor, A: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return _impl(backend).gcn_forward(x, A, weight, bias)


@gcn_forward.op.register_fake
def _(backend, x, A, weight, bias):
    C_out = weight.shape[0] // A.shape[0]
    return x.new_empty((x.shape[0], x.shape[1], C_out)), _stats_like(x, C_out), _stats_like(x, C_out)


@_op("gcn_relu_phases")
def gcn_relu_phases(backend: str, x: Tensor, A: Tensor, weight: Tensor, bias: Tensor, shift_map: Tensor, stride: int,
                    pad: int, Tq: int) -> Tensor:
    return _impl(backend).gcn_relu_phases(x, A, weight, bias, shift_map, stride, pad, Tq)


@gcn_relu_phases.op.register_fake
def _(backend, x, A, weight, bias, shift_map, stride, pad, Tq):
    T, N, V, _ = x.shape
    return x.new_empty((stride, Tq, N * V, weight.shape[0] // A.shape[0]))


@_op("conv_frames")
def conv_frames(backend: str, src: Tensor, weight: Tensor, bias: Tensor | None, frame_offsets: list[int],
                frame_step: int, T_out: int, add: Tensor | None, relu: bool, stats: bool,
                tap_spans: list[int] | None = None, src2: Tensor | None = None, weight2: Tensor | None = None,
                frame_step2: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    return _impl(backend).conv_frames(src, weight, bias, frame_offsets, frame_step, T_out, add, relu, stats,
                                      tap_spans, src2, weight2, frame_step2)


@conv_frames.op.register_fake
def _(backend, src, weight, bias, frame_offsets, frame_step, T_out, add, relu, stats, tap_spans=None, src2=None,
      weight2=None, frame_step2=1):
    C_out = weight.shape[-1]
    n_stats = C_out if stats else 0
    return (src.new_empty((T_out * src.shape[1], C_out)), _stats_like(src, n_stats), _stats_like(src, n_stats))
