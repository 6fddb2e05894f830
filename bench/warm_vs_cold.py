"""Warm against cold re-solves per perturbation family, timed interleaved (warm, cold, warm, ...)
so that a busy machine slows both alike; pytest-benchmark times one solver's rounds in a row.
Each kernel set runs in its own process (the set is chosen once per process)::

    python bench/warm_vs_cold.py                   # every set this CPU runs, n = 1024 and 2048
    python bench/warm_vs_cold.py --isa avx2 --n 1024 --reps 31
    python bench/warm_vs_cold.py --json bench/results   # also warm_vs_cold_<isa>.json per set

With ``--json DIR`` each set's medians are also written as pytest-benchmark-style JSON
(``DIR/warm_vs_cold_<isa>.json``, the groups of bench/test_bench_lap.py's warm cases), which
``lap_isas.py`` then prefers for the warm targets: interleaved medians of one run are the
better ratio on a machine that is not idle.

Prints one line per case: median warm and cold ms, cold / warm, and the solver's counters of
the warm solve (cold_restarts: the warm start was given up; warm_rows_read: n // 8 when it gave
up on the row sample). The machine's load average is printed with each set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # the package built in place during development (see bench/conftest.py)
    import trajtransfer  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent / "python"))

from isa_processes import dispatch, write_interleaved  # noqa: E402
from test_bench_lap import PERTURBATIONS, perturbed  # noqa: E402

from trajtransfer import _core  # noqa: E402
from trajtransfer.core.isa import ISAS  # noqa: E402
from trajtransfer.core.lap import lap_solve  # noqa: E402


def measure(n: int, dtype: str, family: str, reps: int) -> tuple[str, float, float]:
    """The table line for one case, and the warm and cold medians in seconds."""
    cost = np.random.default_rng(1000 + n).random((n, n)).astype(dtype)
    new = perturbed(cost, family)
    prev = lap_solve(cost)
    warm, cold = [], []
    for r in range(reps + 3):  # 3 rounds to settle caches and the helper thread
        t0 = time.perf_counter()
        w = lap_solve(new, warm_start=prev)
        t1 = time.perf_counter()
        stats = _core.lap.last_solve_stats()
        c = lap_solve(new)
        t2 = time.perf_counter()
        if r >= 3:
            warm.append(t1 - t0)
            cold.append(t2 - t1)
    c64 = new.astype(np.float64)
    totals = [float(c64[s.row_ind, s.col_ind].sum()) for s in (w, c)]
    assert abs(totals[0] - totals[1]) <= 1e-9 * abs(totals[1]) + 1e-9, totals
    mw, mc = float(np.median(warm)) * 1e3, float(np.median(cold)) * 1e3
    line = (f"| {_core.lap.simd_level()} | {family} | {np.dtype(dtype).name} | {n} | {mw:.2f} | "
            f"{mc:.2f} | {mc / mw:.2f} | {stats['cold_restarts']} | {stats['warm_rows_read']} |")
    return line, mw / 1e3, mc / 1e3


def benchmark_entries(n: int, dtype: str, family: str, warm: float, cold: float) -> list[tuple]:
    """One case's entries for write_interleaved (the group of test_bench_lap.py's warm case)."""
    group = f"warm-{family}-uniform-{'f32' if dtype == 'float32' else 'f64'}-n{n}"
    return [(group, "ours-warm", warm, True), (group, "ours-cold", cold, False)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--isa", choices=ISAS, help="one kernel set, in this process")
    ap.add_argument("--n", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--families", nargs="+", default=PERTURBATIONS, choices=PERTURBATIONS)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", metavar="DIR", help="also write DIR/warm_vs_cold_<isa>.json")
    args = ap.parse_args(argv)
    rc = dispatch(__file__, argv, args.isa,
                  "| isa | family | dtype | n | warm ms | cold ms | cold / warm | cold_restarts | "
                  "warm_rows_read |\n|---|---|---|---:|---:|---:|---:|---:|---:|")
    if rc is not None:
        return rc
    with open("/proc/loadavg") as fh:
        print(f"<!-- {args.isa}: load average {fh.read().split()[0]} at start -->", flush=True)
    entries: list[tuple] = []
    for n in args.n:
        for dtype in ("float32", "float64"):
            for family in args.families:
                line, warm, cold = measure(n, dtype, family, args.reps)
                print(line, flush=True)
                entries += benchmark_entries(n, dtype, family, warm, cold)
    if args.json:
        write_interleaved(Path(args.json) / f"warm_vs_cold_{args.isa}.json", entries)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
