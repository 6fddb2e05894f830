"""ResNet-18 (BatchNorm, CIFAR stem) on Fashion-MNIST: transfer methods and BN recalibration.

Trains a source and a target (another seed) once, then transfers the source's straight-line
trajectory with Naive / GMT / FGMT / Oracle (BN recalibrated on 10 minibatches before every
evaluation), and GMT / FGMT again with 0 (off), 1 and 50 recalibration minibatches. Prints
markdown tables; writes results.json to --out.

    PYTHONPATH=python python docs/dev/experiments/resnet_bn_fashion_mnist.py --out runs/resnet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from trajtransfer import ResNet18, Trajectory, TrainConfig, evaluate, train, transfer

from fashion_subsets import parse_and_load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16, help="ResNet-18 base width (64 in the paper)")
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--val-subset", type=int, default=2000, help="validation images evaluated per step")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="runs/resnet-bn")
    args, data = parse_and_load(ap)

    def make():
        return ResNet18(num_classes=10, width=args.width, in_channels=1)

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=128, momentum=0.9)
    torch.manual_seed(args.seed)
    source = make()
    init = {k: v.clone() for k, v in source.state_dict().items()}
    t0 = time.perf_counter()
    train(source, data.train, cfg, seed=args.seed)
    torch.manual_seed(args.seed + 1)
    target = make()
    target_init = {k: v.clone() for k, v in target.state_dict().items()}
    train(target, data.train, cfg, seed=args.seed + 1)
    target_val, target_test = evaluate(target, data.val), evaluate(target, data.test)
    print(f"trained in {time.perf_counter() - t0:.0f}s; source val {100 * evaluate(source, data.val):.2f}%, "
          f"target val {100 * target_val:.2f}% test {100 * target_test:.2f}%", flush=True)
    traj = Trajectory([init, source.state_dict()], num_splits=args.steps)
    runs = [(m, 10) for m in ("naive", "gmt", "fgmt", "oracle")]
    runs += [(m, b) for b in (0, 1, 50) for m in ("gmt", "fgmt")]
    rows = []
    for method, bn in runs:
        res = transfer(make(), traj, target_init, data, method=method, bn_batches=bn, seed=args.seed,
                       target_final=target if method == "oracle" else None)
        acc = dict(zip(res.eval_steps, res.accuracy))
        m = make()
        m.load_state_dict(res.best_params)
        row = {"method": method, "bn_batches": bn, "mid": acc.get(args.steps // 2),
               "best_step": res.best_step, "best": res.best_accuracy, "test_at_best": evaluate(m, data.test),
               "seconds": res.timings["total"],
               "matching_share": res.timings["matching"] / res.timings["total"]}
        rows.append(row)
        print(row, flush=True)
    print("\n| method | BN batches | acc @ s=T/2 | best step | acc @ best | test @ best | time (s) | matching share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['bn_batches']} | {100 * r['mid']:.1f} | {r['best_step']} | "
              f"{100 * r['best']:.1f} | {100 * r['test_at_best']:.1f} | {r['seconds']:.1f} | "
              f"{100 * r['matching_share']:.1f}% |")
    print(f"| target trained directly ({args.epochs} epochs) | | | | {100 * target_val:.1f} | "
          f"{100 * target_test:.1f} | | |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "target_val": target_val,
                                                  "target_test": target_test, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
