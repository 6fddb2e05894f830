"""Dense LAP benchmarks: ours against SciPy, lapjv and lapx (its fastest variant, lapjvh) in the
same pytest-benchmark group per case, so ratios are read within one run.

Run (OpenBLAS variables unset: they slow OpenBLAS on these machines)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/test_bench_lap.py \\
        --benchmark-json=bench/results/lap.json

Every benchmark checks its answer against SciPy's optimum (computed once per case in float64).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import pytest

from trajtransfer import _core
from trajtransfer.core.lap import lap_solve, linear_sum_assignment, linear_sum_assignment_batch

scipy_optimize = pytest.importorskip("scipy.optimize")
pytest.importorskip("pytest_benchmark")

SIMD = _core.lap.simd_level()  # recorded with every result: "avx512", "avx2" or "base"
SIZES = [256, 1024, 2048, 4096]
DTYPES = {"f32": np.float32, "f64": np.float64}
ROUNDS = {256: 30, 1024: 7, 2048: 3, 4096: 2}


# --- cost families (fixed seeds, cached: generating n = 4096 correlation costs takes seconds) ---


@lru_cache(maxsize=None)
def cost_matrix(family: str, n: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(1000 + n)
    if family == "uniform":
        return rng.random((n, n)).astype(DTYPES[dtype])
    # Correlation-like (two networks' layers): C = A B^T, B a row-permuted noisy copy of A.
    k = 4 * n
    a = rng.standard_normal((n, k), dtype=np.float32)
    b = a[rng.permutation(n)] + 0.5 * rng.standard_normal((n, k), dtype=np.float32)
    return (a @ b.T).astype(DTYPES[dtype])


MAXIMIZE = {"uniform": False, "correlation": True}


@lru_cache(maxsize=None)
def scipy_optimum(family: str, n: int, dtype: str) -> float:
    c = cost_matrix(family, n, dtype).astype(np.float64)
    rows, cols = scipy_optimize.linear_sum_assignment(c, maximize=MAXIMIZE[family])
    return float(c[rows, cols].sum())


def check_total(cost: np.ndarray, rows, cols, want: float) -> None:
    c = cost.astype(np.float64)
    rows, cols = np.asarray(rows), np.asarray(cols)
    assert len(set(cols.tolist())) == len(cols) == min(cost.shape)
    got = float(c[rows, cols].sum())
    scale = float(np.abs(c[rows, cols]).sum())
    eps = np.finfo(cost.dtype).eps
    assert abs(got - want) <= 4 * eps * scale, (got, want)


# --- solvers: (cost, maximize) -> (rows, cols); peers without `maximize` get -cost (negated
# outside the timed region, which only favours them) -----------------------------------------


def _lapjv(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import lapjv

    col_of_row = lapjv.lapjv(c)[0]
    return np.arange(c.shape[0]), col_of_row


def _lapx_h(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import lap

    return lap.lapjvh(c, return_cost=False)


SOLVERS: dict[str, tuple[Callable, bool, bool]] = {
    # name: (fn(cost, maximize), supports maximize, is ours)
    "ours": (lambda c, mx: linear_sum_assignment(c, maximize=mx), True, True),
    "scipy": (lambda c, mx: scipy_optimize.linear_sum_assignment(c, maximize=mx), True, False),
    "lapjv": (lambda c, mx: _lapjv(c), False, False),
    "lapx-lapjvh": (lambda c, mx: _lapx_h(c), False, False),
}


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("family", ["uniform", "correlation"])
@pytest.mark.parametrize("n", SIZES)
def test_dense(benchmark, n: int, family: str, dtype: str, solver: str) -> None:
    if solver in ("lapjv", "lapx-lapjvh"):
        pytest.importorskip({"lapjv": "lapjv", "lapx-lapjvh": "lap"}[solver])
    fn, has_max, ours = SOLVERS[solver]
    cost = cost_matrix(family, n, dtype)
    want = scipy_optimum(family, n, dtype)
    mx = MAXIMIZE[family]
    arg = cost if (has_max or not mx) else -cost
    benchmark.group = f"{family}-{dtype}-n{n}"
    benchmark.extra_info.update(solver=solver, ours=ours, n=n, family=family, dtype=dtype,
                                simd=SIMD)
    slow = n >= 4096 and family == "uniform" and solver in ("scipy", "lapjv")
    rows, cols = benchmark.pedantic(fn, args=(arg, has_max and mx), rounds=1 if slow else ROUNDS[n],
                                    iterations=1, warmup_rounds=0 if n >= 2048 else 1)
    check_total(cost, rows, cols, want)


# --- batches: 64 problems of 256 x 256, one and two threads (proves the GIL is released) ---------

BATCH, BN = 64, 256


@lru_cache(maxsize=None)
def batch_costs(dtype: str) -> np.ndarray:
    return np.random.default_rng(7).random((BATCH, BN, BN)).astype(DTYPES[dtype])


def _rows_cols_from_batch(out: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(BN), np.asarray(out[b])


BATCH_SOLVERS: dict[str, tuple[Callable, bool]] = {
    "ours-2threads": (lambda c: linear_sum_assignment_batch(c, num_threads=2), True),
    "ours-1thread": (lambda c: linear_sum_assignment_batch(c, num_threads=1), False),
    "scipy-loop": (lambda c: np.stack([scipy_optimize.linear_sum_assignment(x)[1] for x in c]),
                   False),
    "lapx-lapjvh_batch-2threads": (
        lambda c: np.stack(__import__("lap").lapjvh_batch(c, return_cost=False, n_threads=2)[1]),
        False),
    "lapx-lapjvh_batch-1thread": (
        lambda c: np.stack(__import__("lap").lapjvh_batch(c, return_cost=False, n_threads=1)[1]),
        False),
}


@pytest.mark.parametrize("solver", list(BATCH_SOLVERS))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_batch(benchmark, dtype: str, solver: str) -> None:
    if solver.startswith("lapx"):
        pytest.importorskip("lap")
    fn, ours = BATCH_SOLVERS[solver]
    costs = batch_costs(dtype)
    # "ours-1thread" is listed as a peer so that the table shows the 2-thread speed-up.
    benchmark.group = f"batch-{BATCH}x{BN}-{dtype}"
    benchmark.extra_info.update(solver=solver, ours=ours, simd=SIMD)
    out = benchmark.pedantic(fn, args=(costs,), rounds=5, iterations=1, warmup_rounds=1)
    for b in range(BATCH):
        c64 = costs[b].astype(np.float64)
        want = c64[scipy_optimize.linear_sum_assignment(c64)].sum()
        check_total(costs[b], *_rows_cols_from_batch(out, b), float(want))


# --- warm re-solve after a perturbation: 1 % multiplicative noise (as between matcher steps; the
# speed-up target), and families where a warm start must not cost more than 1.1x a cold solve:
# 1 % of the entries resampled (the optimum really moves), 20 % noise, every row permuted (prices
# still optimal, the previous pairs wrong), a rank-1 shift c_ij + a_i + b_j (same optimum, every
# column price off) ---------------------------------------------------------------------------

PERTURBATIONS = ["1pct", "resample1pct", "noise20pct", "rowperm", "rank1shift"]


def perturbed(cost: np.ndarray, perturbation: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    n = cost.shape[0]
    if perturbation in ("1pct", "noise20pct"):  # multiplicative noise
        scale = 0.01 if perturbation == "1pct" else 0.2
        return (cost * (1 + scale * rng.standard_normal(cost.shape))).astype(cost.dtype)
    if perturbation == "rowperm":
        return cost[rng.permutation(n)]
    if perturbation == "rank1shift":
        return (cost + 0.1 * rng.random((n, 1)) + 0.1 * rng.random((1, n))).astype(cost.dtype)
    fresh = rng.random(cost.shape).astype(cost.dtype)
    return np.where(rng.random(cost.shape) < 0.01, fresh, cost)


@pytest.mark.parametrize("solver", ["ours-warm", "ours-cold", "scipy"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n", [1024, 2048])
@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_warm_resolve(benchmark, perturbation: str, n: int, dtype: str, solver: str) -> None:
    if solver == "scipy" and perturbation not in ("1pct", "resample1pct"):
        pytest.skip("SciPy is timed on the first two families only (its solve takes ~0.3 s)")
    cost = cost_matrix("uniform", n, dtype)
    new = perturbed(cost, perturbation)
    prev = lap_solve(cost)
    c64 = new.astype(np.float64)
    want = float(c64[scipy_optimize.linear_sum_assignment(c64)].sum())
    fns = {
        "ours-warm": lambda: lap_solve(new, warm_start=prev),
        "ours-cold": lambda: lap_solve(new),
        "scipy": lambda: scipy_optimize.linear_sum_assignment(new),
    }
    benchmark.group = f"warm-{perturbation}-uniform-{dtype}-n{n}"
    # Cold solves are listed as peers so that the table shows the warm-start speed-up.
    benchmark.extra_info.update(solver=solver, ours=solver == "ours-warm", simd=SIMD,
                                perturbation=perturbation)
    # Three times the usual rounds (at least 15 for ours): warm re-solves take ~1 ms, and the
    # machine is shared. Ours also get 5 warm-up rounds, so that warm and cold are both timed in
    # steady state: after the set-up's SciPy solve, the first warm re-solves of the n = 2048
    # float64 matrix ran up to 2.3x slower (4.0, 3.1, 2.8, 2.4, 2.1 ... 1.7 ms) while it came back
    # into cache, a transient that a cold solve's first (warm-up) round absorbs by itself.
    ours = solver != "scipy"
    res = benchmark.pedantic(fns[solver], rounds=max(3 * ROUNDS[n], 15) if ours else 3 * ROUNDS[n],
                             iterations=1, warmup_rounds=5 if ours else 1)
    rows, cols = (res.row_ind, res.col_ind) if solver != "scipy" else res
    check_total(new, rows, cols, want)


# --- gradient-like costs: low rank, with the all-zero rows/columns of dead ReLU units -----------
# (FGMT/GMT cost matrices: rank ~40 of 512, ~6 % zero rows and ~10 % zero columns; cold solve.)


@lru_cache(maxsize=None)
def gradient_cost(n: int) -> np.ndarray:
    rng = np.random.default_rng(2000 + n)
    c = rng.standard_normal((n, 40)) @ rng.standard_normal((40, n)) * 1e-3
    c[rng.choice(n, n * 6 // 100, replace=False)] = 0.0
    c[:, rng.choice(n, n // 10, replace=False)] = 0.0
    return c.astype(np.float32)


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("n", [512])
def test_gradient_like(benchmark, n: int, solver: str) -> None:
    if solver in ("lapjv", "lapx-lapjvh"):
        pytest.importorskip({"lapjv": "lapjv", "lapx-lapjvh": "lap"}[solver])
    fn, has_max, ours = SOLVERS[solver]
    cost = gradient_cost(n)
    c64 = cost.astype(np.float64)
    r, c = scipy_optimize.linear_sum_assignment(c64, maximize=True)
    want = float(c64[r, c].sum())
    benchmark.group = f"gradient-like-float32-n{n}"
    benchmark.extra_info.update(solver=solver, ours=ours, n=n, family="gradient-like",
                                dtype="float32", simd=SIMD)
    arg = cost if has_max else -cost
    rows, cols = benchmark.pedantic(fn, args=(arg, has_max), rounds=10, iterations=1,
                                    warmup_rounds=1)
    check_total(cost, rows, cols, want)
