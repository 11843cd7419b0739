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
    run = subprocess.run([sys.executable, str(SPEED), "--quick", "--no-compile", "--min-run-time", "0.02",
                          "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    impls = {row["impl"] for row in result["rows"] if row["status"] == "ok"}
    assert "eager" in impls, impls
    if "cpu" in result["machine"]["available_backends"]:
        assert "fused:cpu [auto]" in impls or any(impl.startswith("fused:cpu") for impl in impls), impls
