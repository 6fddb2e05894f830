"""``trajtransfer ensemble``: one source trajectory transferred onto N target inits.

Trains a source (recording its trajectory), transfers it with one method onto ``--members``
initializations (seeds ``--seed`` + 1 … + N) with :func:`~trajtransfer.transfer_many`, then
optionally trains every member for ``--finetune-epochs`` from its best step. Prints each
member's and the ensemble's accuracy (the mean of the members' softmax probabilities), writes
``results.json`` and ``ensemble.png`` (member and ensemble accuracy along the steps).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from typing import Optional

__all__ = ["check_ensemble_args", "run_ensemble", "format_ensemble_table"]


def check_ensemble_args(args: argparse.Namespace) -> Optional[str]:
    """The ensemble command's own argument problems (one line), else None."""
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    if len(methods) != 1:
        return f"--methods: the ensemble command takes one method, got {args.methods!r}"
    if methods[0] == "oracle":
        return "--methods oracle needs each member's trained end point; use gmt, fgmt or naive"
    if args.members < 1:
        return f"--members must be >= 1, got {args.members}"
    return None


def run_ensemble(args: argparse.Namespace) -> dict:
    """Run the command (arguments already checked); returns the results dict it writes.

    ``--threads N`` runs it under one thread budget of N, as ``trajtransfer transfer``."""
    from ..core.threads import thread_budget

    with thread_budget(args.threads) if args.threads else contextlib.nullcontext():
        return _run_ensemble(args)


def _run_ensemble(args: argparse.Namespace) -> dict:
    import torch

    from ..method.trajectory import TrajectoryRecorder
    from ..method.transfer_many import ensemble_accuracy, transfer_many
    from .cli import _build_model, _device, _pct, start_run
    from .plot import plot_ensemble_curves
    from .training import TrainConfig, evaluate, train

    device = _device(args.device)
    method = args.methods.strip().lower()
    out, log, data = start_run(args)
    t_all = time.perf_counter()

    def build():
        return _build_model(args.model, data.train.input_shape, data.num_classes, args.hidden,
                            args.activation, args.width).to(device)

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.lr_schedule,
                      warmup_epochs=args.warmup_epochs)
    torch.manual_seed(args.seed)
    source = build()
    rec = TrajectoryRecorder(out / "source_checkpoints")
    for f in rec.directory.glob("epoch_*.pt"):
        f.unlink()  # a fresh run: never mix checkpoints of an earlier one
    h_src = train(source, data.train, cfg, val=data.val, recorder=rec, seed=args.seed)
    log(f"source trained: val {100 * h_src.val_accuracy[-1]:.2f}%")
    traj = rec.trajectory(num_splits=args.steps, schedule=args.schedule)
    inits = []
    for i in range(args.members):
        torch.manual_seed(args.seed + 1 + i)
        inits.append({k: v.clone() for k, v in build().state_dict().items()})
    res = transfer_many(build(), traj, inits, data, method=method, grad_batches=args.grad_batches,
                        batch_size=args.grad_batch_size or args.batch_size, eval_every=args.eval_every,
                        seed=args.seed, match_init=args.match_init, reuse_duals=not args.cold_laps,
                        cache_source=args.cache_source, bn_batches=args.bn_batches,
                        warm_start={"off": False, "on": True, "both": "both"}[args.warm_start],
                        verbose=not args.quiet)
    models = []
    for m in res.members:
        model = build()
        model.load_state_dict(m.best_params)
        models.append(model)
    at_best = {"member_test": [evaluate(m, data.test) for m in models],
               "ensemble_test": ensemble_accuracy(models, data.test)}
    finetuned = None
    if args.finetune_epochs > 0:
        ft_cfg = TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr or args.lr,
                             batch_size=args.batch_size, momentum=args.momentum,
                             weight_decay=args.weight_decay, schedule="constant")
        for i, model in enumerate(models):
            train(model, data.train, ft_cfg, seed=args.seed + 2 + i)
        finetuned = {"member_test": [evaluate(m, data.test) for m in models],
                     "ensemble_test": ensemble_accuracy(models, data.test)}
    png = plot_ensemble_curves(res, out / "ensemble.png",
                               title=f"{data.name} {args.model}: {args.members} members, "
                                     f"{method.upper()}, T = {traj.num_steps}")
    summary = {
        "command": " ".join(["trajtransfer"] + list(args.argv)), "dataset": data.name,
        "model": args.model, "method": method, "members": args.members, "steps": traj.num_steps,
        "source_val_accuracy": h_src.val_accuracy[-1], "transfer": res.to_dict(),
        "at_best_step": at_best, "finetuned": finetuned, "finetune_epochs": args.finetune_epochs,
        "png": os.fspath(png), "seconds": time.perf_counter() - t_all, "device": str(device),
    }
    with open(out / "results.json", "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    print(format_ensemble_table(summary))
    print(f"wrote {out / 'results.json'} and {png}")
    log(f"done in {summary['seconds']:.1f}s; ensemble val at s={traj.num_steps}: "
        f"{_pct(res.final_accuracy).strip()}%")
    return summary


def format_ensemble_table(summary: dict) -> str:
    """The printed table (markdown): each member and the ensemble, accuracies in %."""
    from .cli import _pct

    tr = summary["transfer"]
    K = summary["steps"]
    best, ft = summary["at_best_step"], summary["finetuned"]
    E = summary["finetune_epochs"]
    head = f"| | val @ s={K} | best step | val @ best | test @ best |"
    if ft:
        head += f" test after {E} ep |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for i, m in enumerate(tr["members"]):
        row = (f"| member {i} | {_pct(m['final_accuracy'])} | {m['best_step']} | "
               f"{_pct(m['best_accuracy'])} | {_pct(best['member_test'][i])} |")
        lines.append(row + (f" {_pct(ft['member_test'][i])} |" if ft else ""))
    row = (f"| ensemble | {_pct(tr['final_accuracy'])} | (members' own) | | "
           f"{_pct(best['ensemble_test'])} |")
    lines.append(row + (f" {_pct(ft['ensemble_test'])} |" if ft else ""))
    t = tr["timings"]
    lines += ["", f"{summary['method'].upper()} onto {len(tr['members'])} inits: "
              f"{tr['num_source_gradients']} source gradients shared; gradients {t['gradients']:.2f}s, "
              f"matching {t['matching']:.2f}s, evaluation {t['evaluation'] + t['ensemble']:.2f}s. "
              "Ensemble = mean of the members' softmax probabilities."]
    return "\n".join(lines)
