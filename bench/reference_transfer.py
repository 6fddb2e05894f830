"""The reference-style transfer loop: transfer()'s GMT/FGMT steps, matching done by the baseline.

Everything but the matching is trajtransfer's own driver loop (gradients, points, evaluation), so
a transfer benchmark compares only what the matching costs: ours (native core or device path)
against the textbook matcher of :mod:`baseline` (torch GEMMs per tensor on the tensors' device,
SciPy's LAP per group, identity start, every pair rebuilt at every solve), which is what the
official code and Git Re-Basin do.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any, Iterator

from baseline import baseline_match

from trajtransfer.method import methods


class BaselineMatcher:
    """The GradientMatcher calls the methods make, answered by :func:`baseline.baseline_match`."""

    def __init__(self, spec: Any, seed: int) -> None:
        self.spec, self.seed = spec, seed
        self.pairs: list = []
        self.weights: list = []

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    def add(self, target: Any, source: Any, weight: float = 1.0) -> None:
        self.pairs.append((target, source))
        self.weights.append(float(weight))

    def reserve(self, num_pairs: int) -> None:
        pass

    def clear_pairs(self) -> None:
        self.pairs, self.weights = [], []

    def solve(self, init: Any = None, *, max_sweeps: int = 100, **_: Any) -> Any:
        # The official loop starts every solve from the identity and does not compute objectives.
        r = baseline_match(self.spec, self.pairs, self.weights, max_sweeps=max_sweeps,
                           seed=self.seed, with_objective=False)
        return SimpleNamespace(perms=r["perms"], objective=float("nan"), sweeps=r["sweeps"],
                               timings={"gemm": r["timings"]["gemm"], "lap": r["timings"]["lap"]})


class _Reference:
    takes_factored_pairs = False  # the textbook matcher takes dense gradients

    def new_matcher(self) -> Any:
        return BaselineMatcher(self.ctx.spec, self.ctx.settings.seed)


class ReferenceGMT(_Reference, methods.GMT):
    name = "reference-gmt"


class ReferenceFGMT(_Reference, methods.FGMT):
    name = "reference-fgmt"


@contextlib.contextmanager
def reference_methods() -> Iterator[None]:
    """``transfer(method="reference-gmt" | "reference-fgmt")`` inside the block."""
    added = {cls.name: cls for cls in (ReferenceGMT, ReferenceFGMT)}
    methods.METHODS.update(added)
    try:
        yield
    finally:
        for name in added:
            methods.METHODS.pop(name, None)
