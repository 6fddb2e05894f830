"""pytest plugin for tests/test_scipy_suite.py: puts a trajtransfer solver in the place of
SciPy's ``linear_sum_assignment`` in every collected test module.

The solver is chosen by the environment variable TT_SCIPY_SUITE_SOLVER: "single" for
``trajtransfer.linear_sum_assignment``, "batch" for ``linear_sum_assignment_batch`` through a
loop adapter that returns SciPy's (row_ind, col_ind).
"""

from __future__ import annotations

import os

import numpy as np

from trajtransfer import linear_sum_assignment, linear_sum_assignment_batch


def batch_adapter(cost_matrix, maximize=False):
    """One problem through the batch solver, in SciPy's (row_ind, col_ind) form."""
    if isinstance(cost_matrix, np.ndarray):
        stack = np.asarray(cost_matrix)[None]  # a base ndarray: np.matrix cannot be 3-d
    else:
        stack = [cost_matrix]  # the batch API converts it, as SciPy converts a matrix
    try:
        idx = np.asarray(linear_sum_assignment_batch(stack, maximize=maximize))[0]
    except ValueError as exc:
        if "expected a 3-d array costs" not in str(exc):
            raise
        # The stack's shape error, reported for the matrix inside it as SciPy words it.
        ndim = np.asarray(stack, dtype=np.float64).ndim - 1
        raise ValueError(f"expected a matrix (2-D array), got a {ndim} array") from exc
    n, m = np.shape(stack)[1:]
    if n <= m:
        return np.arange(n, dtype=np.int64), idx
    order = np.argsort(idx, kind="stable")
    return idx[order], order.astype(np.int64)


SOLVERS = {"single": linear_sum_assignment, "batch": batch_adapter}


def pytest_collection_modifyitems(session, config, items):
    solver = SOLVERS[os.environ["TT_SCIPY_SUITE_SOLVER"]]
    for module in {item.module for item in items if getattr(item, "module", None) is not None}:
        if not hasattr(module, "linear_sum_assignment"):
            raise RuntimeError(f"{module.__name__} does not import linear_sum_assignment")
        module.linear_sum_assignment = solver
