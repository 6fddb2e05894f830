"""GMT / FGMT with the identity start against the greedy start of the gradient matching.

For each dataset and seed: train a source and a target (another seed) with SGD, transfer the
source's straight-line trajectory (uniform λ, T steps) with GMT and FGMT from each start
(``transfer(match_init=...)``), and record the validation accuracy at the best step and at
s = T/2, the matching time and the mean sweeps per solve. MLPs with two hidden layers: with one
hidden layer there is one permutation group and both starts give the same solve. Prints a
per-seed table and a mean table (markdown); writes results.json to --out.

    nice -n 19 env PYTHONPATH=python python docs/dev/experiments/match_init_fidelity.py --out runs/fidelity
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from trajtransfer import MLP, Trajectory, TrainConfig, evaluate, load_digits_data, load_fashion_mnist, train, transfer

SETUPS = {
    # name: (loader, in_features, hidden, epochs, lr, batch, train subset, val subset)
    "digits": (load_digits_data, 64, (256, 256), 2, 0.05, 32, None, None),
    "fashion-mnist": (load_fashion_mnist, 784, (512, 512), 2, 0.05, 128, 10000, 2000),
}
STARTS = ("identity", "greedy")
METHODS = ("gmt", "fgmt")


def run_seed(name: str, seed: int, steps: int, grad_batches: int) -> list:
    loader, d_in, hidden, epochs, lr, batch, n_train, n_val = SETUPS[name]
    data = loader()
    if n_train:
        data.train = data.train.subset(slice(0, n_train))
    if n_val:
        data.val = data.val.subset(slice(0, n_val))

    def make():
        return MLP(d_in, hidden, 10)

    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch, momentum=0.9, schedule="constant")
    torch.manual_seed(seed)
    source = make()
    init = {k: v.clone() for k, v in source.state_dict().items()}
    train(source, data.train, cfg, seed=seed)
    torch.manual_seed(seed + 1)
    target = make()
    target_init = {k: v.clone() for k, v in target.state_dict().items()}
    train(target, data.train, cfg, seed=seed + 1)
    target_val = evaluate(target, data.val)
    traj = Trajectory([init, source.state_dict()], num_splits=steps)
    rows = []
    for method in METHODS:
        for start in STARTS:
            res = transfer(make(), traj, target_init, data, method=method, match_init=start, seed=seed,
                           grad_batches=grad_batches, batch_size=128)
            acc = dict(zip(res.eval_steps, res.accuracy))
            sweeps = [s for s in res.sweeps if s is not None]
            row = {"dataset": name, "seed": seed, "method": method, "start": start, "target": target_val,
                   "mid": acc[steps // 2], "best": res.best_accuracy, "best_step": res.best_step,
                   "matching_s": res.timings["matching"], "sweeps": statistics.mean(sweeps),
                   "objective_K": res.objective[-1], "objectives": res.objective}
            rows.append(row)
            print({k: v for k, v in row.items() if k != "objectives"}, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="digits,fashion-mnist")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--grad-batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/match-init-fidelity")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = []
    for name in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows += run_seed(name, seed, args.steps, args.grad_batches)
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    print("\n| dataset | seed | method | start | acc @ s=T/2 | acc @ best (step) | matching s | sweeps/solve |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['seed']} | {r['method'].upper()} | {r['start']} | {100 * r['mid']:.1f} | "
              f"{100 * r['best']:.1f} ({r['best_step']}) | {r['matching_s']:.3f} | {r['sweeps']:.1f} |")
    print("\nMeans over seeds:\n")
    print("| dataset | method | start | acc @ s=T/2 | acc @ best | matching s | sweeps/solve | objective @ K "
          "vs identity | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["dataset"], r["method"], r["start"]) for r in rows},
                  key=lambda k: (k[0], METHODS.index(k[1]), STARTS.index(k[2])))
    for key in keys:
        sel = [r for r in rows if (r["dataset"], r["method"], r["start"]) == key]
        mean = lambda f: statistics.mean(r[f] for r in sel)  # noqa: E731
        ident = {(r["dataset"], r["method"], r["seed"]): r["objective_K"] for r in rows if r["start"] == "identity"}
        ratio = statistics.mean(r["objective_K"] / ident[r["dataset"], r["method"], r["seed"]] - 1 for r in sel)
        print(f"| {key[0]} | {key[1].upper()} | {key[2]} | {100 * mean('mid'):.1f} | {100 * mean('best'):.1f} | "
              f"{mean('matching_s'):.3f} | {mean('sweeps'):.1f} | {100 * ratio:+.2f} % | {100 * mean('target'):.1f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
