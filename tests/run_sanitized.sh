#!/usr/bin/env bash
# AddressSanitizer passes over the native code, so that a kernel reading or writing past the end of a tensor
# aborts with a report instead of passing by luck:
#   1. the CPU module (csrc/cpu) built with the sanitizer, under the tests of the CPU kernels;
#   2. the CUDA kernels (csrc/cuda) in the CUDA emulator built with the sanitizer (no GPU needed), under the
#      CUDA tests, with every block's threads and the grid's blocks run in reverse order (the plain test run
#      runs them forward: a race shows as a difference from the reference in one of the two); gradcheck and
#      the largest shapes are left to the plain run (the same code paths, at several times the cost here).
# Run from anywhere, after `pip install .` and the test requirements (CI runs it after the test command).
set -euo pipefail
cd "$(dirname "$0")/.."
asan=$(g++ -print-file-name=libasan.so)
test -f "$asan" || { echo "libasan is missing: install the compiler's sanitizer runtime"; exit 1; }
# libstdc++ too: python does not link it, and the sanitizer's exception interceptor needs it loaded first
preload="$asan $(g++ -print-file-name=libstdc++.so)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== CPU module under AddressSanitizer"
CPPFLAGS="-fsanitize=address -fno-omit-frame-pointer" LDFLAGS="-fsanitize=address" UGCN_FAST_BUILD_CUDA=0 \
  python setup.py -q build_ext --build-lib "$work/build" --build-temp "$work/temp" > "$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
mkdir -p "$work/pkg"
cp -r ugcn_fast kernels "$work/pkg/"  # the package as in a checkout, with the sanitized module in place
rm -f "$work/pkg/ugcn_fast/"_*.so
cp "$work/build/ugcn_fast/"_C*.so "$work/pkg/ugcn_fast/"
PYTHONPATH="$work/pkg" UGCN_FAST_CUDA_EMULATOR=0 UGCN_FAST_REQUIRE_NATIVE=1 LD_PRELOAD="$preload" \
  ASAN_OPTIONS=detect_leaks=0 pytest -q -p no:cacheprovider -m "not triton" \
  tests/test_motion_loss_backends.py tests/test_motion_loss_api.py tests/test_stgcn_cpu_gemm.py \
  tests/test_stgcn_ops.py tests/test_stgcn_fused.py tests/test_stgcn_frozen.py tests/test_model.py

if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "== a GPU runs the CUDA tests: no CUDA emulator pass"
  exit 0
fi
echo "== CUDA kernels in the CUDA emulator under AddressSanitizer, threads and blocks in reverse order"
UGCN_FAST_CUDA_EMULATOR_SANITIZE=address UGCN_FAST_CUDA_EMULATOR_ORDER=reverse UGCN_FAST_REQUIRE_NATIVE=1 \
  LD_PRELOAD="$preload" \
  ASAN_OPTIONS=detect_leaks=0 pytest -q -p no:cacheprovider -m cuda_emulator \
  -k "not gradcheck and not 30000 and not 40000 and not 60000 and not 5000-16 and not 9000"
