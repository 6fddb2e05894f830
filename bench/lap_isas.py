"""The LAP benchmark and its target check for every SIMD kernel set this CPU runs, in one command.

The kernel set is chosen once per process (``TRAJTRANSFER_LAP_ISA`` caps it), so each set runs in
its own pytest process, widest first (avx512 where the CPU has it, avx2, base). Each writes
``bench/results/lap_<isa>.json`` and ``lap_adversarial_<isa>.json``; then the targets of
``ratio_table.py --targets`` are checked per set, and one table shows every set side by side::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/lap_isas.py
    python bench/lap_isas.py --report-only          # targets and table from the saved JSON
    python bench/lap_isas.py -k "n1024 or batch"    # extra arguments go to pytest
    python bench/lap_isas.py --peers-once           # SciPy, lapjv, lapx timed in the first set only

The peers (SciPy, lapjv, lapx) do not depend on our kernel set: with ``--peers-once`` the sets
after the widest run only our solver (``-k ours``, joined to a ``-k`` given), and every set's
ratios take the peers' medians from the widest set's run (about a third of the time in all). A set
whose file lacks a peer always borrows it that way. ``bench/lap_targets.sh`` runs this, then the
interleaved warm / cold and batch measurements: the one command for a quiet machine.

Exit status 0 when every target holds for every set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import trajtransfer
except ImportError:  # the package built in place during development (see bench/conftest.py)
    sys.path.insert(0, str(HERE.parent / "python"))
    import trajtransfer

from ratio_table import check_targets, isa_table, medians  # noqa: E402

from trajtransfer.core.isa import ISAS, active_isa  # noqa: E402

RESULTS = HERE / "results"


def supported_isas() -> list[str]:
    """The kernel sets this CPU runs, widest first."""
    return list(reversed(ISAS[: ISAS.index(active_isa()) + 1]))


def result_files(isa: str) -> list[Path]:
    """The benchmark's files of one set; the last two (warm_vs_cold.py and batch_scaling.py
    --pair-only, with --json), where present, replace the warm and batch cases' medians with
    interleaved ones."""
    return [RESULTS / f"lap_{isa}.json", RESULTS / f"lap_adversarial_{isa}.json",
            RESULTS / f"warm_vs_cold_{isa}.json", RESULTS / f"batch_{isa}.json"]


def run_benchmarks(isa: str, pytest_args: list[str]) -> None:
    env = dict(os.environ, TRAJTRANSFER_LAP_ISA=isa)
    pkg_root = str(Path(trajtransfer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, env.get("PYTHONPATH", "")])
    for module, out in zip(("test_bench_lap.py", "test_bench_lap_adversarial.py"),
                           result_files(isa)[:2]):
        out.unlink(missing_ok=True)  # a run that selects nothing must not leave old figures
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(HERE / module), f"--benchmark-json={out}", *pytest_args]
        print(f"== {isa}: {' '.join(cmd[2:])}", flush=True)
        subprocess.run(cmd, env=env, check=False)


def only_ours(pytest_args: list[str]) -> list[str]:
    """pytest_args selecting our solver only: "-k ours", or "-k '(EXPR) and ours'"."""
    args = list(pytest_args)
    if "-k" in args[:-1]:
        at = args.index("-k") + 1
        args[at] = f"({args[at]}) and ours"
        return args
    return args + ["-k", "ours"]


def main(argv: list[str]) -> int:
    report_only = "--report-only" in argv
    peers_once = "--peers-once" in argv
    pytest_args = [a for a in argv if a not in ("--report-only", "--peers-once")]
    isas = supported_isas()
    if not report_only:
        for k, isa in enumerate(isas):
            run_benchmarks(isa, only_ours(pytest_args) if peers_once and k > 0 else pytest_args)
    ok = True
    ms_by_isa: dict[str, dict] = {}
    for isa in isas:
        ms: dict = {}
        for path in result_files(isa):
            if path.exists() and path.stat().st_size > 0:  # empty: nothing was selected
                ms.update(medians(str(path)))
                if path.name.startswith(("warm_vs_cold", "batch_")):
                    print(f"({isa}: {path.name.split('_')[0]} cases from {path.name}, "
                          "interleaved)")
        if ms_by_isa:  # peers' medians from the widest set's run where this one lacks them
            widest = next(iter(ms_by_isa.values()))
            for key, t in widest.items():
                if not key[1].startswith("ours"):
                    ms.setdefault(key, t)
        ms_by_isa[isa] = ms
        print(f"\n### Targets, {isa} kernels")
        for met, text in check_targets(ms, isa):
            ok &= met
            print(("PASS " if met else "FAIL ") + text)
    print("\n" + isa_table(ms_by_isa))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
