"""Warm re-solves of trajtransfer.core.lap.lap_solve: exact optimum (SciPy oracle) and certifying duals
after perturbations of every strength (so both the warm route and its automatic cold restart
run), across magnitudes that stress the float32 verification (whose row bounds now come from the
row caches), in every SIMD kernel set."""

from __future__ import annotations


import numpy as np
import pytest
from isa_subprocess import assert_script_ok
from lap_checks import assert_optimal_and_certified, scipy_total

from trajtransfer.core.lap import lap_solve

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

scipy_optimize = pytest.importorskip("scipy.optimize")


def perturb(rng: np.random.Generator, cost: np.ndarray, kind: str, strength: float) -> np.ndarray:
    if kind == "multiplicative":
        new = cost * (1 + strength * rng.standard_normal(cost.shape))
    elif kind == "additive":
        new = cost + strength * np.abs(cost).mean() * rng.random(cost.shape)
    else:  # resample a fraction `strength` of the entries
        fresh = rng.random(cost.shape) * np.abs(cost).max()
        new = np.where(rng.random(cost.shape) < strength, fresh, cost)
    return new.astype(cost.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [False, True])
def test_unchanged_problem_keeps_every_pair_and_price(rng, dtype, maximize) -> None:
    # float32 duals are tight only to about an ulp; the warm start must still accept every pair
    # (before, ~9 % of the rows of such a problem were freed and re-augmented, moving prices).
    # The float32 warm path itself is what is tested (exact=False): the exact check re-augments
    # the rows that are not tight in float64, which moves prices by a rounding (tested below).
    cost = rng.random((300, 300)).astype(dtype)
    prev = lap_solve(cost, maximize=maximize, exact=False)
    again = lap_solve(cost, maximize=maximize, warm_start=prev, exact=False)
    np.testing.assert_array_equal(again.col_ind, prev.col_ind)
    np.testing.assert_array_equal(again.col_duals, prev.col_duals)
    assert_optimal_and_certified(cost, again)
    exact = lap_solve(cost, maximize=maximize)
    exact_again = lap_solve(cost, maximize=maximize, warm_start=exact)
    np.testing.assert_array_equal(exact_again.col_ind, exact.col_ind)
    assert_optimal_and_certified(cost, exact_again)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [False, True])
def test_previous_pairs_that_became_forbidden_are_dropped(rng, dtype, maximize) -> None:
    cost = rng.random((120, 120)).astype(dtype)
    prev = lap_solve(cost, maximize=maximize)
    new = cost.copy()
    new[prev.row_ind[::3], prev.col_ind[::3]] = -np.inf if maximize else np.inf
    sol = lap_solve(new, maximize=maximize, warm_start=prev)
    assert np.all(np.isfinite(new[sol.row_ind, sol.col_ind]))
    assert sol.objective(new) == pytest.approx(scipy_total(new, maximize), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cold_restart_still_validates_and_handles_forbidden_pairs(rng, dtype) -> None:
    # A fully resampled matrix makes the warm pass give up after its row sample (every 8th row);
    # entries only in the other rows must still be validated, and forbidden pairs honoured.
    cost = rng.random((200, 200)).astype(dtype)
    prev = lap_solve(cost)
    new = rng.random((200, 200)).astype(dtype)
    bad = new.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="invalid numeric entries"):
        lap_solve(bad, warm_start=prev)
    bad[3, 5] = -np.inf
    with pytest.raises(ValueError, match="invalid numeric entries"):
        lap_solve(bad, warm_start=prev)
    holes = new.copy()
    holes[1::8, :150] = np.inf
    sol = lap_solve(holes, warm_start=prev)
    assert np.all(np.isfinite(holes[sol.row_ind, sol.col_ind]))
    assert sol.objective(holes) == pytest.approx(scipy_total(holes, False), rel=1e-6)
    holes[1::8, :] = np.inf
    with pytest.raises(ValueError, match="infeasible"):
        lap_solve(holes, warm_start=prev)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind, strength", [("multiplicative", 0.01), ("resample", 0.01),
                                            ("resample", 0.3), ("resample", 1.0)])
