"""The LAP error contract as one table, reused by every backend (CPU single, CPU batched, CUDA).

A backend is any callable ``solve(cost, maximize) -> (row_ind, col_ind)`` with SciPy's return
convention. :func:`check_case` asserts sorted row indices, the optimal per-row costs, and the
same optimum on the transposed problem; :func:`check_error` asserts the exact ValueError message.
The expected per-row costs were worked out by hand (exhaustive enumeration is trivial at these
sizes) and agree with ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

inf = np.inf
Solve = Callable[[np.ndarray, bool], "tuple[Any, Any]"]

INVALID = "matrix contains invalid numeric entries"
INFEASIBLE = "cost matrix is infeasible"


class Case(NamedTuple):
    name: str
    cost: Any  # nested list, or an array where a list cannot carry the shape (0 x m)
    maximize: bool
    expected: list  # per-row cost of the assigned rows, rows in increasing order


class ErrorCase(NamedTuple):
    name: str
    cost: list
    maximize: bool
    message: str


BIG = 1e15
CASES: list[Case] = [
    Case("square", [[400, 150, 400], [400, 450, 600], [300, 225, 300]], False, [150, 400, 300]),
    Case("square-max", [[400, 150, 400], [400, 450, 600], [300, 225, 300]], True, [400, 600, 225]),
    Case("wide", [[400, 150, 400, 1], [400, 450, 600, 2], [300, 225, 300, 3]], False,
         [150, 2, 300]),
    Case("wide-max", [[400, 150, 400, 1], [400, 450, 600, 2], [300, 225, 300, 3]], True,
         [400, 600, 225]),
    Case("square-2", [[10, 10, 8], [9, 8, 1], [9, 7, 4]], False, [10, 1, 7]),
    Case("square-2-max", [[10, 10, 8], [9, 8, 1], [9, 7, 4]], True, [8, 8, 9]),
    Case("wide-2", [[10, 10, 8, 11], [9, 8, 1, 1], [9, 7, 4, 10]], False, [10, 1, 4]),
    Case("wide-2-max", [[10, 10, 8, 11], [9, 8, 1, 1], [9, 7, 4, 10]], True, [10, 9, 10]),
    Case("forbidden", [[10, inf, inf], [inf, inf, 1], [inf, 7, inf]], False, [10, 1, 7]),
    Case("forbidden-max", [[10, -inf, -inf], [-inf, -inf, 1], [-inf, 7, -inf]], True, [10, 1, 7]),
    Case("forced-swap", [[inf, 1], [2, inf]], False, [1, 2]),
    Case("minus-inf-forbidden-max", [[-inf, 1], [1, 2]], True, [1, 1]),
    # A peer substitutes 1e6 for +inf and goes wrong once costs reach ~2e7.
    Case("large-with-forbidden", [[5e7, inf, 1], [inf, 2, inf], [1, inf, 5e7]], False, [1, 2, 1]),
    Case("large-with-forbidden-max", [[5e7, -inf, 1], [-inf, 2, -inf], [1, -inf, 5e7]], True,
         [5e7, 2, 5e7]),
    Case("offset-1e15", [[BIG + 1, BIG + 2], [BIG + 3, BIG + 5]], False, [BIG + 2, BIG + 3]),
    Case("offset-1e15-max", [[BIG + 1, BIG + 2], [BIG + 3, BIG + 5]], True, [BIG + 1, BIG + 5]),
    Case("negative", [[-3.5, 2.0], [1.0, -7.25]], False, [-3.5, -7.25]),
    Case("negative-max", [[-3.5, 2.0], [1.0, -7.25]], True, [2.0, 1.0]),
    Case("one-by-one", [[5.0]], False, [5.0]),
    Case("one-by-one-max", [[5.0]], True, [5.0]),
    Case("constant", [[3.0] * 4] * 4, False, [3.0] * 4),
    Case("constant-max", [[3.0] * 4] * 4, True, [3.0] * 4),
    Case("zeros-wide", [[0.0] * 5] * 3, False, [0.0] * 3),
    Case("single-row", [[3, 1, 2]], False, [1]),
    Case("single-row-max", [[3, 1, 2]], True, [3]),
    Case("single-column", [[3], [1], [2]], False, [1]),
    Case("single-column-max", [[3], [1], [2]], True, [3]),
    Case("ties-identity", [[0, 1, 1], [1, 0, 1], [1, 1, 0]], False, [0, 0, 0]),
    Case("ties-identity-max", [[0, 1, 1], [1, 0, 1], [1, 1, 0]], True, [1, 1, 1]),
    Case("empty-0x0", np.zeros((0, 0)), False, []),
    Case("empty-2x0", [[], []], False, []),
    Case("empty-0x3", np.zeros((0, 3)), True, []),
]

ERROR_CASES: list[ErrorCase] = [
    ErrorCase("nan", [[np.nan, 1], [1, 2]], False, INVALID),
    ErrorCase("nan-max", [[np.nan, 1], [1, 2]], True, INVALID),
    ErrorCase("minus-inf", [[-inf, 1], [1, 2]], False, INVALID),
    ErrorCase("plus-inf-max", [[inf, 1], [1, 2]], True, INVALID),
    ErrorCase("nan-wide", [[1, 2, np.nan]], False, INVALID),
    ErrorCase("row-all-forbidden", [[inf, inf], [1, 2]], False, INFEASIBLE),
    ErrorCase("column-all-forbidden", [[1, inf], [2, inf]], False, INFEASIBLE),
    ErrorCase("column-all-forbidden-max", [[1, -inf], [2, -inf]], True, INFEASIBLE),
    ErrorCase("wide-row-forbidden", [[inf, inf, inf], [1, 2, 3]], False, INFEASIBLE),
    ErrorCase("tall-column-forbidden", [[inf, 1], [inf, 2], [inf, 3]], False, INFEASIBLE),
    ErrorCase("pigeonhole", [[1, inf, inf], [2, inf, inf], [3, 4, 5]], False, INFEASIBLE),
]


def _as_array(cost: Any, dtype: Any) -> np.ndarray:
    arr = np.array(cost, dtype=dtype)
    return arr.reshape(len(cost), -1) if arr.ndim == 1 else arr


def check_case(solve: Solve, case: Case, dtype: Any = np.float64) -> None:
    """Assert sorted rows, the expected per-row costs, and the optimum of the transpose."""
    cost = _as_array(case.cost, dtype)
    expected = np.asarray(case.expected, dtype=np.float64)
    rows, cols = (np.asarray(a) for a in solve(cost, case.maximize))
    k = min(cost.shape)
    assert rows.shape == (k,) and cols.shape == (k,)
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    assert np.all(np.diff(rows) > 0), "row indices must be strictly increasing"
    assert len(set(cols.tolist())) == k, "a column is used twice"
    c64 = cost.astype(np.float64)
    got = c64[rows, cols]
    np.testing.assert_array_equal(np.sort(got), np.sort(expected))
    if k and np.unique(expected).size == expected.size:
        np.testing.assert_array_equal(got, expected)
    # The transposed problem has the same optimum.
    rt, ct = (np.asarray(a) for a in solve(np.ascontiguousarray(cost.T), case.maximize))
    assert np.all(np.diff(rt) > 0)
    np.testing.assert_array_equal(np.sort(c64.T[rt, ct]), np.sort(expected))


def check_error(solve: Solve, case: ErrorCase, dtype: Any = np.float64) -> None:
    """Assert that the backend raises ValueError with exactly the contract's message."""
    import pytest

    cost = _as_array(case.cost, dtype)
    with pytest.raises(ValueError) as info:
        solve(cost, case.maximize)
    assert str(info.value).endswith(case.message), str(info.value)
