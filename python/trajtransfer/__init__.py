"""trajtransfer: learning transfer through permutation symmetry, on a fast native core.

>>> import numpy as np
>>> import trajtransfer as tt
>>> row, col = tt.linear_sum_assignment(np.array([[1.0, 2.0], [2.0, 1.0]]))
>>> col.tolist()
[0, 1]
"""

from __future__ import annotations

from ._native import _core
from .lap import LapSolution, lap_solve, linear_sum_assignment, linear_sum_assignment_batch

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "LapSolution",
    "lap_solve",
    "linear_sum_assignment",
    "linear_sum_assignment_batch",
]


def __dir__() -> list[str]:
    return __all__
