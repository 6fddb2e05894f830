"""Command line: ``trajtransfer demo``, ``transfer``, ``ensemble`` and ``finetune-transfer``.

``demo`` trains a source and a target MLP 64-512-10 on scikit-learn's bundled digits (recording
the source trajectory), transfers the source trajectory onto the target's init with Naive, GMT and
FGMT (plus the Oracle), prints a table and writes ``results.json`` and ``transfer.png``.

``transfer`` runs the same pipeline on a configurable dataset/model, optionally followed by E
epochs of fine-tuning from each method's best step, compared with E epochs from the target init
("scratch").

``ensemble`` transfers one source trajectory onto several target inits at once
(:mod:`trajtransfer.kit.ensemble_run`).

``finetune-transfer`` transfers a fine-tuning between two pre-trained models
(:mod:`trajtransfer.kit.cli_finetune`).

Everything is seeded; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from . import cli_finetune
from ._extras import MissingExtraError

__all__ = ["main", "run_experiment", "build_parser"]

_MODELS = ("mlp", "conv8", "resnet18", "vit")


def _build_model(kind: str, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int],
                 activation: str, width: float = 1.0):
    """The model named by ``--model``, shaped for the data (``input_shape`` of one sample)."""
    from . import models

    if kind == "mlp":
        in_features = 1
        for s in input_shape:
            in_features *= int(s)
        return models.MLP(in_features, hidden=tuple(hidden), num_classes=num_classes, bias=True,
                          activation=None if activation == "none" else activation)
    if kind in ("conv8", "resnet18", "vit") and len(input_shape) != 3:
        raise ValueError(f"--model {kind} needs image inputs (channels, height, width); this "
                         f"dataset has flat samples of shape {tuple(input_shape)}: use --model mlp "
                         "or an image dataset (fashion-mnist, mnist, cifar10)")
    if kind == "conv8":
        channels, h, w = (int(s) for s in input_shape)
        # He init: without BatchNorm, PyTorch's default init leaves Conv8 at chance for epochs.
        return models.Conv8(num_classes=num_classes, width=width, in_channels=channels,
                            input_size=(h, w), init="kaiming")
    if kind == "resnet18":
        return models.ResNet18(num_classes=num_classes, width=max(1, int(round(64 * width))),
                               in_channels=int(input_shape[0]))
    if kind == "vit":
        channels, h, w = (int(s) for s in input_shape)
        patch = next((p for p in (7, 4) if h == w and h % p == 0), None)
        if patch is None:
            raise ValueError(f"--model vit needs square images whose side 7 or 4 divides, got {h}x{w}")
        # Width 64 (4 heads of 16) at --width 1; a multiple of the 4 heads at other widths.
        return models.ViT(image_size=h, patch_size=patch, in_channels=channels,
                          width=4 * max(1, int(round(16 * width))), num_classes=num_classes)
    raise ValueError(f"--model must be one of {_MODELS}, got {kind!r}")


def _pct(x: Optional[float]) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def _device(name: str) -> Any:
    """The torch device named by ``--device`` ("auto": cuda when torch sees a GPU)."""
    import torch

    from .._devices import default_device

    if name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no CUDA device (torch {torch.__version__}); "
                         "use --device cpu")
    return device


def start_run(args: argparse.Namespace) -> tuple:
    """A command's output folder (created), its progress printer and its data (``--train-subset``
    applied): what ``transfer`` and ``ensemble`` start with."""
    from .data import load_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if not args.quiet else (lambda *a: None)
    data = load_dataset(args.dataset, args.data_root)
    if args.train_subset:
        data.train = data.train.subset(slice(0, int(args.train_subset)))
    return out, log, data


def run_experiment(args: argparse.Namespace) -> dict:
    """Train source and target, transfer with each method, evaluate, fine-tune; write outputs.

    ``--threads N`` runs it all under one thread budget of N (torch and the matcher, restored
    afterwards); 0 leaves each training, transfer and evaluation to the library's thread policy.
    Returns the JSON-serializable results dict (also written to ``<out>/results.json``).
    """
    from ..core.threads import thread_budget

    with thread_budget(args.threads) if args.threads else contextlib.nullcontext():
        return _run_experiment(args)


def _run_experiment(args: argparse.Namespace) -> dict:
    from .plot import require_matplotlib

    require_matplotlib()  # the run ends in plots: fail before any training, not after it
    import torch

    from .plot import plot_finetune_curves, plot_transfer_curves
    from ..method.trajectory import TrajectoryRecorder
    from .training import TrainConfig, evaluate, train
    from ..method.transfer import METHODS, transfer

    device = _device(args.device)
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choose from {','.join(METHODS)}")
    if args.trajectory == "actual" and (args.epochs < 1 or args.steps % args.epochs):
        raise SystemExit(f"--trajectory actual: --steps {args.steps} must be a multiple of "
                         f"--epochs {args.epochs}")
    out, log, data = start_run(args)
    t_all = time.perf_counter()
    build = lambda: _build_model(args.model, data.train.input_shape, data.num_classes,  # noqa: E731
                                 args.hidden, args.activation, args.width).to(device)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.lr_schedule,
                      warmup_epochs=args.warmup_epochs)
    log(f"data: {data.name} train {len(data.train)} / val {len(data.val)} / test {len(data.test)}; "
        f"model {args.model} on {device}; {args.epochs} epochs lr {args.lr} batch {args.batch_size} "
        f"({args.lr_schedule})")

    # Source (trajectory recorded) and target (trained only for reference and the Oracle).
    torch.manual_seed(args.seed)
    source = build()
    torch.manual_seed(args.seed + 1)
    target = build()
    target_init = {k: v.clone() for k, v in target.state_dict().items()}
    rec = TrajectoryRecorder(out / "source_checkpoints")
    for f in rec.directory.glob("epoch_*.pt"):
        f.unlink()  # a fresh run: never mix checkpoints of an earlier one
    t0 = time.perf_counter()
    h_src = train(source, data.train, cfg, val=data.val, recorder=rec, seed=args.seed)
    t_src = time.perf_counter() - t0
    log(f"source trained in {t_src:.1f}s: val {100 * h_src.val_accuracy[-1]:.2f}%")
    t0 = time.perf_counter()
    train(target, data.train, cfg, val=data.val, seed=args.seed + 1)
    t_tgt = time.perf_counter() - t0
    target_val, target_test = evaluate(target, data.val), evaluate(target, data.test)
    log(f"target trained in {t_tgt:.1f}s: val {100 * target_val:.2f}%  test {100 * target_test:.2f}%")

    if args.trajectory == "actual":
        # every epoch's checkpoint (the paper's appendix variant): T split evenly over the epochs
        traj = rec.trajectory(num_splits=args.steps // args.epochs, schedule=args.schedule, epochs="all")
    else:
        traj = rec.trajectory(num_splits=args.steps, schedule=args.schedule)
    results = {}
    model_for_eval = build()
    # The source's own accuracy along the trajectory (context for the plot).
    source_curve = []
    for k in range(len(traj)):
        model_for_eval.load_state_dict(traj[k])
        source_curve.append(evaluate(model_for_eval, data.val))
    warm_modes: dict[str, Union[bool, str]] = {"off": False, "on": True, "both": "both"}
    for method in methods:
        log(f"--- {method}")
        res = transfer(build(), traj, target_init, data, method=method, grad_batches=args.grad_batches,
                       batch_size=args.grad_batch_size or args.batch_size, eval_every=args.eval_every, seed=args.seed,
                       target_final=target if method == "oracle" else None,
                       warm_start=warm_modes[args.warm_start],
                       match_init=args.match_init,
                       reuse_duals=not args.cold_laps, cache_source=args.cache_source,
                       bn_batches=args.bn_batches,
                       verbose=not args.quiet)
        model_for_eval.load_state_dict(res.best_params)
        best_test = evaluate(model_for_eval, data.test)
        model_for_eval.load_state_dict(res.final_params)
        final_test = evaluate(model_for_eval, data.test)
        d = res.to_dict()
        d.update(best_test_accuracy=best_test, final_test_accuracy=final_test,
                 matching_fraction=res.timings["matching"] / max(res.timings["total"], 1e-12),
                 mid_step=res.num_steps // 2,
                 mid_accuracy=dict(zip(res.eval_steps, res.accuracy)).get(res.num_steps // 2))
        results[method] = (res, d)

    # Fine-tuning from each method's best step versus the same budget from the target init.
    finetune: dict[str, dict[str, Any]] = {}
    if args.finetune_epochs > 0:
        ft_cfg = TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr or args.lr,
                             batch_size=args.batch_size, momentum=args.momentum,
                             weight_decay=args.weight_decay, schedule="constant", seed=args.seed + 2)
        starts = [("scratch", target_init)] + [(m, results[m][0].best_params) for m in methods]
        for name, state in starts:
            model = build()
            model.load_state_dict(state)
            acc0 = evaluate(model, data.val)
            h = train(model, data.train, ft_cfg, val=data.val)
            finetune[name] = {"val_accuracy": [acc0] + list(h.val_accuracy),
                              "test_accuracy": evaluate(model, data.test), "seconds": h.seconds}
            log(f"fine-tune from {name}: val {' -> '.join(_pct(a).strip() for a in finetune[name]['val_accuracy'])}"
                f"  test {100 * finetune[name]['test_accuracy']:.2f}%")

    curves: dict[str, Any] = {m: results[m][0] for m in methods}
    curves["source"] = {"eval_steps": list(range(len(traj))), "accuracy": source_curve, "best_step": None}
    png = plot_transfer_curves(curves, out / "transfer.png",
                               title=f"{data.name} {args.model}: {args.epochs} source epochs, T = {traj.num_steps}",
                               reference={"target trained": target_val})
    pngs = [png]
    if finetune:
        pngs.append(plot_finetune_curves({k: v["val_accuracy"] for k, v in finetune.items()},
                                         out / "finetune.png",
                                         title=f"{data.name} {args.model}: fine-tuning from the best step"))
    summary = {
        "command": " ".join(["trajtransfer"] + list(args.argv)),
        "dataset": data.name, "model": args.model, "hidden": list(args.hidden),
        "train": cfg.as_dict(), "steps": traj.num_steps, "schedule": args.schedule,
        "trajectory": args.trajectory,
        "source": {"val_accuracy": h_src.val_accuracy[-1], "seconds": t_src,
                   "trajectory_val_accuracy": source_curve},
        "target": {"val_accuracy": target_val, "test_accuracy": target_test, "seconds": t_tgt},
        "methods": {m: results[m][1] for m in methods},
        "finetune": finetune, "pngs": [os.fspath(p) for p in pngs],
        "seconds": time.perf_counter() - t_all, "device": str(device),
        "threads": args.threads or "policy",
    }
    with open(out / "results.json", "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    print(format_table(summary))
    print(f"wrote {out / 'results.json'} and {', '.join(os.fspath(p) for p in pngs)}")
    return summary


def format_table(summary: dict) -> str:
    """The results table printed by the CLI (markdown)."""
    K = summary["steps"]
    lines = [
        f"| method | acc @ s={K // 2} | best step | acc @ best | acc @ s={K} | test @ best | "
        f"time (s) | matching (s) | matching share | gradient pairs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, d in summary["methods"].items():
        t = d["timings"]
        lines.append(
            f"| {m.upper()} | {_pct(d.get('mid_accuracy'))} | {d['best_step']} | {_pct(d['best_accuracy'])} | "
            f"{_pct(d['final_accuracy'])} | {_pct(d['best_test_accuracy'])} | {t['total']:.2f} | "
            f"{t['matching']:.2f} | {100 * d['matching_fraction']:.0f}% | {d['num_gradient_pairs']} |")
    tg = summary["target"]
    lines_split = [
        "", "Transfer wall time split (s): matching = cost building + LAP + other (pair copies, "
        "objective bookkeeping, bindings); evaluation includes BN recalibration; "
        "share = matching / total.",
        "| method | total | gradients | matching | cost building | LAP | evaluation | BN | overhead | "
        "matching share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, d in summary["methods"].items():
        t = d["timings"]
        lines_split.append(
            f"| {m.upper()} | {t['total']:.3f} | {t['gradients']:.3f} | {t['matching']:.3f} | "
            f"{t.get('matching_gemm', 0.0):.3f} | {t.get('matching_lap', 0.0):.3f} | {t['evaluation']:.3f} | "
            f"{t.get('bn', 0.0):.3f} | {t.get('overhead', 0.0):.3f} | {100 * d['matching_fraction']:.1f}% |")
    lines.append(f"| target trained ({summary['train']['epochs']} ep) | | | {_pct(tg['val_accuracy'])} | | "
                 f"{_pct(tg['test_accuracy'])} | {tg['seconds']:.2f} | | | |")
    lines.append("")
    lines.append("Accuracies in % on the validation split (used to pick the best step) and the test split.")
    lines += lines_split
    if summary.get("finetune"):
        ft = summary["finetune"]
        E = len(next(iter(ft.values()))["val_accuracy"]) - 1
        lines += ["", f"| start | val before | val after {E} ep | test after {E} ep |", "|---|---|---|---|"]
        for name, v in ft.items():
            lines.append(f"| {name} | {_pct(v['val_accuracy'][0])} | {_pct(v['val_accuracy'][-1])} | "
                         f"{_pct(v['test_accuracy'])} |")
    return "\n".join(lines)


def _add_common(p: argparse.ArgumentParser, *, dataset: str, hidden: str, epochs: int, steps: int, lr: float,
                batch: int, methods: str, finetune: int, out: str, threads: int, grad_batches: int = 1,
                grad_batch_size: int = 0) -> None:
    p.add_argument("--dataset", default=dataset, help="digits | fashion-mnist | mnist | cifar10")
    p.add_argument("--data-root", default=None, help="folder with the dataset files (no downloads)")
    p.add_argument("--model", default="mlp", choices=_MODELS)
    p.add_argument("--hidden", default=hidden, action=_StoreGiven,
                   help="MLP hidden widths, comma-separated")
    p.add_argument("--activation", default="relu", help="MLP activation (relu, tanh, gelu, none)")
    p.add_argument("--width", type=float, default=1.0,
                   help="conv models and vit: width multiplier (Conv8's channels, ResNet-18's "
                        "base 64, the ViT's width 64)")
    p.add_argument("--epochs", type=int, default=epochs, help="source/target training epochs")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=batch, help="training and gradient batch size")
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"))
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="epochs of linear learning-rate warm-up before the schedule")
    p.add_argument("--steps", type=int, default=steps, help="T, transfer steps (linear trajectory init->end)")
    p.add_argument("--schedule", default="uniform", choices=("uniform", "cosine"), help="λ schedule")
    p.add_argument("--trajectory", default="linear", choices=("linear", "actual"),
                   help="linear: init -> end (paper default); actual: through every epoch's checkpoint")
    p.add_argument("--grad-batches", type=int, default=grad_batches,
                   help=f"minibatches per gradient pair (default {grad_batches})")
    p.add_argument("--grad-batch-size", type=int, default=grad_batch_size,
                   help=f"gradient minibatch size (0: --batch-size; default {grad_batch_size})")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--bn-batches", type=int, default=10,
                   help="BatchNorm models: minibatches that re-estimate the running statistics "
                        "before each evaluation (0: no recalibration)")
    p.add_argument("--warm-start", default="off", choices=("off", "on", "both"),
                   help="start each solve from π_{s-1} (off = paper parity)")
    p.add_argument("--match-init", default="identity",
                   help="the fixed start of each solve: identity (the official code) or greedy")
    p.add_argument("--cache-source", action="store_true",
                   help="GMT: compute each point's source gradient once (halves GMT's gradient work)")
    p.add_argument("--cold-laps", action="store_true",
                   help="solve every LAP from scratch (exactly the official procedure; slower)")
    p.add_argument("--methods", default=methods, help="comma-separated: naive,gmt,fgmt,oracle")
    p.add_argument("--finetune-epochs", type=int, default=finetune)
    p.add_argument("--finetune-lr", type=float, default=None, help="default: --lr")
    p.add_argument("--train-subset", type=int, default=0, help="use only the first N training samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=threads,
                   help="torch and matcher threads (0: the library's policy, the cores not busy "
                        "with other work)")
    p.add_argument("--device", default="auto",
                   help="where models train and transfer: cpu, cuda, cuda:1, ... (auto: cuda if "
                        "torch sees a GPU, else cpu)")
    p.add_argument("--out", default=out)
    p.add_argument("--quiet", action="store_true")


class _StoreGiven(argparse.Action):
    """Store the value and note the option as given (``args.given``), for --quick."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = set(getattr(namespace, "given", set())) | {self.dest}


