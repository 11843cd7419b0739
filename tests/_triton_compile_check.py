"""Compiles the package's Triton kernels for an NVIDIA GPU target without a GPU (run by test_triton_compile.py in a
fresh process, without TRITON_INTERPRET).

The interpreter runs the kernels' arithmetic on the CPU but not Triton's compiler: a kernel can pass every
interpreter test and still fail to compile for a GPU (tl.dot shape or dtype rules, constexpr-only branches, mask
dtypes, shared-memory limits). Here a stand-in driver reports the target (sm_90 by default, the H100/H200 the
project's GPU runs use; UGCN_COMPILE_ARCH overrides it) and every launch is turned into a compile-only warmup,
so each launcher of ugcn_fast.kernels is driven on small CPU tensors through Triton's full pipeline (TTIR, TTGIR,
LLVM, PTX, ptxas) for every dtype the GPU backends serve and every constexpr specialisation their launches
produce (flags, block sizes, and int arguments equal to 1, which Triton compiles as constants), and each kernel's
shared memory is checked against the target's. Nothing runs: outputs are never read.

Usage: python _triton_compile_check.py [DTYPE ...] (default: float32 float16 bfloat16 float64). Prints one JSON
line: {"compiled": n, "kernels": [...], "max_shared": bytes, "stack": {"kernel dtypes": bytes} (null without a
cuobjdump), "errors": [...]}; exits with 77 when this Triton
lacks the internals the stand-in needs (the test then skips and says why).
"""
from __future__ import annotations

import inspect
import json
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)
UNSUPPORTED = 77
ARCH = int(os.environ.get("UGCN_COMPILE_ARCH", "90"))

try:
    import torch
    import triton
    import triton.runtime.jit as jit
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    class _CompileOnlyDriver:
        """Just enough of a CUDA driver for Triton to pick a target and compile; nothing launches."""

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", ARCH, 32)

        def get_device_interface(self):
            return torch.cuda

        def get_active_torch_device(self):
            return torch.device("cpu")

        def is_active(self):
            return True

    _original_run = jit.JITFunction.run
    if not {"grid", "warmup"} <= set(inspect.signature(_original_run).parameters):
        raise RuntimeError("JITFunction.run takes no grid / warmup arguments in this Triton")
    driver.set_active(_CompileOnlyDriver())
except Exception as e:  # noqa: BLE001  (any missing internal means: this Triton cannot be driven this way)
    print(json.dumps({"unsupported": f"triton {getattr(sys.modules.get('triton'), '__version__', '?')}: {e!r}"}))
    sys.exit(UNSUPPORTED)

compiled: list[str] = []
errors: list[str] = []
# Shared memory one block may use on the target (sm_90: 227 KiB, the opt-in maximum Triton's launcher requests):
# more compiles and fails only at launch (OutOfResources), so the check turns it into an error here.
MAX_SHARED = 227 * 1024
max_shared = 0


def _compile_only(self, *args, grid, warmup, **kwargs):
    global max_shared
    dtypes = sorted({str(a.dtype) for a in args if isinstance(a, torch.Tensor)})
    try:
        kernel = _original_run(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append(self.fn.__name__)
    except Exception as e:  # noqa: BLE001
        errors.append(f"{self.fn.__name__} {dtypes}: {type(e).__name__}: {str(e)[:1500]}")
        return None
    shared = int(kernel.metadata.shared)
    max_shared = max(max_shared, shared)
    if shared > MAX_SHARED:
        errors.append(f"{self.fn.__name__} {dtypes}: {shared} bytes of shared memory > {MAX_SHARED} (sm_{ARCH})")
    stack = _stack_bytes(kernel)
    if stack is not None:
        key = f"{self.fn.__name__} {str(COMPILING).replace('torch.', '')}"
        stacks[key] = max(stacks.get(key, 0), stack)
    return kernel


def _cuobjdump() -> str | None:
    import shutil

    import triton.backends.nvidia as nvidia

    bundled = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")  # shipped with Triton's ptxas
    return bundled if os.access(bundled, os.X_OK) else shutil.which("cuobjdump")


CUOBJDUMP = _cuobjdump()
# Per kernel and dtypes: the largest stack frame (bytes per thread) of its variants, as cuobjdump -res-usage reads
# it from the cubin; register spills live there (and local arrays): the interpreter has no registers, so a tile too
# large for the register file shows up only here or as a slow kernel on the GPU.
stacks: dict[str, int] = {}
COMPILING = None  # the dtype whose variants are being compiled


def _stack_bytes(kernel) -> int | None:
    import re
    import subprocess
    import tempfile

    cubin = kernel.asm.get("cubin") if CUOBJDUMP else None
    if not cubin:
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True).stdout
    found = [int(n) for n in re.findall(r"STACK:(\d+)", usage)]
    return max(found) if found else None


