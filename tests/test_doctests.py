"""The docstring examples of every module of the imported package run and print what they show.

Imported rather than collected from files, so that the wheel test (the installed package, tests
copied elsewhere) runs the installed modules' examples.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import trajtransfer

# __main__ runs the CLI on import; the old flat paths are aliases of modules listed anyway.
_SKIP = {"trajtransfer.__main__"}
_NEEDS_TORCH = ("trajtransfer.method.", "trajtransfer.kit.", "trajtransfer.core.spec_fx",
                "trajtransfer.core.torch_pairs", "trajtransfer.core.descent", "trajtransfer.core.device_lap",
                "trajtransfer._cuda", "trajtransfer._devices")
MODULES = ["trajtransfer"] + sorted(
    m.name for m in pkgutil.walk_packages(trajtransfer.__path__, "trajtransfer.")
    if m.name not in _SKIP and not m.name.startswith("trajtransfer._core"))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(module_name: str) -> list:
    if module_name.startswith(_NEEDS_TORCH):
        pytest.importorskip("torch")
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder().find(module, module_name) if t.examples]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(module_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


@pytest.mark.parametrize("name", ["linear_sum_assignment", "lap_solve", "match_weights", "apply_permutation",
                                  "permutation_spec_from_axes_to_perm", "transfer", "Trajectory",
                                  "thread_budget"])
def test_main_functions_have_examples(name):
    obj = getattr(trajtransfer, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name)
    assert tests and tests[0].examples, f"trajtransfer.{name} has no docstring example"
