"""
Dense exact linear assignment
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
def last_solve_stats() -> dict:
    """
    Work counters of this thread's most recent single solve: {'paths': shortest augmenting paths searched, 'path_scans': their O(m) row scans, 'arr_scans': full row scans of augmenting row reduction, 'cold_restarts': 1 when a warm start was given up for a cold solve, 'warm_rows_read': rows its first pass read}. For tests and profiling.
    """
def simd_level() -> str:
    """
    SIMD kernel set chosen at run time for this CPU: 'avx512', 'avx2' or 'base'.
    """
def solve(cost: numpy.ndarray, maximize: bool = False, col_duals: typing.Any = None, init_col_ind: typing.Any = None, init_row_ind: typing.Any = None, exact: bool = True) -> tuple:
    """
    Solve one dense LAP. Returns (row_ind, col_ind, u, v) as scipy's linear_sum_assignment plus the duals of the minimisation actually solved (costs negated when maximize). The warm start's assignment is init_col_ind (a column per row, -1 for none) or, with init_row_ind, the pairs (init_row_ind[t], init_col_ind[t]) of an earlier solve. exact (float32 only): the assignment is optimal for the float64 values of the entries; else within about one float32 rounding per row.
    """
def solve_batch(costs: numpy.ndarray, maximize: bool = False, num_threads: typing.SupportsInt | typing.SupportsIndex = 0, exact: bool = True) -> numpy.typing.NDArray[numpy.int64]:
    """
    Solve B dense LAPs of equal shape on a thread pool. Returns (B, min(n, m)) indices. exact as in solve().
    """
