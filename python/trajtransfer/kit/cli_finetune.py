"""``trajtransfer finetune-transfer``: the fine-tuning scenario of :mod:`trajtransfer.kit.finetune`.

Pre-trains a source and a target on some classes, fine-tunes the source on others with a new head,
transfers that fine-tuning onto the target (Naive / GMT / FGMT, best step on validation) and
compares with fine-tuning the target directly, at the start and after ``--after-epochs``. Prints a
markdown table; writes ``results.json``, ``transfer.png`` (accuracy along the transfer) and
``lmc.png`` (linear mode connectivity from the target's own fine-tuning to each transferred start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

__all__ = ["add_parser", "check_args", "run", "write_plots"]

COMMAND = "finetune-transfer"


def _classes(text: str) -> list:
    """``"0-4"``, ``"5,6,7"`` or ``"all"`` (0-9) as a list of ints."""
    text = text.strip().lower()
    if text == "all":
        return list(range(10))
    out: list = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the subcommand on ``sub`` (the main parser's subparsers)."""
    from .cli import _MODELS

    p = sub.add_parser(COMMAND, help="transfer a fine-tuning between two pre-trained models "
                                     "(Fashion-MNIST 0-4 -> 5-9 by default)")
    p.add_argument("--dataset", default="fashion-mnist", help="digits | fashion-mnist | mnist | cifar10")
    p.add_argument("--data-root", default=None, help="folder with the dataset files (no downloads)")
    p.add_argument("--model", default="mlp", choices=_MODELS)
    p.add_argument("--hidden", default="512,512", help="MLP hidden widths, comma-separated")
    p.add_argument("--width", type=float, default=1.0, help="conv models: channel multiplier")
    p.add_argument("--pretrain-classes", default="0-4", help="e.g. 0-4 or 0,1,2 (labels of the pre-training task)")
    p.add_argument("--finetune-classes", default="5-9",
                   help="the new task (renumbered from 0; a new head); 'all' for all ten classes")
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--pretrain-lr", type=float, default=0.05)
    p.add_argument("--finetune-epochs", type=int, default=5, help="E: the source's (and direct) fine-tuning")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--after-epochs", type=int, default=1, help="fine-tuning epochs from every start")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--train-subset", type=int, default=0, help="first N training samples per task (0: all)")
    p.add_argument("--val-subset", type=int, default=0, help="first N validation samples per task (0: all)")
    p.add_argument("--steps", type=int, default=10, help="T, transfer steps")
    p.add_argument("--schedule", default="uniform", choices=("uniform", "cosine"), help="λ schedule")
    p.add_argument("--trajectory", default="linear", choices=("linear", "actual"))
    p.add_argument("--methods", default="naive,gmt,fgmt", help="comma-separated: naive,gmt,fgmt,oracle")
    p.add_argument("--grad-batches", type=int, default=1)
    p.add_argument("--grad-batch-size", type=int, default=0, help="0: --batch-size")
    p.add_argument("--bn-batches", type=int, default=10, help="BatchNorm recalibration minibatches")
    p.add_argument("--lmc-points", type=int, default=11, help="points per LMC curve (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch and matcher threads (0: the library's policy)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (auto: cuda if torch sees a GPU)")
    p.add_argument("--out", default="trajtransfer-finetune")
    p.add_argument("--quiet", action="store_true")
    return p


_INT_MIN = {"pretrain_epochs": 1, "finetune_epochs": 1, "after_epochs": 0, "batch_size": 1,
            "train_subset": 0, "val_subset": 0, "steps": 1, "grad_batches": 1, "grad_batch_size": 0,
            "bn_batches": 0, "lmc_points": 0, "threads": 0}


