"""The shipped extension stubs (trajtransfer/_core/*.pyi, trajtransfer/_testing.pyi) against the
built extension: mypy's stubtest for the names and their kinds, and the parameter names, which
stubtest cannot see in pybind11 functions (their signature is only the docstring's first line)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import trajtransfer
from native_testing import load_testing_module

# The stubs next to the package under test: the source tree's, or the ones a wheel installed.
PACKAGE = Path(trajtransfer.__file__).resolve().parent
STUBTEST = Path(__file__).resolve().parent / "stubtest"


def _extension_modules() -> list[str]:
    try:
        importlib.import_module("trajtransfer._testing")
    except ImportError:  # a release wheel: no test-only extension, no stub to check it against
        return ["trajtransfer._core"]
    return ["trajtransfer._core", "trajtransfer._testing"]


def test_stubtest_finds_no_difference():
    pytest.importorskip("mypy.stubtest", reason="stubtest comes with mypy (the test extra)")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(STUBTEST / "mypy.ini"),
         "--allowlist", str(STUBTEST / "allowlist.txt"), *_extension_modules()],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _stub_functions(path: Path) -> dict[str, list[str]]:
    """Parameter names of the stub's functions and methods ('Class.method'), properties left out."""
    out = {}
    tree = ast.parse(path.read_text())
    for node in tree.body:
        members = [(f"{node.name}.", n) for n in node.body] if isinstance(node, ast.ClassDef) else [("", node)]
        for prefix, fn in members:
            if isinstance(fn, ast.FunctionDef) and not fn.decorator_list:
                out[prefix + fn.name] = [a.arg for a in fn.args.args]
    return out


def _runtime_params(fn) -> list[str]:
    # pybind11 puts the signature on the docstring's first line: name(a: T, b: U = ...) -> R
    inner = fn.__doc__.split("\n", 1)[0].split("(", 1)[1].rsplit(")", 1)[0]
    return [p.split(":")[0].strip() for p in inner.split(", ") if p]


@pytest.mark.parametrize("module,stub", [("trajtransfer._core.lap", "_core/lap.pyi"),
                                         ("trajtransfer._core.match", "_core/match.pyi"),
                                         ("trajtransfer._testing", "_testing.pyi")])
def test_stub_functions_take_the_runtime_parameters(module, stub):
    runtime = load_testing_module() if module == "trajtransfer._testing" else importlib.import_module(module)
    functions = _stub_functions(PACKAGE / stub)
    assert functions
    for name, params in functions.items():
        fn = runtime
        for part in name.split("."):
            fn = getattr(fn, part)
        assert params == _runtime_params(fn), name
