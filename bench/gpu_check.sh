#!/usr/bin/env bash
# One prepared run on a GPU machine (no network): install the carried wheels, build trajtransfer
# with TRAJTRANSFER_CUDA=ON, run the CUDA tests, a smoke check and the GPU benchmarks, and leave
# every result under $OUT. Finishes within GPU_CHECK_BUDGET_S (default 420 s): each step gets a
# timeout capped by what is left, so a hang costs one step, not the session.
#
#   bash bench/fetch_gpu_wheels.sh          # once, on a machine with network (git-ignored folder)
#   OUT=/some/dir bash bench/gpu_check.sh   # on the GPU machine, from a tree carrying bench/wheels
#
# Results: $OUT/steps.txt (one line per step: rc, seconds), env.txt, build.log, smoke.txt,
# tests.txt + junit_lap_cuda.xml, device_tests.txt + junit_device.xml, bench_*.txt +
# bench_*.json (pytest-benchmark), {match,transfer}_summary_cuda_{device,host}_lap.json,
# sanitizer_*.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
WHEELS="${WHEELS:-bench/wheels}"
BUDGET="${GPU_CHECK_BUDGET_S:-420}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export OUT WHEELS PY
START=$(date +%s)
: > "$OUT/steps.txt"

# step NAME MAX_SECONDS LOGFILE CMD...: run CMD with a timeout (capped by the budget left),
# output to $OUT/LOGFILE and the console; one summary line in steps.txt.
step() {
  local name=$1 max=$2 logf=$3
  shift 3
  local left=$((BUDGET - ($(date +%s) - START) - 5))
  if ((left < 15)); then
    echo "$name SKIPPED (budget spent)" | tee -a "$OUT/steps.txt"
    return 99
  fi
  ((max > left)) && max=$left
  echo "== $name (timeout ${max}s) ==" | tee -a "$OUT/$logf"
  local t0 rc
  t0=$(date +%s)
  # bash -c so that CMD may be one of the exported functions below.
  timeout -k 10 "$max" bash -c '"$@"' step "$@" 2>&1 | tee -a "$OUT/$logf"
  rc=${PIPESTATUS[0]}
  echo "$name rc=$rc $(($(date +%s) - t0))s$( ((rc == 124)) && echo ' TIMEOUT')" | tee -a "$OUT/steps.txt"
  return "$rc"
}

# CMake finds nvcc on PATH; some images keep the toolkit out of it.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# The benchmarks measure the solver, not this machine's OpenBLAS defaults (design.md §3).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

env_report() {
  date -u
  nvidia-smi || true
  nvcc --version || true
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  "$PY" -m pip list 2>/dev/null | grep -i -E "numpy|scipy|torch|pytest|hypothesis|pybind11|scikit-build|cmake|ninja|linear" || true
  nproc
}
export -f env_report
step env 30 env.txt env_report

