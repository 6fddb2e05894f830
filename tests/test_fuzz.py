"""Seeded fuzzing of the exact LAP and the matcher against independent oracles.

What the other property tests leave out, on one fixed seed sequence whose length is a budget:

* LAP single solves, batches and warm re-solves against SciPy's ``linear_sum_assignment``: the
  same optimal total (exactly on integer-valued matrices, in every mode), a ValueError exactly
  when SciPy raises one and with its message, and duals that certify the result. Matrices mix
  sides 0-12 with some up to 80, ties, integers, wide magnitudes, +inf masks of every density
  (-inf when maximising), NaN / invalid infinities, constant rows and columns, float32 (exact
  and tolerant) and float64; warm starts from the previous solve of a perturbed, resampled or
  re-masked matrix, from column duals only, and from foreign prices with a random assignment;
  batches of independent items on 1-3 threads.
* The matcher on random tiny specs (2-3 groups of size <= 4, tensors of rank 1-3 with any axes
  permuted, K weighted pairs) against brute force: a converged result is a coordinate-wise
  optimum (no single group's permutation, all n! tried with the others held, improves the
  objective), its objective equals a float64 objective recomputed independently, and so does
  ``objective()`` at random permutations; also after an incremental add with a warm re-solve.

Budget: ``TRAJTRANSFER_FUZZ_EXAMPLES`` (default 300) examples of the single-solve test, the other
tests a fixed share of it; the normal suite's default runs in seconds, CI's long run sets it
higher. Each example has its own seed (its index), printed on failure, so a failure replays with
``TRAJTRANSFER_FUZZ_EXAMPLES`` unchanged and ``-k`` on the test.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest

from trajtransfer.core import lap as tlap
from trajtransfer.core import match as tmatch
from trajtransfer.core.spec import permutation_spec_from_axes_to_perm

scipy_optimize = pytest.importorskip("scipy.optimize")

EXAMPLES = int(os.environ.get("TRAJTRANSFER_FUZZ_EXAMPLES", "300"))
_SEED = 20261206
_F32_EPS = float(np.finfo(np.float32).eps)


def _examples(share: float) -> int:
    return max(1, int(EXAMPLES * share))


def _rng(test: int, example: int) -> np.random.Generator:
    return np.random.default_rng([_SEED, test, example])


# ------------------------------------------------------------------------------------------------
# LAP: matrices and the SciPy oracle
# ------------------------------------------------------------------------------------------------


def _shape(rng: np.random.Generator, square: bool = False) -> tuple[int, int]:
    big = rng.random() < 0.1  # now and then past the small sizes, where the reductions do more
    hi = 80 if big else 12
    n = int(rng.integers(0 if not big else 13, hi + 1))
    m = n if square or rng.random() < 0.3 else int(rng.integers(0 if not big else 13, hi + 1))
    return n, m


def _values(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    if kind == "int":
        return rng.integers(-50, 51, shape).astype(np.float64)
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(np.float64)
    if kind == "wide":
        return (rng.random(shape) - 0.5) * np.exp2(rng.integers(-40, 41, shape))
    return rng.uniform(-100, 100, shape)


def random_cost(rng: np.random.Generator, shape, maximize: bool) -> tuple[np.ndarray, bool]:
    """A cost matrix (float32 or float64) and whether its values are small integers (then every
    total is exact in float64, and every mode must reach SciPy's exactly)."""
    kind = rng.choice(["int", "ties", "float", "wide"])
    dtype = np.float32 if rng.random() < 0.5 else np.float64
    cost = _values(rng, shape, kind)
    n, m = shape
    if n and m:
        if rng.random() < 0.15:  # constant rows / columns (the solver sets those aside)
            cost[rng.random(n) < 0.3, :] = float(rng.integers(-3, 4))
            if rng.random() < 0.5:
                cost[:, rng.random(m) < 0.3] = float(rng.integers(-3, 4))
        forbidden = -np.inf if maximize else np.inf
        mask = rng.random()
        if mask < 0.35:
            cost[rng.random(shape) < rng.choice([0.1, 0.3, 0.6, 0.9])] = forbidden
        elif mask < 0.45:  # invalid entries (NaN, or +inf when minimising is fine but -inf is not)
            bad = rng.random(shape) < 0.05
            bad.flat[rng.integers(0, n * m)] = True
            cost[bad] = rng.choice([np.nan, -forbidden])
    return cost.astype(dtype), kind in ("int", "ties")


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs), None
    except ValueError as exc:
        return None, str(exc)