def test_medium_warm_resolves_match_scipy(rng, dtype, kind, strength) -> None:
    # n = 400 leaves the float32 verification to the row caches on every ISA (W <= 16 columns);
    # strong resampling triggers the automatic cold restart, weak noise keeps the warm route.
    cost = rng.random((400, 400)).astype(dtype)
    prev = lap_solve(cost)
    for _ in range(2):
        new = perturb(rng, cost, kind, strength)
        sol = lap_solve(new, warm_start=prev)
        assert_optimal_and_certified(new, sol)
        cost, prev = new, sol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", sorted({k * w + d for w in (2, 4, 8, 16) for k in (1, 2, 3)
                                      for d in (-1, 0, 1)}))
def test_row_caches_at_lane_boundaries(rng, dtype, n) -> None:
    """Sizes around one, two and three SIMD widths of every kernel set: the row caches keep one
    column per lane, and lanes beyond the last full vector fall to the scalar tail. Integer costs
    make ARR ties and cache failures frequent. (Two-per-lane refills start at m = 8 W^2: see
    test_deep_row_cache_refills_match_scipy, and the base kernel set in the ISA test below.)"""
    cost = rng.integers(0, 6, (n, n)).astype(dtype)
    for maximize in (False, True):
        prev = lap_solve(cost, maximize=maximize)
        assert_optimal_and_certified(cost, prev)
        new = cost.copy()
        for _ in range(3):
            new = (new + rng.integers(0, 2, (n, n))).astype(dtype)
            prev = lap_solve(new, maximize=maximize, warm_start=prev)
            assert_optimal_and_certified(new, prev)


@pytest.mark.parametrize("dtype, n", [(np.float64, 600), (np.float64, 1024), (np.float32, 2048)])
@pytest.mark.parametrize("integer", [False, True])
def test_deep_row_cache_refills_match_scipy(rng, dtype, n, integer) -> None:
    """Rows long enough (m >= 8 W^2 with AVX-512: float64 from 512, float32 from 2048) that a
    failed row cache is refilled two columns per lane: cold and warm solves, ARR ties (integer
    costs) and, for float32, the float64 check reading the deeper caches. float64 n = 1024 is
    past 2^19 entries: the warm pass then runs the two-set scan on both threads (2W-column
    caches marked before the split)."""
    if integer:
        cost = rng.integers(0, 50, (n, n)).astype(dtype)
    else:
        cost = rng.random((n, n)).astype(dtype)
    prev = lap_solve(cost, maximize=integer)
    assert_optimal_and_certified(cost, prev)
    for _ in range(2):
        new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dtype)
        prev = lap_solve(new, maximize=integer, warm_start=prev)
        assert_optimal_and_certified(new, prev)
        cost = new


@settings(max_examples=60)
@given(n=st.integers(16, 70), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), maximize=st.booleans(),
       exponent=st.integers(-140, 100), wide=st.booleans(),
       kind=st.sampled_from(["multiplicative", "additive", "resample"]),
       strength=st.sampled_from([1e-6, 1e-2, 0.3, 1.0]))
def test_chained_warm_starts_are_optimal_at_every_scale(n, seed, dtype, maximize, exponent, wide,
                                                        kind, strength) -> None:
    """Three chained warm re-solves (as between matcher steps) on costs scaled by 2**exponent
    (float32: from subnormal to ~1e30), optionally spread over many binades, reach SciPy's
    optimum with certifying duals."""
    rng = np.random.default_rng(seed)
    if dtype == np.float64:
        exponent = max(exponent, -100)
    base = rng.random((n, n))
    if wide:  # entries spread over ~40 binades: float32 differences are far from exact
        base = base * 2.0 ** rng.integers(-20, 20, (n, n))
    cost = (base * 2.0**exponent).astype(dtype)
    if not np.all(np.isfinite(cost)):
        return
    prev = lap_solve(cost, maximize=maximize)
    assert_optimal_and_certified(cost, prev)
    for _ in range(3):
        new = perturb(rng, cost, kind, strength)
        sol = lap_solve(new, maximize=maximize, warm_start=prev)
        assert_optimal_and_certified(new, sol)
        cost, prev = new, sol


