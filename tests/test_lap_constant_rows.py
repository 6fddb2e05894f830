"""Cost matrices with constant rows (the all-zero rows of dead ReLU units in gradient costs).

Cold solves drop such rows, solve the rest as a rectangular problem and give the constant rows
the columns left over (exact). Checked against SciPy's optimum, with the returned duals checked
for feasibility and tightness, and against the same matrix with the rows perturbed off constant
(which takes the ordinary route).
"""

from __future__ import annotations

import numpy as np
import pytest

from trajtransfer.core.lap import lap_solve, linear_sum_assignment

scipy_optimize = pytest.importorskip("scipy.optimize")


def _low_rank_with_dead_units(rng, n: int, m: int, rank: int, dead_rows: int, dead_cols: int,
                              dtype) -> np.ndarray:
    c = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m)) * 1e-3
    c[rng.choice(n, dead_rows, replace=False)] = 0.0
    c[:, rng.choice(m, dead_cols, replace=False)] = 0.0
    return c.astype(dtype)


def _check(cost: np.ndarray, maximize: bool) -> None:
    sol = lap_solve(cost, maximize=maximize)
    r, c = scipy_optimize.linear_sum_assignment(cost.astype(np.float64), maximize=maximize)
    want = cost.astype(np.float64)[r, c].sum()
    got = cost.astype(np.float64)[sol.row_ind, sol.col_ind].sum()
    scale = np.abs(cost).astype(np.float64).sum() + 1e-30
    assert abs(got - want) <= 1e-6 * scale
    assert len(set(sol.col_ind.tolist())) == len(sol.col_ind)  # an assignment
    # Duals of the minimisation of s * cost: feasible, tight on the assignment.
    s = -1.0 if maximize else 1.0
    sc = s * cost.astype(np.float64)
    red = sc - sol.row_duals.astype(np.float64)[:, None] - sol.col_duals.astype(np.float64)[None, :]
    tol = 1e-5 * (np.abs(sc).max() + np.abs(sol.col_duals).max() + 1e-30)
    assert red.min() >= -tol
    assert np.abs(red[sol.row_ind, sol.col_ind]).max() <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("shape,dead_rows,dead_cols", [((64, 64), 6, 9), ((128, 128), 30, 0),
                                                       ((48, 80), 5, 7), ((40, 40), 40, 0),
                                                       ((40, 40), 39, 3)])
def test_dead_units_low_rank(dtype, maximize, shape, dead_rows, dead_cols) -> None:
    rng = np.random.default_rng(hash((shape, dead_rows, dead_cols)) % 2**32)
    cost = _low_rank_with_dead_units(rng, *shape, rank=5, dead_rows=dead_rows,
                                     dead_cols=dead_cols, dtype=dtype)
    _check(cost, maximize)


@pytest.mark.parametrize("maximize", [False, True])
def test_nonzero_constants_and_ties(maximize) -> None:
    # Constant rows of different values (and integer costs: many ties among the other rows).
    rng = np.random.default_rng(7)
    cost = rng.integers(-3, 4, size=(50, 50)).astype(np.float64)
    for i, a in zip(rng.choice(50, 8, replace=False), [-2.5, 0.0, 1.0, 7.0, 7.0, -1e3, 1e3, 3.0]):
        cost[i] = a
    _check(cost, maximize)
    _check(cost.astype(np.float32), maximize)
    # Constant columns instead (the square solve then drops them from the transpose), also
    # read through a row stride larger than the row.
    _check(np.ascontiguousarray(cost.T), maximize)
    wide = np.zeros((50, 70))
    wide[:, :50] = cost.T
    _check(wide[:, :50], maximize)


def test_same_optimum_as_perturbed_route() -> None:
    # A tiny perturbation makes the rows non-constant (ordinary route); the optimum moves by at
    # most n * eps.
    rng = np.random.default_rng(3)
    cost = _low_rank_with_dead_units(rng, 96, 96, rank=4, dead_rows=12, dead_cols=0,
                                     dtype=np.float64)
    eps = 1e-12
    pert = cost + eps * rng.random(cost.shape)
    a = lap_solve(cost, maximize=True)
    b = lap_solve(pert, maximize=True)
    assert abs(cost[a.row_ind, a.col_ind].sum() - pert[b.row_ind, b.col_ind].sum()) <= 96 * eps


def test_errors_unchanged_with_constant_rows() -> None:
    cost = np.zeros((32, 32))
    cost[5, 7] = np.nan  # row 5 is no longer constant; rows of zeros are removed
    with pytest.raises(ValueError):
        linear_sum_assignment(cost)
    cost = np.zeros((32, 32))
    cost[3] = np.inf  # an all-forbidden row: not treated as constant, infeasible as before
    with pytest.raises(ValueError):
        linear_sum_assignment(cost)
    with pytest.raises(ValueError):
        scipy_optimize.linear_sum_assignment(cost)


def test_warm_start_after_constant_row_solve() -> None:
    # The duals of the reduced solve are valid warm-start prices for the full square problem.
    rng = np.random.default_rng(11)
    cost = _low_rank_with_dead_units(rng, 80, 80, rank=6, dead_rows=10, dead_cols=10,
                                     dtype=np.float32)
    first = lap_solve(cost, maximize=True)
    cost2 = cost + (1e-5 * rng.standard_normal(cost.shape)).astype(np.float32)
    cost2[cost == 0] = 0
    second = lap_solve(cost2, maximize=True, warm_start=first)
    r, c = scipy_optimize.linear_sum_assignment(cost2.astype(np.float64), maximize=True)
    c64 = cost2.astype(np.float64)
    got = c64[second.row_ind, second.col_ind].sum()
    assert abs(got - c64[r, c].sum()) <= 1e-6 * np.abs(c64).sum()
