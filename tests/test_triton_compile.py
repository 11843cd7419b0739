"""The Triton kernels through Triton's real GPU compiler (no GPU needed): the interpreter tests check their
arithmetic, this checks that every kernel compiles for an NVIDIA target (sm_90) in every dtype the GPU backends
serve, in every constexpr specialisation the launchers use there, each within sm_90's shared memory and without
spilling registers. See _triton_compile_check.py, which runs in a fresh process (the test session runs Triton
interpreted)."""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import pytest

import ugcn_fast

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

# every @triton.jit kernel of ugcn_fast.kernels that a launcher starts
KERNELS = {
    "_den_kernel", "_loss_grad_kernel", "_gcn_forward_kernel", "_conv_frames_kernel", "_graph_aggregate_kernel",
    "_channel_stats_kernel", "_bias_map_stats_kernel", "_bn_relu_phases_kernel", "_bn_relu_phases_bwd_reduce_kernel",
    "_bn_relu_phases_bwd_apply_kernel", "_block_output_kernel", "_block_output_bwd_reduce_kernel",
    "_block_output_bwd_apply_kernel", "_sum_partials_kernel",
}


# the largest stack frame (bytes a thread: register spills) a kernel may have in a dtype the GPU serves
MAX_STACK_BYTES = 32

# the dtypes the GPU backends serve, in two processes that compile side by side (Triton compiles on one core)
DTYPE_SHARES = (("float32", "float64"), ("float16", "bfloat16"))


def test_every_triton_kernel_compiles_for_sm90():
    script = os.path.join(os.path.dirname(__file__), "_triton_compile_check.py")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    package_root = os.path.dirname(os.path.dirname(ugcn_fast.__file__))  # the ugcn_fast this session imports
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    results = []
    with tempfile.TemporaryDirectory() as cache:  # compile for real, not from an earlier run's cache
        procs = []
        for i, dtypes in enumerate(DTYPE_SHARES):
            env_i = {**env, "TRITON_CACHE_DIR": os.path.join(cache, str(i))}
            procs.append(subprocess.Popen([sys.executable, script, *dtypes], env=env_i, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        try:
            outputs = [proc.communicate(timeout=900) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
        for proc, (stdout, stderr) in zip(procs, outputs):
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            assert lines, f"no result (exit {proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
            result = json.loads(lines[-1])
            if proc.returncode == 77:
                pytest.skip(f"this Triton cannot be driven compile-only: {result['unsupported']}")
            assert proc.returncode == 0, stderr[-3000:]
            results.append(result)
    errors = [e for r in results for e in r["errors"]]
    assert not errors, "\n\n".join(errors)
    kernels = set().union(*(r["kernels"] for r in results))
    assert KERNELS <= kernels, f"never compiled: {sorted(KERNELS - kernels)}"
    assert all(r["compiled"] > 0 for r in results)
    # a block needing more shared memory than an SM has compiles and fails only at launch (OutOfResources)
    max_shared = max(r["max_shared"] for r in results)
    assert 0 < max_shared <= 227 * 1024, max_shared
    # register spills (the interpreter has none to run out of): a tile too large for the register file moves
    # hundreds of bytes a thread to local memory (conv_frames' float32 tile at 4 warps: 368). A few registers' worth,
    # which differs between Triton versions (8 to 32 bytes under 3.6 and 3.9), is tolerated; float64 serves the
    # tests only.
    stacks = {k: v for r in results if r["stack"] is not None for k, v in r["stack"].items()}
    if not stacks:
        pytest.skip("no cuobjdump beside Triton's ptxas or on PATH: register spills not checked")
    spilling = {k: v for k, v in stacks.items() if not k.endswith("float64") and v > MAX_STACK_BYTES}
    assert not spilling, f"stack frames (bytes a thread) above {MAX_STACK_BYTES}: {spilling}"
