"""Import guard for the compiled extension ``trajtransfer._core``."""

from __future__ import annotations

try:
    # libscipy_openblas.so is found through the extension's RPATH; importing the wheel's module
    # first also makes it resolvable when the package was installed in an unusual layout.
    import scipy_openblas32  # noqa: F401
except ImportError:  # pragma: no cover - the wheel is a hard dependency
    pass

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "trajtransfer's compiled core (trajtransfer._core) could not be imported. "
        "Did you build the package? Install it with `pip install .` from the repository root "
        "(an editable install needs `pip install -e . --no-build-isolation` after installing the "
        "build requirements)."
    ) from exc

__all__ = ["_core"]