_ISA_SCRIPT = r"""
import numpy as np
from scipy.optimize import linear_sum_assignment as ref
from trajtransfer.core.lap import lap_solve
rng = np.random.default_rng(3)
for t in range(60):
    n = int(rng.integers(16, 90))
    dt = np.float32 if t % 2 else np.float64
    mx = bool(t % 4 == 1)
    cost = rng.random((n, n)).astype(dt)
    prev = lap_solve(cost, maximize=mx)
    for step in range(3):
        if t % 3 == 0:
            new = cost * (1 + 0.01 * rng.standard_normal(cost.shape))
        elif t % 3 == 1:
            new = np.where(rng.random(cost.shape) < 0.02, rng.random(cost.shape), cost)
        else:
            new = np.where(rng.random(cost.shape) < 0.5, rng.random(cost.shape), cost)
        new = new.astype(dt)
        sol = lap_solve(new, maximize=mx, warm_start=prev)
        c64 = new.astype(np.float64)
        a, b = c64[ref(c64, maximize=mx)].sum(), c64[sol.row_ind, sol.col_ind].sum()
        assert abs(a - b) <= 1e-5 * (1 + abs(a)), (t, step, a, b)
        cost, prev = new, sol
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_warm_starts_in_every_kernel_set(isa) -> None:
    """The row-cache kernels (cached costs, bounds) of the narrower ISAs, forced in a subprocess."""
    assert_script_ok(_ISA_SCRIPT, isa)


# Sizes m = 8 W^2 + W + t (W = 2, 4, 8: the lane counts whose warm pass runs two lane sets,
# min2_wide_body): the two-set loop, one odd vector for the first set, and a scalar tail of t.
_TWO_SET_SCRIPT = r"""
import numpy as np
from scipy.optimize import linear_sum_assignment as ref
from trajtransfer.core.lap import lap_solve

def check(cost, sol, mx):
    c64 = cost.astype(np.float64)
    n = len(c64)
    assert sorted(sol.col_ind.tolist()) == list(range(n))
    want = c64[ref(c64, maximize=mx)].sum()
    got = c64[sol.row_ind, sol.col_ind].sum()
    eps = np.finfo(cost.dtype).eps
    assert abs(got - want) <= 4 * eps * np.abs(c64[sol.row_ind, sol.col_ind]).sum(), (got, want)
    s = -1.0 if mx else 1.0
    slack = s * c64 - sol.row_duals.astype(np.float64)[:, None] - sol.col_duals[None, :]
    tol = 64 * eps * (np.abs(c64[np.isfinite(c64)]).max() + np.abs(sol.col_duals).max())
    assert slack.min() >= -tol and np.abs(slack[sol.row_ind, sol.col_ind]).max() <= tol

