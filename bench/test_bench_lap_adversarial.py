"""Adversarial dense LAP families: ours against SciPy and lapx (lapjvh) in one pytest-benchmark
group per case, so ratios are read within one run. Target (bench/ratio_table.py --targets):
every family, ours at most 2x SciPy's time.

Run (OpenBLAS variables unset, as for bench/test_bench_lap.py)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest \\
        bench/test_bench_lap_adversarial.py --benchmark-json=bench/results/lap_adversarial.json

Every benchmark checks its answer against SciPy's optimum (computed once per case, float64).
rank-1 and i*j costs at n = 2000 take seconds per solve for every solver (SciPy ~4-13 s): those
run one round.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from test_bench_lap import SIMD, check_total
from trajtransfer.core.lap import linear_sum_assignment

scipy_optimize = pytest.importorskip("scipy.optimize")
pytest.importorskip("pytest_benchmark")

SIZES = [500, 2000]


@lru_cache(maxsize=None)
def cost_matrix(family: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(3000 + n)
    if family == "all-ties":
        return np.ones((n, n))
    if family == "zero-inf":  # half the pairs forbidden, the rest tied
        return np.where(rng.random((n, n)) < 0.5, np.inf, 0.0)
    if family == "zero-one":
        return rng.integers(0, 2, (n, n)).astype(np.float64)
    if family == "rank-1":  # every row a multiple of every other: long shortest paths
        return np.outer(rng.random(n), rng.random(n))
    if family == "i-times-j":
        a = np.arange(n, dtype=np.float64)
        return np.outer(a, a)
    if family == "huge-offset":  # 1e12 + small integers: reduced costs far below the entries
        return 1e12 + rng.integers(0, 100, (n, n)).astype(np.float64)
    if family == "ties-inf-holes":
        return np.where(rng.random((n, n)) < 0.3, np.inf,
                        rng.integers(0, 3, (n, n)).astype(np.float64))
    raise ValueError(family)


FAMILIES = ["all-ties", "zero-inf", "zero-one", "rank-1", "i-times-j", "huge-offset",
            "ties-inf-holes"]
SLOW = {"rank-1", "i-times-j"}


@lru_cache(maxsize=None)
def scipy_optimum(family: str, n: int) -> float:
    c = cost_matrix(family, n)
    rows, cols = scipy_optimize.linear_sum_assignment(c)
    return float(c[rows, cols].sum())


def _lapx_h(c: np.ndarray):
    import lap

    return lap.lapjvh(c, return_cost=False)


SOLVERS = {
    "ours": (linear_sum_assignment, True),
    "scipy": (scipy_optimize.linear_sum_assignment, False),
    "lapx-lapjvh": (_lapx_h, False),
}


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n", SIZES)
def test_adversarial(benchmark, n: int, family: str, solver: str) -> None:
    if solver == "lapx-lapjvh":
        pytest.importorskip("lap")
    fn, ours = SOLVERS[solver]
    cost = cost_matrix(family, n)
    want = scipy_optimum(family, n)
    benchmark.group = f"adversarial-{family}-n{n}"
    benchmark.extra_info.update(solver=solver, ours=ours, n=n, family=family, simd=SIMD)
    slow = family in SLOW and n >= 2000
    rounds = 1 if slow else (3 if n >= 2000 or family in SLOW else 15)
    rows, cols = benchmark.pedantic(fn, args=(cost,), rounds=rounds, iterations=1,
                                    warmup_rounds=0 if slow else 1)
    check_total(cost, rows, cols, want)
