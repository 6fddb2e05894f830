"""GradientMatcher's path for specs with block-structured groups (attention heads).

Pairs in :class:`~trajtransfer.core.block_groups.BlockPairs` on the tensors' device, the
coordinate descent of :mod:`trajtransfer.core.descent`, LAPs placed by
:class:`~trajtransfer.core.block_groups.BlockLap`. Factored pairs are made dense.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from .block_groups import BlockLap, BlockPairs
from .descent import DescentOptions, DescentStart
from .factored import Factored

__all__ = ["BlockPath"]


class BlockPath(DescentStart):
    """GradientMatcher's path for block specs: :class:`BlockPairs` + the torch descent."""

    def __init__(self, compiled: Any, device: Any) -> None:
        import torch

        from .descent import coordinate_descent

        self.torch = torch
        self.compiled = compiled
        self.device = torch.device(device)
        spec = compiled.spec
        groups = compiled.groups
        self.pairs = BlockPairs(groups, compiled.sizes, [compiled.shapes[n] for n in compiled.names],
                                [spec.axes_to_perm[n] for n in compiled.names], spec.inner_of,
                                self.device)
        self.lap = BlockLap(self.pairs.sizes, set(self.pairs.outer_of), self.device)
        self.perms = self._identity()
        self._descent = coordinate_descent

    def _identity(self) -> list:
        torch = self.torch
        return [torch.arange(s[-1], dtype=torch.int64, device=self.device).expand(s).contiguous()
                for s in (self.compiled.perm_shapes[g] for g in self.compiled.groups)]

    @property
    def num_pairs(self) -> int:
        return self.pairs.num_pairs

    def _tensors(self, params: Mapping[str, Any], what: str) -> list:
        from .match import _as_float32
        from .spec import validate_spec

        torch = self.torch
        compiled = self.compiled
        if params.keys() != compiled._name_set:
            validate_spec(compiled.spec, params, require_all=True)
        out = []
        for n in compiled.names:
            x = params[n]
            x = x.dense() if isinstance(x, Factored) else x
            shape = tuple(int(s) for s in x.shape)
            if shape != compiled.shapes[n]:
                raise ValueError(f"{what}[{n!r}] has shape {shape}, expected {compiled.shapes[n]} "
                                 "(the shape of the first pair added)")
            if hasattr(x, "detach"):
                if x.is_complex() or x.dtype == torch.bool:
                    raise TypeError(f"{what}[{n!r}] must be a real numeric tensor, got {x.dtype}")
                t = x.detach().to(device=self.device, dtype=torch.float32)
            else:
                t = torch.from_numpy(_as_float32(x, f"{what}[{n!r}]")).to(self.device)
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{what}[{n!r}] contains NaN or infinite values")
            out.append(t)
        return out

    def add(self, target: Mapping[str, Any], source: Mapping[str, Any], weight: float) -> None:
        ts = self._tensors(target, "target")
        ss = self._tensors(source, "source")
        self.pairs.add(ts, ss, weight)

    def reserve(self, num_pairs: int) -> None:
        self.pairs.reserve(num_pairs)

    def clear_pairs(self) -> None:
        self.pairs.clear()

    def solve(self, init: Any, use_previous: bool, warm_start: bool, max_sweeps: int, tol: float,
              seed: int, exact_objective: bool) -> dict:
        from .descent import LapFailed
        from .match import _overflow_message

        perms, opts, at_identity = self._start(init, use_previous, warm_start, max_sweeps, tol,
                                               seed, exact_objective)
        try:
            res = self._descent(self.pairs, self.lap, perms, opts, at_identity=at_identity)
            history, sweeps = list(res.history), res.sweeps
            gemm, lap, counters = res.time_gemm, res.time_lap, dict(res.counters)
            # Joint moves of each block group with its inner groups, then the descent again,
            # until none gains: coordinate moves alone can stall with heads matched on
            # misaligned dimensions (from the identity: two heads swapped). Each round counts as
            # one sweep in the history.
            while sweeps < max_sweeps:
                t0 = time.perf_counter()
                flops0 = self.pairs.gemm_flops
                gain = 0.0
                # Both costs are float32 sums (relative error ~1e-6): a smaller "gain" could be
                # rounding, and the descent would undo it (an endless cycle).
                floor = max(tol, 1e-6) * max(1.0, abs(history[-1]))
                for g in self.pairs.inners:
                    step = self.pairs.joint_move(g, res.perms, floor)
                    if step is not None:
                        gain += step
                        for h in (g, *self.pairs.inners[g]):
                            self.lap.forget(h)
                gemm += time.perf_counter() - t0
                counters["gemm_flops"] += self.pairs.gemm_flops - flops0
                if not gain:
                    break
                history.append(history[-1] + gain)
                sweeps += 1
                again = DescentOptions(max_sweeps=max_sweeps - sweeps, tol=tol, seed=seed,
                                       exact_objective=exact_objective)
                res = self._descent(self.pairs, self.lap, res.perms, again)
                history += res.history[1:]
                sweeps += res.sweeps
                gemm, lap = gemm + res.time_gemm, lap + res.time_lap
                for k, v in res.counters.items():
                    counters[k] = counters.get(k, 0) + v
        except LapFailed as exc:
            raise ValueError(_overflow_message(self.compiled.groups[exc.group])) from None
        self.perms = res.perms
        return {"perms": res.perms, "objective": res.objective, "history": history,
                "sweeps": sweeps, "converged": res.converged, "gemm": gemm, "lap": lap,
                **counters}

    def objective(self, perms: Mapping[str, Any]) -> float:
        return float(self.pairs.objective(self._init(perms)))

