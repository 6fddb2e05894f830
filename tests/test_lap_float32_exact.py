"""float32 inputs are solved exactly in SciPy's sense by default: the assignment is optimal for the
float64 values of the entries (SciPy converts to float64). The oracle is SciPy on the float64
matrix; totals are compared in float64.

``exact=False`` keeps the faster float32 check (within about one float32 rounding per row), which
these searches show is not exact: a search that the tolerant mode passes would have no teeth.
"""

from __future__ import annotations

import numpy as np
import pytest

from isa_subprocess import assert_script_ok
from trajtransfer import linear_sum_assignment, linear_sum_assignment_batch, lap_solve

scipy_optimize = pytest.importorskip("scipy.optimize")

# Found by the search below: float32 rounding of the reduced costs hides a cheaper assignment by
# 1.04 (relative 1e-9), far inside the tolerant check's 2 * FLT_EPSILON * sum(|c| + |v|).
EXTREME = np.array([[.06, 1e9, 1e9, .38], [2e9, .86, .40, .39], [.74, 2e9, 2e9, .09],
                    [2e9, 1e9, 2e9, .45]], dtype=np.float32)


def scipy_total(c64: np.ndarray, maximize: bool) -> float:
    return float(c64[scipy_optimize.linear_sum_assignment(c64, maximize=maximize)].sum())


def worse(got: float, want: float, maximize: bool, c64: np.ndarray) -> bool:
    """Worse than SciPy's optimum beyond float64 rounding of the sums."""
    tol = 1e-13 * float(np.abs(c64[np.isfinite(c64)]).sum())
    return got < want - tol if maximize else got > want + tol


def batch_pairs(cost: np.ndarray, maximize: bool, exact: bool = True):
    n, m = cost.shape
    idx = linear_sum_assignment_batch(cost[None], maximize=maximize, exact=exact)[0]
    if n <= m:
        return np.arange(n), idx
    return idx, np.arange(m)


@pytest.mark.parametrize("maximize", [False, True])
def test_extreme_case_is_scipys_optimum(maximize: bool) -> None:
    cost = -EXTREME if maximize else EXTREME
    c64 = cost.astype(np.float64)
    want = scipy_total(c64, maximize)
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    assert c64[rows, cols].sum() == want
    assert c64[batch_pairs(cost, maximize)].sum() == want
    sol = lap_solve(cost, maximize=maximize)
    assert sol.objective(cost) == want
    assert sol.row_duals.dtype == np.float32  # duals keep the input's dtype
    tolerant = linear_sum_assignment(cost, maximize=maximize, exact=False)
    assert c64[tolerant].sum() != want  # the case the tolerant check lets through


def _problem(rng: np.random.Generator):
    """A small float32 problem with entries over 12 decades, some negative, some rounded."""
    n = int(rng.integers(2, 9))
    m = int(rng.integers(n, n + 3)) if rng.random() < 0.7 else int(rng.integers(2, n + 1))
    c = 10.0 ** rng.uniform(-3, 9, (n, m)) * rng.choice([1, 1, 1, -1], (n, m))
    if rng.random() < 0.3:
        c = np.round(c, 2)
    return c.astype(np.float32), bool(rng.random() < 0.3)


def test_seeded_search_of_wide_range_float32_problems() -> None:
    rng = np.random.default_rng(20260)
    bad = {"exact": 0, "batch": 0, "tolerant": 0}
    count = 6000
    for _ in range(count):
        cost, maximize = _problem(rng)
        c64 = cost.astype(np.float64)
        want = scipy_total(c64, maximize)
        bad["exact"] += worse(c64[linear_sum_assignment(cost, maximize=maximize)].sum(), want,
                              maximize, c64)
        bad["batch"] += worse(c64[batch_pairs(cost, maximize)].sum(), want, maximize, c64)
        bad["tolerant"] += worse(c64[linear_sum_assignment(cost, maximize=maximize,
                                                           exact=False)].sum(), want, maximize,
                                 c64)
    print(f"{count} float32 problems: worse than SciPy {bad}")
    assert bad["exact"] == 0 and bad["batch"] == 0, bad
    assert bad["tolerant"] > 0, bad  # the search finds what the exact check must catch


def test_seeded_search_rectangular_with_forbidden_pairs() -> None:
    """Up to 40 x 60, a fifth of the pairs forbidden in some: the rectangular repair (dummy rows
    holding the unassigned columns) and infeasibility must agree with SciPy."""
    rng = np.random.default_rng(4242)
    bad = {"exact": 0, "tolerant": 0}
    for _ in range(800):
        n, m = int(rng.integers(2, 40)), int(rng.integers(2, 60))
        cost = (rng.random((n, m)) * 10.0 ** rng.uniform(-3, 8, (n, m))
                * rng.choice([1, 1, -1], (n, m))).astype(np.float32)
        if rng.random() < 0.3:
            cost[rng.random((n, m)) < 0.2] = np.inf
        c64 = cost.astype(np.float64)
        try:
            want = scipy_total(c64, False)
        except ValueError:
            with pytest.raises(ValueError, match="cost matrix is infeasible"):
                linear_sum_assignment(cost)
            continue
        for mode, exact in (("exact", True), ("tolerant", False)):
            rows, cols = linear_sum_assignment(cost, exact=exact)
            bad[mode] += worse(c64[rows, cols].sum(), want, False, c64)
    assert bad["exact"] == 0 and bad["tolerant"] > 0, bad


@pytest.mark.parametrize("shape", [(300, 300), (200, 260), (260, 200)])
def test_larger_wide_range_problems(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    for maximize in (False, True):
        cost = (rng.random(shape) * 10.0 ** rng.uniform(-3, 7, shape)).astype(np.float32)
        c64 = cost.astype(np.float64)
        want = scipy_total(c64, maximize)
        rows, cols = linear_sum_assignment(cost, maximize=maximize)
        assert not worse(c64[rows, cols].sum(), want, maximize, c64)
        assert len(set(cols.tolist())) == min(shape)


SEARCH_SCRIPT = """
import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_lsa
from trajtransfer import linear_sum_assignment
rng = np.random.default_rng(7)
for _ in range(1500):
    n = int(rng.integers(2, 9)); m = int(rng.integers(2, 11))
    cost = (10.0 ** rng.uniform(-3, 9, (n, m)) * rng.choice([1, -1], (n, m))).astype(np.float32)
    c64 = cost.astype(np.float64)
    want = c64[scipy_lsa(c64)].sum()
    got = c64[linear_sum_assignment(cost)].sum()
    assert got <= want + 1e-13 * np.abs(c64).sum(), (cost.tolist(), got, want)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_exact_repair_on_every_kernel_set(isa: str) -> None:
    """The float64 repair's relax kernel exists per kernel set: each must give SciPy's optimum."""
    assert_script_ok(SEARCH_SCRIPT, isa)