rng = np.random.default_rng(5)
for n in (35, 135, 525):
    for dt in (np.float64, np.float32):
        for integer in (False, True):
            mx = integer
            cost = (rng.integers(0, 40, (n, n)) if integer else rng.random((n, n))).astype(dt)
            prev = lap_solve(cost, maximize=mx)
            for step in range(2):
                new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dt)
                sol = lap_solve(new, maximize=mx, warm_start=prev)
                check(new, sol, mx)
                cost, prev = new, sol
        # Validation folded into the two-set pass: an entry in the first set's lanes, the second
        # set's, the odd vector and the scalar tail. NaN and -inf are invalid; +inf is forbidden.
        cost = rng.random((n, n)).astype(dt)
        prev = lap_solve(cost)
        w = {35: 2, 135: 4, 525: 8}[n]
        for col in (0, w, n - n % w - 1, n - 1):
            for bad in (np.nan, -np.inf):
                c = cost.copy()
                c[n // 2, col] = bad
                try:
                    lap_solve(c, warm_start=prev)
                except ValueError as e:
                    assert "invalid numeric entries" in str(e), e
                else:
                    raise AssertionError((n, dt, col, bad))
            c = cost.copy()
            c[prev.row_ind, prev.col_ind] = np.where(prev.col_ind == col, np.inf, cost[prev.row_ind, prev.col_ind])
            c[n // 3, col] = np.inf
            sol = lap_solve(c, warm_start=prev)
            assert np.all(np.isfinite(c[sol.row_ind, sol.col_ind]))
            check(c, sol, False)
        # Finite entries in both sets of one step whose sum overflows: the NaN-propagating sum
        # flags the row, the scalar rescan finds nothing invalid.
        c = cost.copy()
        c[::5, 0] = c[::5, w] = np.finfo(dt).max * 0.6
        check(c, lap_solve(c, warm_start=prev), False)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_two_set_warm_pass_in_every_kernel_set(isa) -> None:
    """The warm pass over two lane sets (2W-column row caches; validation by a NaN-propagating
    sum): optimal, certified warm re-solves (ties included) and SciPy's error contract for NaN,
    -inf and +inf in either set, the odd vector and the scalar tail, per kernel set."""
    assert_script_ok(_TWO_SET_SCRIPT, isa)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prices_out_of_scale_never_change_the_outcome(rng, dtype) -> None:
    """Warm prices far larger than the costs round the reduced costs away (float64 prices
    (1e300, -1e300) on [[0, 1], [1, 0]] gave total 2, optimum 0) or overflow them (+-max made a
    feasible problem "infeasible"): ignored or re-solved cold, the optimum is SciPy's."""
    big = float(np.finfo(dtype).max)
    two = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)
    for prices in ([big, -big], [-big, big], [big / 300, -big / 300], [1e30, -1e30]):
        sol = lap_solve(two, col_duals=np.array(prices, dtype=dtype))
        assert sol.objective(two) == 0.0, prices
    cost = rng.random((60, 60)).astype(dtype)
    for scale in (1e8, 1e16, 1e30, big / 4):
        for maximize in (False, True):
            prices = (rng.standard_normal(60) * scale).astype(dtype)
            sol = lap_solve(cost, maximize=maximize, col_duals=prices)
            assert sol.objective(cost) == pytest.approx(scipy_total(cost, maximize), rel=1e-6), scale
            assert_optimal_and_certified(cost, sol)


# --- when a warm start gives up for a cold solve (the solver's counters say which route ran) ----


def _warm_stats(cost: np.ndarray, new: np.ndarray) -> dict:
    from trajtransfer import _core

    prev = lap_solve(cost)
    sol = lap_solve(new, warm_start=prev)
    stats = _core.lap.last_solve_stats()
    assert_optimal_and_certified(new, sol)
    return stats


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_noise_keeps_the_warm_start_and_costs_little(rng, dtype) -> None:
    # Minimising: the optimum lies on entries near 0, which 1 % multiplicative noise hardly moves.
    cost = rng.random((512, 512)).astype(dtype)
    new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dtype)
    st = _warm_stats(cost, new)
    assert st["cold_restarts"] == 0 and st["warm_rows_read"] == 512
    # ARR re-scans few rows (path_scans also counts float32's float64 repair, not a warm cost)
    assert st["arr_scans"] < 512 // 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["column_shift", "rank_one_shift", "row_permutation"])
