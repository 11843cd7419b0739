#!/usr/bin/env python
"""Speed benchmark of ugcn_fast: one runner for every op, one table per device and mode.

    python bench/speed.py                       # CPU, plus CUDA when there is a GPU (all backends available)
    python bench/speed.py --quick               # smaller shape (B = 64), shorter measurements: a few minutes with compile (~4 on 2 cores)
    python bench/speed.py --device cuda         # the GPU alone
    python bench/speed.py --sweep-b             # also sweep fwd+bwd over B = 16 .. 512 (linear scaling)
    python bench/speed.py --json out.json       # every number, plus the machine, as JSON (the only file written)
    python bench/speed.py --threads 1 --dtype float64
    python bench/speed.py --case ugcn_blocks    # one case (motion_loss, ugcn_blocks, stgcn_block:down1, ...,
                                                # ugcn_train_step, ugcn_inference, ugcn_window); --case repeats

What is measured (see `--help` for every option):

* Times are medians of `torch.utils.benchmark.Timer.blocked_autorange(min_run_time=...)` after untimed warm-up
  calls; the Timer synchronises CUDA around every block and runs with torch.get_num_threads() threads.
* Modes. "fwd (no_grad)": the forward under torch.no_grad(). "bwd only": `loss.backward(retain_graph=True)` on a
  graph built once outside the timing (grads reset to None before every call); if retain_graph fails for an
  implementation, its bwd is (fwd+bwd) - fwd(grad enabled) instead and the row says so. "fwd+bwd": forward with
  autograd, then backward. The fused ops compute their gradients during the forward when the inputs require
  grad, so their "bwd only" is just the grad_output scaling: compare fwd+bwd.
* Ratios are speedups, baseline median / row median: "vs eager" 2.00x means twice as fast as eager.
* Peak memory (MiB = 2**20 bytes) of one call of the mode's statement, above what was allocated when it began (the
  inputs and, for "bwd only", the saved graph are not counted; the gradients written are). CUDA:
  torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() before. CPU: the
  allocation and free events of torch's CPU allocator recorded by torch.profiler.profile(profile_memory=True),
  summed in time order; memory a native kernel allocates itself (the CPU kernel's per-thread scratch vectors,
  a few hundred KiB) is not seen.
* Roofline: the copy bandwidth of each device is measured once (median time of dst.copy_(src) on a 256 MiB
  float32 tensor; bandwidth = 2 * bytes / time). Each case defines the minimum traffic of a mode (motion loss:
  fwd reads pred + target, fwd+bwd also writes grad_pred); floor = traffic / bandwidth, and the "roofline"
  column is floor / median (100% = as fast as a copy of the unavoidable bytes).
* Compute floor: for compute-bound cases (the ST-GCN blocks, the UGCN) the case counts the FLOPs of its dense
  convolutions (every implementation must do them; the sparse graph aggregation and the elementwise passes are
  not counted), and the GEMM rate of each device is measured once (median of torch.mm on square float32 /
  dtype matrices); floor = FLOPs / rate, and the "compute" column is floor / median (100% = every dense
  convolution as fast as one large torch GEMM, nothing else costs anything).
* torch.compile rows compile once (dynamic=False), warmed up outside the timing; the compile time goes in the
  row's note. If compilation fails, the row carries the reason and the run goes on. The B sweep compiles one
  graph with B dynamic (--sweep-compile static recompiles for every B instead).
* Triton on CPU exists only in its interpreter (TRITON_INTERPRET=1), which is never benchmarked.
* GPU kernel time: on CUDA each row also profiles 10 calls (torch.profiler, CUDA activity) and notes the summed
  GPU time of their kernels per call, and its roofline fraction: where it is far below the median, the row is
  bound by the host side of the call (Python, dispatch, autograd, launches), not by its kernels.
* Order and interruption: within a case the torch.compile rows are measured last (compiling is the slowest part
  of a run); tables keep the usual order. On SIGINT (Ctrl-C, or bench/gpu.sh's time limit) the run stops
  measuring, prints and writes what it has (rows not measured say so; "interrupted": true in the JSON) and
  exits with 130.

Adding an op: subclass `Case` (inputs per device/dtype, implementations, traffic model, modes) and register it
in CASES; the runner, tables, sweep and JSON come for free. No timing is ever asserted.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import timeit
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch.utils.benchmark import Timer

try:
    import ugcn_fast
except ImportError:  # running from a source checkout without an install: put the repo root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import ugcn_fast

from ugcn_fast import backends as ugcn_backends
from ugcn_fast import reference as ugcn_reference
from ugcn_fast._files import check_output_file, write_atomically
from ugcn_fast.cpu_memory import keep_freed_memory

SCHEMA = "ugcn_fast.bench.speed/1"
MIB = 2 ** 20
MIN_BLOCKS = 3  # measurements (blocks) per median, at least

# Modes a case may offer. "forward" runs under no_grad (a module case also switches to eval()); "forward_grad" is
# the training forward with autograd recording; "backward" times backward alone on a prebuilt graph.
MODE_LABELS = {
    "forward": "fwd (no_grad)",
    "forward_grad": "fwd (grad)",
    "backward": "bwd only",
    "forward_backward": "fwd+bwd",
}
# Order in which modes are measured: backward's fallback needs forward_backward's median.
MODE_ORDER = ("forward", "forward_grad", "forward_backward", "backward")

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
HALF = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------------------
# The case abstraction
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """What every implementation of a case is called with: fn(*args)."""
    args: tuple
    grad_leaves: list  # tensors that require grad; their .grad is reset before every backward
    modules: list = field(default_factory=list)  # nn.Modules switched to eval() for "forward", train() otherwise


@dataclass
class Impl:
    """One row of a table. `make` returns the callable to time (it may raise: the row then shows the reason)."""
    name: str
    kind: str  # "eager" | "compile" | "fused"
    make: Callable[[], Callable] | None = None
    backend: str | None = None
    skip: str | None = None  # why the row is not run at all


class Case:
    """A benchmark case: subclass, fill in, register in CASES."""
    name: str = ""
    description: str = ""
    modes: tuple = ("forward", "backward", "forward_backward")
    sweep_dim: str | None = None  # the shape key --sweep-b varies
    sweep_arg_dims: dict = {}  # {index in Inputs.args: dim} that holds sweep_dim (marked dynamic for compile)

    def default_shape(self, quick: bool) -> dict:
        raise NotImplementedError

    def describe(self, shape: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in shape.items())

    def params(self) -> dict:
        """Non-shape settings of the case, for the JSON."""
        return {}

    def make_inputs(self, shape: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
        raise NotImplementedError

    def implementations(self, device: torch.device, dtype: torch.dtype, shape: dict, compile_opts: dict) -> list:
        raise NotImplementedError

    def scalar(self, out):
        """The scalar that backward starts from."""
        return out if out.dim() == 0 else out.sum()

    def check_value(self, out) -> float | None:
        """A number to compare across implementations (a wrong kernel should not look fast)."""
        return float(self.scalar(out).detach().double().cpu())

    def traffic_bytes(self, shape: dict, dtype: torch.dtype, mode: str) -> int | None:
        """Minimum bytes a mode must move to/from memory, or None where no floor is defined."""
        return None

    def traffic_doc(self) -> str:
        return ""

    def flops(self, shape: dict, mode: str, device: torch.device) -> int | None:
        """FLOPs of the dense convolutions a mode must do (compute floor), or None where none is defined."""
        return None

    def flops_doc(self) -> str:
        return ""


def compiled(fn: Callable, compile_opts: dict) -> Callable:
    """torch.compile(fn), with B made dynamic per call when the sweep asks for one graph for every B."""
    c = torch.compile(fn, dynamic=compile_opts.get("dynamic", False))
    dyn_dims = compile_opts.get("mark_dynamic")  # {arg index: dim}
    if not dyn_dims:
        return c

    mark = getattr(torch._dynamo, "maybe_mark_dynamic", torch._dynamo.mark_dynamic)

    def call(*args):
        for i, d in dyn_dims.items():
            mark(args[i], d)
        return c(*args)
    return call


class MotionLossCase(Case):
    name = "motion_loss"
    description = "ugcn_fast.motion_loss (fused) vs ugcn_fast.reference.motion_loss"
    modes = ("forward", "backward", "forward_backward")
    sweep_dim = "B"
    sweep_arg_dims = {0: 0, 1: 0}  # pred and target: B is dim 0

    intervals = (8, 12, 16, 24)
    operator = "cross"
    normalize = "sample"
    eps = 0.01
    reduction = "mean"

    # The fused backends meant for each device type (others are not listed there).
    DEVICE_BACKENDS = {"cpu": ("cpu", "triton"), "cuda": ("cuda", "triton")}

    def default_shape(self, quick: bool) -> dict:
        return {"B": 64 if quick else 256, "T": 96, "J": 17, "D": 3}

    def describe(self, shape: dict) -> str:
        return (" ".join(f"{k}={v}" for k, v in shape.items())
                + f" | {self.operator}, normalize={self.normalize}, intervals={self.intervals}, "
                  f"reduction={self.reduction}")

    def params(self) -> dict:
        return {"intervals": list(self.intervals), "operator": self.operator, "normalize": self.normalize,
                "eps": self.eps, "reduction": self.reduction}

    def make_inputs(self, shape, device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        size = (shape["B"], shape["T"], shape["J"], shape["D"])
        target = torch.randn(size, generator=g, dtype=torch.float32)
        pred = target + 0.1 * torch.randn(size, generator=g, dtype=torch.float32)
        target = target.to(device=device, dtype=dtype)
        pred = pred.to(device=device, dtype=dtype).requires_grad_(True)
        return Inputs(args=(pred, target), grad_leaves=[pred])

    def _kwargs(self):
        return dict(intervals=self.intervals, operator=self.operator, normalize=self.normalize, eps=self.eps,
                    reduction=self.reduction)

    def implementations(self, device, dtype, shape, compile_opts):
        kw = self._kwargs()
        ref = ugcn_reference.motion_loss

        def eager(pred, target):
            return ref(pred, target, **kw)

        impls = [
            Impl("eager", "eager", make=lambda: eager),
            Impl("compile", "compile", make=lambda: compiled(eager, compile_opts)),
        ]
        n_int = len(self.intervals)
        try:
            auto = ugcn_backends.select("auto", device, dtype, shape["D"], n_int)
        except Exception:  # noqa: BLE001
            auto = None
        for name in self.DEVICE_BACKENDS.get(device.type, ()):
            label = f"fused:{name}" + (" [auto]" if name == auto else "")
            if name == "triton" and device.type == "cpu":
                reason = "triton on CPU runs only in its interpreter (TRITON_INTERPRET=1): not benchmarked"
            elif name == "triton" and ugcn_backends.triton_interpreted():
                reason = "TRITON_INTERPRET=1 is set: triton would run in its interpreter, not benchmarked"
            else:
                reason = ugcn_backends.unsupported_reason(name, device, dtype, shape["D"], n_int)
            if reason is not None:
                impls.append(Impl(label, "fused", backend=name, skip=reason))
                continue

            def make(name=name):
                def fused(pred, target):
                    return ugcn_fast.motion_loss(pred, target, **kw, backend=name)
                return fused
            impls.append(Impl(label, "fused", make=make, backend=name))
        return impls

    def traffic_bytes(self, shape, dtype, mode):
        n = shape["B"] * shape["T"] * shape["J"] * shape["D"] * torch.empty((), dtype=dtype).element_size()
        return {"forward": 2 * n, "forward_grad": 2 * n, "forward_backward": 3 * n}.get(mode)

    def traffic_doc(self) -> str:
        return "minimum traffic: fwd = read pred + target; fwd+bwd = read pred + target, write grad_pred; bwd: none"


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ugcn_cases  # noqa: E402  (the UGCN block, training-step and inference cases)

CASES: dict = {c.name: c for c in (MotionLossCase(), *ugcn_cases.cases(Impl, Inputs, compiled))}


# ----------------------------------------------------------------------------------------------------------------
# Machine info and copy bandwidth
# ----------------------------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "total_memory_mib": round(p.total_memory / MIB),
                         "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "torch_num_threads": torch.get_num_threads(),
        "load_average": load,  # 1, 5, 15 min at start: a busy machine gives noisy numbers
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda_runtime": torch.version.cuda,
        "gpus": gpus,
        "ugcn_fast": getattr(ugcn_fast, "__version__", None),
        "ugcn_fast_path": os.path.dirname(os.path.abspath(ugcn_fast.__file__)),
        "available_backends": ugcn_backends.available_backends(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
    }


def header_line(info: dict) -> str:
    gpu = ", ".join(g["name"] for g in info["gpus"]) or "no CUDA GPU"
    return (f"machine: {info['cpu_model']} | {info['cpu_usable']} usable cores ({info['cpu_count']} online) | "
            f"torch threads {info['torch_num_threads']} | load {(info['load_average'] or ['?'])[0]} | torch {info['torch']} | triton {info['triton']} | "
            f"{gpu} | ugcn_fast {info['ugcn_fast']} backends {info['available_backends']}")


def other_install_note(info: dict) -> str | None:
    """A line saying so when the timed ugcn_fast is not the package of the checkout this script sits in (an older
    `pip install .` is found first, as Python puts this script's folder, not the checkout, on the path)."""
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ugcn_fast")
    if not os.path.isdir(checkout) or os.path.samefile(checkout, info["ugcn_fast_path"]):
        return None
    return (f"note: timing the installed ugcn_fast at {info['ugcn_fast_path']}, not this checkout's: `pip install .` "
            f"first, or run with PYTHONPATH={os.path.dirname(checkout)}")


def copy_bandwidth(device: torch.device, min_run_time: float, mib: int = 256) -> dict:
    numel = mib * MIB // 4
    src = torch.full((numel,), 1.5, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    m = Timer("dst.copy_(src)", globals={"dst": dst, "src": src}, timer=clock(device),
              num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=min_run_time)
    nbytes = numel * 4
    del src, dst
    free_memory(device)
    return {"bytes": nbytes, "median_s": m.median, "GBps": 2 * nbytes / m.median / 1e9,
            "method": f"median of dst.copy_(src), {mib} MiB float32, bandwidth = 2 * bytes / time"}


def gemm_rate(device: torch.device, dtype: torch.dtype, min_run_time: float, n: int = 2048) -> dict:
    """The device's dense GEMM rate: median of torch.mm on square n x n matrices of `dtype`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    m = Timer("torch.mm(a, b)", globals={"a": a, "b": b, "torch": torch}, timer=clock(device),
              num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=min_run_time)
    del a, b
    free_memory(device)
    return {"median_s": m.median, "GFLOPs": 2 * n ** 3 / m.median / 1e9,
            "method": f"median of torch.mm, {n} x {n} {str(dtype).removeprefix('torch.')}, rate = 2 n^3 / time"}


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------------------------

def _cpu_peak_bytes(body: Callable) -> tuple[int | None, str]:
    """Peak of torch's CPU allocations during body(), above the level when it began: the allocator's events from
    torch.profiler, accumulated in time order."""
    from torch.profiler import ProfilerActivity, profile
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            body()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events = [e for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
        level = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            level += e.nbytes()
            peak = max(peak, level)
        return peak, ""
    except Exception as err:  # noqa: BLE001  (private profiler API changed: no number rather than a wrong one)
        return None, f"cpu memory not measured: {type(err).__name__}: {err}"


def peak_memory_mib(device: torch.device, body: Callable) -> tuple[float | None, str]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        body()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MIB, ""
    peak, note = _cpu_peak_bytes(body)
    return (None if peak is None else peak / MIB), note


# ----------------------------------------------------------------------------------------------------------------
# Measuring one implementation
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Row:
    case: str
    device: str
    dtype: str
    shape: dict
    impl: str
    kind: str
    backend: str | None
    mode: str
    table: str = "main"  # "main" | "sweep"
    status: str = "ok"  # "ok" | "skipped" | "error"
    note: str = ""
    method: str = ""  # how the time was obtained
    median_ms: float | None = None
    iqr_ms: float | None = None
    mean_ms: float | None = None
    n_blocks: int | None = None
    times_ms: list | None = None  # per-call time of every block, sorted
    number_per_run: int | None = None
    first_call_s: float | None = None  # warm-up's first call (compilation for compile rows)
    peak_mib: float | None = None
    traffic_bytes: int | None = None
    floor_ms: float | None = None
    roofline_fraction: float | None = None
    flops: int | None = None
    compute_floor_ms: float | None = None
    compute_fraction: float | None = None
    vs_eager: float | None = None
    vs_compile: float | None = None
    check_value: float | None = None
    check_rel_diff_vs_eager: float | None = None
    gpu_kernel_ms: float | None = None  # GPU time of the kernels of one call (CUDA rows): the rest is host overhead
    kernel_roofline_fraction: float | None = None  # floor_ms / gpu_kernel_ms


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0] if text else type(err).__name__


class ModeRunner:
    """reset() (untimed for memory, a few ns of the timed statement) and body() of one mode."""

    def __init__(self, case: Case, fn: Callable, inputs: Inputs, mode: str):
        self.case, self.fn, self.inputs, self.mode = case, fn, inputs, mode
        self.graph = None

    def set_training(self) -> None:
        for m in self.inputs.modules:
            m.train(self.mode != "forward")

    def reset(self) -> None:
        for t in self.inputs.grad_leaves:
            t.grad = None

    def build_graph(self) -> None:
        self.graph = None
        self.graph = self.case.scalar(self.fn(*self.inputs.args))

    def body(self):
        fn, args = self.fn, self.inputs.args
        if self.mode == "forward":
            with torch.no_grad():
                return fn(*args)
        if self.mode == "forward_grad":
            return fn(*args)
        if self.mode == "forward_backward":
            self.case.scalar(fn(*args)).backward()
            return None
        if self.mode == "backward":
            self.graph.backward(retain_graph=True)
            return None
        raise ValueError(self.mode)

    def step(self):
        self.reset()
        return self.body()


class Timing:
    """Per-call times (s) of the blocks of one measurement."""

    def __init__(self, times: list, number_per_run: int):
        self.times = sorted(times)
        self.number_per_run = number_per_run
        self.median = statistics.median(self.times)
        self.mean = statistics.fmean(self.times)
        if len(self.times) >= 2:
            q = statistics.quantiles(self.times, n=4, method="inclusive")
            self.iqr = q[2] - q[0]
        else:
            self.iqr = float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> Callable[[], float]:
    """The Timer's clock: synchronises the benchmarked GPU before reading the time (torch's default clock does so
    too, for the current accelerator, but this does not depend on the torch version)."""
    if device.type != "cuda":
        return timeit.default_timer

    def cuda_clock() -> float:
        torch.cuda.synchronize(device)
        return timeit.default_timer()
    return cuda_clock


def device_time_us(events, device_type) -> float:
    """Summed duration (µs) of the profiler events that ran on `device_type` (kernels, copies, memsets)."""
    return sum(e.time_range.elapsed_us() for e in events
               if e.device_type == device_type and not getattr(e, "is_user_annotation", False))


def gpu_kernel_ms(step: Callable, device: torch.device, calls: int = 10) -> float | None:
    """Mean GPU time per call of the kernels `step` launches (torch.profiler's CUDA activity): what the kernels
    cost, apart from the host side of the call (Python, dispatch, autograd, launches), which a GPU hides only
    when the kernels take longer. None off CUDA."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            step()
        sync(device)
    total_us = device_time_us(prof.events(), torch.autograd.DeviceType.CUDA)
    if total_us <= 0:
        raise RuntimeError("the profiler recorded no GPU activity")
    return total_us / calls / 1e3


def _measure_kernels(row, runner, device: torch.device) -> None:
    try:
        row.gpu_kernel_ms = gpu_kernel_ms(runner.step, device)
    except Exception as err:  # noqa: BLE001  (a profiler without CUDA activity: the row keeps its times)
        row.note = _join(row.note, f"GPU kernel time not measured ({_short(err)})")


def time_stmt(step: Callable, device: torch.device, min_run_time: float, label: str,
              min_blocks: int = MIN_BLOCKS) -> Timing:
    """blocked_autorange(min_run_time), topped up with blocks of the same size until there are min_blocks (a slow
    statement would otherwise get a "median" of one or two blocks)."""
    timer = Timer("step()", globals={"step": step}, timer=clock(device), num_threads=torch.get_num_threads(),
                  label=label)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times = list(m.times)
    while len(times) < min_blocks:
        times += list(timer.timeit(m.number_per_run).times)
    return Timing(times, m.number_per_run)


def measure_impl(case: Case, impl: Impl, inputs: Inputs, modes: Sequence[str], device: torch.device,
                 settings: dict, base: dict) -> list:
    """Rows of one implementation for every mode."""
    rows = {m: Row(mode=m, impl=impl.name, kind=impl.kind, backend=impl.backend, **base) for m in modes}
    if impl.skip is not None:
        for r in rows.values():
            r.status, r.note = "skipped", impl.skip
        return list(rows.values())
    try:
        fn = impl.make()
    except Exception as err:  # noqa: BLE001
        for r in rows.values():
            r.status, r.note = "error", _short(err)
        return list(rows.values())

    min_run_time, warmup = settings["min_run_time"], settings["warmup"]
    label = f"{case.name} {impl.name}"
    current = None  # the row being measured
    try:  # an interrupt anywhere below keeps what was timed
        for mode in [m for m in MODE_ORDER if m in modes]:
            if _INTERRUPTED["signal"]:  # (an interrupt can also surface as another error, e.g. from compile workers)
                break
            row = current = rows[mode]
            runner = ModeRunner(case, fn, inputs, mode)
            runner.set_training()
            try:
                if mode == "backward":
                    t0 = time.perf_counter()
                    runner.build_graph()
                    try:
                        for _ in range(max(warmup, 2)):  # twice at least: a graph that cannot be re-run fails here
                            runner.step()
                        sync(device)
                    except Exception as err:  # noqa: BLE001  (retain_graph unsupported: fall back to a difference)
                        runner.graph = None
                        _backward_by_difference(case, fn, inputs, device, row, rows, min_run_time, warmup, label, err)
                        current = None
                        continue
                    row.first_call_s = time.perf_counter() - t0
                    row.method = "loss.backward(retain_graph=True) on a prebuilt graph"
                else:
                    t0 = time.perf_counter()
                    out = runner.step()
                    sync(device)
                    row.first_call_s = time.perf_counter() - t0
                    if mode == "forward" and out is not None:
                        row.check_value = case.check_value(out)
                    del out
                    for _ in range(max(warmup - 1, 0)):
                        runner.step()
                    row.method = {"forward": "forward under torch.no_grad()", "forward_grad": "forward with autograd",
                                  "forward_backward": "forward, then loss.backward()"}[mode]
                _fill_times(row, time_stmt(runner.step, device, min_run_time, label))
                _measure_kernels(row, runner, device)
                runner.reset()
                row.peak_mib, note = peak_memory_mib(device, runner.body)
                if note:
                    row.note = _join(row.note, note)
            except Exception as err:  # noqa: BLE001  (compile failures and the like: report in the row, go on)
                if not _INTERRUPTED["signal"]:
                    row.status, row.note = "error", _short(err)
                if settings.get("verbose"):
                    traceback.print_exc()
            finally:
                runner.reset()
                runner.graph = None
            current = None
        if impl.kind == "compile" and base.get("table") == "main":  # first fwd and fwd+bwd calls compile graphs
            for r in rows.values():
                if r.status == "ok" and r.first_call_s is not None and r.mode != "backward":
                    r.note = _join(f"first call (compiles) {r.first_call_s:.1f} s", r.note)
        del fn
        free_memory(device)
    except KeyboardInterrupt:
        _INTERRUPTED["signal"] = True
    for r in rows.values() if _INTERRUPTED["signal"] else ():
        if r.status == "ok" and r.median_ms is None:
            r.status, r.note = "skipped", INTERRUPTED_NOTE
        elif r is current:
            r.note = _join(r.note, "interrupted after its timing: GPU kernel time and peak memory may be missing")
    return list(rows.values())


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _fill_times(row: Row, m) -> None:
    row.median_ms = m.median * 1e3
    row.iqr_ms = m.iqr * 1e3 if math.isfinite(m.iqr) else None
    row.mean_ms = m.mean * 1e3
    row.n_blocks = len(m.times)
    row.times_ms = [t * 1e3 for t in m.times]
    row.number_per_run = m.number_per_run


def _backward_by_difference(case, fn, inputs, device, row, rows, min_run_time, warmup, label, err) -> None:
    fb = rows.get("forward_backward")
    if fb is None or fb.median_ms is None:
        row.status, row.note = "error", f"retain_graph failed ({_short(err)}) and fwd+bwd has no time"
        return
    fg = ModeRunner(case, fn, inputs, "forward_grad")
    for _ in range(max(warmup, 1)):
        fg.step()
    m = time_stmt(fg.step, device, min_run_time, label)
    row.method = "(fwd+bwd) - fwd(grad enabled)"
    row.median_ms = fb.median_ms - m.median * 1e3
    row.n_blocks, row.number_per_run = len(m.times), m.number_per_run
    reason = _short(err).split(". ")[0]
    row.note = f"bwd = (fwd+bwd) - fwd(grad), as retain_graph failed: {reason}"


# ----------------------------------------------------------------------------------------------------------------
# Derived columns and printing
# ----------------------------------------------------------------------------------------------------------------

def derive(rows: list, case: Case, dtype: torch.dtype, bandwidth: dict | None, rate: dict | None = None) -> None:
    """Ratios vs eager / compile (same device, shape, mode), roofline and compute-floor numbers."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.device, r.mode, tuple(sorted(r.shape.items()))), []).append(r)
    for group in groups.values():
        eager = next((r for r in group if r.kind == "eager" and r.status == "ok"), None)
        comp = next((r for r in group if r.kind == "compile" and r.status == "ok"), None)
        for r in group:
            if r.status != "ok" or not r.median_ms or r.median_ms <= 0:
                continue
            if eager is not None and eager.median_ms and eager.median_ms > 0:
                r.vs_eager = eager.median_ms / r.median_ms
            if comp is not None and comp.median_ms and comp.median_ms > 0:
                r.vs_compile = comp.median_ms / r.median_ms
            r.traffic_bytes = case.traffic_bytes(r.shape, dtype, r.mode)
            if r.traffic_bytes is not None and bandwidth is not None:
                r.floor_ms = r.traffic_bytes / (bandwidth["GBps"] * 1e9) * 1e3
                r.roofline_fraction = r.floor_ms / r.median_ms
            if r.gpu_kernel_ms:
                kernels = f"GPU kernels {r.gpu_kernel_ms:.3f} ms/call"
                if r.floor_ms is not None:
                    r.kernel_roofline_fraction = r.floor_ms / r.gpu_kernel_ms
                    kernels += f" ({_pct(r.kernel_roofline_fraction)} of roofline)"
                r.note = _join(kernels, r.note)
            r.flops = case.flops(r.shape, r.mode, torch.device(r.device))
            if r.flops is not None and rate is not None:
                r.compute_floor_ms = r.flops / (rate["GFLOPs"] * 1e9) * 1e3
                r.compute_fraction = r.compute_floor_ms / r.median_ms
        if eager is not None and eager.check_value is not None:
            for r in group:
                if r.check_value is not None and r is not eager:
                    denom = max(abs(eager.check_value), 1e-30)
                    r.check_rel_diff_vs_eager = abs(r.check_value - eager.check_value) / denom
                    tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(dtype, 3e-2)
                    if r.check_rel_diff_vs_eager > tol:
                        r.note = _join(r.note, f"! loss differs from eager by {r.check_rel_diff_vs_eager:.1e} (rel)")


def _fmt(x, spec: str, missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


def _ratio(x) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def _pct(x) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if x < 10 else f"{x:.1f}x"


def _clip(text: str, n: int = 110) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def print_tables(rows: list, case: Case, device: torch.device, dtype: torch.dtype, shape: dict,
                 bandwidth: dict | None, rate: dict | None = None) -> None:
    dev_rows = [r for r in rows if r.device == str(device)]
    skipped = {}
    for r in dev_rows:
        if r.status == "skipped":
            skipped.setdefault(r.impl, r.note)
    print()
    print(f"=== {case.name} | {device} | {str(dtype).removeprefix('torch.')} | {case.describe(shape)} ===")
    if bandwidth is not None:
        print(f"copy bandwidth {bandwidth['GBps']:.1f} GB/s ({bandwidth['method']}); {case.traffic_doc()}")
    with_compute = rate is not None and any(case.flops(shape, m, device) is not None for m in case.modes)
    if with_compute:
        print(f"GEMM rate {rate['GFLOPs']:.0f} GFLOP/s ({rate['method']}); {case.flops_doc()}")
    for impl, why in skipped.items():
        print(f"  skipped {impl}: {why}")
    for mode in case.modes:
        mrows = [r for r in dev_rows if r.mode == mode and r.status != "skipped"]
        if not mrows:
            continue
        traffic = case.traffic_bytes(shape, dtype, mode)
        floor = (f"traffic {traffic / MIB:.2f} MiB, floor {traffic / (bandwidth['GBps'] * 1e9) * 1e3:.3f} ms"
                 if traffic is not None and bandwidth is not None else "no roofline floor for this mode")
        flops = case.flops(shape, mode, device) if with_compute else None
        if flops is not None:
            floor += f"; {flops / 1e9:.2f} GFLOP, compute floor {flops / (rate['GFLOPs'] * 1e9) * 1e3:.1f} ms"
        method = next((r.method for r in mrows if r.method and r.kind == "eager"), "")
        print(f"\n  [{MODE_LABELS[mode]}]  {method}; {floor}")
        compute_head = f" {'compute':>8}" if with_compute else ""
        print(f"  {'impl':<20} {'median ms':>11} {'IQR ms':>9} {'vs eager':>9} {'vs compile':>10} "
              f"{'peak MiB':>9} {'roofline':>9}{compute_head}  note")
        for r in mrows:
            if r.status == "error":
                print(f"  {r.impl:<20} {'error':>11} {'':>9} {'':>9} {'':>10} {'':>9} {'':>9}  {_clip(r.note)}")
                continue
            compute = f" {_pct(r.compute_fraction):>8}" if with_compute else ""
            print(f"  {r.impl:<20} {_fmt(r.median_ms, '11.3f'):>11} {_fmt(r.iqr_ms, '9.3f'):>9} "
                  f"{_ratio(r.vs_eager):>9} {_ratio(r.vs_compile):>10} {_fmt(r.peak_mib, '9.2f'):>9} "
                  f"{_pct(r.roofline_fraction):>9}{compute}  {_clip(r.note)}")
    print("\n  speedup = baseline median / row median; peak MiB above the inputs; "
          "roofline = floor / median (fraction of copy bandwidth)"
          + ("; compute = GEMM floor / median (fraction of the GEMM rate)" if with_compute else ""))


def print_sweep(rows: list, case: Case, device: torch.device, dtype: torch.dtype, compile_note: str) -> None:
    firsts = [r.first_call_s for r in rows if r.device == str(device) and r.kind == "compile"
              and r.first_call_s is not None]
    if firsts:
        compile_note += f" (first call, which compiles, {max(firsts):.1f} s; excluded)"
    print()
    print(f"=== sweep over {case.sweep_dim}: {case.name} | {device} | {str(dtype).removeprefix('torch.')} | "
          f"{MODE_LABELS['forward_backward']} | {compile_note} ===")
    print(f"  {'impl':<20} {case.sweep_dim:>6} {'median ms':>11} {'us/sample':>10} {'vs eager':>9} "
          f"{'vs compile':>10} {'peak MiB':>9} {'roofline':>9}  note")
    by_impl: dict = {}
    for r in rows:
        if r.device == str(device):
            by_impl.setdefault(r.impl, []).append(r)
    for impl, irows in by_impl.items():
        if all(r.status == "skipped" for r in irows):
            print(f"  {impl:<20} skipped: {_clip(irows[0].note)}")
            continue
        for r in irows:
            b = r.shape[case.sweep_dim]
            if r.status != "ok":
                print(f"  {impl:<20} {b:>6} {r.status:>11}  {_clip(r.note)}")
                continue
            per = r.median_ms * 1e3 / b
            print(f"  {impl:<20} {b:>6} {r.median_ms:>11.3f} {per:>10.2f} {_ratio(r.vs_eager):>9} "
                  f"{_ratio(r.vs_compile):>10} {_fmt(r.peak_mib, '9.2f'):>9} {_pct(r.roofline_fraction):>9}  "
                  f"{_clip(r.note, 60)}")
    print(f"  (constant us/sample = linear scaling in {case.sweep_dim})")


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------

# Set by the first SIGINT (bench/gpu.sh's time limit sends one, then SIGKILL 20 s later): the run stops measuring,
# and prints and writes what it has.
_INTERRUPTED = {"signal": False}
INTERRUPTED_NOTE = "not measured: the run was interrupted (SIGINT)"


def _on_sigint(signum, frame):
    _INTERRUPTED["signal"] = True
    raise KeyboardInterrupt


def reset_compiler() -> None:
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass


def run_case(case: Case, device: torch.device, dtype: torch.dtype, shape: dict, modes: Sequence[str],
             settings: dict, table: str, compile_opts: dict, impls: list | None = None) -> list:
    """Rows of every implementation of `case`, in the case's order. The compiled rows are measured last: their
    compilation is the slowest part of a run, so a run stopped at a time limit (SIGINT) still has the fused and
    eager numbers; the implementations not measured by then get rows that say so."""
    base = dict(case=case.name, device=str(device), dtype=str(dtype).removeprefix("torch."), shape=dict(shape),
                table=table)
    measured: dict = {}
    inputs = case.make_inputs(shape, device, dtype)  # (before the implementations: some are built on its modules)
    impls = impls if impls is not None else case.implementations(device, dtype, shape, compile_opts)
    try:  # an interrupt anywhere in here keeps the rows measured so far
        # The implementations share modules (eager and compile run the same reference blocks) and the training
        # modes update BatchNorm's running statistics: every implementation starts from the same state.
        initial_states = [copy.deepcopy(m.state_dict()) for m in inputs.modules]
        for i in sorted(range(len(impls)), key=lambda i: impls[i].kind == "compile"):
            if _INTERRUPTED["signal"]:
                break
            impl = impls[i]
            if impl.kind == "compile" and settings["no_compile"]:
                impl = Impl(impl.name, impl.kind, backend=impl.backend, skip="--no-compile")
            for module, state in zip(inputs.modules, initial_states):
                module.load_state_dict(state)
            if settings.get("verbose"):
                print(f"  ... {case.name} {device} {impl.name} {case.describe(shape)}", flush=True)
            measured[i] = measure_impl(case, impl, inputs, modes, device, settings, base)
        del inputs
        free_memory(device)
    except KeyboardInterrupt:
        _INTERRUPTED["signal"] = True
    for i, impl in enumerate(impls):
        if i not in measured:
            measured[i] = measure_impl(case, Impl(impl.name, impl.kind, backend=impl.backend, skip=INTERRUPTED_NOTE),
                                       None, modes, device, settings, base)
    return [row for i in range(len(impls)) for row in measured[i]]


def _positive_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 1 else None


def parse_shape(text: str | None, known: set[str]) -> dict:
    """--shape "K=V,..." -> {K: V}: every K a size of the selected cases' shapes, every V an int >= 1; else a
    ValueError that says which part is wrong."""
    out = {}
    if text is None:
        return out
    for part in text.split(","):
        key, sep, val = (s.strip() for s in part.partition("="))
        value = _positive_int(val)
        if not sep or value is None:
            raise ValueError(f"--shape: {part.strip()!r} is not K=V with V an int >= 1 (e.g. B=128,T=48)")
        if key not in known:
            raise ValueError(f"--shape: {key!r} is not a size of the selected cases (they take "
                             f"{', '.join(sorted(known))})")
        out[key] = value
    return out


def parse_sweep(text: str | None) -> list[int]:
    """--sweep-b "B,B,..." -> the batch sizes (ints >= 1, at least one)."""
    if text is None:
        return []
    values = [_positive_int(v) for v in text.split(",") if v.strip()]
    if not values or None in values:
        raise ValueError(f"--sweep-b takes batch sizes B,B,... (ints >= 1), got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                    help="where to run (default all: CPU plus CUDA when available)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                    help="float16/bfloat16 run on CUDA only (default float32)")
    ap.add_argument("--quick", action="store_true",
                    help="smaller default shape (B = 64) and shorter measurements")
    ap.add_argument("--sweep-b", nargs="?", const="16,32,64,128,256,512", default=None, metavar="B,B,...",
                    help="also time fwd+bwd over these B (default 16,32,64,128,256,512)")
    ap.add_argument("--sweep-compile", choices=("dynamic", "static"), default="dynamic",
                    help="sweep's compile row: one graph with B dynamic (default), or one static graph per B")
    ap.add_argument("--json", metavar="PATH", help="write every result and the machine info as JSON")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads(N) before anything runs")
    ap.add_argument("--case", choices=tuple(CASES), action="append",
                    help="benchmark case(s) to run (default: all registered)")
    ap.add_argument("--shape", metavar="K=V,...", help="override the case's default shape, e.g. B=128,T=48")
    ap.add_argument("--min-run-time", type=float,
                    help="seconds per blocked_autorange (default 2.0, 0.2 with --quick)")
    ap.add_argument("--warmup", type=int, help="untimed calls before timing (default 3, 2 with --quick)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="raise glibc's malloc thresholds first, as ugcn_fast's command-line tools do "
                         "(ugcn_fast/cpu_memory.py; every row gets it): fewer page faults in training")
    ap.add_argument("--verbose", action="store_true", help="progress lines and tracebacks of failures")
    args = ap.parse_args(argv)
    cases = [CASES[n] for n in (args.case or CASES)]
    try:  # every flag checked before anything is measured
        args.shape_override = parse_shape(args.shape, {k for c in cases for k in c.default_shape(False)})
        args.sweep_values = parse_sweep(args.sweep_b)
        if args.json:
            check_output_file("--json", args.json)
    except ValueError as error:
        ap.error(str(error))
    if args.min_run_time is not None and not (math.isfinite(args.min_run_time) and args.min_run_time > 0):
        ap.error(f"--min-run-time must be a positive number of seconds, got {args.min_run_time}")
    if args.warmup is not None and args.warmup < 0:
        ap.error(f"--warmup must be >= 0, got {args.warmup}")

    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        ap.error("--keep-freed-memory: the C library is not glibc, or UGCN_FAST_KEEP_FREED_MEMORY=0 is set")
    dtype = DTYPES[args.dtype]

    devices: list = []
    notes: list = []
    cuda_ok = torch.cuda.is_available()
    if args.device == "cuda" and not cuda_ok:
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.device in ("cpu", "all"):
        if dtype in HALF:
            notes.append(f"cpu skipped: {args.dtype} is benchmarked on CUDA only")
        else:
            devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and cuda_ok:
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    if not devices:
        print(f"error: nothing to run ({'; '.join(notes) or 'no device'})", file=sys.stderr)
        return 2

    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, attr):
            setattr(torch._dynamo.config, attr, max(64, getattr(torch._dynamo.config, attr)))

    settings = {
        "quick": args.quick,
        "min_run_time": args.min_run_time if args.min_run_time is not None else (0.2 if args.quick else 2.0),
        "warmup": args.warmup if args.warmup is not None else (2 if args.quick else 3),
        "no_compile": args.no_compile,
        "keep_freed_memory": args.keep_freed_memory,
        "verbose": args.verbose,
    }
    info = machine_info()
    print(header_line(info))
    note = other_install_note(info)
    if note:
        print(note)
    if args.keep_freed_memory:
        print("malloc: freed memory kept in the process for every row (--keep-freed-memory)")
    load = info["load_average"]
    if load and info["cpu_usable"] and load[0] >= 0.75 * info["cpu_usable"] and any(d.type == "cpu" for d in devices):
        print(f"warning: load average {load[0]} on {info['cpu_usable']} usable cores before starting: other work "
              f"competes for the CPU and multi-threaded CPU timings will be noisy (--threads 1 is steadier)")
    for n in notes:
        print(f"note: {n}")
    t_start = time.perf_counter()
    _INTERRUPTED["signal"] = False
    previous_handler = signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _measure_and_report(args, devices, dtype, settings, info, notes, argv, t_start)
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def _measure_and_report(args, devices: list, dtype: torch.dtype, settings: dict, info: dict, notes: list, argv,
                        t_start: float) -> int:
    bandwidths: dict = {}
    rates: dict = {}
    all_rows: list = []
    sweep_rows: list = []
    cases = [CASES[n] for n in (args.case or CASES)]
    try:
        for dev in devices:
            try:
                bandwidths[str(dev)] = copy_bandwidth(dev, min_run_time=0.5 if args.quick else 1.0)
                print(f"copy bandwidth {dev}: {bandwidths[str(dev)]['GBps']:.1f} GB/s", flush=True)
            except Exception as err:  # noqa: BLE001  (out of memory on a busy machine: no roofline, no crash)
                print(f"copy bandwidth {dev}: not measured ({_short(err)})")

        if any(c.flops(c.default_shape(True), m, d) is not None for c in cases for m in c.modes for d in devices):
            for dev in devices:
                try:
                    rates[str(dev)] = gemm_rate(dev, dtype, min_run_time=0.5 if args.quick else 1.0)
                    print(f"GEMM rate {dev}: {rates[str(dev)]['GFLOPs']:.0f} GFLOP/s", flush=True)
                except Exception as err:  # noqa: BLE001
                    print(f"GEMM rate {dev}: not measured ({_short(err)})")
        override = args.shape_override
        for case in cases:
            if _INTERRUPTED["signal"]:
                break
            shape = {**case.default_shape(args.quick), **override}
            for dev in devices:
                if _INTERRUPTED["signal"]:
                    break
                reset_compiler()
                rows = run_case(case, dev, dtype, shape, case.modes, settings, "main", {"dynamic": False})
                all_rows += rows
                derive(rows, case, dtype, bandwidths.get(str(dev)), rates.get(str(dev)))
                print_tables(rows, case, dev, dtype, shape, bandwidths.get(str(dev)), rates.get(str(dev)))
                sys.stdout.flush()

            if args.sweep_b and not _INTERRUPTED["signal"] and case.sweep_dim and "forward_backward" in case.modes:
                values = args.sweep_values
                for dev in devices:
                    reset_compiler()
                    if args.sweep_compile == "dynamic":
                        copts = {"dynamic": None, "mark_dynamic": dict(case.sweep_arg_dims)}
                        cnote = f"compile: one graph, {case.sweep_dim} dynamic"
                    else:
                        copts = {"dynamic": False}
                        cnote = f"compile: static graph per {case.sweep_dim}"
                    first_shape = {**shape, case.sweep_dim: values[0]}
                    impls = case.implementations(dev, dtype, first_shape, copts)  # one compile object for all B
                    rows = []
                    for v in values:
                        s = {**shape, case.sweep_dim: v}
                        rows += run_case(case, dev, dtype, s, ("forward_backward",), {**settings}, "sweep", copts,
                                         impls=impls)
                    sweep_rows += rows
                    derive(rows, case, dtype, bandwidths.get(str(dev)))
                    print_sweep(rows, case, dev, dtype, cnote)
                    sys.stdout.flush()

    except KeyboardInterrupt:  # outside a row (the roofline measurements, printing): keep what was measured
        _INTERRUPTED["signal"] = True
    elapsed = time.perf_counter() - t_start
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what was measured gets written, whatever else arrives
    interrupted = _INTERRUPTED["signal"]
    print(f"\ntotal {elapsed:.1f} s" + (" (interrupted: the rows not measured say so; later cases not run)"
                                         if interrupted else ""))
    if args.json:
        doc = {
            "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv[1:] if argv is None else list(argv),
            "settings": {**{k: v for k, v in settings.items() if k != "verbose"}, "dtype": args.dtype,
                         "devices": [str(d) for d in devices], "threads": torch.get_num_threads(),
                         "sweep_b": args.sweep_b, "sweep_compile": args.sweep_compile, "notes": notes,
                         "timer": "torch.utils.benchmark.Timer.blocked_autorange", "peak_memory_unit": "MiB",
                         "time_unit": "ms", "speedup": "baseline median / row median",
                         "roofline_fraction": "floor_ms / median_ms, floor = traffic_bytes / copy bandwidth",
                         "gpu_kernel_ms": "CUDA rows: summed GPU time of the kernels per call (torch.profiler, "
                                          "10 calls); kernel_roofline_fraction = floor_ms / gpu_kernel_ms",
                         "compute_fraction": "compute_floor_ms / median_ms, floor = flops / GEMM rate"},
            "machine": info,
            "copy_bandwidth": bandwidths,
            "gemm_rate": rates,
            "cases": {c.name: {"description": c.description, "params": c.params(), "modes": list(c.modes),
                               "traffic": c.traffic_doc(), "flops": c.flops_doc(), "sweep_dim": c.sweep_dim}
                      for c in cases},
            "rows": [_jsonable(asdict(r)) for r in all_rows],
            "sweep_rows": [_jsonable(asdict(r)) for r in sweep_rows],
            "elapsed_s": elapsed,
            "interrupted": interrupted,
        }
        text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
        write_atomically(args.json, lambda f: f.write(text.encode()))  # a killed run leaves no truncated file
        print(f"wrote {args.json}")
    return 130 if interrupted else 0


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
