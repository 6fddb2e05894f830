"""Variants of the greedy start, measured before choosing one: the pass in spec order, in reverse
order, and the best of k passes in seeded random orders (each followed by the descent).

A second greedy pass is not a variant: with every group already placed it is one sweep in spec
order. The orders are swapped into the device path's pass (the torch path on the CPU), so each
variant runs the same code; only the visit order differs. Prints a markdown table.

    nice -n 19 env PYTHONPATH=python python docs/dev/experiments/greedy_variants.py
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from test_bench_match import _conv8_gradients, _weights_problem  # noqa: E402

from trajtransfer.core import descent  # noqa: E402
from trajtransfer.core.match import match_gradients  # noqa: E402
from trajtransfer.kit.models import MLP, ResNet18  # noqa: E402

_spec_order_pass = descent._greedy_pass
ORDER: list = []


def _ordered_pass(pairs, lap, perms, host_perms, counters):
    """The device path's greedy pass, visiting the groups in ``ORDER``."""
    assigned = [False] * len(pairs.sizes)
    t0 = time.perf_counter()
    for g in ORDER:
        cost, _ = pairs.cost(g, perms, host_perms, assigned)
        cols = lap.solve(g, lap.to_host(cost))
        host_perms[g] = cols
        perms[g] = torch.from_numpy(cols).to(perms[g].device)
        assigned[g] = True
    return time.perf_counter() - t0, 0.0


PROBLEMS = {  # the matcher benchmark's problems (bench/test_bench_match.py), without its extra field
    "mlp3 (784-1024³-10)": lambda: _weights_problem(lambda: MLP(784, (1024, 1024, 1024), 10))[:2],
    "mlp5 (784-512⁵-10)": lambda: _weights_problem(lambda: MLP(784, (512,) * 5, 10))[:2],
    "resnet18 w64": lambda: _weights_problem(lambda: ResNet18(num_classes=10, width=64, stem="cifar"))[:2],
    "conv8 K=30 gradients": lambda: _conv8_gradients()[:2],
}


def run(spec, pairs, order):
    ORDER[:] = order
    t0 = time.perf_counter()
    res = match_gradients(spec, pairs, init="greedy", seed=0, backend="torch")
    return res.objective, res.sweeps, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=4, help="seeded random orders in the best-of-k variant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    descent._greedy_pass = _ordered_pass
    print("| problem | variant | objective | vs spec order | sweeps | time (s) |")
    print("|---|---|---|---|---|---|")
    for name, make in PROBLEMS.items():
        spec, pairs = make()
        groups = list(range(len(spec.perm_to_axes)))
        ident = match_gradients(spec, pairs, init="identity", seed=0, backend="torch")
        rows = {"identity start": (ident.objective, ident.sweeps, float("nan"))}
        rows["spec order"] = run(spec, pairs, groups)
        rows["reverse order"] = run(spec, pairs, groups[::-1])
        rand = []
        for s in range(args.k):
            order = list(groups)
            random.Random(s).shuffle(order)
            rand.append(run(spec, pairs, order))
        best = max(rand, key=lambda r: r[0])
        rows[f"best of {args.k} random orders"] = (best[0], best[1], sum(r[2] for r in rand))
        rows[f"mean of {args.k} random orders"] = (sum(r[0] for r in rand) / args.k,
                                                   sum(r[1] for r in rand) / args.k, sum(r[2] for r in rand) / args.k)
        ref = rows["spec order"][0]
        for variant, (obj, sweeps, secs) in rows.items():
            print(f"| {name} | {variant} | {obj:.4g} | {100 * (obj / ref - 1):+.2f} % | {sweeps:g} | {secs:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
