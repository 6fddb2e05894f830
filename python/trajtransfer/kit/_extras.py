"""One error for a missing optional dependency, naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message is one line that names the fix."""


def require(module: str, *, distribution: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install "trajtransfer[extra]"``.

    ``purpose`` completes "... needs <distribution>", e.g. ``"the digits dataset"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f'{purpose} needs {distribution}, which is not installed: pip install "trajtransfer[{extra}]"',
            name=module,
        ) from None