jit.JITFunction.run = _compile_only

from ugcn_fast.kernels import motion_loss as kml  # noqa: E402
from ugcn_fast.kernels import stgcn_block as kb  # noqa: E402
from ugcn_fast.kernels import stgcn_gemm as kg  # noqa: E402
from ugcn_fast.backends import triton_stgcn as ts  # noqa: E402


def _r(*shape, dtype):
    return torch.randn(*shape).to(dtype)


def _f64(*shape):
    return torch.rand(*shape, dtype=torch.float64) + 0.5


def motion_loss_variants(dtype):
    # D = 3 (the 3D poses every operator sees) with each gradient combination the autograd function asks for
    # (NEED_GP / NEED_GG are constexpr: training differentiates pred only); other D for other BLOCK_D
    grads_all = ((True, True), (True, False), (False, True), (False, False))
    for op, D, norms, grad_flags in (("cross", 3, ("none", "sample", "joint"), grads_all),
                                     ("inner", 3, ("sample", "joint"), grads_all),
                                     ("sub", 3, ("none",), grads_all),
                                     ("inner", 2, ("sample", "joint"), ((True, True), (False, False))),
                                     ("sub", 5, ("none",), ((True, True), (False, False)))):
        for norm in norms:
            for grads in grad_flags:
                pred, target = _r(2, 30, 17, D, dtype=dtype), _r(2, 30, 17, D, dtype=dtype)
                kml.motion_loss_forward(pred, target, (1, 4, 8), op, norm, 0.01, "mean", *grads)
    for op in ("cross", "inner"):  # more joints than one statistics block: SINGLE_J_BLOCK=False
        pred, target = _r(2, 6, 70, 3, dtype=dtype), _r(2, 6, 70, 3, dtype=dtype)
        kml.motion_loss_forward(pred, target, (1, 2), op, "joint", 0.01, "mean", True, False)


