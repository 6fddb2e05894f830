"""
Coordinate-descent permutation matching
"""
from __future__ import annotations
import collections.abc
import typing
class Matcher:
    """
    Native coordinate-descent matcher (private; see trajtransfer.core.match)
    """
    def __init__(self, group_sizes: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], shapes: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]], axis_groups: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]]) -> None:
        ...
    def add(self, targets: list, sources: list, weight: typing.SupportsFloat | typing.SupportsIndex) -> None:
        """
        Append one pair: per tensor a float32 array, or a (delta, inputs) tuple of float32 arrays (rows, n_out) and (rows, n_in) for the factors of delta.T @ inputs.
        """
    def clear_pairs(self) -> None:
        """
        Drop all pairs; keep the store's memory, the permutations and the LAP duals.
        """
    def objective(self, perms: list) -> float:
        ...
    def reserve(self, pairs: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def solve(self, init: typing.Any, use_previous: bool, warm_duals: bool, max_sweeps: typing.SupportsInt | typing.SupportsIndex, tol: typing.SupportsFloat | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, exact_objective: bool = True, greedy_start: bool = False) -> dict:
        ...
    @property
    def num_pairs(self) -> int:
        ...
def set_num_threads(num_threads: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    Set the threads of trajtransfer's OpenBLAS pool (<= 0: unchanged); returns the count.
    """