def _scipy(cost: np.ndarray, maximize: bool):
    # SciPy solves float32 input in float64: that is the exact oracle.
    return scipy_optimize.linear_sum_assignment(cost.astype(np.float64), maximize=maximize)


def _check_assignment(ctx: str, cost: np.ndarray, maximize: bool, rows, cols, ref, integer: bool,
                      exact: bool, sol=None, prices=None) -> None:
    """`rows, cols` is an assignment of SciPy's optimal total `ref` (SciPy's rows, cols).

    `sol`: a lap_solve result of the same problem, whose duals set the rounding scale (warm:
    also the starting `prices`). The solver works on reduced costs c - u - v in float64, so two
    assignments closer than about an ulp of the duals are not told apart: wide-range entries
    (5.6e10 beside 1e-8 in one 5 x 5 float64 matrix) made duals of 5.6e10 and a total 2.3e-7
    below SciPy's on entries of order 1, SciPy having happened to find the better one.
    """
    c64 = cost.astype(np.float64)
    rows, cols = np.asarray(rows), np.asarray(cols)
    n, m = cost.shape
    assert rows.shape == cols.shape == (min(n, m),), ctx
    np.testing.assert_array_equal(rows, np.sort(rows), err_msg=ctx)
    assert len(set(rows.tolist())) == len(set(cols.tolist())) == min(n, m), ctx
    assert np.all(np.isfinite(c64[rows, cols])), f"{ctx}: a forbidden pair is assigned"
    got, want = float(c64[rows, cols].sum()), float(c64[ref].sum())
    if integer:
        assert got == want, f"{ctx}: total {got}, SciPy {want}"
        return
    scale = float(np.abs(c64[rows, cols]).sum() + np.abs(c64[ref]).sum())
    tol = 1e-12 * scale
    if sol is not None:
        duals = [np.abs(sol.row_duals.astype(np.float64)).max(initial=0),
                 np.abs(sol.col_duals.astype(np.float64)).max(initial=0),
                 0.0 if prices is None else np.abs(np.asarray(prices, np.float64)).max(initial=0)]
        tol += 8 * min(n, m) * float(np.finfo(np.float64).eps) * sum(duals)
    if cost.dtype == np.float32 and not exact:
        # Tolerant mode's documented acceptance: 2 FLT_EPSILON sum_i (|c_i,x(i)| + |v_x(i)|),
        # doubled for the float64 rounding of both totals.
        v = np.abs(np.asarray(sol.col_duals, dtype=np.float64)[cols]).sum()
        tol += 4 * _F32_EPS * (np.abs(c64[rows, cols]).sum() + v)
    assert abs(got - want) <= tol, f"{ctx}: total {got!r}, SciPy {want!r}, tolerance {tol:.3g}"


def _check_duals(ctx: str, cost: np.ndarray, sol: tlap.LapSolution, prices=None) -> None:
    """u_i + v_j <= s*c_ij on every entry, with equality on the assigned pairs (up to rounding):
    the certificate that makes the total optimal, checked in float64. A warm solve computes
    reduced costs c - v from its starting `prices`, so its duals carry the rounding of their
    magnitude too (float32 warm prices of 8e4 left duals of ~100 off by 4e-3)."""
    if not cost.size:
        return
    c64 = cost.astype(np.float64)
    s = -1.0 if sol.maximize else 1.0
    u = sol.row_duals.astype(np.float64)
    v = sol.col_duals.astype(np.float64)
    finite = np.isfinite(c64)
    eps = float(np.finfo(cost.dtype).eps)
    start = 0.0 if prices is None else float(np.abs(np.asarray(prices, np.float64)).max(initial=0))
    tol = 64 * eps * (np.abs(c64[finite]).max(initial=0) + np.abs(v).max(initial=0)
                      + np.abs(u).max(initial=0) + start)
    slack = np.where(finite, s * np.where(finite, c64, 0) - u[:, None] - v[None, :], np.inf)
    assert slack.min() >= -tol, f"{ctx}: dual infeasible by {-slack.min():.3g} (tol {tol:.3g})"
    assert np.abs(slack[sol.row_ind, sol.col_ind]).max(initial=0) <= tol, f"{ctx}: not tight"


