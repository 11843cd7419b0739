#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build with the CUDA kernels for that GPU, run the GPU tests, benchmark the GPU
# backends, and store the results in RESULTS_DIR (default bench/results) as <gpu-name>-tests.txt, <gpu-name>.txt
# and <gpu-name>.json, plus <gpu-name>-phases.txt (how long each phase took) and <gpu-name>-build.txt (the build).
#   bash bench/gpu.sh [RESULTS_DIR]           (from anywhere; e.g. RESULTS_DIR=$OUT on a lent machine)
# GPU time is often short, so each phase has a time limit and the next phase runs even when one fails or stops at
# its limit; the script's status is the tests' status (124 when they ran out of time).
#   GPU_TEST_TIMEOUT=300 GPU_BENCH_TIMEOUT=420   seconds for the tests and for the benchmark
#   GPU_BENCH_ARGS="--case motion_loss --case ugcn_blocks"   benchmark only these cases (default: every case)
#   GPU_TEST_WORKERS=8                           pytest-xdist workers where pytest-xdist is installed (0: none)
#   PYTHON=python3                               the interpreter (default: python3, else python)
# Offline GPU machines: the build runs setup.py directly, so setuptools and pybind11 must already be installed
# there (they are on the lent H200 machines).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-$(command -v python3 || command -v python)}  # the lent H200 machines have python3 only
results=$(mkdir -p "${1:-bench/results}" && cd "${1:-bench/results}" && pwd)
arch=$("$py" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))")
name=$("$py" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
phases="$results/${name}-phases.txt"
: >"$phases"

phase() {  # phase NAME TIMEOUT COMMAND...: run with a time limit, log the seconds and the status
  local label=$1 limit=$2 start=$SECONDS rc=0
  shift 2
  timeout --signal=INT --kill-after=20 "$limit" "$@" || rc=$?
  echo "$label: $((SECONDS - start)) s, status $rc" | tee -a "$phases"
  return "$rc"
}

# only this GPU's architecture: a fraction of the build time of the default list
export UGCN_FAST_BUILD_CUDA=1 UGCN_FAST_CUDA_ARCHS="$arch"
# In place, and the checkout first on the path: `python -m pytest` run here (and each xdist worker) imports
# ugcn_fast from this checkout, not from an installed copy, so the native modules must be built into it.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
phase build 600 bash -c "'$py' setup.py build_ext --inplace >'$results/${name}-build.txt' 2>&1 \
  || { tail -n 40 '$results/${name}-build.txt'; exit 1; }" || exit $?

workers=()
if [ "${GPU_TEST_WORKERS:-8}" != 0 ] && "$py" -c "import xdist" 2>/dev/null; then
  workers=(-n "${GPU_TEST_WORKERS:-8}")
fi
# Synchronous launches: a kernel fault surfaces at the launch that caused it, not at a later sync.
status=0
phase tests "${GPU_TEST_TIMEOUT:-300}" env CUDA_LAUNCH_BLOCKING=1 \
  bash -c "set -o pipefail; '$py' -m pytest -q -m 'cuda or triton' ${workers[*]} 2>&1 | tee '$results/${name}-tests.txt'" \
  || status=$?
phase bench "${GPU_BENCH_TIMEOUT:-420}" bash -c "set -o pipefail; PYTHONUNBUFFERED=1 '$py' bench/speed.py --device cuda \
  --json '$results/${name}.json' ${GPU_BENCH_ARGS:-} 2>&1 | tee '$results/${name}.txt'" || true
exit "$status"
