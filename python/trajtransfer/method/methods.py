"""The transfer methods as small objects behind one driver loop (:func:`~.transfer.transfer`).

A method decides π_s at each step s = 1 … K; the driver does everything else (points,
evaluation, timing, results). Adding a method means adding a class here and registering it in
:data:`METHODS`.

* :class:`Naive`: π = identity.
* :class:`Oracle`: one weight matching of the two total displacements, used at every step.
* :class:`GMT` (Algorithm 1): at step s, recompute the s pairs at points 0 … s−1 with π_{s−1}.
* :class:`FGMT` (Algorithm 2): at step s, add the pair at point s−1 to those kept and solve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = ["MatchSettings", "StepMatch", "TransferMethod", "Naive", "Oracle", "GMT", "FGMT",
           "METHODS"]


@dataclass(frozen=True)
class MatchSettings:
    """How the matching methods solve (see :func:`~.transfer.transfer` for each option)."""

    warm_start: Union[bool, str] = False
    init: str = "identity"
    reuse_duals: bool = True
    tol: float = 1e-7
    rtol: Optional[float] = None
    max_sweeps: int = 100
    seed: int = 0
    backend: str = "auto"

    def tolerance(self, bound: float) -> float:
        """The descent's stopping threshold; ``rtol`` follows the Cauchy–Schwarz ``bound``."""
        if self.rtol is None:
            return self.tol
        return float(self.rtol) * bound / max(1.0, bound)


@dataclass
class StepMatch:
    """A method's answer for one step: π_s (None = identity) and its solve's record."""

    perm: Optional[dict]
    objective: Optional[float] = None
    sweeps: Optional[int] = None


def pair_bound(g_t: dict, g_s: dict) -> float:
    """Σ ‖g_t‖·‖g_s‖ over the tensors: the Cauchy–Schwarz bound on a pair's objective."""
    import torch

    if not g_t:
        return 0.0
    nt = torch.stack([g_t[n].norm() for n in g_t]).tolist()  # one host read per side
    ns = torch.stack([g_s[n].norm() for n in g_t]).tolist()
    return float(sum(a * b for a, b in zip(nt, ns)))


class TransferMethod:
    """Base class: ``start`` once before step 1, then ``step(s)`` for s = 1 … K."""

    name = ""
    #: Oracle needs the target's trained end point.
    needs_target_final = False
    #: GMT/FGMT add gradient pairs to a GradientMatcher, which takes weight gradients as factors.
    takes_factored_pairs = False

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.num_gradient_pairs = 0
        self.num_solves = 0

    def start(self) -> None:
        """Work done once before the first step."""

    def step(self, s: int, prev: Optional[dict]) -> StepMatch:
        """π_s, given π_{s−1} (``prev``; None = identity)."""
        raise NotImplementedError


class Naive(TransferMethod):
    """π = identity at every step: θ₂ˢ = θ₂⁰ + (θ₁ˢ − θ₁⁰)."""

    name = "naive"

    def step(self, s: int, prev: Optional[dict]) -> StepMatch:
        return StepMatch(None)


class Oracle(TransferMethod):
    """One weight matching of the target's trained displacement with the source's."""

    name = "oracle"
    needs_target_final = True

    def start(self) -> None:
        from ..core.match import match_weights

        ctx = self.ctx
        with ctx.timer("matching"):
            final = ctx.target_final
            tgt = {n: final[n] - ctx.pairs.base[n] for n in ctx.pairs.names}
            src = ctx.pairs.displacement(ctx.num_steps)
            st = ctx.settings
            bound = pair_bound(tgt, src) if st.rtol is not None else 0.0
            res = match_weights(ctx.spec, tgt, src, init=st.init, max_sweeps=st.max_sweeps, seed=st.seed,
                                tol=st.tolerance(bound), backend=st.backend)
            ctx.record_match_timings(res)
        self.perm = res.perms
        self.first = StepMatch(res.perms, float(res.objective), int(res.sweeps))
        self.num_solves = 1

    def step(self, s: int, prev: Optional[dict]) -> StepMatch:
        return self.first if s == 1 else StepMatch(self.perm)