def test_moved_prices_or_rows_give_up_after_the_row_sample(rng, dtype, family) -> None:
    # Shifted column prices send every row to the same few columns; permuted rows leave every
    # previous pair far from tight. Either shows on 1/8 of the rows, which is all that is read.
    n = 512
    cost = rng.random((n, n)).astype(dtype)
    if family == "column_shift":
        new = cost + 0.5 * rng.random((1, n))
    elif family == "rank_one_shift":
        new = cost + 0.5 * rng.random((n, 1)) + 0.5 * rng.random((1, n))
    else:
        new = cost[rng.permutation(n)]
    st = _warm_stats(cost, new.astype(dtype))
    assert st["cold_restarts"] == 1 and st["warm_rows_read"] == n // 8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_heavy_resampling_gives_up_after_the_row_sample(rng, dtype) -> None:
    cost = rng.random((1024, 1024)).astype(dtype)
    new = np.where(rng.random(cost.shape) < 0.05, rng.random(cost.shape), cost).astype(dtype)
    st = _warm_stats(cost, new)
    assert st["cold_restarts"] == 1 and st["warm_rows_read"] == 1024 // 8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_resampling_gives_up_after_the_row_sample(dtype) -> None:
    # 1 % of the entries redrawn: few pairs move, but a row whose own entry was redrawn needs a
    # long augmenting path (the warm start cost up to 2x a cold solve). The row sample sees such
    # rows by their gap, far above the rows' spreads; a fixed seed makes the sample hit some.
    rng = np.random.default_rng(1024)
    n = 1024
    cost = rng.random((n, n)).astype(dtype)
    new = np.where(rng.random(cost.shape) < 0.01, rng.random(cost.shape), cost).astype(dtype)
    st = _warm_stats(cost, new)
    assert st["cold_restarts"] == 1 and st["warm_rows_read"] == n // 8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("far_rows", [0, 1])
