"""Large dense LAPs whose streaming passes split over two threads (n * m >= 2**19 entries: the
warm row scan, the cold column minima and reduction transfer). The split must never change a
result: SciPy's optimum with certifying duals, the same assignment as the batch API (whose solves
stay on one thread inside), identical repeated solves, and validation of every row (the helper
thread's rows included), in every SIMD kernel set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from isa_subprocess import assert_script_ok
from lap_checks import assert_optimal_and_certified, scipy_total

import trajtransfer

from trajtransfer.core.lap import lap_solve, linear_sum_assignment_batch

scipy_optimize = pytest.importorskip("scipy.optimize")

N = 768  # 768**2 = 589824 entries: above the split threshold, small enough for quick tests


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [False, True])
def test_split_cold_and_warm_solves_are_optimal_and_deterministic(rng, dtype, maximize) -> None:
    cost = rng.random((N, N)).astype(dtype)
    cold = lap_solve(cost, maximize=maximize)
    assert_optimal_and_certified(cost, cold)
    # Same assignment as a one-thread solve of the same matrix (batch workers never split).
    one_thread = linear_sum_assignment_batch(cost[None], maximize=maximize, num_threads=1)
    np.testing.assert_array_equal(one_thread[0], cold.col_ind)
    new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dtype)
    warm = lap_solve(new, maximize=maximize, warm_start=cold)
    assert_optimal_and_certified(new, warm)
    for _ in range(2):  # whichever rows the helper thread scans, the outcome is the same
        again = lap_solve(new, maximize=maximize, warm_start=cold)
        np.testing.assert_array_equal(again.col_ind, warm.col_ind)
        np.testing.assert_array_equal(again.col_duals, warm.col_duals)
        np.testing.assert_array_equal(again.row_duals, warm.row_duals)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_passes_break_ties_as_one_thread(rng, dtype) -> None:
    # Small integer costs: every column minimum is shared by many rows, so the merge of the two
    # threads' column minima must keep the lowest row, as the one-thread pass does.
    cost = rng.integers(0, 6, (N, N)).astype(dtype)
    sol = lap_solve(cost)
    assert_optimal_and_certified(cost, sol)
    one_thread = linear_sum_assignment_batch(cost[None], num_threads=1)
    np.testing.assert_array_equal(one_thread[0], sol.col_ind)
    for _ in range(5):  # back-to-back solves find the helper awake: it takes part in each pass
        np.testing.assert_array_equal(lap_solve(cost).col_ind, one_thread[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("row", [5, N // 2 + 3, N - 1])
def test_split_passes_validate_every_row(rng, dtype, row) -> None:
    cost = rng.random((N, N)).astype(dtype)
    prev = lap_solve(cost)
    new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dtype)
    bad = new.copy()
    bad[row, 7] = np.nan
    with pytest.raises(ValueError, match="invalid numeric entries"):
        lap_solve(bad)
    with pytest.raises(ValueError, match="invalid numeric entries"):
        lap_solve(bad, warm_start=prev)
    holes = new.copy()
    holes[row, : N // 2] = np.inf  # forbidden pairs in one row only
    for sol in (lap_solve(holes), lap_solve(holes, warm_start=prev)):
        assert np.all(np.isfinite(holes[sol.row_ind, sol.col_ind]))
        assert sol.objective(holes) == pytest.approx(scipy_total(holes, False), rel=1e-9)


def test_split_batch_of_large_problems_matches_single_solves(rng) -> None:
    costs = rng.random((3, N, N)).astype(np.float32)
    out = linear_sum_assignment_batch(costs, num_threads=2)
    for b in range(3):
        np.testing.assert_array_equal(out[b], lap_solve(costs[b]).col_ind)


_ISA_SCRIPT = r"""
import numpy as np
from scipy.optimize import linear_sum_assignment as ref
from trajtransfer.core.lap import lap_solve
rng = np.random.default_rng(5)
for dt in (np.float32, np.float64):
    cost = rng.random((768, 768)).astype(dt)
    prev = lap_solve(cost)
    new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dt)
    for sol in (prev, lap_solve(new, warm_start=prev)):
        c = (cost if sol is prev else new).astype(np.float64)
        a, b = c[ref(c)].sum(), c[sol.row_ind, sol.col_ind].sum()
        assert abs(a - b) <= 1e-5 * (1 + abs(a)), (a, b)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_split_passes_in_every_kernel_set(isa) -> None:
    assert_script_ok(_ISA_SCRIPT, isa)


_ONE_THREAD_SCRIPT = r"""
import sys
import numpy as np
from trajtransfer.core.lap import lap_solve
rng = np.random.default_rng(9)
out = {}
for dt in (np.float32, np.float64):
    cost = rng.random((768, 768)).astype(dt)
    prev = lap_solve(cost, maximize=dt == np.float64)
    new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dt)
    sol = lap_solve(new, maximize=dt == np.float64, warm_start=prev)
    for name, s in (("cold", prev), ("warm", sol)):
        for field in ("col_ind", "row_duals", "col_duals"):
            out[f"{np.dtype(dt).name}_{name}_{field}"] = getattr(s, field)
np.savez(sys.argv[1], **out)
"""


def test_split_and_one_thread_solves_are_identical(tmp_path) -> None:
    """The same solves with the split disabled (TRAJTRANSFER_LAP_THREADS=1, in a subprocess)
    return bit-identical assignments and duals, cold and warm."""
    root = str(Path(trajtransfer.__file__).resolve().parents[1])
    results = {}
    for threads in ("1", "2"):
        env = dict(os.environ, TRAJTRANSFER_LAP_THREADS=threads)
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
        path = tmp_path / f"out{threads}.npz"
        done = subprocess.run([sys.executable, "-c", _ONE_THREAD_SCRIPT, str(path)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        with np.load(path) as z:
            results[threads] = {k: z[k] for k in z.files}
    assert len(results["1"]) == 12
    for key, value in results["1"].items():
        np.testing.assert_array_equal(results["2"][key], value, err_msg=key)
