"""Exact dense linear assignment: a drop-in for ``scipy.optimize.linear_sum_assignment``.

Solved in C++ (Jonker-Volgenant reductions + shortest augmenting paths, SIMD row kernels chosen
at run time) with the GIL released. float64 inputs are solved in float64; integers and booleans
are solved as float64. float32 inputs are solved in float32 and checked in float64: by default
(``exact=True``) the result is optimal for the float64 values of the entries, as SciPy's (which
converts to float64): rows that float32 rounding left on a column that is not their float64
minimum are re-augmented in float64. ``exact=False`` accepts a float32 solve whose float64
duality gap is within ``2 * FLT_EPSILON * sum_i (|c[i, col[i]]| + |v[col[i]]|)`` (about one
float32 rounding per row; ``v`` the column duals), which is faster on uniform-like costs. Inputs
are accepted and refused exactly as SciPy's (see :func:`linear_sum_assignment`).

Threads: on matrices of 2^19 entries or more (about 725 x 725) a single solve splits its
row-independent passes (column minima, reduction transfer, a warm start's row scan, the float64
check) with one persistent helper thread; the reductions and shortest paths stay sequential, and
the result is bit-identical either way. After each split pass the helper polls (yielding the core)
for up to 1 ms before it sleeps, so that the next pass or solve finds it awake. Set the
environment variable ``TRAJTRANSFER_LAP_THREADS=1`` before the first solve to keep every solve on
the calling thread (e.g. when each of your own threads already runs one solve). Batch solves never
split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .. import _cuda
from .._arrays import as_float_cost, cost_to_numpy, to_numpy
from .._native import _core
from .isa import warn_about_override

warn_about_override()

__all__ = ["linear_sum_assignment", "linear_sum_assignment_batch", "lap_solve", "LapSolution"]


def _check_ndim(arr: np.ndarray, ndim: int, name: str, shape: str) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d array {name} of shape {shape}, got a {arr.ndim}-d "
                         f"array of shape {arr.shape}")


_CORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _cost_array(cost_matrix: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """The cost matrix as the core takes it (2-d, C-contiguous float32/float64), and a function
    that turns results back into the input's kind (tensors for tensors)."""
    if (type(cost_matrix) is np.ndarray and cost_matrix.ndim == 2
            and cost_matrix.dtype in _CORE_DTYPES and cost_matrix.flags.c_contiguous):
        return cost_matrix, _same  # the common case, without the generic conversions below
    arr, back = cost_to_numpy(cost_matrix, "cost_matrix")
    arr = as_float_cost(arr)  # SciPy converts (TypeError) before it checks the shape
    if arr.ndim != 2:
        raise ValueError(f"expected a matrix (2-D array), got a {arr.ndim} array")
    return arr, back


def linear_sum_assignment(cost_matrix: Any, maximize: bool = False, *,
                          exact: bool = True) -> tuple[Any, Any]:
    """Solve the linear sum assignment problem, exactly as ``scipy.optimize`` does, faster.

    Parameters
    ----------
    cost_matrix : (n, m) array_like or torch.Tensor
        Cost of assigning row i to column j. ``+inf`` marks a forbidden pair (``-inf`` when
        ``maximize``); NaN is invalid.
    maximize : bool
        Maximise the total instead of minimising it.
    exact : bool
        float32 inputs (CPU): the assignment is optimal for the float64 values of the entries, as
        SciPy's. ``False``: optimal within about one float32 rounding per row (see the module
        documentation), faster. Other dtypes are solved exactly either way.

    Returns
    -------
    row_ind, col_ind : (min(n, m),) int64
        Row indices (sorted) and their assigned columns. Tensors when the input is a tensor.

    Raises
    ------
    ValueError
        For a non-2-d input, invalid entries (NaN, or -inf when minimising / +inf when
        maximising) or an infeasible problem, with SciPy's messages.
    TypeError
        For an array whose dtype SciPy refuses (numpy's "safe" cast to float64 fails: complex,
        long double, strings, bytes, datetimes, objects), with SciPy's message. Other inputs
        (lists, array-likes) are converted to float64 as SciPy converts them.

    Examples
    --------
    >>> import numpy as np
    >>> from trajtransfer import linear_sum_assignment
    >>> r, c = linear_sum_assignment(np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]]))
    >>> c.tolist()
    [1, 0, 2]
    """
    if _cuda.solves_on_device(cost_matrix):  # solved on its device (CUDA build)
        return _cuda.linear_sum_assignment(cost_matrix, maximize)
    arr, back = _cost_array(cost_matrix)
    n, m = arr.shape
    if n == 0 or m == 0:
        empty = np.empty(0, dtype=np.int64)
        return back(empty), back(empty.copy())
    rows, cols, _, _ = _core.lap.solve(arr, bool(maximize), exact=bool(exact))
    return back(rows), back(cols)


