"""Adversarial cost families: SciPy's optimum, within a bounded amount of search work.

The work is read from the solver's counters (``_core.lap.last_solve_stats()``: row scans of the
shortest augmenting path searches, O(m) each), not timed. Ties with forbidden pairs once made
every path settle all the tied assigned columns before a free one: O(n) scans per path, ~n^2 in
all (0/inf, n = 2000: 2.3 s against SciPy's 0.05 s).
"""

from __future__ import annotations

import numpy as np
import pytest

from trajtransfer import _core, linear_sum_assignment

scipy_optimize = pytest.importorskip("scipy.optimize")


def _families(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    holes = rng.random((n, n)) < 0.5
    return {
        "zero-inf": np.where(holes, np.inf, 0.0),
        "zero-inf-float32": np.where(holes, np.inf, 0.0).astype(np.float32),
        "zero-inf-wide": np.where(holes, np.inf, 0.0)[: n // 2],
        "zero-inf-maximize": np.where(holes, -np.inf, 0.0),
        "ties-inf": np.where(rng.random((n, n)) < 0.3, np.inf,
                             rng.integers(0, 3, (n, n)).astype(np.float64)),
    }


@pytest.mark.parametrize("family", list(_families(4, np.random.default_rng(0))))
def test_ties_with_forbidden_pairs_search_linearly(family: str) -> None:
    n = 1500
    cost = _families(n, np.random.default_rng(2024))[family]
    maximize = family.endswith("maximize")
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    stats = _core.lap.last_solve_stats()
    c = cost.astype(np.float64)
    want = scipy_optimize.linear_sum_assignment(c, maximize=maximize)
    assert c[rows, cols].sum() == c[want].sum()
    assert len(set(cols.tolist())) == len(cols) == min(cost.shape)
    # Each path ends after a few scans (about 2 today); the quadratic behaviour took ~n per path.
    assert stats["path_scans"] <= 4 * min(cost.shape) + 64, stats


def test_stats_count_the_last_solve() -> None:
    """The counters are reset per solve and count real work (a test that cannot pass vacuously)."""
    rng = np.random.default_rng(5)
    linear_sum_assignment(np.where(rng.random((300, 300)) < 0.5, np.inf, 0.0))
    first = _core.lap.last_solve_stats()
    assert first["paths"] > 0 and first["path_scans"] >= first["paths"]
    linear_sum_assignment(np.eye(300))  # every row owns a column minimum: no path searched
    again = _core.lap.last_solve_stats()
    assert (again["paths"], again["path_scans"], again["cold_restarts"]) == (0, 0, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_row_reduction_settles_as_many_rows_as_float64(seed: int) -> None:
    """A float32 price step can round away (a reduced-cost gap below the price's ulp); ARR then
    swapped two rows over one column until its budget ran out, leaving 4-13x the float64 solve's
    free rows to the augmenting paths (uniform n = 2048). Same entries, same algorithm: the
    float32 solve should leave about as many. Without the exact float64 repair, whose paths the
    counter would include (the matcher's mode)."""
    cost = np.random.default_rng(seed).random((2048, 2048), dtype=np.float32)
    c = cost.astype(np.float64)
    best = c[scipy_optimize.linear_sum_assignment(c, maximize=True)].sum()
    paths = {}
    for dtype in (np.float32, np.float64):
        rows, cols = linear_sum_assignment(cost.astype(dtype), maximize=True, exact=False)
        paths[dtype] = _core.lap.last_solve_stats()["paths"]  # a cold solve: one per free row
        assert len(set(cols.tolist())) == len(cols) == 2048
        # Without the repair: a duality gap of at most 2 eps (sum |c| + sum |v|), |v| <= 1 here.
        assert c[rows, cols].sum() == pytest.approx(best, rel=8 * float(np.finfo(np.float32).eps))
    assert paths[np.float32] <= 2 * paths[np.float64] + 4, paths
