"""Shared LAP oracles for the tests: SciPy's optimum and a dual certificate."""

from __future__ import annotations

import numpy as np
import pytest

scipy_optimize = pytest.importorskip("scipy.optimize")


def scipy_total(cost: np.ndarray, maximize: bool) -> float:
    c = np.asarray(cost, dtype=np.float64)
    return float(c[scipy_optimize.linear_sum_assignment(c, maximize=maximize)].sum())


def assert_optimal_and_certified(cost: np.ndarray, sol) -> None:
    """SciPy's optimum (float32: within a float32 rounding budget per row) and duals with
    u_i + v_j <= s*c_ij everywhere, equality on the assignment (s = -1 when maximising)."""
    c64 = cost.astype(np.float64)
    n = cost.shape[0]
    assert sorted(sol.col_ind.tolist()) == list(range(n))
    got, want = sol.objective(cost), scipy_total(cost, sol.maximize)
    eps = np.finfo(cost.dtype).eps
    scale = float(np.abs(c64[sol.row_ind, sol.col_ind]).sum())
    assert abs(got - want) <= 4 * eps * scale + 1e-300, (got, want)
    s = -1.0 if sol.maximize else 1.0
    slack = s * c64 - sol.row_duals.astype(np.float64)[:, None] - sol.col_duals.astype(
        np.float64)[None, :]
    tol = 64 * eps * (np.abs(c64).max() + np.abs(sol.col_duals.astype(np.float64)).max())
    assert slack.min() >= -tol
    assert np.abs(slack[sol.row_ind, sol.col_ind]).max() <= tol
