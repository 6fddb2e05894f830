#!/bin/sh
# The LAP's per-kernel-set target table, for a quiet machine (about 8 minutes on 2 cores):
# warm against cold per perturbation family (timed interleaved, kept for the target check), the
# benchmark and its target check for every set this CPU runs (peers timed once), and the batch on
# 1 and 2 threads (interleaved; the working-set sweep).
# Everything printed also goes to bench/results/lap_targets.log.
#   sh bench/lap_targets.sh
set -u
cd "$(dirname "$0")/.." || exit 1
log=bench/results/lap_targets.log
run() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@" 2>&1 | tee -a "$log"; }
: > "$log"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
# warm / cold and the batch pair first: the target check then takes their interleaved medians
# (the benchmark skips its own back-to-back warm cases)
run python bench/warm_vs_cold.py --reps 9 --json bench/results
run python bench/batch_scaling.py --pair-only --reps 9 --json bench/results
run python bench/lap_isas.py --peers-once -k "not test_warm_resolve"
run python bench/batch_scaling.py --reps 9
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
