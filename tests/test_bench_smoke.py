"""bench/speed.py runs end to end (a smoke test: no timing is asserted)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

SPEED = pathlib.Path(__file__).resolve().parents[1] / "bench" / "speed.py"


@pytest.mark.skipif(not SPEED.exists(), reason="bench/speed.py not beside the tests")
def test_speed_quick_run_writes_json(tmp_path):
    out = tmp_path / "speed.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the benchmark never interprets
    # every kind of case once: the 14 single-block cases differ from stgcn_block:down2 in their shapes only
    cases = ["motion_loss", "ugcn_blocks", "stgcn_block:down2", "ugcn_train_step", "ugcn_inference", "ugcn_window"]
    run = subprocess.run([sys.executable, str(SPEED), "--quick", "--no-compile", "--min-run-time", "0.02",
                          "--device", "cpu", "--json", str(out), *[a for c in cases for a in ("--case", c)]],
                         capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert {row["case"] for row in result["rows"]} == set(cases)
    impls = {row["impl"] for row in result["rows"] if row["status"] == "ok"}
    assert "eager" in impls, impls
    if "cpu" in result["machine"]["available_backends"]:
        assert "fused:cpu [auto]" in impls or any(impl.startswith("fused:cpu") for impl in impls), impls
        # the sum over UGCN's blocks in every mode the issue asks for, the training backward alone included
        block_modes = {row["mode"] for row in result["rows"] if row["case"] == "ugcn_blocks" and row["status"] == "ok"
                       and row["impl"].startswith("fused:cpu")}
        assert block_modes == {"forward", "forward_grad", "backward", "forward_backward"}, block_modes


@pytest.mark.skipif(not SPEED.exists() or os.name != "posix", reason="bench/speed.py not beside the tests")
def test_speed_interrupted_writes_what_it_measured(tmp_path):
    """bench/gpu.sh stops a case at its time limit with SIGINT (SIGKILL 20 s later): the run stops measuring,
    prints and writes what it has, marks the rest as not measured, and exits with 130."""
    import signal

    out = tmp_path / "speed.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.Popen([sys.executable, str(SPEED), "--quick", "--min-run-time", "2", "--device", "cpu",
                             "--case", "motion_loss", "--case", "ugcn_blocks", "--verbose", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:  # the second implementation's progress line: the first one was measured
        lines.append(line)
        if line.startswith("  ... ") and sum(x.startswith("  ... ") for x in lines) == 2:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    result = json.loads(out.read_text())
    assert result["interrupted"] is True
    rows = result["rows"]
    assert {row["case"] for row in rows} == {"motion_loss"}, text  # the later case never started
    assert any(row["status"] == "ok" for row in rows), text
    not_measured = [row for row in rows if row["status"] == "skipped" and "interrupted" in row["note"]]
    assert not_measured and all(row["kind"] != "eager" for row in not_measured), text
    assert "interrupted" in text


@pytest.mark.skipif(not SPEED.exists(), reason="bench/speed.py not beside the tests")
def test_device_time_sums_the_events_of_the_device():
    """The GPU kernel time of a CUDA row sums the profiler's events of that device; checked here on the CPU's
    events (the CUDA path differs only in the activity and the device type)."""
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(SPEED.parent))
    try:
        import speed
    finally:
        sys.path.remove(str(SPEED.parent))
    import torch

    a = torch.randn(256, 256)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.mm(a, a)
    events = [e for e in prof.events() if e.name == "aten::mm"]
    assert events
    assert speed.device_time_us(events, torch.autograd.DeviceType.CPU) == sum(e.time_range.elapsed_us()
                                                                             for e in events) > 0
    assert speed.device_time_us(events, torch.autograd.DeviceType.CUDA) == 0
    assert speed.gpu_kernel_ms(lambda: None, torch.device("cpu")) is None


GPU_SH = SPEED.parent / "gpu.sh"
_FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for python3 on a GPU machine: logs each call (cwd, arguments, build environment), answers gpu.sh's
# questions about the GPU, and does nothing else.
printf '%s\t%s\t%s\t%s\t%s\n' "$(pwd -P)" "$*" "${UGCN_FAST_CUDA_ARCHS:-}" "${UGCN_FAST_BUILD_CUDA:-}" \
  "${PYTHONPATH:-}" >>"$FAKE_PYTHON_LOG"
case "$*" in
  *get_device_capability*) echo 90 ;;
  *get_device_name*) echo "NVIDIA-H200" ;;  # as gpu.sh asks for it: spaces replaced
  "-c import xdist") exit 1 ;;
esac
exit 0
"""


