#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build with the CUDA kernels, run the GPU tests, benchmark the GPU backends and
# store the results as bench/results/<gpu-name>.json.
#   bash bench/gpu.sh            (from the repository root)
# Offline GPU machines: the first install builds without isolation, so setuptools and pybind11 must already be
# installed there (pip install setuptools pybind11 where a package index is reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
UGCN_FAST_BUILD_CUDA=1 python -m pip install --quiet --no-build-isolation --no-deps . \
  || UGCN_FAST_BUILD_CUDA=1 python -m pip install --quiet --no-deps .
name=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
mkdir -p bench/results
# Tests with synchronous launches (a kernel fault surfaces at the launch that caused it, not at a later sync); the
# benchmark runs even when a test fails (GPU time is scarce), and the script's status is the tests' status.
status=0
CUDA_LAUNCH_BLOCKING=1 pytest -q -m "cuda or triton" 2>&1 | tee "bench/results/${name}-tests.txt" || status=$?
python bench/speed.py --device cuda --json "bench/results/${name}.json" 2>&1 | tee "bench/results/${name}.txt"
exit "$status"
