"""Old flat module paths (``trajtransfer.match`` …), kept for one release as deprecated aliases.

A finder on ``sys.meta_path`` answers ``import trajtransfer.<old>`` with the module at its new
home (the very same module object) and a DeprecationWarning, so no stub files are needed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import Any, Optional

# old module name -> its new home
MOVED = {
    "lap": "core.lap", "spec": "core.spec", "spec_fx": "core.spec_fx", "permute": "core.permute",
    "match": "core.match", "transfer": "method.transfer", "trajectory": "method.trajectory",
    "bn": "method.bn", "models": "kit.models", "data": "kit.data", "training": "kit.training",
    "presets": "kit.presets", "cli": "kit.cli", "plot": "kit.plot",
}
_PREFIX = "trajtransfer."


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        new_name = _PREFIX + MOVED[spec.name[len(_PREFIX):]]
        warnings.warn(f"{spec.name} moved to {new_name}; the old path will be removed in the next "
                      "release (or import the name from trajtransfer directly)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new_name)

    def exec_module(self, module: Any) -> None:  # already executed at its new home
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None,
                  target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname.startswith(_PREFIX) and fullname[len(_PREFIX):] in MOVED:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader())
        return None


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
