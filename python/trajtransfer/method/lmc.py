"""Linear mode connectivity: loss and accuracy along the segment between two parameter sets.

For α in [0, 1] the network with parameters θ(α) = (1 − α)·θ_a + α·θ_b is evaluated. Models with
BatchNorm get their running statistics re-estimated at every point, on the same training
minibatches each time (REPAIR-style "reset BN"): interpolated running statistics do not describe
the interpolated network, so without recalibration a barrier may be only a statistics artefact.
The barrier is the largest rise of the loss above the straight line between the end points'
losses (Frankle et al., 2020); 0 means the two parameter sets are linearly connected.

>>> import torch
>>> from trajtransfer import MLP
>>> from trajtransfer.kit.data import ArrayDataset
>>> _ = torch.manual_seed(0)
>>> data = ArrayDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)), 3)
>>> net = MLP(4, (8,), 3)
>>> curve = lmc_curve(net, net.state_dict(), net.state_dict(), data, points=3)
>>> curve.alphas, curve.barrier
([0.0, 0.5, 1.0], 0.0)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import numpy as np

from .._devices import batch_to, default_device, module_device, state_device
from ..kit.data import ArrayDataset, DatasetSplits, Loader, eval_batches
from .bn import batchnorm_modules, recalibrate_bn
from .pairs import load_params

__all__ = ["LMCResult", "lmc_curve", "loss_and_accuracy"]


@dataclass
class LMCResult:
    """Outcome of :func:`lmc_curve`.

    Attributes
    ----------
    alphas : list[float]
        The interpolation points, 0 … 1 evenly spaced (α = 0 is ``params_a``).
    loss : list[float]
        Mean cross-entropy at each point.
    accuracy : list[float]
        Top-1 accuracy (fraction) at each point.
    recalibrated : bool
        Whether BatchNorm statistics were re-estimated at each point.
    """

    alphas: list
    loss: list
    accuracy: list
    recalibrated: bool = False
    config: dict = field(default_factory=dict)

    @property
    def barrier(self) -> float:
        """Loss barrier: max over α of L(α) − ((1 − α)·L(0) + α·L(1)); ≥ 0."""
        a = np.asarray(self.alphas)
        line = (1 - a) * self.loss[0] + a * self.loss[-1]
        return float(max(0.0, np.max(np.asarray(self.loss) - line)))

    @property
    def accuracy_barrier(self) -> float:
        """Accuracy barrier: max over α of ((1 − α)·A(0) + α·A(1)) − A(α); ≥ 0."""
        a = np.asarray(self.alphas)
        line = (1 - a) * self.accuracy[0] + a * self.accuracy[-1]
        return float(max(0.0, np.max(line - np.asarray(self.accuracy))))

    def to_dict(self) -> dict:
        """JSON-serializable, barriers included."""
        return {"alphas": list(self.alphas), "loss": list(self.loss), "accuracy": list(self.accuracy),
                "barrier": self.barrier, "accuracy_barrier": self.accuracy_barrier,
                "recalibrated": self.recalibrated, "config": dict(self.config)}


def loss_and_accuracy(model: Any, dataset: ArrayDataset, batch_size: int = 1024) -> tuple:
    """Mean cross-entropy and top-1 accuracy of ``model`` (eval mode) on all of ``dataset``."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    device = module_device(model)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for batch in eval_batches(dataset, batch_size):
            x, y = batch_to(batch, device)
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(dim=1) == y).sum()
    model.train(was_training)
    n = max(1, len(dataset))
    return float(loss) / n, int(correct) / n


def _params(obj: Any, what: str, model: Any) -> dict:
    """The model's parameters (and float buffers, if present) taken from a module or state dict."""
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be an nn.Module or a state dict, got {type(obj).__name__}")
    params = dict(model.named_parameters())
    out = {}
    for name, p in model.state_dict().items():
        if name not in obj:
            if name in params:
                raise ValueError(f"{what} has no entry {name!r} (a parameter of the model)")
            continue
        v = obj[name]
        v = torch.from_numpy(v) if isinstance(v, np.ndarray) else v
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{what}[{name!r}] must be a tensor or array, got {type(v).__name__}")
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"{what}[{name!r}] has shape {tuple(v.shape)}, the model has {tuple(p.shape)}")
        out[name] = v.detach()
    return out


