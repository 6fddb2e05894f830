"""Shared oracle for the GPU LAP tests (device and host emulation): SciPy's optimum and errors.

Imported by tests/test_lap_cuda.py and tests/test_lap_cuda_emulation.py.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

STATUS_OF_MESSAGE = {
    "matrix contains invalid numeric entries": 1,
    "cost matrix is infeasible": 2,
}


def scipy_outcome(cost: np.ndarray, maximize: bool) -> tuple[int, Optional[float]]:
    """(status, optimal total) of SciPy on ``cost`` (as float64): status 0 and the total, or the
    status code of SciPy's ValueError and None."""
    from scipy.optimize import linear_sum_assignment

    c = np.asarray(cost, dtype=np.float64)
    try:
        r, k = linear_sum_assignment(c, maximize=maximize)
    except ValueError as exc:
        return STATUS_OF_MESSAGE[str(exc)], None
    return 0, float(c[r, k].sum())


def assignment_total(cost: np.ndarray, idx: np.ndarray) -> float:
    """Total of the core's "index along the longer axis" output on ``cost`` (float64 sum); checks
    that it is injective and in range."""
    c = np.asarray(cost, dtype=np.float64)
    n, m = c.shape
    idx = np.asarray(idx, dtype=np.int64)
    assert idx.shape == (min(n, m),)
    assert idx.min() >= 0 and idx.max() < max(n, m)
    assert np.unique(idx).size == idx.size, "assignment is not injective"
    if n <= m:
        return float(c[np.arange(n), idx].sum())
    return float(c[idx, np.arange(m)].sum())


def total_tolerance(cost: np.ndarray, dtype: np.dtype) -> float:
    """Rounding budget for comparing optimal totals: a few ulps (of the solve's dtype) of the
    largest finite entry per assigned pair. Covers the float64 sums of different optimal
    assignments and float32 reduced-cost arithmetic (measured gap on random float32 problems of
    n <= 120 via the emulation: 0)."""
    c = np.asarray(cost, dtype=np.float64)
    finite = np.abs(c[np.isfinite(c)])
    scale = float(finite.max()) if finite.size else 1.0
    eps = float(np.finfo(dtype).eps)
    return 4.0 * eps * max(scale, 1.0) * (min(c.shape) + 1)


def check_duals(cost: np.ndarray, idx: np.ndarray, u: np.ndarray, v: np.ndarray, maximize: bool,
                tol: float) -> None:
    """Optimality certificate of the solved minimisation (s*C, s = -1 when maximising), in the
    solved orientation (rows <= cols): u_i + v_j <= s*C_ij, tight on pairs, v = 0 off pairs."""
    c = np.asarray(cost, dtype=np.float64) * (-1.0 if maximize else 1.0)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if c.shape[0] > c.shape[1]:
        c, u, v = c.T, v, u
    n, m = c.shape
    slack = c - u[:, None] - v[None, :]
    assert np.all(slack[np.isfinite(c)] >= -tol), float(slack[np.isfinite(c)].min())
    assert np.all(np.abs(slack[np.arange(n), idx]) <= tol)
    free = np.ones(m, dtype=bool)
    free[idx] = False
    if n < m:
        assert np.all(np.abs(v[free]) <= tol)
