"""Inputs accepted and refused exactly as scipy.optimize.linear_sum_assignment does.

Each case runs through SciPy itself and through our solvers: both raise the same exception type
with the same message, or both succeed with the same optimal total.
"""

from __future__ import annotations

import numpy as np
import pytest

from trajtransfer import linear_sum_assignment, linear_sum_assignment_batch

scipy_optimize = pytest.importorskip("scipy.optimize")

BASE = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]])


def _cases():
    b = BASE
    yield "float64", b.astype(np.float64)
    yield "float32", b.astype(np.float32)
    yield "float16", b.astype(np.float16)
    yield "float64-big-endian", b.astype(">f8")
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        yield np.dtype(dt).name, b.astype(dt)
    yield "bool", (b > 2)
    yield "longdouble", b.astype(np.longdouble)
    yield "complex64", b.astype(np.complex64)
    yield "complex128", b.astype(np.complex128)
    yield "clongdouble", b.astype(np.clongdouble)
    yield "str", b.astype(str)
    yield "bytes", b.astype(bytes)
    yield "datetime64", b.astype("datetime64[s]")
    yield "timedelta64", b.astype("timedelta64[s]")
    yield "object-numbers", b.astype(object)
    yield "object-None", np.array([[1, None, 3], [2, 0, 5], [3, 2, 2]], dtype=object)
    yield "object-str", b.astype(str).astype(object)
    yield "structured", np.zeros((3, 3), dtype=[("a", "f8")])
    yield "void", np.zeros((3, 3), dtype="V8")
    yield "masked", np.ma.array(b.astype(np.float64))
    # Not arrays: SciPy asks numpy for float64, which parses numeric strings.
    yield "list", b.tolist()
    yield "tuple", tuple(map(tuple, b.tolist()))
    yield "list-numeric-str", b.astype(str).tolist()
    yield "list-bad-str", [["a", "b"], ["c", "d"]]
    yield "list-None", [[1, None], [2, 3]]
    yield "list-complex", [[1j, 2], [3, 4]]
    yield "list-ragged", [[1, 2], [3]]
    yield "None", None
    yield "scalar", 3.0
    yield "str-scalar", "abc"
    yield "1-d", [1, 2, 3]
    yield "1-d-str-array", np.array(["1", "2"])
    yield "3-d", np.ones((2, 2, 2))
    yield "nan", np.diag([np.nan, 1, 1])
    yield "empty-str", np.empty((0, 3), dtype=str)


CASES = list(_cases())


def _outcome(solve, cost, maximize):
    try:
        rows, cols = solve(cost, maximize)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    c = np.asarray(cost, dtype=np.float64)
    return None, float(c[np.asarray(rows), np.asarray(cols)].sum()) if c.size else 0.0


def _scipy(cost, maximize):
    return scipy_optimize.linear_sum_assignment(cost, maximize=maximize)


def _ours(cost, maximize):
    return linear_sum_assignment(cost, maximize=maximize)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name,cost", CASES, ids=[c[0] for c in CASES])
def test_same_outcome_as_scipy(name, cost, maximize) -> None:
    want = _outcome(_scipy, cost, maximize)
    got = _outcome(_ours, cost, maximize)
    assert got == want


MATRICES = [c for c in CASES if isinstance(c[1], np.ndarray) and c[1].ndim == 2]


@pytest.mark.parametrize("name,cost", MATRICES, ids=[c[0] for c in MATRICES])
def test_batch_refuses_and_accepts_the_same_dtypes(name, cost) -> None:
    """A stack of the same matrix: the same exception type as SciPy on the matrix, or success."""
    want_type, _ = _outcome(_scipy, cost, False)
    try:
        linear_sum_assignment_batch(cost[None])
        got_type = None
    except (TypeError, ValueError) as exc:
        got_type = type(exc)
    assert got_type == want_type
