"""
trajtransfer test hooks (not part of the API; absent from release wheels)
"""
from __future__ import annotations
import numpy
import typing
def cuda_emulation_lap_batch(costs: numpy.ndarray, maximize: bool = False, block_threads: typing.SupportsInt | typing.SupportsIndex = 1, col_duals: typing.Any = None, shared_state: typing.SupportsInt | typing.SupportsIndex = -1, row_reduction_passes: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple:
    """
    Run the CUDA batched LAP kernel's code on the host, `block_threads` std::threads per problem (shared_state: 0 = per-column state in the batch workspace, else in a per-block buffer: the kernel's two placements; row_reduction_passes: JV augmenting row reduction passes). Returns (assignment (B, min(n, m)) int64, status (B,) int32 [0 ok, 1 invalid entries, 2 infeasible], row_duals (B, n), col_duals (B, m)).
    """
def python_shuffle_orders(seed: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex, sweeps: typing.SupportsInt | typing.SupportsIndex) -> list[list[int]]:
    """
    Orders random.Random(seed).shuffle gives list(range(n)), per sweep.
    """
