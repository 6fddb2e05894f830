#!/usr/bin/env bash
# CI step: the native core under AddressSanitizer + UndefinedBehaviorSanitizer, on a bounded
# workload, with a count of sanitizer reports that must be 0.
#   1. The extension built with the sanitizers by the project's CMake build.
#   2. The standalone C++ check programs of tests/cpp (sanitize_check: LAP single/batch/warm and
#      the matcher against brute force and float64 oracles; lap_kernels_check: the SIMD row kernels;
#      lap_emulation_check: the GPU kernel's host emulation), linked with that build's sanitized
#      core and run; sanitize_check once per LAP kernel set this CPU has (TRAJTRANSFER_LAP_ISA),
#      since each set is its own code.
#   3. The LAP + matcher tests against the sanitized extension (the bindings' array handling is
#      only exercised from Python). CPython is not built with ASan, so libasan is preloaded, and
#      leak detection is off there (CPython leaks by design).
# ASan and LSan reports go to log files (log_path), so that reports from any process, a test's
# subprocess included, are counted; UBSan writes its reports to the process's stderr whatever
# log_path says, so every program's stderr is kept in logs/NAME.out and counted too. UBSan does
# not recover (-fno-sanitize-recover=undefined), so each report also fails the program that hit it.
#
# Usage: .ci/sanitize.sh  (PYTHON: the interpreter with the test requirements; default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CXX=${CXX:-g++}
JOBS=${JOBS:-2}
start=$SECONDS

out=$PWD/build/ci-sanitize
rm -rf "$out"
mkdir -p "$out/logs"
san=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
# -O1: the sanitizers' usual level (a fraction of -O0's run time, no inlining that hides frames).
cflags=(-std=c++17 -O1 -g -Wall -Wextra -Wno-psabi "${san[@]}" -Icsrc -pthread)
blas_dir=$("$PY" -c 'import scipy_openblas32 as s; print(s.get_lib_dir())')

# The extensions and their static libraries (tt_core: the LAP and the matcher; tt_cuda_emulation:
# the GPU kernel's host emulation) with the sanitizers, through the project's own CMake build; the
# check programs link those, so each solver source is compiled once.
echo "-- building the extension with ${san[*]}"
if ! command -v cmake >/dev/null 2>&1; then "$PY" -m pip install -q cmake ninja; fi
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S . -B "$out/ext" "${gen[@]}" -DCMAKE_BUILD_TYPE=None -DTRAJTRANSFER_WERROR=ON \
  -DCMAKE_CXX_FLAGS="-O1 -g ${san[*]}" -DPython_EXECUTABLE="$(command -v "$PY")" >/dev/null
cmake --build "$out/ext" -j "$JOBS" >/dev/null
core=$(find "$out/ext" -name 'libtt_core.a' | head -n 1)
[ -n "$core" ] || { echo "FAIL: no libtt_core.a in $out/ext" >&2; exit 1; }
emulation=$(find "$out/ext" -name 'libtt_cuda_emulation.a' | head -n 1)
[ -n "$emulation" ] || { echo "FAIL: no libtt_cuda_emulation.a in $out/ext" >&2; exit 1; }
echo "   $((SECONDS - start)) s"

echo "-- building the C++ check programs"
# Two compiler processes at a time (CI has 2 cores).
"$CXX" "${cflags[@]}" tests/cpp/sanitize_check.cpp "$core" -L"$blas_dir" -lscipy_openblas \
  -Wl,-rpath,"$blas_dir" -o "$out/sanitize_check" &
big=$!
"$CXX" "${cflags[@]}" tests/cpp/lap_kernels_check.cpp -o "$out/lap_kernels_check"
"$CXX" "${cflags[@]}" -Wno-comment tests/cpp/lap_emulation_check.cpp "$emulation" \
  -o "$out/lap_emulation_check"
wait "$big"
echo "   $((SECONDS - start)) s"

export ASAN_OPTIONS="log_path=$out/logs/asan:detect_leaks=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=0
run() {  # run NAME CMD...: stdout+stderr to logs/NAME.out; a non-zero exit counts as a failure
  local name=$1 t0=$SECONDS rc=0
  shift
  "$@" >"$out/logs/$name.out" 2>&1 || rc=$?
  echo "   $name: exit $rc, $((SECONDS - t0)) s: $(grep -E 'failures|passed|failed|error' "$out/logs/$name.out" | tail -n 1)"
  if [ "$rc" -ne 0 ]; then
    failed=1
    tail -n 40 "$out/logs/$name.out" >&2
  fi
}

echo "-- running the C++ check programs"
isas=(base avx2)
if grep -q avx512f /proc/cpuinfo 2>/dev/null; then isas+=(avx512); fi
for isa in "${isas[@]}"; do
  # Workload 2: twice the program's base count of random cases (about 10 s a run here).
  TRAJTRANSFER_LAP_ISA=$isa run "sanitize_check-$isa" "$out/sanitize_check" 2
done
run lap_kernels_check "$out/lap_kernels_check"
run lap_emulation_check "$out/lap_emulation_check"

echo "-- LAP and matcher tests against the sanitized extension"
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
cp -r python/trajtransfer "$pkg/"
rm -f "$pkg"/trajtransfer/_core*.so "$pkg"/trajtransfer/_testing*.so
cp "$out"/ext/_core*.so "$out"/ext/_testing*.so "$pkg/trajtransfer/"
# The LAP and matcher modules that call no compiler (the preload would reach it too; their
# Python subprocesses, e.g. the ones that force a kernel set, run the sanitized extension as
# well), the fuzz module at its default (normal-suite) budget. -s: a UBSan report is written to
# the process's stderr (not to log_path) just before it exits, where pytest's capture would
# lose it.
(
  export PYTHONPATH=$pkg
  export LD_PRELOAD
  # libstdc++ preloaded too: python does not link it, and ASan's __cxa_throw interceptor must
  # find the real one at start-up ("CHECK failed ... real___cxa_throw" otherwise).
  LD_PRELOAD="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libstdc++.so)"
  export ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"
  unset TRAJTRANSFER_FUZZ_EXAMPLES
  run pytest-asan "$PY" -m pytest -q -s -p no:cacheprovider -x \
    tests/test_lap_hypothesis.py tests/test_lap_warm.py tests/test_lap_api.py \
    tests/test_lap_contract.py tests/test_lap_split.py tests/test_lap_float32_exact.py \
    tests/test_lap_adversarial.py tests/test_lap_constant_rows.py tests/test_lap_dtypes.py \
    tests/test_lap_lowrank.py tests/test_scipy_suite.py tests/test_match.py \
    tests/test_match_args.py tests/test_match_fastpaths.py tests/test_match_greedy.py \
    tests/test_native_factored.py tests/test_fuzz.py
  "$PY" -c 'import sys, trajtransfer._core as c; sys.exit(0 if c.__file__.startswith(sys.argv[1]) else "FAIL: the sanitized extension was not the one imported")' "$pkg"
  exit "$failed"
) || failed=1

reports=$(cat "$out"/logs/asan.* "$out"/logs/*.out 2>/dev/null \
  | grep -cE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|Sanitizer: CHECK failed' || true)
echo "sanitizer reports: $reports (logs in $out/logs); $((SECONDS - start)) s"
if [ "$reports" -ne 0 ] || [ "$failed" -ne 0 ]; then
  ls "$out"/logs/asan.* 2>/dev/null | head -n 5 | xargs -r head -n 60 >&2
  echo "FAIL: sanitizer step ($reports reports)" >&2
  exit 1
fi
