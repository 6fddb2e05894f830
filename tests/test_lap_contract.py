"""The shared LAP contract table (tests/lap_cases.py) run against the CPU backends."""

from __future__ import annotations

import numpy as np
import pytest

from lap_cases import CASES, ERROR_CASES, Case, ErrorCase, check_case, check_error
from trajtransfer.core.lap import linear_sum_assignment, linear_sum_assignment_batch


def solve_single(cost: np.ndarray, maximize: bool):
    return linear_sum_assignment(cost, maximize=maximize)


def solve_batched(cost: np.ndarray, maximize: bool):
    """One batch item at a time, converted back to SciPy's (row_ind, col_ind)."""
    n, m = cost.shape
    idx = linear_sum_assignment_batch(cost[None], maximize=maximize)[0]
    if n <= m:
        return np.arange(n, dtype=np.int64), idx
    order = np.argsort(idx, kind="stable")
    return idx[order], order.astype(np.int64)


BACKENDS = {"single": solve_single, "batch": solve_batched}


def _fits_float32(case: Case) -> bool:
    """Cases built on 1e15 offsets are not representable in float32."""
    a = np.abs(np.asarray(case.cost, dtype=np.float64))
    return not np.any(a[np.isfinite(a)] >= 1e15)


CASE_PARAMS = [pytest.param(case, dtype, id=f"{case.name}-{np.dtype(dtype).name}")
               for case in CASES for dtype in (np.float64, np.float32)
               if dtype == np.float64 or _fits_float32(case)]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("case,dtype", CASE_PARAMS)
def test_contract_case(backend: str, case: Case, dtype) -> None:
    check_case(BACKENDS[backend], case, dtype)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.name for c in ERROR_CASES])
def test_contract_error(backend: str, dtype, case: ErrorCase) -> None:
    check_error(BACKENDS[backend], case, dtype)


def test_contract_matches_scipy() -> None:
    """The table itself agrees with the oracle (guards against a typo in an expectation)."""
    from scipy.optimize import linear_sum_assignment as scipy_lsa

    for case in CASES:
        check_case(lambda c, mx: scipy_lsa(c, maximize=mx), case)
    for case in ERROR_CASES:
        check_error(lambda c, mx: scipy_lsa(c, maximize=mx), case)
