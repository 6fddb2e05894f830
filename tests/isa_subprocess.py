"""Run a script in a fresh interpreter with a forced LAP kernel set and the same trajtransfer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trajtransfer


def run_with_isa(script: str, isa: str, timeout: float = 120,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    """``TRAJTRANSFER_LAP_ISA=isa python -c script``, importing the trajtransfer under test.

    The package the tests import (installed, or built in place under python/) is put first on
    the child's path, so a source tree without a built extension is never picked up instead.
    """
    env = dict(os.environ, **(env or {}), TRAJTRANSFER_LAP_ISA=isa)
    root = str(Path(trajtransfer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_script_ok(script: str, isa: str, **env: str) -> None:
    """Run ``script`` under kernel set ``isa`` (extra environment variables in ``env``); it must
    exit 0 and print exactly ``ok`` (the scripts assert optimality against SciPy themselves).

    Skips when this CPU cannot run ``isa``: the solver would fall back and test another set.
    """
    import pytest

    from trajtransfer.core.isa import ISAS, active_isa

    if ISAS.index(isa) > ISAS.index(active_isa()):
        pytest.skip(f"this CPU cannot run the {isa} kernels (it runs {active_isa()})")
    out = run_with_isa(script, isa, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
