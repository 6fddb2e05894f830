"""Gradient pairs for learning transfer: source and transferred target on the same minibatches.

:class:`GradientPairSource` owns the two working copies of the model on the transfer's device,
the source trajectory's points there, and the minibatch stream; the methods ask it for the pair
at point k under a permutation π (algorithm-spec §2.3, without the official code's BN warm-up).
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Optional, Sequence

from .._devices import batch_to
from .distributed import Distributed
from .factor_capture import FactorCapture

__all__ = ["GradientPairSource", "mean_gradient", "paired_gradients", "load_params"]


def load_params(model: Any, params: Mapping[str, Any]) -> None:
    """Copy ``params`` into the model's parameters (same names), without autograd."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])


def mean_gradient(model: Any, batches: Sequence, capture: Optional[FactorCapture] = None,
                  weights: Optional[Sequence[float]] = None) -> dict:
    """Mean over ``batches`` of the mean cross-entropy gradient, train mode.

    With ``capture`` (a :class:`FactorCapture` of ``model``), the weights it covers come as
    :class:`~trajtransfer.core.factored.Factored` from the same backward passes. ``weights``
    (one per batch) scale each batch's loss: a rank's share of a sharded minibatch.
    """
    import torch.nn.functional as F

    model.train()
    model.zero_grad(set_to_none=True)
    with capture.recording() if capture is not None else contextlib.nullcontext():
        for i, (x, y) in enumerate(batches):
            loss = F.cross_entropy(model(x), y)
            (loss if weights is None else loss * weights[i]).backward()
    factors = capture.factors(1.0 / len(batches)) if capture is not None else {}
    out = {n: factors[n] if n in factors else p.grad.detach().clone() / len(batches)
           for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def paired_gradients(target_model: Any, source_model: Any, batches: Sequence) -> tuple:
    """Mean cross-entropy gradients of two models on the **same** minibatches (§2.3, without I1).

    Both models run in train mode (BatchNorm uses batch statistics). Gradients are averaged over
    the batches, which must be on the models' device.

    Parameters
    ----------
    target_model, source_model : torch.nn.Module
    batches : sequence of (x, y)

    Returns
    -------
    (g_target, g_source) : dict[str, Tensor], dict[str, Tensor]
        One entry per trainable parameter name, on the models' device.

    Raises
    ------
    ValueError
        If ``batches`` is empty.
    """
    if len(batches) == 0:
        raise ValueError("paired_gradients needs at least one minibatch")
    return mean_gradient(target_model, batches), mean_gradient(source_model, batches)


class GradientPairSource:
    """Gradient pairs along a source trajectory, for a target moved by a permutation.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture; two deep copies are made on ``device``.
    trajectory : Trajectory
        Its points are moved to ``device`` as they are used.
    base : dict[str, Tensor]
        θ₂⁰ (the target init's parameters), float32, on ``device``.
    spec : PermutationSpec
    loader : Loader
        Minibatches (anywhere); each is moved to ``device`` as it is drawn.
    grad_batches : int
        Minibatches per pair.
    cache_source : bool
        Keep each point's source gradient with its minibatches (GMT's opt-in).
    device : torch.device
    factored : bool
        Return the weights of Linear and pointwise-convolution layers as their factors
        (:class:`~trajtransfer.method.factor_capture.FactorCapture`).
    distributed : Distributed, optional
        Data parallelism (:mod:`~trajtransfer.method.distributed`): this process computes its
        shard of every minibatch and every pair is combined over the ranks, so each rank gets
        the full-batch pair.
    """

    def __init__(self, model: Any, trajectory: Any, base: dict, spec: Any, loader: Any,
                 grad_batches: int, cache_source: bool, device: Any, factored: bool = False,
                 distributed: Optional[Distributed] = None) -> None:
        import copy

        self.device = device
        self.target_model = copy.deepcopy(model).to(device)
        self.source_model = copy.deepcopy(model).to(device)
        self.names = [n for n, _ in model.named_parameters()]
        self.trajectory = trajectory
        self.spec = spec
        self.base = base
        self.loader = loader
        self.grad_batches = int(grad_batches)
        self.cache_source = bool(cache_source)
        start = trajectory.checkpoint(0)
        self.origin = {n: batch_to(start[n], device) for n in self.names}
        self.distributed = distributed
        if distributed is not None:
            distributed.check_batch_size(loader.batch_size)
        self.num_source_gradients = 0
        self._source_cache: dict = {}  # point k -> (minibatches, their weights, source gradient)
        self._captures = ((FactorCapture(self.target_model), FactorCapture(self.source_model))
                          if factored else (None, None))

    def point(self, k: int) -> dict:
        """θ₁ᵏ's parameters on the device."""
        pt = self.trajectory[k]
        return {n: batch_to(pt[n], self.device) for n in self.names}

    def displacement(self, k: int) -> dict:
        """θ₁ᵏ − θ₁⁰ on the device."""
        pt = self.point(k)
        return {n: pt[n] - self.origin[n] for n in self.names}

    def target_point(self, displacement: dict, perm: Optional[Mapping[str, Any]]) -> dict:
        """θ₂⁰ + π(displacement); ``perm`` None is the identity."""
        from ..core.permute import apply_permutation

        moved = apply_permutation(self.spec, perm, displacement) if perm is not None else displacement
        return {n: self.base[n] + moved[n] for n in self.names}

    def draw(self) -> tuple:
        """The next ``grad_batches`` minibatches on the device (this rank's shards of them) and
        their weights (None in one process)."""
        batches = self.loader.take(self.grad_batches)
        if self.distributed is None:
            return [batch_to(b, self.device) for b in batches], None
        shards = [self.distributed.shard(b) for b in batches]
        return [batch_to(b, self.device) for b, _ in shards], [w for _, w in shards]

    def pair(self, k: int, perm: Optional[Mapping[str, Any]]) -> tuple:
        """(target gradient, source gradient) at point k, the target moved by ``perm``."""
        point = self.point(k)
        d = {n: point[n] - self.origin[n] for n in self.names}
        load_params(self.target_model, self.target_point(d, perm))
        cached = k in self._source_cache
        if cached:
            batches, weights, g_s = self._source_cache[k]
        else:
            batches, weights = self.draw()
            load_params(self.source_model, point)
            g_s = mean_gradient(self.source_model, batches, self._captures[1], weights)
            self.num_source_gradients += 1
        g_t = mean_gradient(self.target_model, batches, self._captures[0], weights)
        if self.distributed is not None:
            if cached:  # the cache holds the source side already combined
                (g_t,) = self.distributed.reduce(g_t)
            else:
                g_t, g_s = self.distributed.reduce(g_t, g_s)
        if self.cache_source and not cached:
            self._source_cache[k] = (batches, weights, g_s)
        return g_t, g_s