# One sample's shape per dataset: the conv nets take images (channels, height, width) of any
# channel count up to 32x32 (Conv8 pads smaller ones); digits comes as 64 flat features.
_DATASET_INPUTS = {"digits": (64,), "fashion-mnist": (1, 28, 28), "fmnist": (1, 28, 28),
                   "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar-10": (3, 32, 32)}

# Least accepted value of each integer option.
_INT_MIN = {"epochs": 1, "steps": 1, "batch_size": 1, "grad_batches": 1, "grad_batch_size": 0,
            "eval_every": 1, "finetune_epochs": 0, "train_subset": 0, "threads": 0}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_out(out: str) -> Optional[str]:
    """None when ``out`` is (or can be made) a writable folder; it is created here."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        return f"--out {out!r} is an existing file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"--out {out!r} is not a writable folder ({exc.strerror or exc})"
    return None


def _check_args(args: argparse.Namespace) -> Optional[str]:
    """The first problem with the parsed arguments as a one-line message, else None.

    Also normalises ``args.hidden`` to a list of ints and applies ``--quick``. Everything here is
    checked before any data is loaded or any model trained.
    """
    try:
        args.hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    except ValueError:
        return f"--hidden must be comma-separated integers, got {args.hidden!r}"
    if any(h < 1 for h in args.hidden):
        return f"--hidden widths must be >= 1, got {args.hidden}"
    if args.command == "demo" and args.quick:
        if "hidden" not in getattr(args, "given", ()):
            args.hidden = [64]
        args.epochs, args.steps = min(args.epochs, 2), min(args.steps, 3)
        args.finetune_epochs = min(args.finetune_epochs, 1)
        args.grad_batches = min(args.grad_batches, 2)
    for dest, least in _INT_MIN.items():
        value = getattr(args, dest)
        if value < least:
            return f"{_option(dest)} must be >= {least}, got {value}"
    for dest in ("lr", "finetune_lr"):
        value = getattr(args, dest)
        if value is not None and not (math.isfinite(value) and value > 0):
            return f"{_option(dest)} must be a finite number > 0, got {value}"
    for dest in ("momentum", "weight_decay"):
        value = getattr(args, dest)
        if not (math.isfinite(value) and value >= 0):
            return f"{_option(dest)} must be a finite number >= 0, got {value}"
    dataset = args.dataset.lower().replace("_", "-")
    if dataset not in _DATASET_INPUTS:
        return f"--dataset must be digits, fashion-mnist, mnist or cifar10, got {args.dataset!r}"
    shape = _DATASET_INPUTS[dataset]
    if args.model != "mlp" and len(shape) != 3:
        return (f"--model {args.model} needs image inputs (channels x height x width), but "
                f"--dataset {args.dataset} has flat samples of {shape[0]} features; use --model "
                f"mlp, or an image dataset (fashion-mnist, mnist, cifar10) with {args.model}")
    from .models import _ACTIVATIONS
    from ..method.transfer import METHODS

    if args.match_init not in ("identity", "greedy"):
        return f"--match-init must be identity or greedy, got {args.match_init!r}"
    if args.activation != "none" and args.activation not in _ACTIVATIONS:
        return (f"--activation must be one of {', '.join(sorted(_ACTIVATIONS))} or none, "
                f"got {args.activation!r}")
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    if not methods:
        return f"--methods names no method; choose from {','.join(METHODS)}"
    bad = [m for m in methods if m not in METHODS]
    if bad:
        return f"--methods: unknown {bad}; choose from {','.join(METHODS)}"
    if args.trajectory == "actual" and args.steps % args.epochs:
        return (f"--trajectory actual: --steps {args.steps} must be a multiple of "
                f"--epochs {args.epochs}")
    from .plot import require_matplotlib

    try:
        require_matplotlib()  # the run ends in plots: fail before any training, not after it
        _device(args.device)
    except (ValueError, MissingExtraError) as exc:
        return str(exc)
    return _check_out(args.out)  # last: it creates the folder


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="trajtransfer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # 2 source epochs: early in training, where adding the source's displacement unpermuted
    # (Naive) fails and the permutation matters; after 10 epochs Naive catches up on digits.
    # Gradient pairs on 10 x 128 images (the paper's Cars/CUB setting; ~0.9 pass over the
    # 1,437 training images): better gradient estimates, and the gradients rather than the
    # fixed-size 512 x 512 matching dominate the transfer's time.
    demo = sub.add_parser("demo", help="digits MLP 64-512-10: Naive vs GMT vs FGMT (about a minute)")
    _add_common(demo, dataset="digits", hidden="512", epochs=2, steps=10, lr=0.01, batch=32,
                methods="naive,gmt,fgmt,oracle", finetune=1, out="trajtransfer-demo", threads=0,
                grad_batches=10, grad_batch_size=128)
    demo.add_argument("--quick", action="store_true",
                      help="a few-second smoke run (tests, CI): caps epochs, steps and gradient "
                           "batches, and uses --hidden 64 unless --hidden is given")
    tr = sub.add_parser("transfer", help="a configured experiment; writes results.json + PNGs")
    _add_common(tr, dataset="fashion-mnist", hidden="512", epochs=3, steps=10, lr=0.01, batch=128,
                methods="naive,gmt,fgmt,oracle", finetune=1, out="trajtransfer-run", threads=0)
    ens = sub.add_parser("ensemble", help="one source trajectory onto N target inits (transfer_many); "
                                          "member and ensemble accuracy, ensemble.png")
    _add_common(ens, dataset="fashion-mnist", hidden="512", epochs=3, steps=10, lr=0.01, batch=128,
                methods="fgmt", finetune=0, out="trajtransfer-ensemble", threads=0)
    ens.add_argument("--members", type=int, default=4, help="target inits (ensemble members)")
    cli_finetune.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``trajtransfer`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    finetune = args.command == cli_finetune.COMMAND
    problem = cli_finetune.check_args(args) if finetune else _check_args(args)
    if problem is None and args.command == "ensemble":
        from .ensemble_run import check_ensemble_args

        problem = check_ensemble_args(args)
    if problem is not None:
        # Like argparse's own errors: one line, exit code 2, before anything is trained.
        print(f"trajtransfer: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    try:
        if finetune:
            cli_finetune.run(args)
        elif args.command == "ensemble":
            from .ensemble_run import run_ensemble

            run_ensemble(args)
        else:
            run_experiment(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, MissingExtraError) as exc:
        # Bad input (a missing data path or optional dependency, an unknown preset, ...): one
        # line, not a traceback.
        print(f"trajtransfer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
