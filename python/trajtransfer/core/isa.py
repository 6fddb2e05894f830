"""Which SIMD kernel set the LAP runs, and the check of the ``TRAJTRANSFER_LAP_ISA`` override."""

from __future__ import annotations

import os
import warnings
from typing import Optional

from .._native import _core

#: Kernel sets from the narrowest to the widest.
ISAS = ("base", "avx2", "avx512")


def active_isa() -> str:
    """The kernel set the LAP solver uses in this process: 'avx512', 'avx2' or 'base'."""
    return str(_core.lap.simd_level())


def override_problem(requested: Optional[str], active: str) -> Optional[str]:
    """Why an override does not run as asked (None when it does or when there is none)."""
    if requested is None:
        return None
    if requested not in ISAS:
        return (f"TRAJTRANSFER_LAP_ISA={requested!r} is not one of {', '.join(ISAS)}; the LAP "
                f"runs the {active} kernels")
    if ISAS.index(requested) > ISAS.index(active):
        return (f"TRAJTRANSFER_LAP_ISA={requested} is not supported by this CPU; the LAP runs the "
                f"{active} kernels")
    return None


def warn_about_override() -> None:
    """Warn (once, at import) when the override names an unknown or unsupported kernel set."""
    problem = override_problem(os.environ.get("TRAJTRANSFER_LAP_ISA"), active_isa())
    if problem is not None:
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