def test_sampled_rows_that_lost_their_pair_decide_the_route(rng, dtype, far_rows) -> None:
    # The same 1 % noise everywhere; in `far_rows` sampled rows (every 8th) the previous pair's
    # cost rises by 0.15, ~140 mean row spreads: too little for the sample's summed gap ratio
    # (~2.3 here), but such a row predicts a path of ~140 scans, 8x over the unsampled rows,
    # more than n in all: a cold restart. Without it the warm start goes on.
    n = 512
    cost = rng.random((n, n)).astype(dtype)
    prev_cols = lap_solve(cost).col_ind
    new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(dtype)
    for i in range(0, 8 * far_rows, 8):
        new[i, prev_cols[i]] += 0.15
    st = _warm_stats(cost, new)
    gives_up = far_rows > 0
    assert st["cold_restarts"] == int(gives_up)
    assert st["warm_rows_read"] == (n // 8 if gives_up else n)


@pytest.mark.parametrize("dtype, exact, gives_up", [(np.float32, True, True),
                                                    (np.float32, False, False),
                                                    (np.float64, True, False)])
def test_strong_noise_gives_up_on_the_sample_only_where_the_float64_repair_follows(
        dtype, exact, gives_up) -> None:
    # 20 % multiplicative noise: the sample's gap ratio (~0.35) is far below the give-up ratio
    # of the float32-only and float64 solves, whose warm start stays ~1.2x faster than cold; an
    # exact float32 solve would follow it by a long float64 repair, so it restarts cold.
    from trajtransfer import _core

    rng = np.random.default_rng(1024)
    n = 1024
    cost = rng.random((n, n)).astype(dtype)
    new = (cost * (1 + 0.2 * rng.standard_normal(cost.shape))).astype(dtype)
    prev = lap_solve(cost, exact=exact)
    sol = lap_solve(new, warm_start=prev, exact=exact)
    st = _core.lap.last_solve_stats()
    assert st["cold_restarts"] == int(gives_up)
    assert st["warm_rows_read"] == (n // 8 if gives_up else n)
    if exact:
        assert_optimal_and_certified(new, sol)
    else:
        assert sol.objective(new) == pytest.approx(scipy_total(new, False), rel=1e-6)
    # 5 % noise keeps the warm start in every mode
    mild = (cost * (1 + 0.05 * rng.standard_normal(cost.shape))).astype(dtype)
    lap_solve(mild, warm_start=prev, exact=exact)
    assert _core.lap.last_solve_stats()["cold_restarts"] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_change_the_row_sample_misses_still_gives_up(rng, dtype) -> None:
    # Only rows outside the sample (every 8th row) move: the whole pass or the scan budget of
    # ARR and the paths must catch it, and the result is still exact.
    n = 512
    cost = rng.random((n, n)).astype(dtype)
    unsampled = (np.arange(n) % 8 != 0)[:, None]
    new = np.where(unsampled, cost + 0.5 * rng.random((1, n)), cost).astype(dtype)
    st = _warm_stats(cost, new)
    assert st["cold_restarts"] == 1 and st["warm_rows_read"] == n
    # What the warm start scanned before its restart is bounded by its budget (4 n rows), checked
    # at every row scan, also inside a path: beyond the cold solve's own scans, at most one more.
    from trajtransfer import _core

    lap_solve(new)
    cold = _core.lap.last_solve_stats()
    extra = sum(st[k] - cold[k] for k in ("arr_scans", "path_scans"))
    assert extra <= 4 * n + 1, (st, cold)


# Imports and the SciPy check shared by the scripts below (run per kernel set in a subprocess).
_SCRIPT_PRELUDE = """
import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_lsa
from trajtransfer import _core
from trajtransfer.core.lap import lap_solve

def check_optimal(new, sol):
    c64 = new.astype(np.float64)
    r, c = scipy_lsa(c64)
    assert np.isclose(c64[sol.row_ind, sol.col_ind].sum(), c64[r, c].sum(), rtol=1e-12)
"""

_GIVE_UP_SCRIPT = _SCRIPT_PRELUDE + """
rng = np.random.default_rng(3)
n = 512
for dtype in (np.float32, np.float64):
    cost = rng.random((n, n)).astype(dtype)
    prev = lap_solve(cost)
    redrawn = cost.copy()
    redrawn[0, prev.col_ind[0]] += 0.15  # a far gap in one sampled row (see the test above)
    for shifted, gives_up in ((cost + 0.5 * rng.random((1, n)), True), (redrawn, True),
                              (cost * (1 + 0.01 * rng.standard_normal(cost.shape)), False)):
        new = shifted.astype(dtype)
        sol = lap_solve(new, warm_start=prev)
        st = _core.lap.last_solve_stats()
        assert st["cold_restarts"] == int(gives_up), st
        assert st["warm_rows_read"] == (n // 8 if gives_up else n), st
        check_optimal(new, sol)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_warm_start_gives_up_alike_in_every_kernel_set(isa) -> None:
    """The row sample's conflict count gives up on shifted column prices, its far rows on
    redrawn previous pairs, and it keeps a 1 % noise warm start, whatever the lane width of the
    kernels."""
    assert_script_ok(_GIVE_UP_SCRIPT, isa)


_LAZY_REPAIR_SCRIPT = _SCRIPT_PRELUDE + """
rng = np.random.default_rng(0)
n = 1024
cost = rng.random((n, n)).astype(np.float32)
new = (cost * (1 + 0.01 * rng.standard_normal(cost.shape))).astype(np.float32)
sol = lap_solve(new, warm_start=lap_solve(cost))
st = _core.lap.last_solve_stats()
assert st["cold_restarts"] == 0 and st["paths"] > n // 10, st
assert st["path_scans"] < 2 * st["paths"], st
check_optimal(new, sol)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_float64_repair_of_a_warm_float32_solve_ends_within_the_row_caches(isa) -> None:
    """After a warm float32 re-solve (1 % noise) about a fifth of the rows are loose in float64
    by a rounding; their float64 repair paths start from the row caches (a cached bound stands
    for the other columns) and mostly end there: under 2 full row scans per path (~2.7 when
    every path scanned its rows; 0.04-1.4 with the caches, one-deep avx512 float32 caches the
    most). The optimum is SciPy's float64 one, exactly."""
    assert_script_ok(_LAZY_REPAIR_SCRIPT, isa)
