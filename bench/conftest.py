"""Benchmark session helpers: print the ratio table (peer median / ours) at the end of a run.

Every benchmark in bench/ puts one solver in ``extra_info["solver"]`` and groups the solvers of
one case together, so a ratio is always read within one run on one machine. The same table can
be printed later from a saved JSON with ``python bench/ratio_table.py bench/results/lap.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
try:  # the package is built in place during development (see notes): use python/ if needed
    import trajtransfer  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_HERE.parent / "python"))

from ratio_table import format_table  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not getattr(session, "benchmarks", None):
        return
    rows = []
    for bench in session.benchmarks:
        stats = getattr(bench, "stats", None)
        if stats is None or not bench.extra_info.get("solver"):
            continue
        rows.append((bench.group or bench.name, bench.extra_info["solver"], stats.median,
                     bench.extra_info.get("ours", False)))
    if rows:
        terminalreporter.write_sep("-", "ratio table (peer median / ours; > 1: ours is faster)")
        terminalreporter.write_line(format_table(rows))
