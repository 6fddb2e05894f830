"""One source trajectory transferred onto N target initializations at once: an ensemble.

Member i of :func:`transfer_many` is exactly ``transfer(model, trajectory, target_inits[i], data,
method, seed=seed, ...)`` with the same options: every single transfer draws its gradient
minibatches from a loader seeded alike and visits the trajectory's points in the same order, so
the N transfers need the same source gradients. Here each is computed once
(:class:`~.pairs.SourceSide`) and the N transfers advance in lock-step, step by step, so that
only the current step's source gradients are kept. Everything on the target side (its
gradients, its matcher, its evaluation) stays per member.

Why the per-group assignment problems are not stacked into one
:func:`~trajtransfer.linear_sum_assignment_batch` call: a single transfer warm-starts every LAP
from the duals of its own previous solve (``reuse_duals=True``, the default) and the batched
solver starts cold, so stacking would break ties differently from the single transfers this
function must reproduce; and the N descents do not visit the same groups in lock-step (a group
is skipped when none of its neighbours moved, and each member converges after its own number of
sweeps), so a stacked call would wait for the slowest member. On the transfers this is meant for
(an MLP with one or two permutation groups) the LAPs are a small share of the matching, which is
mostly building the cost terms from each member's own gradients.

The ensemble predicts with the **average of the members' softmax probabilities** (not of their
logits), evaluated at each evaluation step, every member with its own BatchNorm recalibration.

With ``distributed=`` the members are spread over the ranks of a process group (rank r takes
members r, r + W, ...): each rank computes the source gradients its members need, the ensemble's
probabilities are summed over the ranks, and every rank returns all N results.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .._devices import batch_to, module_device
from ..core.threads import with_thread_budget
from ..kit.data import ArrayDataset, DatasetSplits, eval_batches
from .distributed import Distributed
from .transfer import StepInfo, _Member, _setup, _state, check_ranks_agree
from .trajectory import Trajectory

__all__ = ["EnsembleResult", "ensemble_accuracy", "transfer_many"]


@dataclass
class EnsembleResult:
    """Outcome of :func:`transfer_many`.

    Attributes
    ----------
    members : list[TransferResult]
        One per target init, each equal to the single transfer's result (its ``timings`` are
        its own phases, with the shared source gradients counted by the member that computed
        them; its ``total`` is the wall time since the call started, shared by all members).
    eval_steps : list[int]
        The members' evaluation steps (0 = the inits, every ``eval_every`` and K).
    accuracy : list[float]
        The ensemble's accuracy (averaged softmax probabilities) at ``eval_steps``.
    num_source_gradients : int
        Source gradients computed for all members together (a single transfer's count).
    timings : dict[str, float]
        Seconds: ``gradients``, ``matching`` and ``evaluation`` summed over the members (they
        run one after the other), ``ensemble`` (the ensemble's predictions) and ``total`` (wall
        time of the call).
    """

    members: list
    eval_steps: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    num_source_gradients: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def final_accuracy(self) -> Optional[float]:
        """The ensemble's accuracy at step K, if evaluated."""
        if self.eval_steps and self.members and self.eval_steps[-1] == self.members[0].num_steps:
            return self.accuracy[-1]
        return None

    @property
    def member_accuracy(self) -> list:
        """Each member's accuracy at ``eval_steps`` (a list per member)."""
        return [list(m.accuracy) for m in self.members]

    def to_dict(self) -> dict:
        """Everything but the tensors, JSON-serializable."""
        return {"members": [m.to_dict() for m in self.members], "eval_steps": list(self.eval_steps),
                "accuracy": list(self.accuracy), "final_accuracy": self.final_accuracy,
                "num_source_gradients": self.num_source_gradients, "timings": dict(self.timings)}


def ensemble_accuracy(models: Sequence[Any], dataset: ArrayDataset, batch_size: int = 1024) -> float:
    """Top-1 accuracy of the average of the models' softmax probabilities, each in eval mode.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        On one device; their train/eval modes are restored afterwards.
    dataset : ArrayDataset
    batch_size : int

    Raises
    ------
    ValueError
        No models.
    TypeError
        ``dataset`` is not an ArrayDataset.
    """

    models = list(models)
    if not models:
        raise ValueError("ensemble_accuracy needs at least one model")
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"dataset must be an ArrayDataset, got {type(dataset).__name__}")
    return _accuracy(_probability_sum(models, dataset, batch_size), dataset)