# Install only the modules that are missing, from the carried wheels (no index, no network).
install_missing() {
  local want=() mod pkg
  for pair in scipy_openblas32:scipy-openblas32 numpy:numpy scipy:scipy pytest:pytest \
    hypothesis:hypothesis pytest_benchmark:pytest-benchmark; do
    mod=${pair%%:*}
    pkg=${pair##*:}
    "$PY" -c "import $mod" 2>/dev/null || want+=("$pkg")
  done
  if ((${#want[@]} == 0)); then
    echo "all test dependencies present"
    return 0
  fi
  echo "installing from $WHEELS: ${want[*]}"
  "$PY" -m pip install --no-index --find-links "$WHEELS" "${want[@]}"
}
export -f install_missing
step deps 90 deps.txt install_missing || echo "continuing: the build or tests will say what is missing"

build() {
  # scikit-build-core reuses build/{wheel_tag} on a warm machine; all cores for nvcc.
  TRAJTRANSFER_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -v . &&
    (cd /tmp && "$PY" -c "import trajtransfer, trajtransfer._native as n; assert n._core.with_cuda, 'built without CUDA'; print('trajtransfer', trajtransfer.__version__, 'with_cuda', n._core.with_cuda, 'devices', n._core.cuda.device_count())")
}
# Fallback when pip cannot build (e.g. an older scikit-build-core): the in-place developer build
# (CMake directly, the extension copied into python/trajtransfer, PYTHONPATH=python).
build_in_place() {
  cmake -S . -B build/gpu-check -DTRAJTRANSFER_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DPython_EXECUTABLE="$(command -v "$PY")" &&
    cmake --build build/gpu-check -j "$(nproc)" &&
    cp build/gpu-check/_core*.so build/gpu-check/_testing*.so python/trajtransfer/ &&
    PYTHONPATH="$PWD/python" "$PY" -c "import trajtransfer._native as n; assert n._core.with_cuda"
}
export -f build build_in_place
if ! step build 240 build.log build; then
  if step build_in_place 180 build.log build_in_place; then
    export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "BUILD FAILED: see $OUT/build.log" | tee -a "$OUT/steps.txt"
    exit 1
  fi
fi

failed=0
# Torch may emit machine-specific UserWarnings; everything else stays an error (filterwarnings).
PYTEST=("$PY" -m pytest -p no:cacheprovider -W "ignore::UserWarning:torch.*")

step smoke 90 smoke.txt "$PY" bench/gpu_smoke.py || failed=1
step tests 150 tests.txt "${PYTEST[@]}" -v -rs tests/test_lap_cuda.py tests/test_lap_cuda_emulation.py \
  --junitxml="$OUT/junit_lap_cuda.xml" || failed=1

# The device path: the matcher and transfer() with tensors on the GPU, against the native CPU
# results (tests), then timed against the SciPy-baseline matcher and the reference-style loop.
# Each timing runs twice: the CUDA build's on-device LAP, and the default wheel's host LAP
# (TRAJTRANSFER_DEVICE_LAP=host: pinned copy of each cost matrix, the native CPU solver).
step device_tests 120 device_tests.txt "${PYTEST[@]}" -v -rs tests/test_match_device.py \
  tests/test_transfer_device.py --junitxml="$OUT/junit_device.xml" || failed=1
bench_device() {  # LABEL: matcher (MLP 784-4096-10, ResNet-18 width 128) and Conv8 T=30 transfer
  local PYTEST=("$PY" -m pytest -p no:cacheprovider -W "ignore::UserWarning:torch.*")
  TRAJTRANSFER_BENCH_DEVICE=cuda "${PYTEST[@]}" bench/test_bench_match.py -s -q \
    -k "mlp1 or resnet18_w128" --benchmark-json="$OUT/bench_match_cuda_$1.json" &&
    TRAJTRANSFER_BENCH_DEVICE=cuda "${PYTEST[@]}" bench/test_bench_transfer.py -s -q \
      --benchmark-json="$OUT/bench_transfer_cuda_$1.json" &&
    cp bench/results/match_summary_cuda.json "$OUT/match_summary_cuda_$1.json" &&
    cp bench/results/transfer_summary_cuda.json "$OUT/transfer_summary_cuda_$1.json"
}
export -f bench_device
step bench_device_lap 150 bench_device_lap.txt bench_device device_lap || failed=1
step bench_host_lap 120 bench_host_lap.txt bash -c 'TRAJTRANSFER_DEVICE_LAP=host bench_device host_lap' \
  || failed=1

BENCH=("${PYTEST[@]}" bench/test_bench_lap_cuda.py -q --benchmark-columns=min,median,max,rounds
  --benchmark-sort=fullname --benchmark-group-by=group)
step bench_small 150 bench_small.txt "${BENCH[@]}" -k "not n4096" \
  --benchmark-json="$OUT/bench_lap_cuda_small.json" || failed=1
step bench_4096_corr 90 bench_4096_corr.txt "${BENCH[@]}" -k "correlation-B1-n4096" \
  --benchmark-json="$OUT/bench_lap_cuda_4096_corr.json" || failed=1
step bench_4096_uniform 120 bench_4096_uniform.txt "${BENCH[@]}" -k "uniform-B1-n4096" \
  --benchmark-json="$OUT/bench_lap_cuda_4096_uniform.json" || failed=1

# Last, and optional: device-side memory and barrier checks on tiny problems.
if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck synccheck racecheck; do
    # Only our kernels (namespace lapk) are instrumented: torch's are not under test here.
    step "sanitizer_$tool" 60 "sanitizer_$tool.txt" compute-sanitizer --tool "$tool" \
      --kernel-name kns=lapk --error-exitcode 3 "$PY" bench/gpu_smoke.py --small || failed=1
  done
else
  echo "compute-sanitizer SKIPPED (not on PATH)" | tee -a "$OUT/steps.txt"
fi

echo "total $(($(date +%s) - START))s, failed=$failed" | tee -a "$OUT/steps.txt"
exit "$failed"
