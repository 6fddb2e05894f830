"""Sphinx configuration: the user guide (Markdown, through MyST) and the API reference (autodoc).

Built by ``.ci/build_docs.sh`` with warnings as errors. Offline: no intersphinx, no downloads.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

try:  # the installed package (CI); else the in-place development build in python/
    import trajtransfer
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import trajtransfer

project = "trajtransfer"
author = "the trajtransfer developers"
copyright = "the trajtransfer developers"  # noqa: A001 (Sphinx's name)
release = version = trajtransfer.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# The developer diaries and the settings notes are measurement records, not user documentation.
exclude_patterns = ["_build", "dev", "transfer-settings.md"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

html_theme = "alabaster"
html_static_path: list = []


class _LinksOutsideTheBuild(logging.Filter):
    """The guide's links to the README and to docs/dev/ are plain links (GitHub renders them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("Unknown source document" in msg and ("README" in msg or "'dev/" in msg))


def setup(app) -> None:
    for handler in logging.getLogger("sphinx").handlers:
        handler.filters.insert(0, _LinksOutsideTheBuild())