@dataclass(frozen=True)
class LapSolution:
    """A solve with its dual variables, reusable as a warm start.

    ``row_duals`` (n,) and ``col_duals`` (m,) are duals of the minimisation that was solved
    (costs negated when maximising): ``row_duals[i] + col_duals[j] <= s * cost[i, j]`` with
    equality on assigned pairs, ``s = -1`` if ``maximize`` else 1.
    """

    row_ind: np.ndarray
    col_ind: np.ndarray
    row_duals: np.ndarray
    col_duals: np.ndarray
    maximize: bool

    def objective(self, cost_matrix: Any) -> float:
        """Total cost of this assignment on ``cost_matrix`` (float64 sum)."""
        arr, _ = to_numpy(cost_matrix, "cost_matrix")
        return float(np.asarray(arr, dtype=np.float64)[self.row_ind, self.col_ind].sum())


def lap_solve(cost_matrix: Any, maximize: bool = False, *, warm_start: Optional[LapSolution] = None,
              col_duals: Any = None, init_col_ind: Any = None, exact: bool = True) -> LapSolution:
    """Solve a LAP and return its duals; optionally warm-start from an earlier solution.

    Warm starts apply to square problems; rectangular ones are solved cold. A warm start only
    changes the speed, never the optimum: rows whose previous column is no longer their cheapest
    reduced column (up to one rounding of the operands) are freed and re-augmented. When the
    costs moved so far that the old prices cannot help (measured in the first pass: the old
    assignment's duality gap against the spread of the rows' reduced costs, e.g. after
    resampling a few percent of the entries), the solve restarts cold, at the cost of that pass.
    Prices far out of scale are not trusted either: non-finite ones, or ones near the dtype's
    overflow, are ignored, and a result whose duals dwarf the costs they price (so that
    rounding could have hidden a better assignment) is re-solved cold.

    Parameters
    ----------
    cost_matrix : (n, m) array_like
    maximize : bool
    warm_start : LapSolution, optional
        A previous solution on a matrix of the same shape (and the same ``maximize``); its column
        duals and assignment seed this solve. The optimum is the same as a cold solve's.
    col_duals : (m,) array_like, optional
        Column duals to start from (instead of ``warm_start``).
    init_col_ind : (n,) int array_like, optional
        A previous assignment (column of each row) to keep where it is still optimal.
    exact : bool
        As :func:`linear_sum_assignment` (float32 inputs; their duals stay float32, rounded from
        the float64 ones where rows were re-augmented in float64).

    Returns
    -------
    LapSolution
        ``row_ind``, ``col_ind`` as :func:`linear_sum_assignment`; ``row_duals`` (n,) and
        ``col_duals`` (m,) in the dtype the problem was solved in.

    Raises
    ------
    ValueError
        As :func:`linear_sum_assignment`, or when the warm start does not fit the problem.

    Examples
    --------
    >>> import numpy as np
    >>> from trajtransfer.core.lap import lap_solve
    >>> c = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    >>> first = lap_solve(c)
    >>> again = lap_solve(c * 1.01, warm_start=first)
    >>> again.col_ind.tolist()
    [1, 0, 2]
    """
    arr, _ = _cost_array(cost_matrix)
    n, m = arr.shape
    init_rows = None
    if warm_start is not None:
        if warm_start.maximize != bool(maximize):
            raise ValueError("warm_start was solved with a different `maximize`")
        if warm_start.col_duals.shape != (m,) or warm_start.row_ind.shape[0] != min(n, m):
            raise ValueError(f"warm_start comes from a problem of another shape than {arr.shape}")
        if warm_start.col_ind.shape != warm_start.row_ind.shape:
            raise ValueError(f"warm_start has {warm_start.row_ind.shape[0]} row indices but "
                             f"{warm_start.col_ind.shape[0]} column indices")
        col_duals = warm_start.col_duals
        # The core rebuilds the column of each row from the pairs (no numpy scatter here).
        init_rows = np.ascontiguousarray(warm_start.row_ind, dtype=np.int64)
        init_col_ind = warm_start.col_ind
    v = None if col_duals is None else np.ascontiguousarray(col_duals, dtype=arr.dtype)
    if v is not None and v.shape != (m,):
        raise ValueError(f"col_duals must have shape ({m},), got {v.shape}")
    init_arr = None
    if init_col_ind is not None:
        if v is None:
            raise ValueError(
                "init_col_ind needs col_duals (or warm_start) from the same earlier solve")
        init_arr = np.ascontiguousarray(init_col_ind, dtype=np.int64)
        if init_rows is None and init_arr.shape != (n,):
            raise ValueError(f"init_col_ind must have shape ({n},), got {init_arr.shape}")
    if n == 0 or m == 0:
        e = np.empty(0, dtype=np.int64)
        return LapSolution(e, e.copy(), np.zeros(n, arr.dtype), np.zeros(m, arr.dtype),
                           bool(maximize))
    if n != m:
        v, init_arr, init_rows = None, None, None
    rows, cols, u, vv = _core.lap.solve(arr, bool(maximize), v, init_arr, init_rows, bool(exact))
    return LapSolution(rows, cols, u, vv, bool(maximize))


