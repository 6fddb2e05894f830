"""Markdown table of speed ratios per benchmark group: peer median time / our median time.

Usage (pytest-benchmark JSON of bench/test_bench_lap.py)::

    python bench/ratio_table.py bench/results/lap.json            # every (ours, peer) ratio
    python bench/ratio_table.py --targets bench/results/lap.json \
        bench/results/lap_adversarial.json                       # the LAP targets, PASS/FAIL
    python bench/ratio_table.py --readme bench/results/lap.json bench/results/lap_1thread.json
    python bench/lap_isas.py      # the LAP benchmark and its targets for every kernel set
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


def load(path: str) -> tuple[dict[tuple[str, str], float], set[tuple[str, str]]]:
    """(group, solver) -> median milliseconds from a pytest-benchmark JSON file, and the keys
    that are ours (``extra_info['ours']``; our 1-thread and cold runs are peers)."""
    with open(path) as fh:
        data = json.load(fh)
    ms, ours = {}, set()
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("solver"):
            key = (b["group"] or b["name"], info["solver"])
            ms[key] = b["stats"]["median"] * 1e3
            if info.get("ours", False):
                ours.add(key)
    return ms, ours


def medians(path: str) -> dict[tuple[str, str], float]:
    return load(path)[0]


def _size(group: str) -> int:
    return int(group.rsplit("-n", 1)[1])


# The portable kernels ("base": SSE2-width vectors, 2 float64 or 4 float32 lanes, and no blend
# instruction) are the fallback for CPUs without AVX2. They execute 3-6x the instructions of the
# AVX2 kernels for the same solve (callgrind, uniform n = 1024: cold float32 102 M against 27 M,
# warm float64 34 M against 7.4 M; docs/dev/performance.md), so the targets that compare raw
# speed with solvers built for the same machine, and the warm / cold ratio (the warm solve's
# one pass is compute-bound there, the cold solve's extra passes much less), hold them to a floor
# instead, printed with the target. Every target about our own work (warm against cold on
# every perturbation, the adversarial families, the batch's 2-thread speed-up) holds for every set.
BASE_FLOORS: dict[str, float] = {
    "SciPy / ours, uniform n >= 1024": 4,
    "best of lapjv/lapx / ours, every case": 0.8,
    "best of lapjv/lapx / ours, uniform n >= 1024": 1,
    "warm re-solve (1 % noise), cold / warm": 2.5,
}


def check_targets(ms: dict[tuple[str, str], float], isa: str = "") -> list[tuple[bool, str]]:
    """The LAP targets (issue 2, and the adversarial families), each as
    (met, 'target: worst case and its ratio'). A group that
    lacks either side of a ratio (a peer not installed, a case deselected) is left out of it; a
    target with no ratio at all is reported as not met. With isa == "base" the targets in
    BASE_FLOORS are checked against their floor (the text names both)."""
    def worst(label: str, pairs: list[tuple[str, float]], need: float) -> tuple[bool, str]:
        head = f"{label} >= {need}x"
        if isa == "base" and label in BASE_FLOORS:
            need = BASE_FLOORS[label]
            head = f"{label} >= {need}x (base kernels' floor; target {head.rsplit(' ', 1)[1]})"
        if not pairs:
            return False, f"{head}: no measurement"
        case, ratio = min(pairs, key=lambda p: p[1])
        return ratio >= need, f"{head}: worst {ratio:.2f}x ({case})"

    def ratios(groups: list[str], peers: tuple[str, ...], ours: str) -> list[tuple[str, float]]:
        """(group, fastest of `peers` / ours) where both were measured."""
        out = []
        for g in groups:
            times = [ms[(g, p)] for p in peers if (g, p) in ms]
            if times and (g, ours) in ms:
                out.append((g, min(times) / ms[(g, ours)]))
        return out

    groups = sorted({g for g, _ in ms})
    adversarial = [g for g in groups if g.startswith("adversarial")]
    dense = [g for g in groups if g.startswith(("uniform", "correlation", "gradient"))]
    uniform_big = [g for g in groups if g.startswith("uniform") and _size(g) >= 1024]
    batch = [g for g in groups if g.startswith("batch")]
    best_peer = ratios(dense, ("lapjv", "lapx-lapjvh"), "ours") + ratios(
        batch, ("lapx-lapjvh_batch-2threads", "lapx-lapjvh_batch-1thread"), "ours-2threads")
    return [
        worst("SciPy / ours, uniform n >= 1024", ratios(uniform_big, ("scipy",), "ours"), 8),
        worst("SciPy / ours, correlation",
              ratios([g for g in groups if g.startswith("correlation")], ("scipy",), "ours"), 4),
        worst("best of lapjv/lapx / ours, every case", best_peer, 1),
        worst("best of lapjv/lapx / ours, uniform n >= 1024",
              [p for p in best_peer if p[0] in uniform_big], 1.3),
        worst("batch, 1 thread / 2 threads", ratios(batch, ("ours-1thread",), "ours-2threads"),
              1.7),
        worst("warm re-solve (1 % noise), cold / warm",
              ratios([g for g in groups if g.startswith("warm-1pct")], ("ours-cold",),
                     "ours-warm"), 5),
        # a warm start costs at most 1.1x a cold solve, whatever the perturbation
        worst("warm re-solve, every perturbation, cold / warm",
              ratios([g for g in groups if g.startswith("warm-")], ("ours-cold",), "ours-warm"),
              round(1 / 1.1, 2)),
        # bench/test_bench_lap_adversarial.py: ours <= 2x SciPy on every adversarial family
        worst("SciPy / ours, every adversarial family", ratios(adversarial, ("scipy",), "ours"),
              0.5),
    ]


def _ms(t: float) -> str:
    return f"{t:.0f}" if t >= 1000 else f"{t:.1f}" if t >= 10 else f"{t:.2f}"


def _cell(ms: dict, group: str, peer: str) -> str:
    t = ms.get((group, peer))
    if t is None:
        return "–"
    return f"{_ms(t)} ({t / ms[(group, 'ours')]:.1f}×)"


def readme_table(ms: dict, ms_1t: dict) -> str:
    """The README's table of dense cases: ours (2 threads and 1), SciPy, lapjv, lapx."""
    lines = ["| case | ours ms | ours ms, 1 thread | SciPy ms (ratio) | lapjv ms (ratio) | "
             "lapx ms (ratio) |", "|---|---:|---:|---:|---:|---:|"]
    order = {"uniform": 0, "correlation": 1, "gradient-like": 2}
    dense = ("uniform", "correlation", "gradient")
    cases = sorted({g for g, s in ms if s == "ours" and g.startswith(dense)},
                   key=lambda g: (order[g.split("-")[0] if not g.startswith("gradient")
                                        else "gradient-like"], g.split("-")[-2], _size(g)))
    for g in cases:
        kind, dtype, n = g.split("-")[0], g.split("-")[-2], _size(g)
        label = (f"gradient-like {dtype} n={n} (rank ~40, dead units)" if kind == "gradient"
                 else f"{kind} {dtype} n={n}")
        one = ms_1t.get((g, "ours"))
        lines.append(f"| {label} | {_ms(ms[(g, 'ours')])} | "
                     f"{'–' if one is None else _ms(one)} | {_cell(ms, g, 'scipy')} | "
                     f"{_cell(ms, g, 'lapjv')} | {_cell(ms, g, 'lapx-lapjvh')} |")
    return "\n".join(lines)