def _ctx(test: str, i: int, cost: np.ndarray, maximize: bool, exact: bool) -> str:
    return (f"{test} example {i}: {cost.shape} {cost.dtype} maximize={maximize} exact={exact} "
            f"(TRAJTRANSFER_FUZZ_EXAMPLES={EXAMPLES})")


# ------------------------------------------------------------------------------------------------
# LAP: single, batch, warm
# ------------------------------------------------------------------------------------------------


def test_lap_single_solves_match_scipy() -> None:
    for i in range(_examples(1.0)):
        rng = _rng(1, i)
        maximize, exact = bool(rng.random() < 0.5), bool(rng.random() < 0.7)
        cost, integer = random_cost(rng, _shape(rng), maximize)
        ctx = _ctx("single", i, cost, maximize, exact)
        ref, ref_err = _outcome(_scipy, cost, maximize)
        ours, err = _outcome(tlap.linear_sum_assignment, cost, maximize, exact=exact)
        assert err == ref_err, f"{ctx}: ours raised {err!r}, SciPy {ref_err!r}"
        sol, sol_err = _outcome(tlap.lap_solve, cost, maximize, exact=exact)
        assert sol_err == ref_err, f"{ctx}: lap_solve raised {sol_err!r}, SciPy {ref_err!r}"
        if ref_err is not None:
            continue
        _check_assignment(ctx, cost, maximize, *ours, ref, integer, exact, sol)
        _check_assignment(ctx + " (lap_solve)", cost, maximize, sol.row_ind, sol.col_ind, ref,
                          integer, exact, sol)
        _check_duals(ctx, cost, sol)


def test_lap_batches_match_scipy_per_item() -> None:
    for i in range(_examples(0.4)):
        rng = _rng(2, i)
        maximize, exact = bool(rng.random() < 0.5), bool(rng.random() < 0.7)
        n, m = _shape(rng)
        n, m = min(n, 20), min(m, 20)
        batch = int(rng.integers(1, 7))
        items = [random_cost(rng, (n, m), maximize) for _ in range(batch)]
        dtype = items[0][0].dtype
        costs = np.stack([c.astype(dtype) for c, _ in items])
        # Each item is an integer matrix only if it still is in the batch's dtype.
        integer = [bool(it) for _, it in items]
        threads = [None, 1, 2, 3][int(rng.integers(0, 4))]
        ctx = _ctx("batch", i, costs, maximize, exact) + f" threads={threads}"
        errors = [_outcome(_scipy, c, maximize)[1] for c in costs]
        out, err = _outcome(tlap.linear_sum_assignment_batch, costs, maximize, threads,
                            exact=exact)
        bad = [b for b, e in enumerate(errors) if e is not None]
        if bad:
            assert err == f"problem {bad[0]} of the batch: {errors[bad[0]]}", ctx
            continue
        assert err is None, f"{ctx}: raised {err!r}, SciPy solves every item"
        assert out.shape == (batch, min(n, m)), ctx
        for b in range(batch):
            idx = out[b]
            if n <= m:
                rows, cols = np.arange(n), idx
            else:  # out[b, j] is the row of column j
                order = np.argsort(idx)
                rows, cols = idx[order], order
            # The tolerance needs duals, which a batch does not return; the single solve of the
            # item (the same routine) has them.
            _check_assignment(f"{ctx} item {b}", costs[b], maximize, rows, cols,
                              _scipy(costs[b], maximize), integer[b], exact,
                              tlap.lap_solve(costs[b], maximize, exact=exact))


