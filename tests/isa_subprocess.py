"""Run a script in a fresh interpreter with a forced LAP kernel set and the same trajtransfer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trajtransfer


def run_with_isa(script: str, isa: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``TRAJTRANSFER_LAP_ISA=isa python -c script``, importing the trajtransfer under test.

    The package the tests import (installed, or built in place under python/) is put first on
    the child's path, so a source tree without a built extension is never picked up instead.
    """
    env = dict(os.environ, TRAJTRANSFER_LAP_ISA=isa)
    root = str(Path(trajtransfer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=timeout)
