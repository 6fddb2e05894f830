"""Markdown table of speed ratios per benchmark group: peer median time / our median time.

Usage: ``python bench/ratio_table.py bench/results/lap.json`` (pytest-benchmark JSON).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Iterable


def format_table(rows: Iterable[tuple[str, str, float, bool]]) -> str:
    """rows: (group, solver, median seconds, is_ours). One line per (group, our solver)."""
    groups: dict[str, list[tuple[str, float, bool]]] = defaultdict(list)
    for group, solver, median, ours in rows:
        groups[group].append((solver, median, ours))
    lines = ["| case | ours | ours ms | peer | peer ms | peer / ours |",
             "|---|---|---:|---|---:|---:|"]
    for group in sorted(groups):
        entries = groups[group]
        mine = [e for e in entries if e[2]]
        peers = [e for e in entries if not e[2]]
        for name, t_ours, _ in mine:
            for peer, t_peer, _ in peers:
                lines.append(f"| {group} | {name} | {t_ours * 1e3:.2f} | {peer} | "
                             f"{t_peer * 1e3:.2f} | {t_peer / t_ours:.2f} |")
    return "\n".join(lines)


def main(path: str) -> None:
    with open(path) as fh:
        data = json.load(fh)
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("solver"):
            rows.append((b["group"] or b["name"], info["solver"], b["stats"]["median"],
                         bool(info.get("ours", False))))
    print(format_table(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/lap.json")
