"""The shipped stubs (trajtransfer/_core/*.pyi) name exactly what the extension exports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trajtransfer
from trajtransfer._native import _core

# The stubs next to the package under test: the source tree's, or the ones a wheel installed.
STUBS = Path(trajtransfer.__file__).resolve().parent / "_core"


def _stub_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and node.module is None:
            names.update(alias.name for alias in node.names)
    return names - {"__all__", "__version__"}


def _public(module) -> set[str]:
    return {n for n in dir(module) if not n.startswith("_")}


@pytest.mark.parametrize("sub", ["lap", "match", "cuda_emulation"])
def test_submodule_stub_matches_runtime(sub):
    module = getattr(_core, sub)
    assert _stub_names(STUBS / f"{sub}.pyi") == _public(module)


def _stub_params(path: Path) -> dict[str, list[str]]:
    tree = ast.parse(path.read_text())
    return {n.name: [a.arg for a in n.args.args] for n in tree.body
            if isinstance(n, ast.FunctionDef)}


def _runtime_params(fn) -> list[str]:
    # pybind11 puts the signature on the docstring's first line: name(a: T, b: U = ...) -> R
    inner = fn.__doc__.split("\n", 1)[0].split("(", 1)[1].rsplit(")", 1)[0]
    return [p.split(":")[0].strip() for p in inner.split(", ") if p]


@pytest.mark.parametrize("sub", ["lap", "match", "cuda_emulation"])
def test_submodule_stub_functions_take_the_runtime_parameters(sub):
    module = getattr(_core, sub)
    for name, params in _stub_params(STUBS / f"{sub}.pyi").items():
        assert params == _runtime_params(getattr(module, name)), name


def test_top_level_stub_matches_runtime():
    runtime = _public(_core) - {"cuda"}  # CUDA builds only
    assert _stub_names(STUBS / "__init__.pyi") == runtime


def test_matcher_class_methods_are_stubbed():
    tree = ast.parse((STUBS / "match.pyi").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Matcher")
    stubbed = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)} - {"__init__"}
    assert stubbed == _public(_core.match.Matcher)