def linear_sum_assignment_batch(costs: Any, maximize: bool = False,
                                num_threads: Optional[int] = None, *, exact: bool = True) -> Any:
    """Solve a stack of equally-shaped assignment problems on a native thread pool.

    Parameters
    ----------
    costs : (B, n, m) array_like or torch.Tensor
    maximize : bool
    num_threads : int, optional
        Worker threads (default: the library's thread budget, :mod:`trajtransfer.core.threads`:
        ``TRAJTRANSFER_NUM_THREADS``, else the usable cores less the machine's other runnable
        load). The GIL is released while solving.
    exact : bool
        As :func:`linear_sum_assignment`.

    Returns
    -------
    (B, min(n, m)) int64
        For n <= m, ``out[b, i]`` is the column of row i (row indices are implicit, ``arange(n)``).
        For n > m, ``out[b, j]`` is the row of column j (the shorter axis is the implicit one).

    Raises
    ------
    ValueError
        As :func:`linear_sum_assignment`; the message names the failing problem.
    """
    if _cuda.solves_on_device(costs):  # solved on its device (CUDA build); num_threads is unused
        return _cuda.linear_sum_assignment_batch(costs, maximize)
    arr, back = cost_to_numpy(costs, "costs")
    arr = as_float_cost(arr)
    _check_ndim(arr, 3, "costs", "(B, n, m)")
    b, n, m = arr.shape
    if num_threads is None:
        from .threads import current_budget, policy_num_threads  # lazily: threads imports match

        num_threads = current_budget() or (policy_num_threads() if b > 1 else 1)
    elif not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    if b == 0 or n == 0 or m == 0:
        return back(np.empty((b, min(n, m)), dtype=np.int64))
    return back(_core.lap.solve_batch(arr, bool(maximize), int(num_threads), bool(exact)))
