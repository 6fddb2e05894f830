"""Low-rank costs with dead units (the gradient-matching costs of FGMT), and rectangular problems.

These take the routes the cold solver uses for them: constant rows (or, for a square matrix,
constant columns) set aside and the rest solved as a rectangular problem read in place through a
row map (or, transposed, from a copy), where augmenting row reduction runs before the shortest
augmenting paths; plain rectangular problems take the same reduction. Every kernel set is covered
(the SIMD argmin / second-minimum reductions were rewritten). The oracle is SciPy's optimum; the
returned duals are checked for feasibility, tightness and, on rectangular problems, for the
unassigned columns holding the highest price (complementary slackness).
"""

from __future__ import annotations

import numpy as np
import pytest
from isa_subprocess import assert_script_ok

from trajtransfer.core.lap import lap_solve, linear_sum_assignment

scipy_optimize = pytest.importorskip("scipy.optimize")


def low_rank_dead(rng: np.random.Generator, n: int, m: int, rank: int, dead_rows: int,
                  dead_cols: int, dtype) -> np.ndarray:
    """An (n, m) rank-`rank` matrix with `dead_rows` zero rows and `dead_cols` zero columns."""
    c = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))
    c[rng.choice(n, dead_rows, replace=False)] = 0.0
    c[:, rng.choice(m, dead_cols, replace=False)] = 0.0
    return c.astype(dtype)


def check_optimal(cost: np.ndarray, maximize: bool) -> None:
    """Our objective equals SciPy's; the duals certify it."""
    c64 = cost.astype(np.float64)
    r, c = scipy_optimize.linear_sum_assignment(c64, maximize=maximize)
    want = c64[r, c].sum()
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    scale = np.abs(c64).sum() + 1e-30
    assert len(rows) == min(cost.shape)
    assert len(set(cols.tolist())) == len(cols) and len(set(rows.tolist())) == len(rows)
    assert abs(c64[rows, cols].sum() - want) <= 1e-6 * scale

    sol = lap_solve(cost, maximize=maximize)
    assert abs(c64[sol.row_ind, sol.col_ind].sum() - want) <= 1e-6 * scale
    s = -1.0 if maximize else 1.0
    sc = s * c64
    u, v = sol.row_duals.astype(np.float64), sol.col_duals.astype(np.float64)
    red = sc - u[:, None] - v[None, :]
    eps = 1e-5 if cost.dtype == np.float32 else 1e-9
    tol = eps * (np.abs(sc).max() + np.abs(u).max() + np.abs(v).max() + 1e-30)
    assert red.min() >= -tol
    assert np.abs(red[sol.row_ind, sol.col_ind]).max() <= tol
    n, m = cost.shape
    if n < m:  # unassigned columns hold the highest price
        free = np.setdiff1d(np.arange(m), sol.col_ind)
        assert np.all(v[free] >= v.max() - tol)
    elif n > m:  # unassigned rows hold the highest row dual
        free = np.setdiff1d(np.arange(n), sol.row_ind)
        assert np.all(u[free] >= u.max() - tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize(
    "shape,dead_rows,dead_cols",
    [
        ((96, 96), 9, 5),    # more zero rows: solved without them, in place through a row map
        ((96, 96), 5, 9),    # more zero columns: solved transposed without them (a copy)
        ((64, 100), 6, 10),  # wide with zero rows: row map + rectangular route
        ((100, 64), 10, 6),  # tall: transposed, its zero rows are our zero columns
        ((80, 80), 0, 0),    # low rank, nothing constant (square route)
    ],
)
def test_low_rank_dead_units_vs_scipy(dtype, maximize, shape, dead_rows, dead_cols) -> None:
    for seed in range(3):
        rng = np.random.default_rng([seed, *shape, dead_rows, dead_cols])
        rank = int(rng.integers(2, 9))
        cost = low_rank_dead(rng, *shape, rank=rank, dead_rows=dead_rows, dead_cols=dead_cols,
                             dtype=dtype)
        check_optimal(cost, maximize)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("shape", [(30, 45), (45, 30), (120, 128), (2, 7)])
def test_rectangular_uniform_and_ties_vs_scipy(dtype, maximize, shape) -> None:
    # Augmenting row reduction on the rectangular route: continuous costs, and small integer costs
    # (ties between the two smallest reduced costs take its tie branch).
    rng = np.random.default_rng([7, *shape])
    check_optimal(rng.random(shape).astype(dtype), maximize)
    check_optimal(rng.integers(0, 4, shape).astype(dtype), maximize)


def test_rectangular_forbidden_pairs_vs_scipy() -> None:
    # +inf pairs keep the rectangular route on shortest paths only (no reduction): still optimal.
    rng = np.random.default_rng(11)
    for _ in range(20):
        cost = rng.random((20, 31))
        cost[rng.random(cost.shape) < 0.3] = np.inf
        try:
            r, c = scipy_optimize.linear_sum_assignment(cost)
        except ValueError:
            continue
        rows, cols = linear_sum_assignment(cost)
        assert cost[rows, cols].sum() == pytest.approx(cost[r, c].sum(), rel=1e-12)


def test_low_rank_hypothesis() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.given(n=st.integers(16, 48), extra=st.integers(-8, 8), rank=st.integers(1, 6),
                      dead=st.floats(0.0, 0.3), dead_c=st.floats(0.0, 0.3),
                      maximize=st.booleans(), f32=st.booleans(), seed=st.integers(0, 2**31))
    @hypothesis.settings(max_examples=60)
    def prop(n, extra, rank, dead, dead_c, maximize, f32, seed) -> None:
        rng = np.random.default_rng(seed)
        m = max(2, n + extra)
        cost = low_rank_dead(rng, n, m, rank, int(dead * n), int(dead_c * m),
                             np.float32 if f32 else np.float64)
        check_optimal(cost, maximize)

    prop()


_ISA_SCRIPT = r"""
import numpy as np
from scipy.optimize import linear_sum_assignment as ref
from trajtransfer.core.lap import linear_sum_assignment as ours
rng = np.random.default_rng(3)
for t in range(120):
    n, m = (int(x) for x in rng.integers(16, 70, 2))
    c = rng.standard_normal((n, 4)) @ rng.standard_normal((4, m))
    c[rng.choice(n, int(rng.integers(0, n // 4)), replace=False)] = 0.0
    c[:, rng.choice(m, int(rng.integers(0, m // 4)), replace=False)] = 0.0
    if t % 3 == 0:
        c = np.round(c)  # ties
    c = c.astype(np.float32 if t % 2 else np.float64)
    mx = bool(t % 4 < 2)
    r0 = ref(c.astype(np.float64), maximize=mx)
    r1 = ours(c, maximize=mx)
    a, b = c.astype(np.float64)[r0].sum(), c.astype(np.float64)[r1].sum()
    assert abs(a - b) <= 1e-5 * (1 + abs(c).sum()), (t, a, b)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_low_rank_every_kernel_set(isa) -> None:
    assert_script_ok(_ISA_SCRIPT, isa)
