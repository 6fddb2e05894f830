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
import time

import torch

from trajtransfer.core import descent
from trajtransfer.core.match import match_gradients
from trajtransfer.kit.models import MLP, Conv8, ResNet18

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


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _weights(make, seed=0):
    torch.manual_seed(seed)
    a, b = make(), make()
    return a.permutation_spec(), [(_state(a), _state(b))]


def _conv8_gradients(k=30, batch=8, seed=0):
    torch.manual_seed(seed)
    ma, mb = Conv8(), Conv8()
    gen = torch.Generator().manual_seed(seed + 1)
    pairs = []
    for _ in range(k):
        x, y = torch.randn(batch, 3, 32, 32, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
        grads = []
        for m in (ma, mb):
            m.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            grads.append({n: p.grad.detach().clone() for n, p in m.named_parameters()})
        pairs.append((grads[0], grads[1]))
    return ma.permutation_spec(), pairs


PROBLEMS = {
    "mlp3 (784-1024³-10)": lambda: _weights(lambda: MLP(784, (1024, 1024, 1024), 10)),
    "mlp5 (784-512⁵-10)": lambda: _weights(lambda: MLP(784, (512,) * 5, 10)),
    "resnet18 w64": lambda: _weights(lambda: ResNet18(num_classes=10, width=64, stem="cifar")),
    "conv8 K=30 gradients": _conv8_gradients,
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