class _GradientMatching(TransferMethod):
    """Shared by GMT and FGMT: adding pairs and the solve options."""

    takes_factored_pairs = True

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.matcher: Any = None

    def new_matcher(self) -> Any:
        from ..core.match import GradientMatcher

        return GradientMatcher(self.ctx.spec, seed=self.ctx.settings.seed,
                               backend=self.ctx.settings.backend)

    def add_pair(self, k: int, perm: Optional[dict], reserve: int) -> float:
        """Compute the pair at point k under ``perm`` and add it; returns its bound (rtol only)."""
        ctx = self.ctx
        with ctx.timer("gradients"):
            g_t, g_s = ctx.pairs.pair(k, perm)
        with ctx.timer("matching"):
            first = self.matcher.num_pairs == 0
            self.matcher.add(g_t, g_s)
            if first:  # one allocation for every pair to come (no regrowth copies)
                self.matcher.reserve(reserve)
            bound = pair_bound(g_t, g_s) if ctx.settings.rtol is not None else 0.0
        self.num_gradient_pairs += 1
        return bound

    def solve(self, prev: Optional[dict], bound: float) -> StepMatch:
        """Solve from the fixed start (``init``) and/or π_{s−1}, as ``warm_start`` says; keep the
        best."""
        ctx = self.ctx
        st = ctx.settings
        tol = st.tolerance(bound)
        options: dict[Any, list] = {False: [None], True: [prev if prev is not None else "identity"],
                                    "both": [None, prev if prev is not None else "identity"]}
        starts = options[st.warm_start]
        best: Any = None
        with ctx.timer("matching"):
            for init in starts:
                if init is None and st.init == "greedy":
                    # The greedy pass ignores earlier permutations; warm LAPs keep its result.
                    res = self.matcher.solve("greedy", max_sweeps=st.max_sweeps, tol=tol,
                                             warm_start=st.reuse_duals, exact_objective=False)
                elif init is None and st.reuse_duals:
                    # Identity start as in the official code, each LAP warm from the previous
                    # solve's duals: the same optimum, far fewer augmentations; only the choice
                    # among tied optimal assignments may differ.
                    res = self.matcher.solve("identity", max_sweeps=st.max_sweeps, tol=tol,
                                             warm_start=True, exact_objective=False)
                elif init is None:  # identity start, cold LAPs: the official behaviour
                    res = self.matcher.solve(None, max_sweeps=st.max_sweeps, tol=tol,
                                             warm_start=False, exact_objective=False)
                else:
                    res = self.matcher.solve(init, max_sweeps=st.max_sweeps, tol=tol,
                                             warm_start=True, exact_objective=False)
                ctx.record_match_timings(res)
                if best is None or res.objective > best.objective:
                    best = res
        self.num_solves += len(starts)
        return StepMatch(best.perms, float(best.objective), int(best.sweeps))


class GMT(_GradientMatching):
    """Algorithm 1: every step recomputes all its pairs with the latest permutation."""

    name = "gmt"

    def step(self, s: int, prev: Optional[dict]) -> StepMatch:
        ctx = self.ctx
        if self.matcher is None or not ctx.settings.reuse_duals:
            self.matcher = self.new_matcher()
        else:
            # Keep the matcher's store memory and its LAP duals (same optima, far fewer
            # augmentations on nearly rank-deficient gradient costs; see reuse_duals).
            self.matcher.clear_pairs()
        reserve = ctx.num_steps if ctx.settings.reuse_duals else s
        bound = sum(self.add_pair(k, prev, reserve) for k in range(s))
        return self.solve(prev, bound)


class FGMT(_GradientMatching):
    """Algorithm 2: one new pair per step, the earlier pairs kept."""

    name = "fgmt"

    def start(self) -> None:
        self.matcher = self.new_matcher()
        self.bound = 0.0

    def step(self, s: int, prev: Optional[dict]) -> StepMatch:
        self.bound += self.add_pair(s - 1, prev, self.ctx.num_steps)
        return self.solve(prev, self.bound)


#: name -> method class; the driver and the CLI list methods from here.
METHODS = {cls.name: cls for cls in (GMT, FGMT, Naive, Oracle)}
