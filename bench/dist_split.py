"""Wall-time split of a data-parallel transfer: 2 gloo processes under torchrun against 1 process.

Runs the launcher ``trajtransfer.kit.distributed_demo`` (MLP 784-512-10 on Fashion-MNIST, K = 10,
no evaluation) alone with 1 and with 2 threads and as 2 torchrun ranks with 1 thread each,
interleaved, and prints the median seconds per phase (rank 0's figures). The first 2-process run of each workload
checks its permutations against one process::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/dist_split.py [--reps 3]

``communication`` is the time in collectives, waits for the slower rank included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHASES = ("gradients", "communication", "matching", "overhead", "total")
#: (processes, threads each)
RUNS = ((1, 1), (1, 2), (2, 1))
#: name -> launcher arguments: FGMT as in the paper (one 128-sample minibatch per pair, factored
#: pairs) and GMT with 512-sample minibatches (55 pairs: the gradients' share grows).
WORKLOADS = {
    "FGMT, B=128": ["--method", "fgmt", "--batch-size", "128"],
    "GMT, B=512": ["--method", "gmt", "--batch-size", "512"],
}
#: The source as measured in docs/dev/distributed.md: one epoch at the training default lr 0.01.
COMMON = ["--dataset", "fashion-mnist", "--hidden", "512", "--steps", "10", "--epochs", "1",
          "--lr", "0.01"]


def _env() -> dict:
    try:
        import trajtransfer  # noqa: F401

        return dict(os.environ)
    except ImportError:  # the package built in place during development
        path = os.pathsep.join([str(HERE.parent / "python"), os.environ.get("PYTHONPATH", "")])
        return dict(os.environ, PYTHONPATH=path)


def run(world: int, threads: int, args: list, out: Path) -> dict:
    demo = ["-m", "trajtransfer.kit.distributed_demo", *args, "--json", str(out),
            "--threads", str(threads)]
    if world == 1:
        cmd = [sys.executable, *demo]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(world), *demo]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "problem.pt"
        rows = []
        for name, extra in WORKLOADS.items():
            args = [*COMMON, *extra, "--cache", str(cache)]
            times: dict = {r: [] for r in RUNS}
            for rep in range(opts.reps):
                for world, threads in RUNS:
                    check = ["--check"] if world > 1 and rep == 0 else []
                    res = run(world, threads, args + check, Path(tmp) / "out.json")
                    if check and not res["check"]["same_permutations"]:
                        raise SystemExit(f"{name}: {world} processes found other permutations than 1")
                    times[(world, threads)].append(res["timings"])
            med = {r: {p: statistics.median(t.get(p, 0.0) for t in times[r]) for p in PHASES}
                   for r in RUNS}
            for (world, threads), m in med.items():
                label = f"{world} process{'es' if world > 1 else ''} × {threads} thread{'s' if threads > 1 else ''}"
                rows.append(f"| {name} | {label} | " + " | ".join(f"{m[p]:.2f}" for p in PHASES)
                            + f" | {med[RUNS[0]]['total'] / m['total']:.2f}× |")
    print("| workload | run | gradients s | communication s | matching s | overhead s | total s "
          "| speed-up vs 1 × 1 |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    with open("/proc/loadavg") as fh:
        print(f"\nload average at the end: {fh.read().split()[0]}")


if __name__ == "__main__":
    main()
