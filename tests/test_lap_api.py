"""Python API of trajtransfer.core.lap: shapes, dtype policy, torch, warm starts, duals, batches,
threads, large magnitudes and every SIMD kernel set. SciPy is the oracle throughout."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from isa_subprocess import assert_script_ok

from trajtransfer.core.lap import (
    LapSolution,
    lap_solve,
    linear_sum_assignment,
    linear_sum_assignment_batch,
)

scipy_optimize = pytest.importorskip("scipy.optimize")


def scipy_total(cost: np.ndarray, maximize: bool = False) -> float:
    c = np.asarray(cost, dtype=np.float64)
    return float(c[scipy_optimize.linear_sum_assignment(c, maximize=maximize)].sum())


def total(cost: np.ndarray, rows, cols) -> float:
    return float(np.asarray(cost, dtype=np.float64)[np.asarray(rows), np.asarray(cols)].sum())


def correlation_cost(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """A (n, n) correlation-like matrix A B^T, B a row-permuted noisy copy of A."""
    a = rng.standard_normal((n, k))
    b = a[rng.permutation(n)] + 0.5 * rng.standard_normal((n, k))
    return a @ b.T


# --- shapes and input handling -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (3, 0)])
def test_empty_shapes(shape) -> None:
    rows, cols = linear_sum_assignment(np.zeros(shape))
    assert rows.shape == (0,) and cols.shape == (0,)
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    sol = lap_solve(np.zeros(shape))
    assert sol.row_duals.shape == (shape[0],) and sol.col_duals.shape == (shape[1],)
    assert linear_sum_assignment_batch(np.zeros((2, *shape))).shape == (2, 0)


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 2, 2)), np.float64(1.0)])
def test_wrong_ndim_is_a_clear_value_error(bad) -> None:
    msg = rf"^expected a matrix \(2-D array\), got a {np.ndim(bad)} array$"  # SciPy's words
    with pytest.raises(ValueError, match=msg):
        linear_sum_assignment(bad)
    with pytest.raises(ValueError, match=r"costs of shape \(B, n, m\)"):
        linear_sum_assignment_batch(np.zeros((2, 2)))


def test_float32_is_solved_in_float32_and_duals_keep_the_dtype(rng) -> None:
    cost = rng.random((20, 20)).astype(np.float32)
    sol = lap_solve(cost)
    assert sol.row_duals.dtype == np.float32 and sol.col_duals.dtype == np.float32
    assert lap_solve(cost.astype(np.float64)).col_duals.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_, np.float16])
def test_integer_bool_and_half_inputs_are_accepted(rng, dtype) -> None:
    cost = (rng.integers(0, 2 if dtype == np.bool_ else 50, (7, 9))).astype(dtype)
    rows, cols = linear_sum_assignment(cost)
    assert total(cost, rows, cols) == scipy_total(cost.astype(np.float64))


def test_complex_and_object_inputs_raise_type_error() -> None:
    with pytest.raises(TypeError, match="complex"):
        linear_sum_assignment(np.ones((2, 2), dtype=np.complex128))
    with pytest.raises(TypeError, match=r"Cannot cast array data from dtype\('O'\)"):
        linear_sum_assignment(np.array([["a", "b"], ["c", "d"]], dtype=object))


def test_non_contiguous_inputs(rng) -> None:
    base = rng.random((30, 40))
    for view in (base[::2, ::3], base.T, np.asfortranarray(base), base[:, 5:25]):
        rows, cols = linear_sum_assignment(view)
        assert total(view, rows, cols) == pytest.approx(scipy_total(view), abs=1e-12)
    stack = rng.random((4, 12, 10))[:, ::2, :]
    out = linear_sum_assignment_batch(stack)
    for b in range(4):
        rows, cols = linear_sum_assignment(stack[b])
        assert total(stack[b], np.arange(6), out[b]) == pytest.approx(total(stack[b], rows, cols))


def test_torch_cpu_tensors_in_torch_int64_out(rng) -> None:
    torch = pytest.importorskip("torch")
    cost = torch.from_numpy(rng.random((6, 8)).astype(np.float32))
    rows, cols = linear_sum_assignment(cost, maximize=True)
    assert isinstance(rows, torch.Tensor) and isinstance(cols, torch.Tensor)
    assert rows.dtype == torch.int64 and cols.dtype == torch.int64
    assert total(cost.numpy(), rows.numpy(), cols.numpy()) == pytest.approx(
        scipy_total(cost.numpy(), maximize=True), rel=1e-6)
    # Views and tensors that need grad cross as well.
    t = torch.from_numpy(rng.random((9, 7))).requires_grad_(True)
    r2, c2 = linear_sum_assignment(t.T)
    assert total(t.detach().numpy().T, r2.numpy(), c2.numpy()) == pytest.approx(
        scipy_total(t.detach().numpy().T))
    batch = linear_sum_assignment_batch(torch.from_numpy(rng.random((3, 5, 5))))
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.int64


def test_num_threads_validation() -> None:
    with pytest.raises(ValueError, match="num_threads"):
        linear_sum_assignment_batch(np.zeros((2, 3, 3)), num_threads=0)


# --- larger problems, magnitudes, cost families ------------------------------------------


MEDIUM = [(fam, shape) for fam in ("uniform", "integer")
          for shape in [(64, 64), (50, 90), (90, 50), (200, 200), (33, 33)]]
MEDIUM += [("correlation", (n, n)) for n in (64, 200, 33)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("family,shape", MEDIUM)
def test_medium_problems_match_scipy(rng, dtype, shape, family) -> None:
    n, m = shape
    if family == "uniform":
        cost = rng.random(shape)
    elif family == "integer":
        cost = rng.integers(0, 10, shape).astype(np.float64)
    else:
        cost = correlation_cost(rng, n, 4 * n)
    cost = cost.astype(dtype)
    for maximize in (False, True):
        rows, cols = linear_sum_assignment(cost, maximize=maximize)
        want = scipy_total(cost, maximize)
        if dtype == np.float64 or family == "integer":
            assert total(cost, rows, cols) == pytest.approx(want, rel=1e-12, abs=1e-12)
        else:
            scale = np.abs(cost.astype(np.float64)[rows, cols]).sum()
            assert abs(total(cost, rows, cols) - want) <= 4 * np.finfo(np.float32).eps * scale


@pytest.mark.parametrize("offset", [1e8, 1e15])
@pytest.mark.parametrize("maximize", [False, True])
def test_large_magnitude_costs_stay_optimal(rng, offset, maximize) -> None:
    # Integer costs plus a large offset are exact in float64; totals are compared without the
    # offset (each assignment has the same number of pairs), where they are exact integers.
    base = rng.integers(0, 1000, (120, 120)).astype(np.float64)
    base[rng.random(base.shape) < 0.2] = -np.inf if maximize else np.inf
    cost = base + offset
    for c, b in ((cost, base), (np.ascontiguousarray(cost[:60]), base[:60]),
                 (np.ascontiguousarray(cost[:, :70]), base[:, :70])):
        rows, cols = linear_sum_assignment(c, maximize=maximize)
        ref = scipy_optimize.linear_sum_assignment(c, maximize=maximize)
        assert b[rows, cols].sum() == b[ref].sum()


def test_float32_near_overflow_is_solved_in_float64() -> None:
    # Reduced costs of such entries overflow float32; the float64 check/re-solve takes over.
    big = np.finfo(np.float32).max / 2
    cost = np.array([[big, -big, 0], [-big, big, 1], [0, 1, -big]], dtype=np.float32)
    for maximize in (False, True):
        rows, cols = linear_sum_assignment(cost, maximize=maximize)
        assert total(cost, rows, cols) == scipy_total(cost, maximize)


# --- duals and warm starts -------------------------------------------------------------------


def assert_duals_certify(cost: np.ndarray, sol: LapSolution) -> None:
    """u_i + v_j <= s*c_ij everywhere, with equality on the assignment (s = -1 if maximize)."""
    s = -1.0 if sol.maximize else 1.0
    c = s * cost.astype(np.float64)
    u = sol.row_duals.astype(np.float64)
    v = sol.col_duals.astype(np.float64)
    finite = np.isfinite(c)
    tol = 64 * np.finfo(sol.col_duals.dtype).eps * (1 + np.abs(c[finite]).max())
    slack = c - u[:, None] - v[None, :]
    assert slack[finite].min() >= -tol
    np.testing.assert_allclose(slack[sol.row_ind, sol.col_ind], 0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("shape", [(40, 40), (30, 45), (45, 30)])
def test_duals_are_feasible_and_tight(rng, dtype, maximize, shape) -> None:
    cost = rng.random(shape).astype(dtype)
    sol = lap_solve(cost, maximize=maximize)
    assert_duals_certify(cost, sol)
    assert sol.objective(cost) == pytest.approx(scipy_total(cost, maximize), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("perturbation", ["multiplicative", "additive", "resample"])
def test_warm_start_gives_the_cold_optimum(rng, dtype, maximize, perturbation) -> None:
    n = 150
    cost = rng.random((n, n)).astype(dtype)
    prev = lap_solve(cost, maximize=maximize)
    for _ in range(3):
        if perturbation == "multiplicative":
            new = cost * (1 + 0.01 * rng.standard_normal(cost.shape))
        elif perturbation == "additive":
            new = cost + 0.01 * rng.random(cost.shape)
        else:
            new = np.where(rng.random(cost.shape) < 0.01, rng.random(cost.shape), cost)
        new = new.astype(dtype)
        warm = lap_solve(new, maximize=maximize, warm_start=prev)
        cold = lap_solve(new, maximize=maximize)
        assert warm.objective(new) == pytest.approx(cold.objective(new), rel=1e-6)
        assert warm.objective(new) == pytest.approx(scipy_total(new, maximize), rel=1e-6)
        assert_duals_certify(new, warm)
        cost, prev = new, warm


def test_warm_start_from_column_duals_only_and_with_forbidden_pairs(rng) -> None:
    cost = rng.random((60, 60))
    prev = lap_solve(cost)
    new = cost + 0.05 * rng.random(cost.shape)
    new[rng.random(new.shape) < 0.3] = np.inf
    sol = lap_solve(new, col_duals=prev.col_duals)
    assert sol.objective(new) == scipy_total(new)
    sol = lap_solve(new, warm_start=prev)
    assert sol.objective(new) == scipy_total(new)
    # Arbitrary (even absurd) prices only change the speed, never the optimum.
    sol = lap_solve(new, col_duals=rng.normal(scale=100, size=60),
                    init_col_ind=rng.permutation(60))
    assert sol.objective(new) == scipy_total(new)


def test_warm_start_validation(rng) -> None:
    cost = rng.random((5, 5))
    prev = lap_solve(cost)
    with pytest.raises(ValueError, match="maximize"):
        lap_solve(cost, maximize=True, warm_start=prev)
    with pytest.raises(ValueError, match="shape"):
        lap_solve(rng.random((6, 6)), warm_start=prev)
    with pytest.raises(ValueError, match="col_duals"):
        lap_solve(cost, col_duals=np.zeros(4))
    with pytest.raises(ValueError, match="needs col_duals"):
        lap_solve(cost, init_col_ind=np.arange(5))
    # A hand-made solution: its pairs are checked before they seed the solve.
    bad_col = LapSolution(prev.row_ind, np.array([0, 1, 2, 3, 7]), prev.row_duals, prev.col_duals,
                          False)
    with pytest.raises(ValueError, match=r"pair \(4, 7\) lies outside a 5 x 5 problem"):
        lap_solve(cost, warm_start=bad_col)
    short = LapSolution(prev.row_ind, prev.col_ind[:3], prev.row_duals, prev.col_duals, False)
    as_int32 = LapSolution(prev.row_ind.astype(np.int32), prev.col_ind.astype(np.int32),
                           prev.row_duals, prev.col_duals, False)
    np.testing.assert_array_equal(lap_solve(cost, warm_start=as_int32).col_ind, prev.col_ind)
    with pytest.raises(ValueError, match="5 row indices but 3 column indices"):
        lap_solve(cost, warm_start=short)


# --- batches and threads ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(24, 24), (16, 24), (24, 16)])
@pytest.mark.parametrize("num_threads", [1, 2, 5])
def test_batch_equals_single_solves(rng, dtype, shape, num_threads) -> None:
    costs = rng.random((9, *shape)).astype(dtype)
    out = linear_sum_assignment_batch(costs, maximize=True, num_threads=num_threads)
    assert out.shape == (9, min(shape))
    for b in range(9):
        rows, cols = linear_sum_assignment(costs[b], maximize=True)
        # Same deterministic algorithm: the very same assignment, not just the same total.
        if shape[0] <= shape[1]:
            np.testing.assert_array_equal(out[b], cols)
        else:
            np.testing.assert_array_equal(out[b][cols], rows)


def test_concurrent_python_threads_give_identical_answers(rng) -> None:
    costs = [rng.random((120, 120)) for _ in range(16)]
    costs += [correlation_cost(rng, 120, 64).astype(np.float32) for _ in range(8)]
    expected = [linear_sum_assignment(c, maximize=i % 2 == 1) for i, c in enumerate(costs)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda ic: linear_sum_assignment(ic[1], maximize=ic[0] % 2 == 1),
                            enumerate(costs * 2)))
        batches = list(pool.map(lambda _: linear_sum_assignment_batch(np.stack(costs[:16]),
                                                                      num_threads=2), range(3)))
    for (r0, c0), (r1, c1) in zip(expected * 2, got):
        np.testing.assert_array_equal(r0, r1)
        np.testing.assert_array_equal(c0, c1)
    for out in batches:
        for b in range(0, 16, 2):  # the minimisation problems
            np.testing.assert_array_equal(out[b], expected[b][1])


# --- every SIMD kernel set -------------------------------------------------------------------

_ISA_SCRIPT = r"""
import numpy as np
from scipy.optimize import linear_sum_assignment as ref
from trajtransfer.core.lap import linear_sum_assignment as ours
rng = np.random.default_rng(7)
for t in range(300):
    n, m = rng.integers(1, 40, 2)
    c = rng.random((n, m)) if t % 3 else rng.integers(0, 5, (n, m)).astype(float)
    if t % 5 == 0:
        c[rng.random((n, m)) < 0.2] = np.inf
    dt = np.float32 if t % 2 else np.float64
    c = c.astype(dt)
    mx = bool(t % 4 == 1)
    if mx:
        c[c == np.inf] = -np.inf
    try:
        r0 = ref(c.astype(np.float64), maximize=mx)
    except ValueError:
        continue
    r1 = ours(c, maximize=mx)
    a, b = c.astype(np.float64)[r0].sum(), c.astype(np.float64)[r1].sum()
    assert abs(a - b) <= 1e-5 * (1 + abs(a)), (t, a, b)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_every_kernel_set_is_optimal(isa) -> None:
    """The run-time dispatch picks the widest ISA; force the narrower ones in a subprocess."""
    assert_script_ok(_ISA_SCRIPT, isa)
