#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build with the CUDA kernels for that GPU, run the GPU tests, benchmark the GPU
# backends, and store the results in RESULTS_DIR (default bench/results) as <gpu-name>-tests.txt,
# <gpu-name>-<case>.{txt,json} per benchmark case, <gpu-name>-phases.txt (versions, and how long each phase took)
# and <gpu-name>-build.txt (the build).
#   bash bench/gpu.sh [RESULTS_DIR]           (from anywhere; e.g. RESULTS_DIR=$OUT on a lent machine)
# GPU time is often short (a 15-minute loan: ~1.5 min start, ~1 min build, ~2 min tests, ~1 + ~5 min for the two
# default cases), so each phase has a time limit, each case is its own phase with its own files, and the next phase
# runs even when one fails or stops at its limit; the script's status is the tests' status (124: out of time).
#   GPU_TEST_TIMEOUT=240 GPU_BENCH_TIMEOUT=240   seconds for the tests, and for each benchmark case (default 240;
#                                                ugcn_blocks 300: it compiles 14 reference blocks). At its limit a
#                                                case gets SIGINT: bench/speed.py measures the compiled rows last,
#                                                and writes what it has (its rows say what was not measured)
#   GPU_TOTAL_TIMEOUT=560                        seconds for the whole script: each phase's limit shrinks to what is
#                                                left (a lent machine's command runs 600 s at most), and a phase
#                                                with under 20 s left is not started
#   GPU_BENCH_CASES="motion_loss ugcn_blocks"    the cases, in order (default: the issues' two; "all": every case)
#   GPU_BENCH_ARGS="--min-run-time 0.5"          more bench/speed.py arguments (default: 0.5 s per measurement,
#                                                plenty for GPU kernels and a quarter of the CPU default)
#   GPU_TEST_WORKERS=16                          pytest-xdist workers where pytest-xdist is installed (0: none;
#                                                default: the cores, at most 16)
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

total=${GPU_TOTAL_TIMEOUT:-560}
phase() {  # phase NAME TIMEOUT COMMAND...: run with a time limit, log the seconds and the status
  local label=$1 limit=$2 start=$SECONDS rc=0
  shift 2
  # within the whole run's limit, 25 s kept back for a phase's SIGKILL grace (20 s) and the bookkeeping
  local left=$(( total - SECONDS - 25 ))
  if [ "$left" -lt 20 ]; then
    echo "$label: not run, ${total} s total limit reached (GPU_TOTAL_TIMEOUT)" | tee -a "$phases"
    return 124
  fi
  [ "$left" -lt "$limit" ] && limit=$left
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

{ nvidia-smi -L 2>&1; "$py" -c "import torch, triton; print('torch', torch.__version__, '| triton', \
  triton.__version__, '| capability', torch.cuda.get_device_capability())" 2>&1; } | tee -a "$phases"

workers=()
default_workers=$(( $(nproc) < 16 ? $(nproc) : 16 ))
if [ "${GPU_TEST_WORKERS:-$default_workers}" != 0 ] && "$py" -c "import xdist" 2>/dev/null; then
  workers=(-n "${GPU_TEST_WORKERS:-$default_workers}")
fi
# Synchronous launches: a kernel fault surfaces at the launch that caused it, not at a later sync.
status=0
phase tests "${GPU_TEST_TIMEOUT:-240}" env CUDA_LAUNCH_BLOCKING=1 \
  bash -c "set -o pipefail; '$py' -m pytest -q -rfE -m 'cuda or triton' ${workers[*]} 2>&1 | tee -i '$results/${name}-tests.txt'" \
  || status=$?

cases=${GPU_BENCH_CASES:-motion_loss ugcn_blocks}
if [ "$cases" = all ]; then
  cases=$("$py" -c "import sys; sys.path.insert(0, 'bench'); import speed; print(' '.join(speed.CASES))")
fi
for case in $cases; do
  out="$results/${name}-${case//:/-}"  # file names of letters, digits, '.', '_' and '-'
  limit=${GPU_BENCH_TIMEOUT:-$([ "$case" = ugcn_blocks ] && echo 300 || echo 240)}
  # tee -i: the time limit's SIGINT reaches the whole pipeline, and what speed.py prints after it must be kept
  phase "bench $case" "$limit" bash -c "set -o pipefail; PYTHONUNBUFFERED=1 '$py' bench/speed.py \
    --device cuda --case '$case' ${GPU_BENCH_ARGS:---min-run-time 0.5} --json '$out.json' 2>&1 | tee -i '$out.txt'" || true
done
exit "$status"
