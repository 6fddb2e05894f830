"""Property tests against SciPy: same optimal total, and a ValueError exactly when SciPy raises.

Matrices come from hypothesis: small integer values (many ties), arbitrary floats, +inf masks
(-inf when maximising, which is then the forbidden value), rectangular shapes in both
orientations, float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from trajtransfer.core.lap import linear_sum_assignment, linear_sum_assignment_batch  # noqa: E402

scipy_optimize = pytest.importorskip("scipy.optimize")


@st.composite
def lap_problems(draw, max_side: int = 9):
    n = draw(st.integers(0, max_side))
    m = draw(st.integers(0, max_side))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    kind = draw(st.sampled_from(["int", "float", "wide-range"]))
    if kind == "int":
        elements = st.integers(-3, 3).map(float)
    elif kind == "float":
        elements = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
    else:
        elements = st.floats(-2.0**40, 2.0**40, allow_nan=False, allow_infinity=False, width=32)
    cost = draw(hnp.arrays(np.float64, (n, m), elements=elements)).astype(dtype)
    maximize = draw(st.booleans())
    mask_kind = draw(st.sampled_from(["none", "forbidden", "invalid"]))
    if mask_kind != "none" and n * m:
        mask = draw(hnp.arrays(np.bool_, (n, m)))
        forbidden = -np.inf if maximize else np.inf
        if mask_kind == "forbidden":
            cost[mask] = forbidden
        else:
            cost[mask] = draw(st.sampled_from([np.nan, -forbidden]))
    return cost, maximize


def _scipy(cost: np.ndarray, maximize: bool):
    # SciPy solves float32 input in float64: that is the exact oracle.
    return scipy_optimize.linear_sum_assignment(cost.astype(np.float64), maximize=maximize)


def _outcome(fn, cost, maximize):
    try:
        return fn(cost, maximize), None
    except ValueError as exc:
        return None, str(exc)


def _assert_same_optimum(cost: np.ndarray, maximize: bool, ours, ref) -> None:
    c64 = cost.astype(np.float64)
    rows, cols = ours
    assert np.all(np.diff(rows) > 0)
    assert len(set(cols.tolist())) == len(cols) == min(cost.shape)
    got, want = c64[rows, cols].sum(), c64[ref].sum()
    if cost.dtype == np.float32:
        # Solved in float32, verified in float64: within a float32 rounding budget per row.
        scale = np.abs(c64[rows, cols]).sum() + np.abs(c64[ref]).sum()
        assert abs(got - want) <= 4 * np.finfo(np.float32).eps * scale
    else:
        assert got == want or abs(got - want) <= 1e-12 * np.abs(c64[ref]).sum()


@settings(max_examples=400)
@given(lap_problems())
def test_same_optimum_and_errors_as_scipy(problem) -> None:
    cost, maximize = problem
    ref, ref_err = _outcome(_scipy, cost, maximize)
    ours, our_err = _outcome(lambda c, mx: linear_sum_assignment(c, maximize=mx), cost, maximize)
    assert our_err == ref_err
    if ref_err is None:
        _assert_same_optimum(cost, maximize, ours, ref)


@settings(max_examples=150)
@given(lap_problems(max_side=7), st.integers(1, 4))
def test_batch_matches_scipy_per_item(problem, batch: int) -> None:
    cost, maximize = problem
    costs = np.stack([np.roll(cost, b, axis=0) for b in range(batch)])
    errors = [_outcome(_scipy, c, maximize)[1] for c in costs]
    try:
        out = linear_sum_assignment_batch(costs, maximize=maximize)
    except ValueError as exc:
        first = next(i for i, e in enumerate(errors) if e is not None)
        assert str(exc) == f"problem {first} of the batch: {errors[first]}"
        return
    assert all(e is None for e in errors)
    n, m = cost.shape
    for b in range(batch):
        idx = out[b]
        if n <= m:
            rows, cols = np.arange(n), idx
        else:
            order = np.argsort(idx)
            rows, cols = idx[order], order
        _assert_same_optimum(costs[b], maximize, (rows, cols), _scipy(costs[b], maximize))


@settings(max_examples=100)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.booleans())
def test_float32_integer_costs_are_exact(n: int, m: int, seed: int, maximize: bool) -> None:
    """Integer-valued float32 costs are solved exactly: the float64 total equals SciPy's."""
    cost = np.random.default_rng(seed).integers(-50, 50, (n, m)).astype(np.float32)
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    ref = _scipy(cost, maximize)
    c64 = cost.astype(np.float64)
    assert c64[rows, cols].sum() == c64[ref].sum()