def _next_cost(rng: np.random.Generator, cost: np.ndarray, maximize: bool) -> tuple[np.ndarray, str]:
    """The matrix of the next warm re-solve: the same, a few entries or rows changed, all of it
    scaled or resampled, or new forbidden / invalid entries."""
    new = cost.astype(np.float64).copy()
    n, m = new.shape
    change = rng.choice(["same", "entries", "rows", "scale", "resample", "mask", "invalid"])
    if change == "entries":
        k = int(rng.integers(1, 4))
        new.flat[rng.integers(0, n * m, k)] = rng.integers(-50, 51, k)
    elif change == "rows":
        r = rng.random(n) < 0.3
        new[r] = rng.uniform(-100, 100, (int(r.sum()), m))
    elif change == "scale":
        new *= 1 + 0.01 * rng.standard_normal(new.shape)
    elif change == "resample":
        new = rng.uniform(-100, 100, new.shape)
    elif change == "mask":
        new[rng.random(new.shape) < 0.3] = -np.inf if maximize else np.inf
    elif change == "invalid":
        new.flat[rng.integers(0, n * m)] = np.nan
    return new.astype(cost.dtype), str(change)


def test_lap_warm_resolves_match_scipy() -> None:
    for i in range(_examples(0.4)):
        rng = _rng(3, i)
        maximize, exact = bool(rng.random() < 0.5), bool(rng.random() < 0.7)
        n, _ = _shape(rng, square=True)
        n = max(n, 1)
        cost, _ = random_cost(rng, (n, n), maximize)
        prev = _outcome(tlap.lap_solve, cost, maximize, exact=exact)[0]
        for step in range(3):  # a chain of warm re-solves, each from the previous one
            new, change = _next_cost(rng, cost, maximize)
            finite = new[np.isfinite(new)].astype(np.float64)
            # Small integers only: their totals are exact in float64 and within every mode's reach.
            integer = bool(np.all((finite == np.round(finite)) & (np.abs(finite) <= 1000)))
            route = rng.choice(["warm_start", "col_duals", "foreign"])
            ctx = _ctx("warm", i, new, maximize, exact) + f" step {step} {change} via {route}"
            if route == "warm_start" and prev is not None:
                kwargs = {"warm_start": prev}
            elif route == "col_duals" and prev is not None:
                kwargs = {"col_duals": prev.col_duals}
            else:  # foreign prices (any finite prices are valid) and a random assignment
                kwargs = {"col_duals": rng.normal(scale=10.0 ** rng.integers(-2, 6), size=n),
                          "init_col_ind": rng.permutation(n)}
            ref, ref_err = _outcome(_scipy, new, maximize)
            sol, err = _outcome(tlap.lap_solve, new, maximize, exact=exact, **kwargs)
            assert err == ref_err, f"{ctx}: ours raised {err!r}, SciPy {ref_err!r}"
            if ref_err is None:
                prices = kwargs["warm_start"].col_duals if "warm_start" in kwargs else kwargs["col_duals"]
                _check_assignment(ctx, new, maximize, sol.row_ind, sol.col_ind, ref, integer,
                                  exact, sol, prices)
                _check_duals(ctx, new, sol, prices)
                prev = sol
            cost = new


# ------------------------------------------------------------------------------------------------
# matcher against brute force
# ------------------------------------------------------------------------------------------------


def random_match_problem(rng: np.random.Generator):
    """A tiny random spec, its tensors' shapes and a data generator."""
    n_groups = int(rng.integers(2, 4))
    sizes = {f"g{g}": (1 if rng.random() < 0.1 else int(rng.integers(2, 5)))
             for g in range(n_groups)}
    axes, shapes, used = {}, {}, set()
    for t in range(int(rng.integers(1, 5))):
        ax, shape = [], []
        for _ in range(int(rng.integers(1, 4))):
            g = f"g{rng.integers(0, n_groups)}" if rng.random() < 0.7 else None
            if g in ax:  # a group permutes at most one axis of a tensor
                g = None
            ax.append(g)
            shape.append(sizes[g] if g else int(rng.integers(1, 4)))
            used.add(g)
        axes[f"t{t}"], shapes[f"t{t}"] = tuple(ax), tuple(shape)
    for g in sizes:
        if g not in used:
            axes[f"only_{g}"], shapes[f"only_{g}"] = (g, None), (sizes[g], 2)
    integer = bool(rng.random() < 0.35)
    return permutation_spec_from_axes_to_perm(axes), sizes, shapes, integer


