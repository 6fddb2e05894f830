"""The fine-tuning scenario: move one model's fine-tuning onto another pre-trained model.

The paper's second motivation for learning transfer: when the pre-trained model changes, re-use
the fine-tuning already done on the old one instead of fine-tuning again. :func:`finetune_transfer`
plays it out end to end:

1. **Pre-training.** A source and a target network of the same architecture are trained on the
   classes ``pretrain_classes`` (default Fashion-MNIST 0–4) from different seeds (inits and
   minibatch orders).
2. **New head.** Both get a new classification head for the new task, ``finetune_classes``
   (default 5–9, labels renumbered 0–4), freshly initialized with a seed of its own; every other
   tensor keeps its pre-trained value. The head is the last module that owns parameters (or the
   names given by ``head=``); under the permutation spec its input axis carries the last hidden
   group and its output axis (the new classes) none, so transfer never permutes classes.
3. **Source fine-tuning.** The source (pre-trained body + its new head) is fine-tuned on the new
   task for ``finetune.epochs`` epochs; its trajectory θ₁⁰ → θ₁ᴱ is recorded (the straight line,
   or through every epoch's checkpoint with ``trajectory="actual"``).
4. **Transfer.** The trajectory is transferred onto the target's start θ₂⁰ = (target's pre-trained
   body, target's own new head) with each method: θ₂ˢ = θ₂⁰ + π·(θ₁ˢ − θ₁⁰). So the target's head
   becomes *its own fresh head plus the source's head displacement*, permuted on its input
   axis only. The best step is chosen on the new task's validation split, as in the paper.
5. **Comparison.** Each transferred start, and the target's own start ("direct": pre-trained body
   + new head, i.e. plain fine-tuning of the target), is evaluated, then fine-tuned for
   ``after_epochs`` epoch(s) with the same settings and minibatches, and evaluated again. The
   target is also fine-tuned directly for the full ``finetune.epochs`` (a reference, the end
   point of the LMC curves and the Oracle's ``target_final``).
6. **Linear mode connectivity** (``lmc_points``): loss and accuracy along the segment from the
   target's own fine-tuned parameters (α = 0) to each transferred start (α = 1).

Everything is seeded from ``seed``; nothing is downloaded.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from .data import ArrayDataset, DatasetSplits
from .training import TrainConfig, evaluate, train

__all__ = ["FinetuneResult", "finetune_transfer", "class_task", "head_names", "with_new_head"]


def class_task(data: DatasetSplits, classes: Sequence[int], *, train_subset: Optional[int] = None,
               val_subset: Optional[int] = None) -> DatasetSplits:
    """The samples of ``classes`` only, labels renumbered 0 … len(classes) − 1 in the given order.

    ``train_subset`` / ``val_subset`` keep only the first N samples of those splits (the test
    split is kept whole).

    Raises
    ------
    ValueError
        Empty or repeated ``classes``, or a class outside 0 … num_classes − 1.
    """
    import torch

    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct labels, got {classes}")
    bad = [c for c in classes if not 0 <= c < data.num_classes]
    if bad:
        raise ValueError(f"classes {bad} are outside 0 … {data.num_classes - 1}")
    relabel = torch.full((data.num_classes,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))

    def pick(ds: ArrayDataset, limit: Optional[int]) -> ArrayDataset:
        idx = torch.nonzero(relabel[ds.y] >= 0).flatten()
        if limit is not None:
            idx = idx[:int(limit)]
        return ArrayDataset(ds.x[idx], relabel[ds.y[idx]], len(classes))

    name = f"{data.name} classes {','.join(map(str, classes))}"
    return DatasetSplits(pick(data.train, train_subset), pick(data.val, val_subset), pick(data.test, None), name)


def head_names(model: Any) -> list:
    """Parameter names of the classification head: those of the last module owning parameters."""
    head: list = []
    for prefix, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if own:
            head = [f"{prefix}.{n}" if prefix else n for n in own]
    return head


def with_new_head(pretrained: Any, model_fn: Callable[[int], Any], num_classes: int, seed: int,
                  head: Optional[Sequence[str]] = None) -> Any:
    """A fresh ``model_fn(num_classes)`` (head initialized under ``seed``) holding the
    pre-trained values of every tensor but the head.

    Raises
    ------
    ValueError
        If a non-head tensor's shape depends on the number of classes, or ``head`` names a
        parameter the model lacks.
    """
    import torch

    torch.manual_seed(int(seed))
    model = model_fn(int(num_classes))
    heads = list(head) if head is not None else head_names(model)
    params = dict(model.named_parameters())
    unknown = [n for n in heads if n not in params]
    if unknown:
        raise ValueError(f"head names {unknown} are not parameters of the model")
    state = model.state_dict()
    source = pretrained.state_dict() if isinstance(pretrained, torch.nn.Module) else pretrained
    for k in state:
        if k in heads:
            continue
        if tuple(source[k].shape) != tuple(state[k].shape):
            raise ValueError(f"{k!r} has shape {tuple(source[k].shape)} in the pre-trained model but "
                             f"{tuple(state[k].shape)} with the new head: only the head may depend on "
                             "the number of classes (pass head= to name it)")
        state[k] = source[k].detach().clone()
    model.load_state_dict(state)
    return model


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune_transfer` (accuracies are fractions).

    Attributes
    ----------
    rows : dict[str, dict]
        One per start: ``"direct"`` (the target's own start) and each method. Keys:
        ``best_step`` (None for direct), ``start_val``, ``start_test`` (at the start),
        ``after_val``, ``after_test`` (after ``after_epochs`` of fine-tuning), ``seconds`` (the
        transfer's wall time; 0 for direct) and ``barrier`` / ``accuracy_barrier`` (LMC against
        the target fine-tuned directly; absent without LMC).
    reference : dict[str, dict]
        ``pretrain_source`` / ``pretrain_target`` (val accuracy on the pre-training task) and
        ``source_finetuned`` / ``target_finetuned`` (val and test after the full fine-tuning).
    transfers : dict[str, TransferResult]
    lmc : dict[str, LMCResult]
    source_curve : list[float]
        The source's own validation accuracy at each trajectory point.
    trajectory : Trajectory
        The source's fine-tuning trajectory (point 0: pre-trained body + the source's new head).
    target_start : dict[str, Tensor]
        θ₂⁰: the target's pre-trained body + its new head (the "direct" start).
    config : dict
    """

    rows: dict
    reference: dict
    transfers: dict
    lmc: dict
    source_curve: list
    trajectory: Any = None
    target_start: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Everything but the tensors, JSON-serializable."""
        return {"rows": self.rows, "reference": self.reference,
                "transfers": {m: r.to_dict() for m, r in self.transfers.items()},
                "lmc": {m: c.to_dict() for m, c in self.lmc.items()},
                "source_curve": list(self.source_curve), "config": dict(self.config)}

    def table(self) -> str:
        """The comparison as a markdown table (accuracies in %)."""
        E, A = self.config["finetune"]["epochs"], self.config["after_epochs"]
        pct = lambda x: "-" if x is None else f"{100 * x:.2f}"  # noqa: E731
        lmc = bool(self.lmc)
        head = ("| start | best step | val at start | test at start | "
                f"val after {A} ep | test after {A} ep | transfer (s) |" + (" LMC barrier |" if lmc else ""))
        lines = [head, "|---" * (7 + lmc) + "|"]
        for name, r in self.rows.items():
            label = "direct fine-tuning (target pre-trained + new head)" if name == "direct" else name.upper()
            line = (f"| {label} | {'-' if r['best_step'] is None else r['best_step']} | {pct(r['start_val'])} | "
                    f"{pct(r['start_test'])} | {pct(r['after_val'])} | {pct(r['after_test'])} | "
                    f"{r['seconds']:.2f} |")
            if lmc:
                line += f" {r['barrier']:.3f} |" if "barrier" in r else " - |"
            lines.append(line)
        ref = self.reference
        lines += ["", f"Reference: source fine-tuned {E} ep: val {pct(ref['source_finetuned']['val'])} / "
                      f"test {pct(ref['source_finetuned']['test'])}; target fine-tuned directly {E} ep: val "
                      f"{pct(ref['target_finetuned']['val'])} / test {pct(ref['target_finetuned']['test'])}; "
                      f"pre-training val: source {pct(ref['pretrain_source'])}, target "
                      f"{pct(ref['pretrain_target'])}."]
        if lmc:
            lines.append("LMC barrier: the largest rise of the validation loss above the straight line "
                         f"from the target fine-tuned directly ({E} ep) to the start, "
                         f"{self.config['lmc_points']} points.")
        return "\n".join(lines)


def _clone_state(model: Any) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _check_config(name: str, cfg: Optional[TrainConfig], default: TrainConfig) -> TrainConfig:
    if cfg is None:
        return default
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"{name} must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.epochs < 1:
        raise ValueError(f"{name}.epochs must be >= 1, got {cfg.epochs}")
    return cfg


def finetune_transfer(
    data: DatasetSplits,
    *,
    model_fn: Optional[Callable[[int], Any]] = None,
    hidden: Sequence[int] = (512, 512),
    pretrain_classes: Sequence[int] = (0, 1, 2, 3, 4),
    finetune_classes: Sequence[int] = (5, 6, 7, 8, 9),
    pretrain: Optional[TrainConfig] = None,
    finetune: Optional[TrainConfig] = None,
    after_epochs: int = 1,
    steps: int = 10,
    schedule: str = "uniform",
    trajectory: str = "linear",
    methods: Sequence[str] = ("naive", "gmt", "fgmt"),
    grad_batches: int = 1,
    grad_batch_size: Optional[int] = None,
    bn_batches: int = 10,
    lmc_points: int = 11,
    train_subset: Optional[int] = None,
    val_subset: Optional[int] = None,
    head: Optional[Sequence[str]] = None,
    seed: int = 0,
    device: Any = None,
    verbose: bool = False,
    **transfer_options: Any,
) -> FinetuneResult:
    """Pre-train source and target, fine-tune the source, transfer its fine-tuning onto the target.

    See the module documentation for the protocol.

    Parameters
    ----------
    data : DatasetSplits
        All classes (e.g. :func:`~trajtransfer.kit.data.load_fashion_mnist`); the two tasks are cut
        from it with :func:`class_task`.
    model_fn : callable(num_classes) -> nn.Module, optional
        Builds the architecture (with ``permutation_spec()``). Default: ReLU
        :class:`~trajtransfer.kit.models.MLP` with ``hidden`` widths on flattened inputs.
    pretrain_classes, finetune_classes : sequences of labels
        The two tasks; they may overlap (``finetune_classes=range(10)``: all ten classes).
    pretrain, finetune : TrainConfig, optional
        Pre-training of both networks, and the source's fine-tuning (its ``epochs`` = E; also the
        target's direct fine-tuning). Defaults: 5 epochs at lr 0.05, and 5 epochs at lr 0.01,
        batch 128, momentum 0.9, constant.
    after_epochs : int ≥ 0
        Epochs of fine-tuning from every start (``finetune``'s settings, constant learning rate,
        the same minibatches for every start).
    steps, schedule, trajectory :
        K transfer steps; the λ schedule; ``"linear"`` (θ₁⁰ → θ₁ᴱ) or ``"actual"`` (through
        every epoch's checkpoint; ``steps`` must be a multiple of E).
    methods : sequence of {"naive", "gmt", "fgmt", "oracle"}
        The Oracle matches against the target's direct fine-tuning.
    grad_batches, grad_batch_size, bn_batches :
        As :func:`~trajtransfer.method.transfer.transfer` (``grad_batch_size`` defaults to the
        fine-tuning batch size); ``bn_batches`` also serves the LMC curves.
    lmc_points : int
        Points per LMC curve; 0 skips them.
    train_subset, val_subset : int, optional
        Keep only the first N training / validation samples of each task.
    head : sequence of str, optional
        The head's parameter names (default :func:`head_names`).
    seed : int
    device : torch.device or str, optional
        Default: a GPU when torch sees one, else the CPU.
    verbose : bool
        Progress lines on stderr.
    **transfer_options :
        Passed on to every :func:`~trajtransfer.method.transfer.transfer` call (e.g.
        ``warm_start=True``).

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ValueError
        Unknown method or trajectory kind, bad class lists, ``steps`` not a multiple of E with
        ``trajectory="actual"``, negative ``after_epochs``, ``lmc_points`` of 1 or below 0.
    TypeError
        ``data`` is not a ``DatasetSplits``.
    """
    import torch

    from .._devices import default_device
    from ..method.lmc import lmc_curve
    from ..method.trajectory import Trajectory
    from ..method.transfer import METHODS, transfer
    from .models import MLP

    if not isinstance(data, DatasetSplits):
        raise TypeError(f"data must be a DatasetSplits (train / val / test), got {type(data).__name__}")
    methods = [str(m).lower() for m in methods]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must name some of {METHODS}, got {list(methods)}")
    if trajectory not in ("linear", "actual"):
        raise ValueError(f"trajectory must be 'linear' or 'actual', got {trajectory!r}")
    if int(after_epochs) < 0:
        raise ValueError(f"after_epochs must be >= 0, got {after_epochs}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if int(lmc_points) < 0 or int(lmc_points) == 1:
        raise ValueError(f"lmc_points must be 0 (no LMC curves) or >= 2, got {lmc_points}")
    pre_cfg = _check_config("pretrain", pretrain, TrainConfig(epochs=5, lr=0.05, batch_size=128))
    ft_cfg = _check_config("finetune", finetune, TrainConfig(epochs=5, lr=0.01, batch_size=128))
    if trajectory == "actual" and int(steps) % ft_cfg.epochs:
        raise ValueError(f"trajectory='actual': steps={steps} must be a multiple of finetune.epochs="
                         f"{ft_cfg.epochs}")
    dev = torch.device(device) if device is not None else default_device()
    pre = class_task(data, pretrain_classes, train_subset=train_subset, val_subset=val_subset)
    task = class_task(data, finetune_classes, train_subset=train_subset, val_subset=val_subset)
    if model_fn is None:
        features = data.train.num_features
        model_fn = lambda nc: MLP(features, tuple(hidden), nc)  # noqa: E731
    build: Callable[[int], Any] = model_fn
    n_pre, n_new = pre.num_classes, task.num_classes
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    t_all = time.perf_counter()

    # 1. pre-training: same architecture and data, different seeds
    nets = {}
    reference: dict = {}
    for role, s in (("source", seed), ("target", seed + 1)):
        torch.manual_seed(s)
        net = build(n_pre).to(dev)
        train(net, pre.train, pre_cfg, seed=s)
        nets[role] = net
        reference[f"pretrain_{role}"] = evaluate(net, pre.val)
        log(f"pre-trained {role} on {pre.name}: val {100 * reference[f'pretrain_{role}']:.2f}%")

    # 2. new heads (own seeds), 3. source fine-tuning with its trajectory
    source = with_new_head(nets["source"], build, n_new, seed + 2, head).to(dev)
    target_start = _clone_state(with_new_head(nets["target"], build, n_new, seed + 3, head))
    states = [_clone_state(source)]
    ft_train = TrainConfig(**{**ft_cfg.as_dict(), "seed": seed + 4})
    train(source, task.train, ft_train,
          callback=(lambda e, r: states.append(_clone_state(source))) if trajectory == "actual" else None)
    if trajectory == "linear":
        states.append(_clone_state(source))
    traj = Trajectory(states, num_splits=int(steps) // (len(states) - 1), schedule=schedule)
    reference["source_finetuned"] = {"val": evaluate(source, task.val), "test": evaluate(source, task.test)}
    # the target fine-tuned directly for the full budget (reference, LMC end point, Oracle)
    target_ft = build(n_new).to(dev)
    target_ft.load_state_dict(target_start)
    train(target_ft, task.train, TrainConfig(**{**ft_cfg.as_dict(), "seed": seed + 5}))
    reference["target_finetuned"] = {"val": evaluate(target_ft, task.val), "test": evaluate(target_ft, task.test)}
    log(f"fine-tuned on {task.name}: source val {100 * reference['source_finetuned']['val']:.2f}%, "
        f"target directly {100 * reference['target_finetuned']['val']:.2f}%")
    probe = build(n_new).to(dev)
    source_curve = []
    for k in range(len(traj)):
        probe.load_state_dict(traj[k])
        source_curve.append(evaluate(probe, task.val))

    # 4. transfers, best step on the new task's validation split
    transfers = {}
    starts: dict[str, tuple[dict, Optional[int], float]] = {"direct": (target_start, None, 0.0)}
    for m in methods:
        t0 = time.perf_counter()
        res = transfer(build(n_new), traj, target_start, task, method=m, grad_batches=grad_batches,
                       batch_size=grad_batch_size or ft_cfg.batch_size, bn_batches=bn_batches, seed=seed,
                       target_final=target_ft if m == "oracle" else None, device=dev, verbose=verbose,
                       **transfer_options)
        transfers[m] = res
        starts[m] = (res.best_params, res.best_step, time.perf_counter() - t0)

    # 5. every start evaluated, fine-tuned after_epochs with the same minibatches, evaluated again
    after_cfg = TrainConfig(**{**ft_cfg.as_dict(), "epochs": int(after_epochs), "schedule": "constant",
                               "warmup_epochs": 0, "seed": seed + 6})
    rows: dict[str, dict[str, Any]] = {}
    for name, (state, best, seconds) in starts.items():
        net = build(n_new).to(dev)
        net.load_state_dict(state)
        start_val = evaluate(net, task.val)
        row = {"best_step": best, "start_val": start_val, "start_test": evaluate(net, task.test),
               "seconds": seconds}
        train(net, task.train, after_cfg)
        after_val = evaluate(net, task.val)
        row.update(after_val=after_val, after_test=evaluate(net, task.test))
        rows[name] = row
        log(f"{name}: start val {100 * start_val:.2f}% -> {100 * after_val:.2f}% after "
            f"{after_epochs} epoch(s)")

    # 6. linear mode connectivity: the target's own fine-tuning (α = 0) to each transferred start
    curves = {}
    if int(lmc_points) >= 2:
        for m in methods:
            curves[m] = lmc_curve(build(n_new), target_ft, starts[m][0], task, points=int(lmc_points),
                                  bn_batches=bn_batches, bn_batch_size=ft_cfg.batch_size, seed=seed, device=dev)
            rows[m].update(barrier=curves[m].barrier, accuracy_barrier=curves[m].accuracy_barrier)

    config = {
        "dataset": data.name, "pretrain_classes": [int(c) for c in pretrain_classes],
        "finetune_classes": [int(c) for c in finetune_classes], "pretrain": pre_cfg.as_dict(),
        "finetune": ft_cfg.as_dict(), "after_epochs": int(after_epochs), "steps": traj.num_steps,
        "schedule": schedule, "trajectory": trajectory, "methods": methods, "grad_batches": int(grad_batches),
        "grad_batch_size": int(grad_batch_size or ft_cfg.batch_size), "bn_batches": int(bn_batches),
        "lmc_points": int(lmc_points), "train_samples": {"pretrain": len(pre.train), "finetune": len(task.train)},
        "val_samples": len(task.val), "test_samples": len(task.test), "head": head_names(probe) if head is None
        else list(head), "seed": int(seed), "device": str(dev), "seconds": time.perf_counter() - t_all,
        "transfer_options": {k: v for k, v in transfer_options.items()},
    }
    return FinetuneResult(rows=rows, reference=reference, transfers=transfers, lmc=curves,
                          source_curve=source_curve, trajectory=traj, target_start=target_start, config=config)
