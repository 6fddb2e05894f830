"""Factored gradient pairs: GMT and FGMT end to end, dense against factored, and the reference.

MLP 784-1024-1024-10 and 784-4096-10, T = 10, pairs of one minibatch of 128 (the official size),
without evaluation. Loops per case: the reference-style loop (:mod:`reference_transfer`, FGMT
only: its GMT takes many minutes), ours with dense pairs (the native core on the CPU), and ours
with ``factored_pairs=True`` (the Linear weights as their factors) on the device path
(``backend="torch"``, torch ops) and in the native core (``backend="auto"``).
Checks: both factored runs give the dense run's permutations at every step, and at step 1 all
reach at least the reference loop's objective on the reference's own pairs. The matching time
is split into cost building (GEMMs) and assignment solves (LAP); it and the pair stores' sizes
go into ``extra_info``; a summary is printed and written to
``bench/results/factored_summary.json``. On a machine shared with other jobs, run it with
``OMP_WAIT_POLICY=PASSIVE`` (torch's spinning threads, see docs/dev/factored-pairs.md).

Run::

    OMP_WAIT_POLICY=PASSIVE env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/test_bench_factored.py -s --benchmark-json=bench/results/factored.json
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

from baseline import objective  # noqa: E402  (bench/ is on sys.path)
from reference_transfer import BaselineMatcher, reference_methods  # noqa: E402
from transfer_problem import random_transfer_problem, timing_info  # noqa: E402

from trajtransfer.core.match import GradientMatcher  # noqa: E402
from trajtransfer.kit.models import MLP  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CASES = {"mlp-1024x2": (1024, 1024), "mlp-4096": (4096,)}
IMPLS = ("reference", "dense", "factored-torch", "factored-native")
_runs: dict = {}


@pytest.fixture(scope="module", params=list(CASES))
def setup(request):
    hidden = CASES[request.param]
    data, traj, target_init = random_transfer_problem(lambda: MLP(784, hidden, 10), (784,), 10)
    return request.param, hidden, data, traj, target_init


def _store_bytes() -> tuple:
    """Wrap GradientMatcher.add to record the largest pair store a run holds."""
    seen = {"bytes": 0}
    real = GradientMatcher.add

    def add(self, *a, **kw):
        real(self, *a, **kw)
        seen["bytes"] = max(seen["bytes"], self.pair_store_bytes)

    return seen, real, add


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("method", ["fgmt", "gmt"])
def test_bench_factored(benchmark, setup, method, impl):
    name, hidden, data, traj, target_init = setup
    if impl == "reference" and method == "gmt":
        pytest.skip("the reference GMT takes many minutes: the reference comparison is FGMT's")
    benchmark.group = f"factored-{name}-{method}"
    benchmark.name = f"{impl}[{name}-{method}]"
    seen, real_add, add = _store_bytes()
    first_solve: dict = {}
    real_solve = BaselineMatcher.solve

    def recording_solve(self, *a, **kw):  # the reference's step 1: its pairs and answer
        out = real_solve(self, *a, **kw)
        first_solve.setdefault("pairs", list(zip(self.pairs, self.weights)))
        first_solve.setdefault("perms", out.perms)
        return out

    def run():
        with reference_methods():
            return transfer(MLP(784, hidden, 10), traj, target_init, data,
                            method=("reference-" if impl == "reference" else "") + method,
                            seed=0, factored_pairs=impl.startswith("factored"),
                            backend="torch" if impl == "factored-torch" else "auto")

    GradientMatcher.add, BaselineMatcher.solve = add, recording_solve
    try:
        res = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        GradientMatcher.add, BaselineMatcher.solve = real_add, real_solve
    info = {**timing_info(res), "pair_store_bytes": seen["bytes"],
            "sweeps": res.sweeps, "objective": res.objective}
    runs = _runs.setdefault((name, method), {})
    runs[impl] = (info, res)
    if impl == "reference":
        runs["reference-step1"] = first_solve
    elif "reference-step1" in runs:
        ref = runs["reference-step1"]
        spec = MLP(784, hidden, 10).permutation_spec()
        base = objective(spec, [p for p, _ in ref["pairs"]], [w for _, w in ref["pairs"]],
                         ref["perms"])
        assert res.objective[0] >= base - 1e-6 * abs(base), (res.objective[0], base)
    if impl.startswith("factored") and "dense" in runs:
        for step, (pd, pf) in enumerate(zip(runs["dense"][1].perms, res.perms), 1):
            assert all(torch.equal(pd[g], pf[g]) for g in pd), f"step {step}"
    benchmark.extra_info.update(info)


def teardown_module(module):
    rows = []
    for (name, method), r in _runs.items():
        ref = r.get("reference")
        for impl in IMPLS:
            if impl not in r:
                continue
            info = r[impl][0]
            rows.append({"case": name, "method": method, "impl": impl,
                         "total_s": info["total_s"], "gradients_s": info["gradients_s"],
                         "matching_s": info["matching_s"], "matching_share": info["matching_share"],
                         "matching_gemm_s": info["matching_gemm_s"],
                         "matching_lap_s": info["matching_lap_s"],
                         "pair_store_mb": info["pair_store_bytes"] / 2**20,
                         "speedup_vs_reference": (ref[0]["total_s"] / info["total_s"]
                                                  if ref else None)})
    if not rows:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "factored_summary.json").write_text(json.dumps(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_1_5_15": os.getloadavg(),
         "rows": rows}, indent=1))
    print(f"\n{'case':<12}{'method':<7}{'impl':<17}{'total s':>9}{'gradients':>10}{'matching':>10}"
          f"{'gemm':>7}{'lap':>7}{'share':>7}{'store MB':>10}{'speedup':>9}")
    for r in rows:
        sp = f"{r['speedup_vs_reference']:>8.2f}x" if r["speedup_vs_reference"] else "        -"
        print(f"{r['case']:<12}{r['method']:<7}{r['impl']:<17}{r['total_s']:>9.2f}"
              f"{r['gradients_s']:>10.2f}{r['matching_s']:>10.2f}{r['matching_gemm_s']:>7.2f}"
              f"{r['matching_lap_s']:>7.2f}{100 * r['matching_share']:>6.0f}%"
              f"{r['pair_store_mb']:>10.1f}{sp}")