def _pair(rng, shapes, integer):
    def one():
        if integer:
            return {k: rng.integers(-2, 3, s).astype(np.float32) for k, s in shapes.items()}
        return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}

    weight = float(rng.choice([1.0, 2.0, -1.0, 0.5, 3.0])) if integer else float(rng.uniform(-2, 2))
    return one(), one(), weight


def _objective(spec, pairs, perms) -> float:
    """Independent float64 objective: sum_k w_k <T_k, pi(S_k)>, pi an np.take per permuted axis."""
    total = 0.0
    for t, s, w in pairs:
        pair = 0.0
        for name, axes in spec.axes_to_perm.items():
            x = s[name].astype(np.float64)
            for ax, g in enumerate(axes):
                if g is not None:
                    x = np.take(x, np.asarray(perms[g]), axis=ax)
            pair += float(np.sum(t[name].astype(np.float64) * x))
        total += w * pair
    return total


def _scale(spec, pairs) -> float:
    """sum_k |w_k| sum_t ||T||_2 ||S||_2: bounds every term at any permutations (Cauchy-Schwarz),
    the scale of the float32 rounding in the matcher's cost matrices."""
    return sum(abs(w) * float(np.linalg.norm(t[n].astype(np.float64)) *
                              np.linalg.norm(s[n].astype(np.float64)))
               for t, s, w in pairs for n in spec.axes_to_perm)


def _check_match(ctx, spec, sizes, pairs, res, matcher, rng, integer) -> None:
    assert res.converged, f"{ctx}: not converged in {res.sweeps} sweeps"
    perms = {g: np.asarray(res.perms[g]) for g in sizes}
    for g, n in sizes.items():
        assert sorted(perms[g].tolist()) == list(range(n)), f"{ctx}: {g} is not a permutation"
    scale = _scale(spec, pairs)
    best = _objective(spec, pairs, perms)
    assert abs(res.objective - best) <= 1e-12 * scale, (
        f"{ctx}: objective {res.objective!r}, float64 oracle {best!r}")
    # Coordinate-wise optimum: every permutation of one group, the others held. The LAPs see
    # float32 cost matrices, so a better permutation may hide within their rounding (exact on
    # integer data and weights).
    tol = (1e-12 if integer else 1e-5) * scale
    for g, n in sizes.items():
        for p in itertools.permutations(range(n)):
            trial = dict(perms)
            trial[g] = np.array(p)
            value = _objective(spec, pairs, trial)
            assert value <= best + tol, (
                f"{ctx}: group {g} improves from {best!r} to {value!r} with {p}")
    other = {g: rng.permutation(n) for g, n in sizes.items()}
    assert abs(matcher.objective(other) - _objective(spec, pairs, other)) <= 1e-12 * scale, (
        f"{ctx}: objective() at random permutations")


def test_matcher_is_a_coordinatewise_optimum_by_brute_force() -> None:
    for i in range(_examples(0.25)):
        rng = _rng(4, i)
        spec, sizes, shapes, integer = random_match_problem(rng)
        pairs = [_pair(rng, shapes, integer) for _ in range(int(rng.integers(1, 4)))]
        ctx = (f"matcher example {i}: groups {sizes}, tensors "
               f"{ {k: (spec.axes_to_perm[k], shapes[k]) for k in shapes} }, "
               f"{len(pairs)} pairs{' (integer)' if integer else ''} "
               f"(TRAJTRANSFER_FUZZ_EXAMPLES={EXAMPLES})")
        m = tmatch.GradientMatcher(spec, seed=int(rng.integers(0, 1000)))
        for t, s, w in pairs:
            m.add(t, s, w)
        start = rng.choice(["identity", "random", "greedy"])
        init = ({g: rng.permutation(n) for g, n in sizes.items()} if start == "random"
                else None if start == "identity" else "greedy")
        res = m.solve(init, warm_start=bool(rng.random() < 0.5))
        _check_match(f"{ctx}, {start} start", spec, sizes, pairs, res, m, rng, integer)
        # One more pair, then a warm re-solve from there (incremental cost terms, warm duals).
        pairs.append(_pair(rng, shapes, integer))
        m.add(*pairs[-1])
        res = m.solve(warm_start=True)
        _check_match(f"{ctx}, + pair, warm", spec, sizes, pairs, res, m, rng, integer)
        assert math.isfinite(res.objective)
