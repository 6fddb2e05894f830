"""BatchNorm running statistics: reset and recalibrate (algorithm-spec.md §2.6).

Running statistics are never transferred: after the parameters of a network are replaced, its
BatchNorm running mean/variance are reset and re-estimated as a cumulative average over a few
training minibatches in train mode ("reset BN", REPAIR). Recalibration runs under ``no_grad``
(§6.2 I2) and leaves every parameter untouched.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from .._devices import module_device, to_device

__all__ = ["batchnorm_modules", "has_batchnorm", "reset_bn_stats", "recalibrate_bn"]


def batchnorm_modules(model) -> list:
    """All BatchNorm modules (1d/2d/3d, including SyncBatchNorm) that track running statistics."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(model) -> bool:
    """True if ``model`` has a BatchNorm layer with running statistics."""
    return bool(batchnorm_modules(model))


def reset_bn_stats(model) -> int:
    """Reset every BatchNorm running mean/var/count in place; returns the number of layers reset."""
    mods = batchnorm_modules(model)
    for m in mods:
        m.reset_running_stats()
    return len(mods)


def recalibrate_bn(
    model,
    batches: Iterable,
    num_batches: Optional[int] = None,
    *,
    transform: Optional[Callable] = None,
) -> int:
    """Reset and re-estimate BatchNorm running statistics from training minibatches.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place: only the BN buffers (``running_mean``, ``running_var``,
        ``num_batches_tracked``) change. Its train/eval mode and BN momenta are restored.
    batches : iterable of (x, y) or x
        Minibatches, anywhere; e.g. a :class:`trajtransfer.kit.data.Loader` or a list. Each goes
        to the model's device as it is used.
    num_batches : int, optional
        Use at most this many batches (all of ``batches`` when None).
    transform : callable, optional
        Applied to each input batch before the forward pass.

    Returns
    -------
    int
        The number of batches used (0 when the model has no BatchNorm: nothing is done).

    Raises
    ------
    ValueError
        If the model has BatchNorm but no batch was available (the statistics would be left
        reset, i.e. mean 0 / variance 1).
    """
    import torch

    mods = batchnorm_modules(model)
    if not mods:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in mods]
    for m in mods:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    used = 0
    device = module_device(model)
    try:
        model.train()
        with torch.no_grad():
            it = iter(batches)
            while num_batches is None or used < num_batches:
                try:
                    b = next(it)
                except StopIteration:
                    break
                x = to_device(b[0] if isinstance(b, (tuple, list)) else b, device)
                if transform is not None:
                    x = transform(x)
                model(x)
                used += 1
    finally:
        for m, mom in zip(mods, momenta):
            m.momentum = mom
        model.train(was_training)
    if used == 0:
        raise ValueError("recalibrate_bn: the model has BatchNorm but no batches were given")
    return used