def _probability_sum(models: Sequence[Any], dataset: ArrayDataset, batch_size: int,
                     device: Any = None) -> Any:
    """Σ over ``models`` of their softmax probabilities on ``dataset`` (n × classes, float32),
    each model in eval mode (modes restored); zeros on ``device`` for no models."""
    import torch

    if not models:
        return torch.zeros(len(dataset), dataset.num_classes, device=device)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    device = module_device(models[0])
    parts = []
    with torch.no_grad():
        for batch in eval_batches(dataset, batch_size):
            x, _ = batch_to(batch, device)
            parts.append(torch.stack([torch.softmax(m(x).float(), dim=1) for m in models]).sum(dim=0))
    for m, mode in zip(models, modes):
        m.train(mode)
    return torch.cat(parts)


def _accuracy(probability_sum: Any, dataset: ArrayDataset) -> float:
    y = batch_to(dataset.y, probability_sum.device)
    return int((probability_sum.argmax(dim=1) == y).sum()) / max(1, len(dataset))


def _check_targets(target_inits: Any, what: str) -> list:
    """``target_inits`` as a list, each a module or a state dict; clear errors otherwise."""
    import torch

    if isinstance(target_inits, (Mapping, torch.nn.Module)) or not isinstance(target_inits, Sequence):
        raise TypeError(f"{what} must be a list of nn.Modules or state dicts (one per member), got "
                        f"{type(target_inits).__name__}")
    targets = list(target_inits)
    if not targets:
        raise ValueError(f"{what} is empty: give at least one target initialization")
    for i, t in enumerate(targets):
        if not isinstance(t, (Mapping, torch.nn.Module)):
            raise TypeError(f"{what}[{i}] must be an nn.Module or a state dict, got {type(t).__name__}")
    return targets


