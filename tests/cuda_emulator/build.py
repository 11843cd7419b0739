"""Builds csrc/cuda for the CPU: the CUDA emulator that lets a machine without a GPU run the CUDA backend.

The CUDA sources compile unchanged with the host compiler against the stand-in headers of include/ (the CUDA
runtime, __half, __nv_bfloat16) after two mechanical rewrites of what is not C++: a launch
`kernel<<<grid, block, smem, stream>>>(args)` becomes `::cuda_emu::launch(kernel, grid, block, smem, stream,
args)`, and a `__shared__` declaration becomes per-block storage that runtime.cpp poisons at every block start.
The result is a module `_cuda` with the same functions as the real one; `ugcn_fast._native.emulate_cuda(module)`
then serves `backend="cuda"` on CPU tensors with it (tests/conftest.py does this when there is no GPU).

What it checks: every kernel's indexing, loops, shared-memory staging and barriers, run block by block and
thread by thread (threads are fibers that yield at __syncthreads()), against the same tests a GPU runs; launch
configurations against CUDA's limits; reads of shared memory nothing wrote (NaN); divergent barriers (an
error); races between threads or blocks (rerun with UGCN_FAST_CUDA_EMULATOR_ORDER=reverse, compare bits);
reads and writes past the end of a tensor (built with UGCN_FAST_CUDA_EMULATOR_SANITIZE=address, below).
What it cannot check: anything about the real hardware (timing, warp-level behaviour, memory coherence between
concurrent blocks, device math libraries beyond IEEE operations). Built once per source change, cached.

    python tests/cuda_emulator/build.py        # builds (or finds) the module and prints its path
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"
KERNEL_SOURCES = ("motion_loss.cu", "stgcn_block.cu")
FLAGS = ["-O2", "-std=c++17", "-fPIC", "-ffp-contract=off", "-fvisibility=hidden", "-Wall",
         "-Wno-unknown-pragmas", "-Wno-unused-function"]
# UGCN_FAST_CUDA_EMULATOR_SANITIZE=address builds with AddressSanitizer, which turns a kernel's read or write
# past the end of a tensor into a report (run python with LD_PRELOAD=$(g++ -print-file-name=libasan.so)).
SANITIZE = os.environ.get("UGCN_FAST_CUDA_EMULATOR_SANITIZE", "")
LINK_FLAGS = ["-shared", "-pthread"] + ([f"-fsanitize={SANITIZE}"] if SANITIZE else [])
if SANITIZE:
    FLAGS += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"]


# ---- source rewrites -------------------------------------------------------------------------------------------
def _matching(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket that closes text[start] == open_."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_:
            depth += 1
        elif text[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_}{close} from offset {start}")


def _top_level_split(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _callee_start(text: str, end: int) -> int:
    """Start of the kernel expression that ends at text[end] (exclusive): `name` or `name<template args>`."""
    i = end
    while text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":
        depth = 0
        while True:
            i -= 1
            depth += {">": 1, "<": -1}.get(text[i], 0)
            if depth == 0:
                break
    while text[i - 1].isalnum() or text[i - 1] in "_:":
        i -= 1
    return i


def rewrite_launches(text: str) -> str:
    while (at := text.find("<<<")) >= 0:
        start = _callee_start(text, at)
        close = text.index(">>>", at)
        config = _top_level_split(text[at + 3:close])
        if not 2 <= len(config) <= 4:
            raise ValueError(f"launch configuration {config} at offset {at}")
        config += ["0", "nullptr"][len(config) - 2:]
        paren = close + 3
        while text[paren].isspace():
            paren += 1
        args_end = _matching(text, paren, "(", ")")
        args = text[paren + 1:args_end - 1]
        replaced = text[start:args_end]
        call = f"::cuda_emu::launch({text[start:at].strip()}, {', '.join(config)}{', ' if args.strip() else ''}{args})"
        call += "\n" * (replaced.count("\n") - call.count("\n"))  # keep the line numbers of the original
        text = text[:start] + call + text[args_end:]
    return text


_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w\s:]+?)\s+(\w+)\s*\[\s*\]\s*;")
_STATIC_SHARED = re.compile(r"__shared__\s+([\w\s:<>,]+?)\s+(\w+)\s*((?:\[[^\]]+\]\s*)+);")


def rewrite_shared(text: str) -> str:
    text = _DYNAMIC_SHARED.sub(
        lambda m: f"{m[1]}* {m[2]} = reinterpret_cast<{m[1]}*>(::cuda_emu::dynamic_shared_memory());", text)
    text = _STATIC_SHARED.sub(
        lambda m: f"static {m[1]} {m[2]}{m[3]}; ::cuda_emu::enter_shared({m[2]}, sizeof({m[2]}));", text)
    if "__shared__" in text:
        raise ValueError("a __shared__ declaration the emulator's rewrite does not understand")
    return text


def translate(path: Path) -> str:
    text = path.read_text()
    return f'#line 1 "{path}"\n' + rewrite_shared(rewrite_launches(text))


# ---- build -----------------------------------------------------------------------------------------------------
def _inputs(extra: tuple[Path, ...]) -> list[Path]:
    return sorted({*CSRC.glob("*.h"), *(CSRC / "cuda").glob("*"), *HERE.rglob("*.h"), HERE / "runtime.cpp",
                   Path(__file__).resolve(), *extra})


def _cache_dir(extra: tuple[Path, ...]) -> Path:
    base = os.environ.get("UGCN_FAST_CUDA_EMULATOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ugcn_fast", "cuda_emulator")
    digest = hashlib.sha256()
    for p in _inputs(extra):
        digest.update(str(p).encode() + b"\0" + p.read_bytes() + b"\0")
    digest.update(" ".join(FLAGS + LINK_FLAGS + [sys.version, shutil.which("g++") or ""]).encode())
    return Path(base) / digest.hexdigest()[:16]


def build(name: str = "_cuda", kernels: tuple[Path, ...] | None = None, others: tuple[Path, ...] | None = None) -> Path:
    """Compiles module `name` (once per change of its inputs) and returns its path: by default the emulated
    `_cuda` (csrc/cuda's kernels and bindings); `kernels` are CUDA sources to translate, `others` C++ sources."""
    kernels = tuple(CSRC / "cuda" / k for k in KERNEL_SOURCES) if kernels is None else kernels
    others = (CSRC / "cuda" / "bindings.cpp",) if others is None else others
    target = _cache_dir(kernels + others) / (name + sysconfig.get_config_var("EXT_SUFFIX"))
    if target.exists():
        return target
    import pybind11

    work = target.parent / f"tmp-{name}-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{HERE / 'include'}", f"-I{CSRC}", f"-I{CSRC / 'cuda'}", f"-I{pybind11.get_include()}",
                f"-I{sysconfig.get_paths()['include']}"]
    units = []
    for source in kernels:
        cpp = work / (source.name + ".cpp")
        cpp.write_text(translate(source))
        units.append(cpp)
    units += [*others, HERE / "runtime.cpp"]

    def compile_(src: Path) -> Path:
        obj = work / (src.name + ".o")
        run = subprocess.run(["g++", *FLAGS, *includes, "-c", str(src), "-o", str(obj)], capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise RuntimeError(f"cuda emulator: compiling {src} failed:\n{run.stderr[-6000:]}")
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_, units))
    linked = work / target.name
    run = subprocess.run(["g++", *LINK_FLAGS, *map(str, objects), "-o", str(linked)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"cuda emulator: linking failed:\n{run.stderr[-6000:]}")
    os.replace(linked, target)  # atomic: a concurrent build finds either nothing or a whole module
    shutil.rmtree(work, ignore_errors=True)
    return target


def load(name: str = "_cuda", kernels: tuple[Path, ...] | None = None, others: tuple[Path, ...] | None = None):
    """Builds if needed and imports the module under its own name (outside the package)."""
    path = build(name, kernels, others)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    print(build())