def block_variants(dtype):
    """Every launch of the Triton block backend (ugcn_fast/ops/stgcn_block.py, fused GEMMs): training forward and
    backward, eval forward, stride 1 and 2 (an int argument equal to 1 is a constexpr of its own), each residual
    kind, BatchNorm weights in the parameters' dtype; plus the launchers' other modes."""
    T, N, kt = 9, 2, 5
    pad = (kt - 1) // 2
    # the model's first block (2 input channels, width 16), a wider one, and odd sizes past the largest blocks
    for V, K, C_in, C_out in ((17, 3, 2, 16), (17, 3, 16, 32), (5, 1, 70, 33)):
        G = T * N
        x, A = _r(G, V, C_in, dtype=dtype), _r(K, V, V, dtype=dtype)
        w, b = _r(K * C_out, C_in, dtype=dtype), _r(K * C_out, dtype=dtype)
        kg.gcn_forward(x, A, w, b)
        for contract, transpose in ((True, False), (True, True), (False, False), (False, True)):
            src = _r(G, V, K * C_out, dtype=dtype) if contract else x
            kb.graph_aggregate(src, A, contract, transpose, None)
        kb.graph_aggregate(_r(G, V, K * C_out, dtype=dtype), A, True, False, _r(V, C_out, dtype=dtype))
        z = _r(G, V, C_out, dtype=dtype)
        kb.channel_stats(z)
        kb.bias_map_stats(z, _r(V, C_out, dtype=dtype))
        z = z.view(T, N * V, C_out)
        for stride in (1, 2):
            T_out = (T + 2 * pad - kt) // stride + 1
            Tq = T_out + (kt - 1) // stride
            R = T_out * N * V
            h = kg.gcn_relu_phases(x.view(T, N, V, C_in), A, w, b, _r(V, C_out, dtype=dtype), stride, pad, Tq)
            h_ph = kb.bn_relu_phases(z, _r(C_out, dtype=dtype), _r(V, C_out, dtype=dtype), V, stride, pad, Tq)
            kb.bn_relu_phases_backward(torch.randn_like(h_ph), h_ph, z, _f64(C_out), _f64(C_out),
                                       _r(C_out, dtype=dtype), V, stride, pad)
            w_taps = _r(kt, C_out, C_out, dtype=dtype)
            offsets = [(j % stride) * Tq + j // stride for j in range(kt)]
            h = h.view(stride * Tq, N * V, C_out)
            bias = _r(C_out, dtype=dtype)
            kg.conv_frames(h, w_taps, bias, offsets, 1, T_out, None, False, True)  # training
            # the convolution residual, its weight (C_out, C_in) read transposed in place, as training passes it
            w_res = _r(C_out, C_in, dtype=dtype)
            kg.conv_frames(x.view(T, N * V, C_in), w_res.t().unsqueeze(0), bias, [0], stride, T_out, None, False,
                           True)
            for add in (None, _r(R, C_out, dtype=dtype)):  # eval: no residual, or the identity one
                kg.conv_frames(h, w_taps, bias, offsets, 1, T_out, add, True, False)
            # eval with the convolution residual: its pointwise term, then the taps with it as `add`
            ts.conv_frames(h, w_taps, bias, offsets, 1, T_out, None, True, False, None, x.view(T, N * V, C_in),
                           _r(C_in, C_out, dtype=dtype), stride)
        u = _r(R, C_out, dtype=dtype)
        for res_kind in ("none", "identity", "conv"):
            res = _r(R, C_out, dtype=dtype) if res_kind != "none" else None
            s3 = _r(C_out, dtype=dtype) if res_kind == "conv" else None
            for mask in (None, _r(R, C_out, dtype=dtype)):
                out = kb.block_output(u, _r(C_out, dtype=dtype), _r(C_out, dtype=dtype), mask, res, s3, s3)
                conv = res_kind == "conv"
                kb.block_output_backward(torch.randn_like(out), out, u, mask, _f64(C_out), _f64(C_out),
                                         _r(C_out, dtype=dtype), res_kind, res if conv else None,
                                         _f64(C_out) if conv else None, _f64(C_out) if conv else None,
                                         _r(C_out, dtype=dtype) if conv else None)


# the dtypes to compile: the arguments (names such as float16), all four by default; the test splits them over two
# processes, one a core
DTYPES = [getattr(torch, name) for name in sys.argv[1:]] or [torch.float32, torch.float16, torch.bfloat16,
                                                              torch.float64]
for dtype in DTYPES:
    COMPILING = dtype
    for variants in (motion_loss_variants, block_variants):
        try:
            variants(dtype)
        except Exception as e:  # noqa: BLE001  (a launcher failing before any kernel is an error too)
            errors.append(f"{variants.__name__} {dtype}: {type(e).__name__}: {str(e)[:1500]}")

print(json.dumps({"compiled": len(compiled), "kernels": sorted(set(compiled)), "max_shared": max_shared,
                  "stack": stacks if CUOBJDUMP else None, "errors": errors}))