@with_thread_budget
def transfer_many(
    model: Any,
    trajectory: Trajectory,
    target_inits: Sequence[Any],
    data: Union[ArrayDataset, DatasetSplits],
    method: str = "fgmt",
    steps: Optional[int] = None,
    *,
    eval_data: Optional[ArrayDataset] = None,
    target_finals: Optional[Sequence[Any]] = None,
    verbose: bool = False,
    callback: Optional[Callable[[int, StepInfo], None]] = None,
    distributed: Any = None,
    **options: Any,
) -> EnsembleResult:
    """Transfer ``trajectory`` onto every init of ``target_inits``, sharing the source side.

    Member i's result equals ``transfer(model, trajectory, target_inits[i], data, method, steps,
    eval_data=eval_data, target_final=target_finals[i], **options)``: the same permutations at
    every step and the same parameters (up to float32 rounding on devices whose kernels are not
    deterministic). The source gradients are computed once for all members (K for FGMT instead
    of N·K).

    Parameters
    ----------
    model, trajectory, data, method, steps, eval_data
        As for :func:`~trajtransfer.method.transfer.transfer`.
    target_inits : list of nn.Module or state dict
        θ₂⁰ of each member (at least one), all of ``model``'s shapes.
    target_finals : list, optional
        Oracle only: each member's trained end point.
    verbose : bool
        One progress line per member and step on stderr (``member i: [fgmt] step ...``).
    callback : callable(member index, StepInfo), optional
        After every member's step.
    distributed : True, torch.distributed.ProcessGroup or Distributed, optional
        Spread the members over the ranks of an initialised process group (rank r runs members
        r, r + W, ...; whole minibatches, no sharding). Every rank calls ``transfer_many`` with
        the same arguments and gets all N results; ``num_source_gradients`` and ``timings`` are
        summed over the ranks.
    **options
        Every other keyword of :func:`~trajtransfer.method.transfer.transfer` (``seed``,
        ``batch_size``, ``grad_batches``, ``eval_every``, ``num_threads``, ...), the same for
        all members.

    Returns
    -------
    EnsembleResult
        The members' results and the ensemble's accuracy along the steps (the average of the
        members' softmax probabilities; empty without ``eval_data``).

    Raises
    ------
    TypeError
        ``target_inits`` (or ``target_finals``) not a list of modules or state dicts; an unknown
        keyword in ``options``.
    ValueError
        An empty ``target_inits``; ``target_finals`` of another length; a member whose shapes do
        not match ``model`` (the message names it); everything :func:`transfer` refuses.

    Examples
    --------
    >>> import torch
    >>> from trajtransfer import MLP, Trajectory, train
    >>> from trajtransfer.kit.data import ArrayDataset
    >>> _ = torch.manual_seed(0)
    >>> data = ArrayDataset(torch.randn(256, 8), torch.randint(0, 3, (256,)), 3)
    >>> source = MLP(8, (16,), 3)
    >>> start = {k: v.clone() for k, v in source.state_dict().items()}
    >>> _ = train(source, data, epochs=1, batch_size=32)
    >>> res = transfer_many(MLP(8, (16,), 3), Trajectory([start, source.state_dict()], num_splits=4),
    ...                     [MLP(8, (16,), 3) for _ in range(3)], data, eval_data=data)
    >>> len(res.members), res.num_source_gradients, res.eval_steps
    (3, 4, [0, 1, 2, 3, 4])
    """
    t_start = time.perf_counter()
    targets = _check_targets(target_inits, "target_inits")
    finals: list = [None] * len(targets)
    if target_finals is not None:
        finals = _check_targets(target_finals, "target_finals")
        if len(finals) != len(targets):
            raise ValueError(f"target_finals has {len(finals)} entries but target_inits has "
                             f"{len(targets)}: give one trained end point per member")
    setup = _setup(model, trajectory, data, method, steps, targets[0], eval_data=eval_data,
                   **_setup_options(options))
    dp = Distributed.resolve(distributed)
    mine = list(range(len(targets)))
    if dp is not None:
        check_ranks_agree(dp, setup, [_state(t, f"target_inits[{i}]") for i, t in enumerate(targets)])
        mine = list(dp.assign(len(targets)))
    source = setup.new_source(len(mine))
    members = []
    for local, i in enumerate(mine):
        try:
            members.append(_Member(setup, source, local, targets[i], finals[i]))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"target_inits[{i}]: {exc}") from None
    for m in members:
        m.start()
    models = [m.pairs.target_model for m in members]
    ens_seconds = 0.0
    eval_steps: list = []
    accuracy: list = []

    def evaluate_ensemble(s: int, eval_data: ArrayDataset) -> None:
        nonlocal ens_seconds
        t0 = time.perf_counter()
        eval_steps.append(s)
        probs = _probability_sum(models, eval_data, setup.eval_batch_size, setup.device)
        if dp is not None:  # every rank takes part, members or not
            (probs,) = dp.sum_over_ranks([probs])
        accuracy.append(_accuracy(probs, eval_data))
        ens_seconds += time.perf_counter() - t0

    if setup.eval_data is not None:
        evaluate_ensemble(0, setup.eval_data)
    K = setup.num_steps
    for s in range(1, K + 1):
        for i, m in zip(mine, members):
            info = m.step(s)
            if verbose:
                print(f"member {i}: {info.line()}", file=sys.stderr, flush=True)
            if callback is not None:
                callback(i, info)
        # Each member's evaluation left its recalibrated θ₂ˢ in its model.
        if setup.eval_data is not None and (s % setup.eval_every == 0 or s == K):
            evaluate_ensemble(s, setup.eval_data)
    results = [m.finish() for m in members]
    timings = {p: sum(r.timings[p] for r in results) for p in ("gradients", "matching", "evaluation")}
    timings.update(ensemble=ens_seconds, total=time.perf_counter() - t_start)
    num_source_gradients = source.num_source_gradients
    if dp is not None:
        results = dp.gather({i: r.to("cpu") for i, r in zip(mine, results)}, len(targets))
        per_rank = dp.gather({dp.rank: (num_source_gradients, timings)}, dp.world_size)
        num_source_gradients = sum(n for n, _ in per_rank)
        timings = {p: sum(t[p] for _, t in per_rank) if p != "total" else max(t[p] for _, t in per_rank)
                   for p in timings}
    return EnsembleResult(results, eval_steps, accuracy, num_source_gradients, timings)


def _setup_options(options: dict) -> dict:
    """``options`` completed with :func:`transfer`'s defaults; unknown keywords refused."""
    import inspect

    from .transfer import transfer

    defaults = {n: p.default for n, p in inspect.signature(transfer).parameters.items()}
    keys = {n for n, p in inspect.signature(_setup).parameters.items()
            if p.kind == p.KEYWORD_ONLY and n != "eval_data"}
    unknown = sorted(set(options) - keys - {"num_threads"})  # num_threads: the thread budget's
    if unknown:
        raise TypeError(f"transfer_many got unexpected keyword argument(s) {unknown} (one "
                        "trained end point per member goes in target_finals=)"
                        if "target_final" in unknown else
                        f"transfer_many got unexpected keyword argument(s) {unknown}")
    return {n: options.get(n, defaults[n]) for n in keys}