@pytest.mark.skipif(not GPU_SH.exists() or os.name != "posix", reason="bench/gpu.sh not beside the tests")
def test_gpu_sh_builds_for_the_gpu_where_its_tests_import_the_package(tmp_path):
    """bench/gpu.sh runs its tests as `python -m pytest` from the checkout, which imports ugcn_fast from the
    checkout (the current directory comes first on sys.path), so the CUDA module must be built there, for the
    present GPU's architecture; a `pip install .` leaves the checkout without it and every CUDA test fails."""
    import shutil

    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and timeout")
    fake = tmp_path / "python3"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.tsv"
    env = dict(os.environ, PYTHON=str(fake), FAKE_PYTHON_LOG=str(log), GPU_TEST_TIMEOUT="60", GPU_BENCH_TIMEOUT="60")
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", str(GPU_SH), str(tmp_path / "results")], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    root = str(GPU_SH.resolve().parents[1])
    calls = [line.split("\t") for line in log.read_text().splitlines()]
    builds = [c for c in calls if "setup.py" in c[1] or "pip install" in c[1]]
    assert builds, calls
    for cwd, args, archs, want_cuda, _ in builds:
        assert (cwd, args.split()) == (root, ["setup.py", "build_ext", "--inplace"]), (cwd, args)
        assert (archs, want_cuda) == ("90", "1"), "the CUDA module must be built, for sm_90 alone"
    tests = [c for c in calls if "-m pytest" in c[1]]
    assert tests and all(c[0] == root for c in tests), calls
    bench = [c for c in calls if "bench/speed.py" in c[1]]
    assert bench and all(c[4].split(os.pathsep)[0] == root for c in bench), "the benchmark imports the checkout"
    # one run per default case, each with its own results file: a case stopped at its time limit loses only itself
    cases = [c[1].split("--case ")[1].split()[0] for c in bench]
    jsons = [c[1].split("--json ")[1].split()[0] for c in bench]
    assert cases == ["motion_loss", "ugcn_blocks"], cases
    assert jsons == [str(tmp_path / "results" / f"NVIDIA-H200-{case}.json") for case in cases], jsons


@pytest.mark.skipif(not GPU_SH.exists() or os.name != "posix", reason="bench/gpu.sh not beside the tests")
def test_gpu_sh_keeps_within_its_total_time(tmp_path):
    """A lent GPU machine runs one command for 600 s at most: gpu.sh shrinks each phase's limit to what is left of
    GPU_TOTAL_TIMEOUT and starts no phase with under 20 s left (here: a slow fake build uses up the time)."""
    import shutil

    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and timeout")
    fake = tmp_path / "python3"
    fake.write_text(_FAKE_PYTHON.replace('esac\nexit 0', 'esac\ncase "$*" in *setup.py*) sleep 10 ;; esac\nexit 0'))
    fake.chmod(0o755)
    log = tmp_path / "calls.tsv"
    env = dict(os.environ, PYTHON=str(fake), FAKE_PYTHON_LOG=str(log), GPU_TOTAL_TIMEOUT="50")
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", str(GPU_SH), str(tmp_path / "results")], capture_output=True, text=True,
                         timeout=120, env=env)
    phases = (tmp_path / "results" / "NVIDIA-H200-phases.txt").read_text()
    assert run.returncode == 124, run.stdout + run.stderr + phases
    assert "build: " in phases and "tests: not run" in phases, phases
    assert "bench motion_loss: not run" in phases and "bench ugcn_blocks: not run" in phases, phases
    assert "bench/speed.py" not in log.read_text()


@pytest.mark.skipif(not SPEED.exists(), reason="bench/speed.py not beside the tests")
def test_speed_says_when_it_times_another_install(tmp_path, monkeypatch):
    """Python puts bench/ on the path, not the checkout, so an older `pip install .` is what gets timed: the header
    says so (and names the fix); for the checkout's own package it says nothing."""
    monkeypatch.syspath_prepend(str(SPEED.parent))
    import speed
    checkout = SPEED.parents[1] / "ugcn_fast"
    assert speed.other_install_note({"ugcn_fast_path": str(checkout)}) is None
    elsewhere = tmp_path / "site-packages" / "ugcn_fast"
    elsewhere.mkdir(parents=True)
    note = speed.other_install_note({"ugcn_fast_path": str(elsewhere)})
    assert note is not None and str(elsewhere) in note and "pip install ." in note


@pytest.mark.skipif(not SPEED.exists(), reason="bench/speed.py not beside the tests")
@pytest.mark.parametrize("flags, message", [
    (["--shape", "B=x"], "'B=x' is not K=V with V an int >= 1"),
    (["--shape", "B=0"], "'B=0' is not K=V"),
    (["--case", "motion_loss", "--shape", "b=8"], "'b' is not a size of the selected cases"),
    (["--sweep-b", "16,x"], "--sweep-b takes batch sizes"),
    (["--min-run-time", "nan"], "--min-run-time must be a positive number"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--json", "{tmp}"], "is a folder; name a file"),
    (["--json", "{tmp}/missing/x.json"], "its folder .* does not exist"),
])
def test_speed_refuses_bad_flags_before_measuring(flags, message, tmp_path):
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    run = subprocess.run([sys.executable, str(SPEED), "--device", "cpu", *flags], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "copy bandwidth" not in run.stdout, run.stdout + run.stderr
    assert __import__("re").search(message, run.stderr), run.stderr