def _isa_cell(ms: dict, group: str) -> str:
    """Our time in one group and the ratio that group is about (SciPy, 1 thread, or cold)."""
    if group.startswith("batch"):
        ours, peer = "ours-2threads", "ours-1thread"
    elif group.startswith("warm"):
        ours, peer = "ours-warm", "ours-cold"
    else:
        ours, peer = "ours", "scipy"
    if (group, ours) not in ms:
        return "–"
    t = ms[(group, ours)]
    return _ms(t) + (f" ({ms[(group, peer)] / t:.1f}×)" if (group, peer) in ms else "")


def isa_table(ms_by_isa: dict[str, dict]) -> str:
    """One row per benchmark group, one column per kernel set: our median ms and, in brackets,
    SciPy / ours (dense and adversarial cases), 1 thread / 2 threads (batch) or cold / warm."""
    isas = list(ms_by_isa)
    groups = sorted({g for ms in ms_by_isa.values() for g, _ in ms})
    lines = ["| case | " + " | ".join(f"{isa} ms (ratio)" for isa in isas) + " |",
             "|---|" + "---:|" * len(isas)]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(_isa_cell(ms_by_isa[i], g) for i in isas) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--targets":
        paths = argv[1:] or ["bench/results/lap.json", "bench/results/lap_adversarial.json"]
        ms: dict[tuple[str, str], float] = {}
        for path in paths:  # the dense and adversarial runs are separate files
            ms.update(medians(path))
        results = check_targets(ms)
        for met, text in results:
            print(("PASS " if met else "FAIL ") + text)
        return 0 if all(met for met, _ in results) else 1
    if argv and argv[0] == "--readme":
        print(readme_table(medians(argv[1]), medians(argv[2]) if len(argv) > 2 else {}))
        return 0
    ms, ours = load(argv[0] if argv else "bench/results/lap.json")
    print(format_table((g, s, t / 1e3, (g, s) in ours) for (g, s), t in ms.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
