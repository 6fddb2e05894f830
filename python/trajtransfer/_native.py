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

    # The stub folder python/trajtransfer/_core/ (*.pyi) imports as an empty namespace package
    # when the extension was never built in this tree: treat that as "not built".
    if not hasattr(_core, "__version__"):
        raise ImportError("trajtransfer._core resolved to the stub folder, not the extension")
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "trajtransfer's compiled core (trajtransfer._core) could not be imported. "
        "Did you build the package? Install it with `pip install .` from the repository root, "
        "or build it in place as the README's Development section shows."
    ) from exc

__all__ = ["_core"]
