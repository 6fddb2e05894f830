"""Why a batch does or does not scale to 2 threads: the 64 x 256^2 batch timed on 1 and 2 threads
(interleaved), and one thread's batch alone against two single-threaded batches run at once in
separate processes. When the two processes each take about as long as one alone, the cores do
not share a bottleneck (memory bandwidth, a shared cache), and a 2-thread batch below 2x is the
solver's own overhead; when both slow down alike, they do::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/batch_scaling.py [--reps 15]
    python bench/batch_scaling.py --pair-only --json bench/results   # every kernel set

``--pair-only`` times only the 64 x 256^2 batch on 1 and 2 threads, once per kernel set this CPU
runs (or the one ``--isa`` names); with ``--json DIR`` each set's interleaved medians go to
``DIR/batch_<isa>.json``, which the target check (bench/lap_isas.py) prefers over the
benchmark's back-to-back pair.

A second table varies the batch's size at the same problem size (256^2): the per-problem work
is the same, only the batch's total size moves against the caches (a float64 problem is 512 KiB,
about half a Zen 4 core's L2; the 64-problem float64 batch is 32 MiB, the whole L3 this VM
reports, float32 half that). When the 2-thread speed-up holds for batches that fit the L3 and
falls once the batch outgrows it, in either dtype at the same size in bytes, the limit is the
shared L3 and memory, not the solver.

The load average is printed with each figure (a busy machine has no second core to give).
"""

from __future__ import annotations

import argparse
import subprocess
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

from trajtransfer.core.isa import ISAS  # noqa: E402
from trajtransfer.core.lap import linear_sum_assignment_batch  # noqa: E402

BATCH, N = 64, 256


def load() -> str:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[0]


def batch_times(dtype: str, reps: int, threads: list[int], batch: int = BATCH) -> dict[int, float]:
    """Median ms per batch for each thread count, timed interleaved."""
    costs = np.random.default_rng(7).random((batch, N, N)).astype(dtype)
    times: dict[int, list[float]] = {t: [] for t in threads}
    for r in range(reps + 2):
        for t in threads:
            t0 = time.perf_counter()
            linear_sum_assignment_batch(costs, num_threads=t)
            if r >= 2:
                times[t].append(time.perf_counter() - t0)
    return {t: float(np.median(v)) * 1e3 for t, v in times.items()}


def pair_only(args: argparse.Namespace, argv: list[str]) -> int:
    """The benchmark's batch cases, interleaved, in the kernel set's own process."""
    rc = dispatch(__file__, argv, args.isa, "| isa | dtype | 1 thread ms | 2 threads ms | "
                  "1 / 2 threads | load |\n|---|---|---:|---:|---:|---:|")
    if rc is not None:
        return rc
    cases = []
    for dtype in ("float32", "float64"):
        t = batch_times(dtype, args.reps, [1, 2])
        print(f"| {args.isa} | {dtype} | {t[1]:.2f} | {t[2]:.2f} | {t[1] / t[2]:.2f} | {load()} |",
              flush=True)
        group = f"batch-{BATCH}x{N}-{'f32' if dtype == 'float32' else 'f64'}"
        cases += [(group, "ours-2threads", t[2] / 1e3, True),
                  (group, "ours-1thread", t[1] / 1e3, False)]
    if args.json:
        write_interleaved(Path(args.json) / f"batch_{args.isa}.json", cases)
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--single", choices=["float32", "float64"],
                    help="(internal) print one thread's median ms for this dtype and exit")
    ap.add_argument("--pair-only", action="store_true",
                    help="only the 1- and 2-thread pair, per kernel set (see above)")
    ap.add_argument("--isa", choices=ISAS, help="with --pair-only: this kernel set only")
    ap.add_argument("--json", metavar="DIR", help="with --pair-only: write DIR/batch_<isa>.json")
    args = ap.parse_args(argv)
    if args.single:
        print(batch_times(args.single, args.reps, [1])[1])
        return 0
    if args.pair_only:
        return pair_only(args, argv)
    print("| dtype | 1 thread ms | 2 threads ms | 1 / 2 threads | 1 thread, alone ms | "
          "1 thread, beside another ms | slow-down | load |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for dtype in ("float32", "float64"):
        t = batch_times(dtype, args.reps, [1, 2])
        alone = batch_times(dtype, args.reps, [1])[1]
        cmd = [sys.executable, __file__, "--single", dtype, "--reps", str(args.reps)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        beside = max(float(p.communicate()[0]) for p in procs)
        print(f"| {dtype} | {t[1]:.2f} | {t[2]:.2f} | {t[1] / t[2]:.2f} | {alone:.2f} | "
              f"{beside:.2f} | {beside / alone:.2f} | {load()} |", flush=True)
    print("\n| batch MiB | dtype | problems | 1 thread µs / problem | 2 threads µs / problem | "
          "1 / 2 threads | load |\n|---:|---|---:|---:|---:|---:|---:|")
    for mib in (8, 16, 32, 64):
        for dtype in ("float32", "float64"):
            batch = mib * 2**20 // (N * N * np.dtype(dtype).itemsize)
            t = batch_times(dtype, args.reps, [1, 2], batch)
            print(f"| {mib} | {dtype} | {batch} | {t[1] * 1e3 / batch:.1f} | "
                  f"{t[2] * 1e3 / batch:.1f} | {t[1] / t[2]:.2f} | {load()} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
