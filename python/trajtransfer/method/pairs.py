"""Gradient pairs for learning transfer: source and transferred target on the same minibatches.

:class:`SourceSide` owns the source's working copy of the model on the transfer's device, the
source trajectory's points there, the minibatch stream and the source gradients;
:class:`GradientPairSource` owns a target's copy. The methods ask the latter for the pair at
point k under a permutation π (algorithm-spec §2.3, without the official code's BN warm-up).
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Optional, Sequence

from .._devices import batch_to
from .distributed import Distributed
from .factor_capture import FactorCapture

__all__ = ["GradientPairSource", "SourceSide", "mean_gradient", "paired_gradients", "load_params"]


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


class SourceSide:
    """The source half of the gradient pairs: trajectory points, minibatches, source gradients.

    One per transfer, shared by the ``consumers`` targets of
    :func:`~trajtransfer.method.transfer_many.transfer_many`. Every target asks for the same
    sequence of (point, minibatches), since each single transfer draws from a loader seeded
    alike, so the j-th source gradient a target asks for is computed once, by the first target
    that asks, and kept until all of them got it.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture; one deep copy is made on ``device``.
    trajectory : Trajectory
        Its points are moved to ``device`` as they are used.
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
    consumers : int
        Targets asking for the same sequence of source gradients.
    distributed : Distributed, optional
        Data parallelism (:mod:`~trajtransfer.method.distributed`): this process computes its
        shard of every minibatch and every gradient is combined over the ranks, so each rank
        gets the full-batch one.
    """

    def __init__(self, model: Any, trajectory: Any, loader: Any, grad_batches: int,
                 cache_source: bool, device: Any, factored: bool = False, consumers: int = 1,
                 distributed: Optional[Distributed] = None) -> None:
        import copy

        self.device = device
        self.model = copy.deepcopy(model).to(device)
        self.names = [n for n, _ in model.named_parameters()]
        self.trajectory = trajectory
        self.loader = loader
        self.grad_batches = int(grad_batches)
        self.cache_source = bool(cache_source)
        self.consumers = int(consumers)
        start = trajectory.checkpoint(0)
        self.origin = {n: batch_to(start[n], device) for n in self.names}
        self.distributed = distributed
        if distributed is not None:
            distributed.check_batch_size(loader.batch_size)
        self.num_source_gradients = 0
        self._cache: dict = {}  # point k -> (minibatches, weights, source gradient), cache_source only
        self._seen: list = [set() for _ in range(self.consumers)]  # cached points each target had
        self._asked = [0] * self.consumers  # source gradients each target has asked for
        self._pending: dict = {}  # ask index -> [point k, minibatches, weights, gradient, targets left]
        self._points: dict = {}  # the last points asked for (several targets ask in turn)
        self._capture = FactorCapture(self.model) if factored else None

    def point(self, k: int) -> dict:
        """θ₁ᵏ's parameters on the device."""
        if k in self._points:
            return self._points[k]
        pt = self.trajectory[k]
        pt = {n: batch_to(pt[n], self.device) for n in self.names}
        if self.consumers > 1:  # the targets ask for the same points in turn
            if len(self._points) >= 2:
                del self._points[next(iter(self._points))]
            self._points[k] = pt
        return pt

    def displacement(self, k: int) -> dict:
        """θ₁ᵏ − θ₁⁰ on the device."""
        pt = self.point(k)
        return {n: pt[n] - self.origin[n] for n in self.names}

    def draw(self) -> tuple:
        """The next ``grad_batches`` minibatches on the device (this rank's shards of them) and
        their weights (None in one process)."""
        batches = self.loader.take(self.grad_batches)
        if self.distributed is None:
            return [batch_to(b, self.device) for b in batches], None
        shards = [self.distributed.shard(b) for b in batches]
        return [batch_to(b, self.device) for b, _ in shards], [w for _, w in shards]

    def gradient(self, consumer: int, k: int, point: Optional[dict] = None) -> tuple:
        """(minibatches, their weights, source gradient at point k combined over the ranks,
        whether it is not a ``cache_source`` hit) for target ``consumer``; ``point``: θ₁ᵏ if
        the caller has it."""
        if self.cache_source and k in self._seen[consumer]:
            return (*self._cache[k], False)
        j = self._asked[consumer]
        self._asked[consumer] += 1
        entry = self._pending.get(j)
        if entry is None:
            batches, weights = self.draw()
            load_params(self.model, self.point(k) if point is None else point)
            g_s = mean_gradient(self.model, batches, self._capture, weights)
            if self.distributed is not None:
                (g_s,) = self.distributed.reduce(g_s)
            self.num_source_gradients += 1
            if self.cache_source:
                self._cache[k] = (batches, weights, g_s)
            entry = [k, batches, weights, g_s, self.consumers]
            if self.consumers > 1:
                self._pending[j] = entry
        elif entry[0] != k:  # cannot happen while the targets share one method and schedule
            raise RuntimeError(f"target {consumer} asked for point {k} as its source gradient "
                               f"{j}, but an earlier target asked for point {entry[0]}")
        if self.cache_source:
            self._seen[consumer].add(k)
        entry[4] -= 1
        if entry[4] == 0:
            self._pending.pop(j, None)
        return entry[1], entry[2], entry[3], True


class GradientPairSource:
    """Gradient pairs along a source trajectory, for a target moved by a permutation.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture; a deep copy (the target's) is made on ``device``.
    source : SourceSide
        The trajectory's points and the source gradients (shared by the targets of
        ``transfer_many``).
    base : dict[str, Tensor]
        θ₂⁰ (the target init's parameters), float32, on ``device``.
    spec : PermutationSpec
    consumer : int
        This target's index among the source's consumers.
    """

    def __init__(self, model: Any, source: SourceSide, base: dict, spec: Any,
                 consumer: int = 0) -> None:
        import copy

        self.device = source.device
        self.target_model = copy.deepcopy(model).to(self.device)
        self.source = source
        self.names = source.names
        self.spec = spec
        self.base = base
        self.consumer = int(consumer)
        #: Source gradients this target's pairs used that were not cache hits: what a single
        #: transfer computes.
        self.num_source_gradients = 0
        self._capture = FactorCapture(self.target_model) if source._capture is not None else None

    def displacement(self, k: int) -> dict:
        """θ₁ᵏ − θ₁⁰ on the device."""
        return self.source.displacement(k)

    def target_point(self, displacement: dict, perm: Optional[Mapping[str, Any]]) -> dict:
        """θ₂⁰ + π(displacement); ``perm`` None is the identity."""
        from ..core.permute import apply_permutation

        moved = apply_permutation(self.spec, perm, displacement) if perm is not None else displacement
        return {n: self.base[n] + moved[n] for n in self.names}

    def pair(self, k: int, perm: Optional[Mapping[str, Any]]) -> tuple:
        """(target gradient, source gradient) at point k, the target moved by ``perm``."""
        point = self.source.point(k)
        d = {n: point[n] - self.source.origin[n] for n in self.names}
        load_params(self.target_model, self.target_point(d, perm))
        batches, weights, g_s, fresh = self.source.gradient(self.consumer, k, point)
        self.num_source_gradients += fresh
        g_t = mean_gradient(self.target_model, batches, self._capture, weights)
        if self.source.distributed is not None:
            (g_t,) = self.source.distributed.reduce(g_t)
        return g_t, g_s
