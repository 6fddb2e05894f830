"""Learning transfer of SGD and Adam runs (MLP or ViT) on a Fashion-MNIST subset.

Trains a source and a target (another seed) with ``--optimizer``, each checkpointed every epoch,
and reports, one JSON line per result in ``--out``:

* ``kind="train"``: seconds, per-epoch validation accuracy, the target's test accuracy;
* ``kind="geometry"`` (source and target): how straight the trajectory is. With θ₀ … θ_E the
  per-epoch checkpoints and D = θ_E − θ₀: ``straightness`` = ‖D‖ / Σₑ‖θₑ − θₑ₋₁‖ (1 = a straight
  line), ``consecutive_cos`` = cos(θₑ − θₑ₋₁, θₑ₊₁ − θₑ), ``progress`` = ⟨θₑ − θ₀, D⟩ / ‖D‖²
  (where each epoch sits along the straight line: the λ the uniform schedule assumes is e / E),
  ``off_line`` = ‖(θₑ − θ₀) − progressₑ·D‖ / ‖θₑ − θ₀‖, and ``rel_displacement`` = ‖D‖ / ‖θ₀‖;
* ``kind="transfer"``: each method × λ schedule × trajectory (``linear``: θ₀ → θ_E in
  ``--steps`` steps; ``actual``: every epoch's checkpoint): best-step validation accuracy, test
  accuracy at the best step, the accuracy curve, the matching share of the wall time, and the
  fraction of units on which the method's final π agrees with the Oracle's;
* ``kind="transfer"``, ``method="fgmt-displacement"`` (``--displacement-matching``): FGMT with
  the source *gradient* of each pair replaced by the source's own step −(θ₁ˢ − θ₁ˢ⁻¹), normalized:
  π then maximizes the first-order decrease ⟨−g₂, π·Δ⟩ of the target's loss along the transferred
  step, whatever preconditioner produced Δ (a variant for this question, not a library method);
* ``kind="alignment"``: whether gradients predict the steps. On fixed minibatches, at the two
  inits: cos(−g₁, D₁) (the source's own gradient against its displacement), and for each final π
  of the linear transfers cos(g₂, π·g₁) (what gradient matching maximizes) and cos(−g₂, π·D₁)
  (the first-order descent of the transferred step, what it is meant to achieve).

    PYTHONPATH=python nice -n 19 python docs/dev/experiments/optimizer_transfer_fashion_mnist.py \
        --model mlp --optimizer adam --lr 1e-3 --epochs 5 --out runs/adam_mlp.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
import torch.nn.functional as F

from trajtransfer import TrainConfig, evaluate, train, transfer
from trajtransfer.core.permute import apply_permutation
from trajtransfer.kit.data import Loader
from trajtransfer.kit.models import MLP
from trajtransfer.method.trajectory import TrajectoryRecorder

from fashion_subsets import parse_and_load


def flat(sd: dict, names: list) -> torch.Tensor:
    return torch.cat([sd[n].reshape(-1).double() for n in names])


def geometry(points: list, names: list) -> dict:
    """Straightness of a trajectory given by its per-epoch checkpoints (see the module doc)."""
    theta = [flat(p, names) for p in points]
    steps = [b - a for a, b in zip(theta, theta[1:])]
    d = theta[-1] - theta[0]
    dd = float(d @ d)
    progress, off_line = [], []
    for t in theta[1:]:
        u = t - theta[0]
        lam = float(u @ d) / dd
        progress.append(lam)
        off_line.append(float((u - lam * d).norm() / u.norm()))
    cos = [float(a @ b / (a.norm() * b.norm())) for a, b in zip(steps, steps[1:])]
    return {"straightness": float(d.norm()) / sum(float(s.norm()) for s in steps),
            "consecutive_cos": cos, "progress": progress, "off_line": off_line,
            "step_norms": [float(s.norm()) for s in steps],
            "rel_displacement": float(d.norm() / theta[0].norm())}


def gradient(model, params: dict, batches: list) -> dict:
    """Mean cross-entropy gradient at ``params`` over ``batches`` (train mode)."""
    model.load_state_dict(params)
    model.train()
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()
    return {n: p.grad.detach().clone() / len(batches) for n, p in model.named_parameters()}


def cosine(a: dict, b: dict, names: list) -> float:
    x, y = flat(a, names), flat(b, names)
    return float(x @ y / (x.norm() * y.norm()))


def agreement(perms: dict, oracle: dict) -> float:
    """Fraction of permuted indices, over all groups, that two permutations map alike."""
    same = sum(int((perms[g].cpu() == oracle[g].cpu()).sum()) for g in oracle)
    return same / sum(int(oracle[g].numel()) for g in oracle)


def displacement_fgmt(make, traj, tgt0: dict, data, spec, grad_batches: int, seed: int,
                      match_init: str) -> dict:
    """FGMT whose pairs are (target gradient at θ₂ˢ⁻¹, −(θ₁ˢ − θ₁ˢ⁻¹)/‖θ₁ˢ − θ₁ˢ⁻¹‖); each solve
    starts as ``transfer``'s do (``match_init``: "identity" or "greedy")."""
    from trajtransfer.core.match import GradientMatcher

    probe, model = make(), make()
    names = [n for n, _ in probe.named_parameters()]
    matcher = GradientMatcher(spec, seed=seed)
    loader = Loader(data.train, 128, seed=seed)

    def stream():
        while True:
            yield from loader.epoch()

    batches = stream()
    origin = traj[0]
    perms, accuracy, best, t_match = None, [], (-1.0, 0, None), 0.0
    t0 = time.perf_counter()

    def point(s: int) -> dict:
        disp = {n: traj[s][n] - origin[n] for n in names}
        moved = apply_permutation(spec, perms, disp) if perms is not None else disp
        return {**tgt0, **{n: tgt0[n] + moved[n] for n in names}}

    model.load_state_dict(tgt0)
    accuracy.append(evaluate(model, data.val))
    for s in range(1, traj.num_steps + 1):
        g2 = gradient(probe, point(s - 1), [next(batches) for _ in range(grad_batches)])
        step = {n: traj[s][n] - traj[s - 1][n] for n in names}
        norm = float(flat(step, names).norm())
        t1 = time.perf_counter()
        matcher.add(g2, {n: -v / norm for n, v in step.items()}, 1.0)
        perms = matcher.solve(match_init).perms
        t_match += time.perf_counter() - t1
        params = point(s)
        model.load_state_dict(params)
        accuracy.append(evaluate(model, data.val))
        if accuracy[-1] > best[0]:
            best = (accuracy[-1], s, params)
    model.load_state_dict(best[2])
    total = time.perf_counter() - t0
    return {"best": best[0], "best_step": best[1], "best_test": evaluate(model, data.test),
            "mid": accuracy[traj.num_steps // 2], "accuracy": accuracy, "pairs": traj.num_steps,
            "seconds": total, "matching_share": t_match / total, "perms": perms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("mlp", "vit"), default="mlp")
    ap.add_argument("--hidden", default="512,512", help="MLP hidden widths")
    ap.add_argument("--vit-depth", type=int, default=2)
    ap.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--val-subset", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--grad-batches", type=int, default=10)
    ap.add_argument("--schedules", default="uniform,cosine")
    ap.add_argument("--trajectories", default="linear,actual")
    ap.add_argument("--methods", default="naive,gmt,fgmt,oracle")
    ap.add_argument("--align-batches", type=int, default=10)
    ap.add_argument("--displacement-matching", action="store_true")
    ap.add_argument("--match-init", choices=("identity", "greedy"), default="identity",
                    help="start of every solve (transfer's match_init)")
    ap.add_argument("--out", required=True)
    args, data = parse_and_load(ap)

    def make():
        if args.model == "mlp":
            return MLP(784, tuple(int(h) for h in args.hidden.split(",")), 10)
        from trajtransfer.kit.models import ViT

        return ViT(depth=args.vit_depth)

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      momentum=args.momentum, weight_decay=args.weight_decay,
                      optimizer=args.optimizer, schedule=args.lr_schedule)
    out = open(args.out, "a")

    def emit(row: dict) -> None:
        row.update(model=args.model, hidden=args.hidden if args.model == "mlp" else None,
                   optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, seed=args.seed,
                   train_subset=args.train_subset, val_subset=args.val_subset,
                   match_init=args.match_init)
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps(row), flush=True)

    torch.manual_seed(args.seed)
    source = make()
    torch.manual_seed(args.seed + 1)
    target = make()
    dirs = tempfile.TemporaryDirectory()
    recs = [TrajectoryRecorder(f"{dirs.name}/{who}") for who in ("source", "target")]
    t0 = time.perf_counter()
    h_src = train(source, data.train, cfg, val=data.val, recorder=recs[0], seed=args.seed)
    t_src = time.perf_counter() - t0
    h_tgt = train(target, data.train, cfg, val=data.val, recorder=recs[1], seed=args.seed + 1)
    emit({"kind": "train", "source_seconds": t_src, "source_val": h_src.val_accuracy,
          "target_val": h_tgt.val_accuracy, "source_test": evaluate(source, data.test),
          "target_test": evaluate(target, data.test)})
    names = [n for n, _ in source.named_parameters()]
    epochs = list(range(-1, args.epochs))
    every = {who: r.trajectory(epochs="all") for who, r in zip(("source", "target"), recs)}
    points = {who: [t.checkpoint(i) for i in range(len(epochs))] for who, t in every.items()}
    for who in ("source", "target"):
        emit({"kind": "geometry", "run": who, **geometry(points[who], names)})

    tgt0, tgt_end = points["target"][0], points["target"][-1]
    finals: dict = {}
    for kind in args.trajectories.split(","):
        for sched in args.schedules.split(","):
            if kind == "actual":
                traj = recs[0].trajectory(num_splits=max(1, args.steps // args.epochs),
                                          schedule=sched, epochs="all")
            else:
                traj = recs[0].trajectory(num_splits=args.steps, schedule=sched)
            rows = {}
            for method in [m for m in args.methods.split(",") if m]:
                res = transfer(make(), traj, tgt0, data, method=method, grad_batches=args.grad_batches,
                               batch_size=128, seed=args.seed, match_init=args.match_init,
                               target_final=tgt_end if method == "oracle" else None)
                model = make()
                model.load_state_dict(res.best_params)
                acc = dict(zip(res.eval_steps, res.accuracy))
                rows[method] = {"kind": "transfer", "trajectory": kind, "schedule": sched,
                                "method": method, "steps": res.num_steps,
                                "grad_batches": args.grad_batches, "best": res.best_accuracy,
                                "best_step": res.best_step, "best_test": evaluate(model, data.test),
                                "mid": acc.get(res.num_steps // 2), "accuracy": res.accuracy,
                                "pairs": res.num_gradient_pairs, "seconds": res.timings["total"],
                                "matching_share": res.timings["matching"] / res.timings["total"]}
                finals[(kind, sched, method)] = res.final_perms
            if args.displacement_matching:
                row = displacement_fgmt(make, traj, tgt0, data, source.permutation_spec(),
                                        args.grad_batches, args.seed, args.match_init)
                finals[(kind, sched, "fgmt-displacement")] = row.pop("perms")
                rows["fgmt-displacement"] = {"kind": "transfer", "trajectory": kind, "schedule": sched,
                                             "method": "fgmt-displacement", "steps": traj.num_steps,
                                             "grad_batches": args.grad_batches, **row}
            oracle = finals.get((kind, sched, "oracle"))
            for method, row in rows.items():
                if oracle is not None:
                    row["agreement_with_oracle"] = agreement(finals[(kind, sched, method)], oracle)
                emit(row)

    # Gradients against steps, at the two inits, on fixed minibatches.
    loader = Loader(data.train, 128, seed=12345)
    batches = [b for _, b in zip(range(args.align_batches), loader.epoch())]
    spec = source.permutation_spec()
    probe = make()
    src0, src_end = points["source"][0], points["source"][-1]
    g1, g2 = gradient(probe, src0, batches), gradient(probe, tgt0, batches)
    d1 = {n: src_end[n] - src0[n] for n in names}
    first = {n: points["source"][1][n] - src0[n] for n in names}
    neg = lambda g: {n: -v for n, v in g.items()}  # noqa: E731
    row = {"kind": "alignment", "source_grad_vs_displacement": cosine(neg(g1), d1, names),
           "source_grad_vs_first_epoch": cosine(neg(g1), first, names), "perms": {}}
    for (kind, sched, method), perms in finals.items():
        if kind != "linear" or sched != "uniform" or perms is None:
            continue
        pg1 = apply_permutation(spec, perms, g1)
        pd1 = apply_permutation(spec, perms, d1)
        row["perms"][method] = {"grad_vs_grad": cosine(g2, pg1, names),
                                "descent": cosine(neg(g2), pd1, names)}
    emit(row)


if __name__ == "__main__":
    main()
