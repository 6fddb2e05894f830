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
