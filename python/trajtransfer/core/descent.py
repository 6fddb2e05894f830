"""Coordinate descent over permutation groups, for the device path (torch tensors).

The semantics are those of the native matcher (``csrc/match/matcher.cpp``), and tests hold the
two to the same permutations and objective on tie-free problems:

* start: ``init``, else the previous solve's permutations (``use_previous``), else the identity;
  or the greedy pass: the groups in spec order, each solved on the cost terms whose other groups
  are already assigned; ``history[0]`` is the exact objective at the start;
* each sweep visits the groups in the order ``random.Random(seed).shuffle`` gives (one generator
  per solve);
* a visited group gets the maximising assignment of its cost matrix, warm-started from its
  previous duals (unless ``warm_duals`` is off); the new permutation is kept only when its float64
  sum of cost entries is strictly larger than the old one's (a change on a tie could end the
  descent before the groups it affects are revisited);
* a group none of whose neighbours changed since its last solve is skipped (exact), when the
  LAP runs on the host; on the device every group is visited (no host read per visit);
* stop after a sweep whose gain is ``<= tol * max(1, |objective|)``.

Only the arithmetic (:class:`~trajtransfer.core.torch_pairs.TorchPairs`) and the LAP's placement
(:mod:`trajtransfer.core.device_lap`) differ between devices.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DescentOptions", "DescentResult", "coordinate_descent"]


@dataclass
class DescentOptions:
    max_sweeps: int = 100
    tol: float = 1e-9
    seed: int = 0
    exact_objective: bool = True
    greedy_start: bool = False


@dataclass
class DescentResult:
    perms: list                  # per group, int64 tensors on the device
    objective: float
    history: list
    sweeps: int
    converged: bool
    time_gemm: float = 0.0
    time_lap: float = 0.0
    counters: dict = field(default_factory=dict)


class DescentStart:
    """The start of a device-path solve, shared by the torch and the block paths. A subclass
    holds ``torch``, ``device``, ``compiled``, ``perms`` (the previous solve's) and ``lap``, and
    defines ``_identity()``."""

    torch: Any
    device: Any
    compiled: Any
    perms: list
    lap: Any

    def _identity(self) -> list:
        raise NotImplementedError

    def _init(self, init: Any) -> list:
        return [self.torch.from_numpy(p).to(self.device) for p in self.compiled.init_list(init)]

    def _start(self, init: Any, use_previous: bool, warm_start: bool, max_sweeps: int,
               tol: float, seed: int, exact_objective: bool) -> tuple:
        """Starting permutations (an init, the previous solve's, or the identity), the descent's
        options, and whether it starts at the identity (its cue to skip the start objective's
        products); the LAP duals are forgotten unless ``warm_start``."""
        if init is not None and not isinstance(init, str):
            perms = self._init(init)
        elif use_previous:
            perms = list(self.perms)
        else:
            perms = self._identity()
        if not warm_start:
            for g in range(len(perms)):
                self.lap.forget(g)
        opts = DescentOptions(max_sweeps=max_sweeps, tol=tol, seed=seed,
                              exact_objective=exact_objective, greedy_start=init == "greedy")
        return perms, opts, init == "identity" or (init is None and not use_previous)


class LapFailed(ValueError):
    """A group's cost matrix was rejected by the assignment solver (non-finite entries)."""

    def __init__(self, group: int) -> None:
        super().__init__(group)
        self.group = group


def coordinate_descent(pairs: Any, lap: Any, perms: list, opts: DescentOptions,
                       at_identity: bool = False) -> DescentResult:
    """Run the descent from ``perms`` (per group, int64 tensors on the pairs' device; updated).

    ``at_identity``: ``perms`` are all the identity, whose exact objective the pairs keep.
    """
    torch = pairs.torch
    num_groups = len(pairs.sizes)
    counters = {"lap_solves": 0, "lap_unchanged": 0, "member_builds": 0, "delta_builds": 0}
    flops0 = pairs.gemm_flops
    # With the LAP on the host, decisions are taken there, on host copies of the permutations.
    host_perms = [p.cpu().numpy() for p in perms] if lap.synchronous else None
    time_gemm = time_lap = 0.0
    if opts.greedy_start:
        time_gemm, time_lap = _greedy_pass(pairs, lap, perms, host_perms, counters)
        at_identity = False
    start = pairs.identity_objective() if at_identity else pairs.objective(perms)
    obj = float(start)  # one host read at the start
    history = [obj]
    dirty = [True] * num_groups
    rng = random.Random(opts.seed)
    sweeps, converged = 0, False
    for sweep in range(opts.max_sweeps):
        order = list(range(num_groups))
        rng.shuffle(order)
        gain = 0.0 if lap.synchronous else torch.zeros((), dtype=torch.float64, device=pairs.device)
        status: list = []
        for g in order:
            if lap.synchronous and not dirty[g]:
                continue
            t0 = time.perf_counter()
            cost, (full, delta) = pairs.cost(g, perms, host_perms)
            counters["member_builds"] += full
            counters["delta_builds"] += delta
            t1 = time.perf_counter()
            time_gemm += t1 - t0
            counters["lap_solves"] += 1
            if lap.synchronous:
                delta = _visit_on_host(lap, g, cost, perms, host_perms, counters)
                if delta is not None:
                    gain += delta
                    for nb in pairs.neighbours[g]:
                        dirty[nb] = True
                dirty[g] = False
            else:
                gain += _visit_on_device(lap, g, cost, perms, status)
            time_lap += time.perf_counter() - t1
        sweeps = sweep + 1
        if not lap.synchronous and status:  # the sweep's one host read: gain and LAP statuses
            failed = torch.stack(status).ne(0)
            first = torch.where(failed.any(), failed.int().argmax(), -1).double()
            gain, bad = torch.stack([gain, first]).tolist()
            if bad >= 0:
                raise LapFailed(order[int(bad)])
        obj += gain
        history.append(obj)
        if gain <= opts.tol * max(1.0, abs(obj)):
            converged = True
            break
    objective = float(pairs.objective(perms)) if opts.exact_objective else obj
    counters["gemm_flops"] = pairs.gemm_flops - flops0
    return DescentResult(perms, objective, history, sweeps, converged, time_gemm, time_lap, counters)


def _greedy_pass(pairs: Any, lap: Any, perms: list, host_perms: Any, counters: dict) -> tuple:
    """Set every group in spec order from the terms it shares with the groups set before it."""
    import torch

    assigned = [False] * len(pairs.sizes)
    time_gemm = time_lap = 0.0
    status = []
    for g in range(len(pairs.sizes)):
        t0 = time.perf_counter()
        cost, (full, delta) = pairs.cost(g, perms, host_perms, assigned)
        counters["member_builds"] += full
        counters["delta_builds"] += delta
        t1 = time.perf_counter()
        counters["lap_solves"] += 1
        if lap.synchronous:
            try:
                cols = lap.solve(g, lap.to_host(cost))
            except ValueError:  # non-finite cost entries (the solver's own check)
                raise LapFailed(g) from None
            host_perms[g] = cols
            perms[g] = torch.from_numpy(cols).to(perms[g].device)
        else:
            cols, st = lap.solve(g, cost)
            status.append(st[0])
            # A failed solve leaves -1 entries; keep the group's start so that the next groups'
            # gathers stay in range until the pass's one status read raises.
            perms[g] = torch.where(st[0].eq(0), cols, perms[g])
        assigned[g] = True
        time_gemm += t1 - t0
        time_lap += time.perf_counter() - t1
    if status:  # one host read for the pass
        failed = torch.stack(status).ne(0)
        if bool(failed.any()):
            raise LapFailed(int(failed.int().argmax()))
    return time_gemm, time_lap


def _visit_on_host(lap: Any, g: int, cost: Any, perms: list, host_perms: Any,
                   counters: dict) -> Any:
    """Solve group g on the host; returns the objective gain, or None when the permutation stays."""
    host = lap.to_host(cost)
    try:
        cols = lap.solve(g, host)
    except ValueError:  # non-finite cost entries (the solver's own check)
        raise LapFailed(g) from None
    old = host_perms[g]
    if np.array_equal(cols, old):
        counters["lap_unchanged"] += 1
        return None
    # Last-axis gathers: a batched (B, n, n) cost with (B, n) permutations (inner groups of a
    # block spec, :mod:`trajtransfer.core.block_groups`) sums the same way as an (n, n) one.
    before = float(np.take_along_axis(host, old[..., None], -1).sum(dtype=np.float64))
    after = float(np.take_along_axis(host, cols[..., None], -1).sum(dtype=np.float64))
    if after <= before:  # only a strict gain moves a group (see the module docstring)
        return None
    host_perms[g] = cols
    perms[g] = lap.torch.from_numpy(cols).to(perms[g].device)
    return after - before


def _visit_on_device(lap: Any, g: int, cost: Any, perms: list, status: list) -> Any:
    """Solve group g on the device; accept on the device; returns the gain as a device scalar."""
    import torch

    cols, st = lap.solve(g, cost)
    status.append(st[0])
    old = perms[g]
    before = cost.gather(-1, old[..., None]).sum(dtype=torch.float64)
    after = cost.gather(-1, cols.clamp(min=0)[..., None]).sum(dtype=torch.float64)
    accept = (after > before) & (cols != old).any() & st[0].eq(0)
    perms[g] = torch.where(accept, cols, old)
    return torch.where(accept, after - before, torch.zeros_like(after))
