"""Conv8 / ResNet-18 on Fashion-MNIST: how transfers depend on the length of the source's training.

Trains a source and a target (another seed) once, each checkpointed every epoch. Then:

* for every epoch e (as if training had stopped there): ‖θ₁ᵉ − θ₁⁰‖ / ‖θ₁⁰‖, and the accuracy of
  the end point θ₂⁰ + π(θ₁ᵉ − θ₁⁰) with π = identity (Naive) and π = the Oracle's weight matching
  of the target's own displacement θ₂ᵉ − θ₂⁰, beside the target trained for e epochs;
* at each epoch of ``--transfer-epochs``: full transfers (T = ``--steps``) of the straight line
  θ₁⁰ → θ₁ᵉ and of the actual per-epoch trajectory, with every method of ``--methods`` and every
  number of BN recalibration batches of ``--bn-batches``.

One JSON line per result goes to --out.

    PYTHONPATH=python python docs/dev/experiments/conv_fashion_mnist.py --model conv8 --width 0.25 \
        --epochs 12 --transfer-epochs 3,12 --out runs/conv8.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from trajtransfer import TrainConfig, train, transfer
from trajtransfer.core.permute import apply_permutation, random_permutation
from trajtransfer.kit.models import Conv8, ResNet18
from trajtransfer.method.trajectory import Trajectory, TrajectoryRecorder

from fashion_subsets import parse_and_load


def relative_displacement(init: dict, end: dict, names: list) -> float:
    """‖θᵉ − θ⁰‖ / ‖θ⁰‖ over the parameters: how far training moved from the init."""
    d = sum(float((end[n] - init[n]).pow(2).sum()) for n in names)
    z = sum(float(init[n].pow(2).sum()) for n in names)
    return (d / z) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("conv8", "resnet18"), default="conv8")
    ap.add_argument("--width", type=float, default=0.25, help="Conv8 channel factor / ResNet base width")
    ap.add_argument("--init", default="kaiming", help="Conv8 init: kaiming or torch")
    ap.add_argument("--init-scale", type=float, default=1.0,
                    help="ResNet-18: multiply every conv weight of the init by this (BatchNorm makes "
                         "the initial function the same; the same SGD steps then move the weights "
                         "further relative to their init)")
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--val-subset", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--transfer-epochs", default="", help="comma-separated epochs e for full transfers")
    ap.add_argument("--trajectories", default="linear,actual")
    ap.add_argument("--methods", default="naive,gmt,fgmt,oracle")
    ap.add_argument("--grad-batches", type=int, default=1)
    ap.add_argument("--bn-batches", default="10", help="comma-separated (ResNet-18); 0 = off")
    ap.add_argument("--random-perms", type=int, default=0,
                    help="also the end point θ₂⁰ + π(θ₁ᵉ − θ₁⁰) for this many uniformly random π: "
                         "the spread a permutation that knows nothing gives")
    ap.add_argument("--out", required=True)
    args, data = parse_and_load(ap)

    def make():
        if args.model == "conv8":
            return Conv8(10, width=args.width, in_channels=1, input_size=28, init=args.init)
        model = ResNet18(10, width=int(args.width), in_channels=1)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.mul_(args.init_scale)
        return model

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=128, momentum=0.9,
                      warmup_epochs=args.warmup_epochs)
    out = open(args.out, "a")

    def emit(row: dict) -> None:
        row.update(model=args.model, width=args.width, seed=args.seed, lr=args.lr,
                   train_subset=args.train_subset, val_subset=args.val_subset, init=args.init,
                   init_scale=args.init_scale)
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps(row), flush=True)

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    source = make()
    torch.manual_seed(args.seed + 1)
    target = make()
    dirs = tempfile.TemporaryDirectory()
    recs = [TrajectoryRecorder(f"{dirs.name}/{who}") for who in ("source", "target")]
    h_src = train(source, data.train, cfg, val=data.val, recorder=recs[0], seed=args.seed)
    h_tgt = train(target, data.train, cfg, val=data.val, recorder=recs[1], seed=args.seed + 1)
    emit({"kind": "train", "seconds": time.perf_counter() - t0, "source_val": h_src.val_accuracy,
          "target_val": h_tgt.val_accuracy})
    names = [n for n, _ in source.named_parameters()]
    bn_list = [int(b) for b in args.bn_batches.split(",")]

    def run(traj: Trajectory, target_init: dict, target_final: dict, method: str, bn: int,
            steps=None):
        return transfer(make(), traj, target_init, data, method=method, steps=steps,
                        grad_batches=args.grad_batches, bn_batches=bn, seed=args.seed,
                        target_final=target_final, eval_every=1 if steps else 10**9)

    src0, tgt0 = recs[0].trajectory(epochs=[-1, 0]).checkpoint(0), recs[1].trajectory(epochs=[-1, 0]).checkpoint(0)
    for e in range(1, args.epochs + 1):
        ends = [r.trajectory(epochs=[-1, e - 1]).checkpoint(1) for r in recs]
        line = Trajectory([src0, ends[0]], num_splits=1)
        row = {"kind": "length", "epoch": e, "bn_batches": bn_list[0],
               "source_rel_displacement": relative_displacement(src0, ends[0], names),
               "target_rel_displacement": relative_displacement(tgt0, ends[1], names),
               "source_val": h_src.val_accuracy[e - 1], "target_val": h_tgt.val_accuracy[e - 1]}
        for method in ("naive", "oracle"):
            res = run(line, tgt0, ends[1] if method == "oracle" else None, method, bn_list[0])
            row[method] = res.accuracy[-1]
        spec = source.permutation_spec()
        # θ₂⁰ + π(Δ) is π(π⁻¹(θ₂⁰) + Δ): the same function as Naive from the init π⁻¹(θ₂⁰)
        row["random_perms"] = [
            run(line, apply_permutation(spec, random_permutation(spec, tgt0, seed=1000 + i), tgt0,
                                        inverse=True), None, "naive", bn_list[0]).accuracy[-1]
            for i in range(args.random_perms)]
        emit(row)
        if str(e) not in args.transfer_epochs.split(","):
            continue
        for kind in args.trajectories.split(","):
            epochs = list(range(-1, e)) if kind == "actual" else [-1, e - 1]
            traj = recs[0].trajectory(epochs=epochs)
            steps = args.steps if kind == "linear" else e * max(1, args.steps // e)
            for bn in bn_list:
                for method in args.methods.split(","):
                    res = run(traj, tgt0, ends[1] if method == "oracle" else None, method, bn, steps)
                    acc = dict(zip(res.eval_steps, res.accuracy))
                    emit({"kind": "transfer", "epoch": e, "trajectory": kind, "method": method,
                          "bn_batches": bn, "steps": res.num_steps, "grad_batches": args.grad_batches,
                          "accuracy": res.accuracy, "best_step": res.best_step, "best": res.best_accuracy,
                          "mid": acc.get(res.num_steps // 2),
                          "matching_share": res.timings["matching"] / res.timings["total"],
                          "seconds": res.timings["total"]})


if __name__ == "__main__":
    main()
