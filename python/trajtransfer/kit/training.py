"""A plain, seeded training loop (SGD, Adam or AdamW, per-epoch cosine schedule) and evaluation.

Used to produce source/target trajectories (with a :class:`~trajtransfer.method.trajectory.TrajectoryRecorder`),
to fine-tune transferred parameters, and by the CLI. The schedule follows the official code's
``CustomCosineLR`` (algorithm-spec.md §3.1): stepped once per epoch *before* the epoch,
lr_e = lr₀·½(1 + cos(π(e − w)/(E − w))) for e ≥ w and lr₀·(e + 1)/w during w warm-up epochs.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from .._devices import batch_to, module_device
from ..core.threads import with_thread_budget
from .data import ArrayDataset, Loader, eval_batches

__all__ = ["TrainConfig", "TrainHistory", "train", "evaluate", "lr_at_epoch", "OPTIMIZERS"]

#: The optimizers :class:`TrainConfig` accepts.
OPTIMIZERS = ("sgd", "adam", "adamw")
_SCHEDULES = ("constant", "cosine")


def _check_real(name: str, value: Any, *, low: float, high: float = math.inf,
                low_open: bool = False) -> None:
    """Raise unless ``value`` is a finite real in [low, high) (or (low, high) when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and (v > low if low_open else v >= low) and v < high):
        left = "(" if low_open else "["
        raise ValueError(f"{name} must be a finite number in {left}{low:g}, {high:g}), got {value}")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`.

    Attributes
    ----------
    epochs : int
    lr : float
        Peak learning rate lr₀.
    batch_size : int
    momentum : float
        SGD momentum, ≥ 0 (ignored by Adam and AdamW).
    weight_decay : float
        ≥ 0. SGD and Adam add ``weight_decay · θ`` to the gradient (L2); AdamW decays the weights
        directly (decoupled), ``θ -= lr · weight_decay · θ``.
    optimizer : {"sgd", "adam", "adamw"}
        ``"adam"`` / ``"adamw"`` are ``torch.optim.Adam`` / ``torch.optim.AdamW``.
    betas : tuple of two floats
        Adam's moment decay rates β₁, β₂, each in [0, 1) (ignored by SGD).
    eps : float
        Adam's denominator term ε > 0 (ignored by SGD).
    schedule : {"constant", "cosine"}
    warmup_epochs : int
    seed : int
        Seeds the minibatch order (the model's init is the caller's business).

    Raises
    ------
    ValueError
        If a field is out of range or names an unknown optimizer or schedule (the message names
        the field).
    TypeError
        If a field has the wrong type (``betas`` not a pair of numbers, ``epochs`` not an int, ...;
        the message names the field).
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"
    warmup_epochs: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "warmup_epochs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        for name, least in (("epochs", 0), ("batch_size", 1), ("warmup_epochs", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        _check_real("lr", self.lr, low=0.0, low_open=True)
        _check_real("eps", self.eps, low=0.0, low_open=True)
        _check_real("weight_decay", self.weight_decay, low=0.0)
        _check_real("momentum", self.momentum, low=0.0)
        betas = self.betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            _check_real(f"betas[{i}]", b, low=0.0, high=1.0)
        self.betas = (float(betas[0]), float(betas[1]))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainHistory:
    """Per-epoch records: mean training loss, learning rate, and validation accuracy (if given)."""

    train_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: float = 0.0


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate used during ``epoch`` (0-based) under ``config``'s schedule."""
    lr0, e, w, E = config.lr, int(epoch), int(config.warmup_epochs), int(config.epochs)
    if e < w:
        return lr0 * (e + 1) / w
    if config.schedule == "constant":
        return lr0
    if config.schedule == "cosine":
        return lr0 * 0.5 * (1.0 + math.cos(math.pi * (e - w) / max(1, E - w)))
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {config.schedule!r}")


@with_thread_budget
def evaluate(model, dataset: ArrayDataset, batch_size: int = 1024, *,
             num_threads: Optional[int] = None) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` in eval mode on the whole ``dataset``.

    Runs on the model's device; the data go there one batch at a time. ``num_threads``: CPU
    threads, as in :func:`train`.
    """
    import torch

    was_training = model.training
    model.eval()
    device = module_device(model)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for batch in eval_batches(dataset, batch_size):
            x, y = batch_to(batch, device)
            correct += (model(x).argmax(dim=1) == y).sum()
    model.train(was_training)
    return int(correct) / max(1, len(dataset))  # one host read


class _SGD:
    """SGD with momentum and L2 weight decay, the update of ``torch.optim.SGD`` (dampening 0,
    no Nesterov): buf = μ·buf + (g + wd·p); p -= lr·buf.

    Written out because the first ``torch.optim`` optimizer of a process imports ``torch._dynamo``
    (about 2 s on this CPU build), which dominated short runs and the tests.
    """

    def __init__(self, params, lr: float, momentum: float, weight_decay: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr}]
        self.momentum, self.weight_decay = momentum, weight_decay
        self._buf: list = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        lr = self.param_groups[0]["lr"]
        with torch.no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                d = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
                if self.momentum != 0:
                    if self._buf[i] is None:
                        self._buf[i] = d.detach().clone()
                    else:
                        self._buf[i].mul_(self.momentum).add_(d)
                    d = self._buf[i]
                p.add_(d, alpha=-lr)


def _optimizer(model, config: TrainConfig):
    if config.optimizer == "sgd":
        return _SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                    weight_decay=config.weight_decay)
    import torch

    # Adam (L2 in the gradient) and AdamW (decoupled decay) are torch's own: their state is per
    # element, so a permuted run is the permuted run (see the guide's "Any optimizer").
    ctor = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return ctor(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                weight_decay=config.weight_decay)


@with_thread_budget
def train(
    model,
    data: ArrayDataset,
    config: Optional[TrainConfig] = None,
    *,
    val: Optional[ArrayDataset] = None,
    recorder=None,
    verbose: bool = False,
    callback: Optional[Callable[[int, dict], None]] = None,
    num_threads: Optional[int] = None,
    **overrides,
) -> TrainHistory:
    """Train ``model`` in place with mean cross-entropy.

    Parameters
    ----------
    model : torch.nn.Module
        Trained on its own device.
    data : ArrayDataset
        Training samples, wherever they are kept.
    config : TrainConfig, optional
        Defaults to ``TrainConfig()``; keyword ``overrides`` replace its fields
        (e.g. ``train(model, data, epochs=3, lr=0.1)``).
    val : ArrayDataset, optional
        Evaluated after every epoch.
    recorder : TrajectoryRecorder, optional
        Saves the initialization as epoch −1 (unless already saved) and the weights after each
        epoch e as epoch e.
    verbose : bool
        Print one line per epoch to stderr.
    callback : callable(epoch, record), optional
        Called after every epoch with a dict (loss, lr, val_accuracy).
    num_threads : int, optional
        CPU threads for torch's pool during the call (the thread budget of
        :mod:`trajtransfer.core.threads`). Default: ``TRAJTRANSFER_NUM_THREADS``, else the cores
        not busy with other work, at most ``torch.get_num_threads()``; restored afterwards.

    Returns
    -------
    TrainHistory
    """
    import torch.nn.functional as F

    cfg = TrainConfig(**{**(config.as_dict() if config else {}), **overrides})  # validates
    opt = _optimizer(model, cfg)
    device = module_device(model)  # the data go there one batch at a time
    loader = Loader(data, cfg.batch_size, seed=cfg.seed, drop_last=len(data) >= cfg.batch_size)
    hist = TrainHistory()
    if recorder is not None and -1 not in recorder.epochs:
        recorder.save(model, -1)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        lr = lr_at_epoch(cfg, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        total: Any = 0.0  # a device tensor after the first batch
        count = 0
        for batch in loader.epoch():
            x, y = batch_to(batch, device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total = total + loss.detach().double() * len(y)  # summed on the device: no read per batch
            count += len(y)
        hist.train_loss.append(float(total) / max(1, count))
        hist.lr.append(lr)
        acc = evaluate(model, val) if val is not None else None
        if acc is not None:
            hist.val_accuracy.append(acc)
        if recorder is not None:
            recorder.save(model, epoch)
        rec = {"loss": hist.train_loss[-1], "lr": lr, "val_accuracy": acc}
        if verbose:
            extra = f"  val {100 * acc:.2f}%" if acc is not None else ""
            print(f"  epoch {epoch + 1}/{cfg.epochs}  lr {lr:.4g}  loss {rec['loss']:.4f}{extra}",
                  file=sys.stderr)
        if callback is not None:
            callback(epoch, rec)
    hist.seconds = time.perf_counter() - t0
    return hist