def check_args(args: argparse.Namespace) -> Optional[str]:
    """The first problem with the arguments as a one-line message (nothing trained yet), else None."""
    from ..method.transfer import METHODS
    from .cli import _DATASET_INPUTS, _check_out, _device, _option
    from .plot import require_matplotlib

    try:
        args.hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    except ValueError:
        return f"--hidden must be comma-separated integers, got {args.hidden!r}"
    for dest in ("pretrain_classes", "finetune_classes"):
        try:
            setattr(args, dest, _classes(getattr(args, dest)))
        except ValueError:
            return f"{_option(dest)} must be 'all', a range like 0-4 or a list like 5,6,7, got {getattr(args, dest)!r}"
        classes = getattr(args, dest)
        if not classes or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
            return f"{_option(dest)} must name distinct classes among 0-9, got {classes}"
    for dest, least in _INT_MIN.items():
        if getattr(args, dest) < least:
            return f"{_option(dest)} must be >= {least}, got {getattr(args, dest)}"
    if args.lmc_points == 1:
        return "--lmc-points must be 0 (no LMC curves) or >= 2, got 1"
    for dest in ("pretrain_lr", "finetune_lr"):
        if not (math.isfinite(getattr(args, dest)) and getattr(args, dest) > 0):
            return f"{_option(dest)} must be a finite number > 0, got {getattr(args, dest)}"
    if not (math.isfinite(args.momentum) and args.momentum >= 0):
        return f"--momentum must be a finite number >= 0, got {args.momentum}"
    dataset = args.dataset.lower().replace("_", "-")
    if dataset not in _DATASET_INPUTS:
        return f"--dataset must be digits, fashion-mnist, mnist or cifar10, got {args.dataset!r}"
    if args.model != "mlp" and len(_DATASET_INPUTS[dataset]) != 3:
        return f"--model {args.model} needs image inputs; use --model mlp with --dataset {args.dataset}"
    args.methods = [m.strip().lower() for m in str(args.methods).split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or not args.methods:
        return f"--methods must name some of {','.join(METHODS)}, got {bad or 'none'}"
    if args.trajectory == "actual" and args.steps % args.finetune_epochs:
        return (f"--trajectory actual: --steps {args.steps} must be a multiple of --finetune-epochs "
                f"{args.finetune_epochs}")
    try:
        require_matplotlib()
        _device(args.device)
    except (ValueError, ImportError) as exc:
        return str(exc)
    return _check_out(args.out)


def run(args: argparse.Namespace) -> dict:
    """Run the scenario under ``--threads``; print the table, write JSON and PNGs; return the JSON."""
    from ..core.threads import thread_budget

    with thread_budget(args.threads) if args.threads else contextlib.nullcontext():
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    from .cli import _build_model, _device
    from .data import load_dataset
    from .finetune import finetune_transfer
    from .training import TrainConfig

    t0 = time.perf_counter()
    out = Path(args.out)
    data = load_dataset(args.dataset, args.data_root)

    def model_fn(num_classes: int) -> Any:
        return _build_model(args.model, data.train.input_shape, num_classes, args.hidden, "relu", args.width)

    common = {"batch_size": args.batch_size, "momentum": args.momentum}
    res = finetune_transfer(
        data, model_fn=model_fn, pretrain_classes=args.pretrain_classes, finetune_classes=args.finetune_classes,
        pretrain=TrainConfig(epochs=args.pretrain_epochs, lr=args.pretrain_lr, **common),
        finetune=TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, **common),
        after_epochs=args.after_epochs, steps=args.steps, schedule=args.schedule, trajectory=args.trajectory,
        methods=args.methods, grad_batches=args.grad_batches, grad_batch_size=args.grad_batch_size or None,
        bn_batches=args.bn_batches, lmc_points=args.lmc_points, train_subset=args.train_subset or None,
        val_subset=args.val_subset or None, seed=args.seed, device=_device(args.device), verbose=not args.quiet)
    pngs = write_plots(res.to_dict(), out, args.model)
    summary = {"command": " ".join(["trajtransfer"] + list(getattr(args, "argv", []))), **res.to_dict(),
               "pngs": [os.fspath(p) for p in pngs], "seconds": time.perf_counter() - t0}
    with open(out / "results.json", "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    print(res.table())
    print(f"wrote {out / 'results.json'} and {', '.join(summary['pngs'])}")
    return summary


def write_plots(result: dict, out: Path, model: str) -> list:
    """``transfer.png`` and (with LMC curves) ``lmc.png`` in ``out`` from a
    :meth:`~trajtransfer.kit.finetune.FinetuneResult.to_dict` (or a ``results.json``)."""
    from .plot import plot_lmc_curves, plot_transfer_curves

    cfg = result["config"]
    new = ",".join(map(str, cfg["finetune_classes"]))
    curves = dict(result["transfers"])
    curves["source"] = {"eval_steps": list(range(len(result["source_curve"]))),
                        "accuracy": result["source_curve"], "best_step": None}
    ref = {f"direct after {cfg['after_epochs']} ep": result["rows"]["direct"]["after_val"],
           f"target fine-tuned {cfg['finetune']['epochs']} ep": result["reference"]["target_finetuned"]["val"]}
    pngs = [plot_transfer_curves(curves, Path(out) / "transfer.png", reference=ref,
                                 title=f"{cfg['dataset']} {model}: fine-tuning on classes {new} transferred")]
    if result["lmc"]:
        pngs.append(plot_lmc_curves(result["lmc"], Path(out) / "lmc.png", label_a="target fine-tuned",
                                    label_b="transferred",
                                    title=f"{cfg['dataset']} {model}, classes {new}: the target's own "
                                          "fine-tuning (α = 0) to each transferred start (α = 1)"))
    return pngs
