"""SciPy's own linear_sum_assignment test module, run against trajtransfer's drop-in.

The module is read from the installed SciPy and run by pytest in a subprocess, with
tests/scipy_suite_plugin.py putting our solver (single, or batch through a loop adapter) in the
place of SciPy's. Every test in it must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import trajtransfer

scipy_optimize = pytest.importorskip("scipy.optimize")
SCIPY_TESTS = Path(scipy_optimize.__file__).parent / "tests" / "test_linear_assignment.py"
TESTS_DIR = Path(__file__).parent
# SciPy 1.17's module holds 22 tests; a collection that finds far fewer has gone wrong.
MIN_TESTS = 20


def run_scipy_module(solver: str, tmp_path: Path) -> dict:
    """Run SciPy's module with `solver` in its place; return the junit counts."""
    # A copy outside SciPy's tree, so that SciPy's conftest and the repository's settings stay out.
    target = tmp_path / "test_scipy_linear_assignment.py"
    shutil.copyfile(SCIPY_TESTS, target)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    report = tmp_path / "report.xml"
    path = [str(TESTS_DIR), str(Path(trajtransfer.__file__).parent.parent)]
    env = dict(os.environ, TT_SCIPY_SUITE_SOLVER=solver,
               PYTHONPATH=os.pathsep.join(path + [os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "scipy_suite_plugin",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), f"--junitxml={report}",
         str(target)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert report.exists(), proc.stdout + proc.stderr
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["output"] = proc.stdout[-4000:] + proc.stderr[-2000:]
    return counts


@pytest.mark.skipif(not SCIPY_TESTS.exists(), reason="the installed SciPy ships without its tests")
@pytest.mark.parametrize("solver", ["single", "batch"])
def test_scipy_linear_assignment_module(solver: str, tmp_path: Path) -> None:
    counts = run_scipy_module(solver, tmp_path)
    print(f"SciPy test module, {solver}: {counts['passed']} of {counts['tests']} passed, "
          f"{counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped")
    assert counts["failures"] == 0 and counts["errors"] == 0, counts["output"]
    assert counts["skipped"] == 0, counts["output"]
    assert counts["tests"] >= MIN_TESTS, counts["output"]
