"""One process per SIMD kernel set: the set is chosen once, when the extension loads
(``TRAJTRANSFER_LAP_ISA`` caps it), so a script that measures several sets runs itself again
per set. Shared by the interleaved measurements (warm_vs_cold.py, batch_scaling.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional


def each_isa(script: str, argv: list[str]) -> int:
    """Run ``script --isa ISA *argv`` for every set this CPU runs, widest first."""
    from trajtransfer.core.isa import ISAS, active_isa

    for isa in reversed(ISAS[: ISAS.index(active_isa()) + 1]):
        rest = [a for a in argv if a != "--isa"]
        subprocess.run([sys.executable, script, "--isa", isa, *rest],
                       env=dict(os.environ, TRAJTRANSFER_LAP_ISA=isa), check=True)
    return 0


def dispatch(script: str, argv: list[str], isa: Optional[str], header: str) -> Optional[int]:
    """None when this process is the one to measure (it runs `isa`'s kernels); else the exit
    status of the processes that did: one per set (header printed first) when `isa` is None,
    or this script again under `isa`."""
    if isa is None:
        print(header, flush=True)
        return each_isa(script, argv)
    return in_isa_process(script, argv, isa)


def in_isa_process(script: str, argv: list[str], isa: str) -> Optional[int]:
    """None when this process already runs `isa`'s kernels; else the exit status of the script
    run again in a process that does."""
    if os.environ.get("TRAJTRANSFER_LAP_ISA") == isa:
        return None
    env = dict(os.environ, TRAJTRANSFER_LAP_ISA=isa)
    return subprocess.run([sys.executable, script, *argv], env=env).returncode


def write_interleaved(path: Path, cases: list[tuple[str, str, float, bool]]) -> None:
    """Interleaved medians as pytest-benchmark-style JSON, which bench/lap_isas.py prefers over
    the benchmark's back-to-back ones: (group, solver, seconds, ours) per entry."""
    entries = [{"group": group, "name": f"{group}-{solver}", "stats": {"median": t},
                "extra_info": {"solver": solver, "ours": ours, "interleaved": True}}
               for group, solver, t, ours in cases]
    path.write_text(json.dumps({"benchmarks": entries}, indent=1) + "\n")