def lmc_curve(
    model: Any,
    params_a: Any,
    params_b: Any,
    data: Union[ArrayDataset, DatasetSplits],
    *,
    points: int = 11,
    bn_data: Optional[ArrayDataset] = None,
    bn_batches: int = 10,
    bn_batch_size: int = 128,
    eval_batch_size: int = 1024,
    seed: int = 0,
    device: Any = None,
) -> LMCResult:
    """Loss and accuracy at ``points`` evenly spaced points of the segment from θ_a to θ_b.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture (deep-copied; not modified).
    params_a, params_b : nn.Module or state dict
        The end points (α = 0 and α = 1). Every parameter of ``model`` must be present with its
        shape. Buffers are used only by ``bn_batches=0``.
    data : ArrayDataset or DatasetSplits
        Evaluated at each point: the dataset itself, or the ``val`` split of ``DatasetSplits``
        (whose ``train`` split is then the default ``bn_data``).
    points : int ≥ 2
    bn_data : ArrayDataset, optional
        BatchNorm models: the samples that re-estimate the running statistics at each point.
        Default: ``data.train`` for ``DatasetSplits``, else ``data`` itself.
    bn_batches : int ≥ 0
        Minibatches of ``bn_batch_size`` per recalibration; each point sees the same minibatches
        (one seeded stream restarted per point). 0: no recalibration, running statistics are
        interpolated like the parameters (the naive alternative, for comparison). Ignored for
        models without BatchNorm.
    eval_batch_size : int
    seed : int
        Seeds the recalibration minibatches.
    device : torch.device or str, optional
        Default: the device of ``params_a`` (module or tensors), else of ``model``.

    Returns
    -------
    LMCResult

    Raises
    ------
    ValueError
        ``points < 2``, a negative ``bn_batches``, a missing parameter or a shape that differs
        from the model's.
    TypeError
        ``data`` is not an ``ArrayDataset``/``DatasetSplits``, or an end point is not a module or
        state dict.
    """
    import torch

    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or int(points) < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    if int(bn_batches) < 0:
        raise ValueError(f"bn_batches must be >= 0 (0: no BatchNorm recalibration), got {bn_batches}")
    if isinstance(data, DatasetSplits):
        eval_data, bn_data = data.val, bn_data if bn_data is not None else data.train
    elif isinstance(data, ArrayDataset):
        eval_data, bn_data = data, bn_data if bn_data is not None else data
    else:
        raise TypeError(f"data must be an ArrayDataset or DatasetSplits, got {type(data).__name__}")
    if not isinstance(bn_data, ArrayDataset):
        raise TypeError(f"bn_data must be an ArrayDataset, got {type(bn_data).__name__}")
    if device is None:
        device = state_device(params_a) or state_device(model) or default_device()
    net = copy.deepcopy(model).to(device)
    a = {k: batch_to(v, device) for k, v in _params(params_a, "params_a", net).items()}
    b = {k: batch_to(v, device) for k, v in _params(params_b, "params_b", net).items()}
    names = [n for n, _ in net.named_parameters()]
    recalibrate = bool(batchnorm_modules(net)) and int(bn_batches) > 0
    buffers = [] if recalibrate else [k for k, v in net.state_dict().items()
                                      if k not in names and v.is_floating_point() and k in a and k in b]
    alphas = [float(x) for x in np.linspace(0.0, 1.0, int(points))]
    loss, acc = [], []
    for alpha in alphas:
        # lerp is exact at both ends (a at α = 0, b at α = 1): the end points are the models
        point = {k: torch.lerp(a[k].float(), b[k].float(), alpha) for k in names + buffers}
        load_params(net, point)
        with torch.no_grad():
            for k in buffers:
                net.get_buffer(k).copy_(point[k])
        if recalibrate:
            recalibrate_bn(net, Loader(bn_data, bn_batch_size, seed=seed, drop_last=False),
                           int(bn_batches))
        lo, ac = loss_and_accuracy(net, eval_data, eval_batch_size)
        loss.append(lo)
        acc.append(ac)
    config = {"points": int(points), "bn_batches": int(bn_batches), "bn_batch_size": int(bn_batch_size),
              "seed": int(seed), "device": str(device), "eval_samples": len(eval_data)}
    return LMCResult(alphas=alphas, loss=loss, accuracy=acc, recalibrated=recalibrate, config=config)
