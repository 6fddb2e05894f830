"""Tests of trajtransfer.core.match against independent oracles (brute force, the textbook SciPy
matcher in bench/baseline.py, a float64 NumPy objective, planted permutations)."""

from __future__ import annotations

import importlib.util
import itertools
import pathlib
import random

import numpy as np
import pytest

from native_testing import load_testing_module
from trajtransfer.core.match import GradientMatcher, MatchResult, match_gradients, match_weights
from trajtransfer.core.permute import apply_permutation, invert_permutation, random_permutation
from trajtransfer.core.spec import chain_spec, permutation_spec_from_axes_to_perm
from spec_shapes import conv_chain_spec_and_shapes, mlp_spec_and_shapes

_BASELINE_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "baseline.py"


def _load_baseline():
    spec = importlib.util.spec_from_file_location("_tt_bench_baseline", _BASELINE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


baseline = _load_baseline()


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _random_params(spec, shapes, rng, scale=1.0):
    return {n: (scale * rng.standard_normal(shapes[n])).astype(np.float32) for n in spec.axes_to_perm
            if n not in spec.buffers}


def _mlp(widths, rng, bias=True):
    return mlp_spec_and_shapes(widths, bias)


_small_conv = conv_chain_spec_and_shapes


def _odd_axes():
    """Groups on unusual axes: middle and last axes, a 3-axis tensor with two groups."""
    axes = {
        "x": (None, "p", None),          # (3, 7, 2)
        "y": ("q", None, "p"),           # (5, 4, 7)
        "z": ("q",),                     # (5,)
        "w": (None, None),               # (2, 2) unpermuted
    }
    spec = permutation_spec_from_axes_to_perm(axes)
    shapes = {"x": (3, 7, 2), "y": (5, 4, 7), "z": (5,), "w": (2, 2)}
    return spec, shapes


def _assert_same_perms(spec, a, b) -> None:
    """Every group's permutation identical in the perms dicts a and b."""
    for g in spec.groups:
        np.testing.assert_array_equal(a[g], b[g])


def _np_objective(spec, pairs, weights, perms):
    """Independent float64 objective: explicit np.take gathers on float64 copies."""
    total = 0.0
    for (t, s), w in zip(pairs, weights):
        for name, axes in spec.axes_to_perm.items():
            if name in spec.buffers:
                continue
            x = np.asarray(s[name], dtype=np.float64)
            for ax, g in enumerate(axes):
                if g is not None:
                    x = np.take(x, np.asarray(perms[g]), axis=ax)
            total += w * float(np.sum(np.asarray(t[name], dtype=np.float64) * x))
    return total


# ----------------------------------------------------------------------------------------------
# sweep order = CPython's random.Random(seed).shuffle
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 + 7, 2**64 - 1])
@pytest.mark.parametrize("n", [1, 2, 5, 12, 40])
def test_sweep_order_matches_python_random(seed, n):
    rng = random.Random(seed)
    expected = []
    for _ in range(4):
        order = list(range(n))
        rng.shuffle(order)
        expected.append(order)
    assert load_testing_module().python_shuffle_orders(seed, n, 4) == expected


# ----------------------------------------------------------------------------------------------
# planted permutations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["mlp", "conv", "odd"])
@pytest.mark.parametrize("seed", [0, 3])
def test_planted_permutation_recovered(make, seed):
    rng = np.random.default_rng(seed)
    if make == "mlp":
        spec, shapes = _mlp([10, 16, 12, 3], rng)
    elif make == "conv":
        spec, shapes = _small_conv()
    else:
        spec, shapes = _odd_axes()
    a = _random_params(spec, shapes, rng)
    pi = random_permutation(spec, a, seed=seed + 100)
    b = apply_permutation(spec, pi, a)
    b = {k: v + 1e-3 * rng.standard_normal(v.shape).astype(np.float32) for k, v in b.items()}
    res = match_weights(spec, a, b, seed=seed)
    assert isinstance(res, MatchResult)
    inv = invert_permutation(pi)
    for g in spec.groups:
        assert res.perms[g].dtype == np.int64
        np.testing.assert_array_equal(res.perms[g], inv[g])
    aligned = apply_permutation(spec, res.perms, b)
    for k in a:
        np.testing.assert_allclose(aligned[k], a[k], atol=1e-2)
    assert res.converged


# ----------------------------------------------------------------------------------------------
# against the textbook baseline (same seed => same sweep order)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["mlp", "conv", "odd"])
@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_objective_at_least_baseline_on_independent_networks(make, seed):
    rng = np.random.default_rng(1000 + seed)
    if make == "mlp":
        spec, shapes = _mlp([12, 24, 20, 16, 5], rng)
    elif make == "conv":
        spec, shapes = _small_conv()
    else:
        spec, shapes = _odd_axes()
    a = _random_params(spec, shapes, rng)
    b = _random_params(spec, shapes, rng)
    ours = match_weights(spec, a, b, init="identity", seed=seed)  # the baseline's start
    ref = baseline.baseline_match_weights(spec, a, b, seed=seed)
    assert ours.objective >= ref["objective"] - 1e-9 * abs(ref["objective"])
    # Same order, exact LAPs on generic data: the same path, hence the same answer.
    _assert_same_perms(spec, ours.perms, ref["perms"])


@pytest.mark.parametrize("seed", [0, 5])
def test_history_monotone_and_consistent(seed):
    rng = np.random.default_rng(seed)
    spec, shapes = _mlp([8, 32, 32, 32, 4], rng)
    a = _random_params(spec, shapes, rng)
    b = _random_params(spec, shapes, rng)
    res = match_weights(spec, a, b, init="identity", seed=seed)
    h = np.asarray(res.history)
    assert len(h) == res.sweeps + 1
    assert np.all(np.diff(h) >= 0)
    ident = {g: np.arange(32) for g in spec.groups}
    assert h[0] == pytest.approx(_np_objective(spec, [(a, b)], [1.0], ident), rel=1e-12)
    assert h[-1] == pytest.approx(res.objective, rel=1e-5)
    assert res.sweeps >= 2  # random networks need more than one sweep with three coupled groups
    assert set(res.timings) >= {"gemm", "lap", "total"}


def test_max_sweeps_stops_early_unconverged():
    rng = np.random.default_rng(4)
    spec, shapes = _mlp([8, 32, 32, 32, 4], rng)
    a = _random_params(spec, shapes, rng)
    b = _random_params(spec, shapes, rng)
    res = match_weights(spec, a, b, max_sweeps=1)
    assert res.sweeps == 1 and not res.converged
    full = match_weights(spec, a, b)
    assert full.objective >= res.objective


# ----------------------------------------------------------------------------------------------
# objective definition
# ----------------------------------------------------------------------------------------------


def test_objective_equals_independent_float64_sum():
    rng = np.random.default_rng(8)
    spec, shapes = _small_conv()
    pairs = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
             for _ in range(3)]
    weights = [0.5, 2.0, -0.25]
    res = match_gradients(spec, pairs, weights, seed=3)
    assert res.objective == pytest.approx(_np_objective(spec, pairs, weights, res.perms),
                                          rel=1e-12)
    m = GradientMatcher(spec)
    for (t, s), w in zip(pairs, weights):
        m.add(t, s, w)
    other = random_permutation(spec, pairs[0][0], seed=1)
    assert m.objective(other) == pytest.approx(_np_objective(spec, pairs, weights, other),
                                               rel=1e-12)


# ----------------------------------------------------------------------------------------------
# brute force: the result is a coordinate-wise optimum
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coordinatewise_optimum_by_brute_force(seed):
    rng = np.random.default_rng(50 + seed)
    spec, shapes = _mlp([5, 4, 4, 3], rng)
    a = _random_params(spec, shapes, rng)
    b = _random_params(spec, shapes, rng)
    res = match_weights(spec, a, b, seed=seed)
    best = _np_objective(spec, [(a, b)], [1.0], res.perms)
    assert res.objective == pytest.approx(best, rel=1e-12)
    all_perms = [np.array(p) for p in itertools.permutations(range(4))]
    for g in spec.groups:
        for p in all_perms:
            trial = dict(res.perms)
            trial[g] = p
            assert _np_objective(spec, [(a, b)], [1.0], trial) <= best + 1e-9 * abs(best)
    # and the global optimum (576 combinations) bounds it
    glob = max(_np_objective(spec, [(a, b)], [1.0], {"c1": p, "c2": q})
               for p in all_perms for q in all_perms)
    assert best <= glob + 1e-9


# ----------------------------------------------------------------------------------------------
# incremental matcher
# ----------------------------------------------------------------------------------------------


def test_incremental_equals_batch():
    rng = np.random.default_rng(9)
    spec, shapes = _small_conv()
    pairs = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
             for _ in range(5)]
    weights = [1.0, 0.3, 2.0, 1.5, 0.7]
    init = random_permutation(spec, pairs[0][0], seed=11)
    batch = match_gradients(spec, pairs, weights, init=init, seed=4)
    m = GradientMatcher(spec, seed=4)
    for k, ((t, s), w) in enumerate(zip(pairs, weights)):
        m.add(t, s, w)
        assert m.num_pairs == k + 1
        if k == 1:  # an intermediate solve must not disturb the final one (fresh init given)
            m.solve()
    inc = m.solve(init, warm_start=False)
    _assert_same_perms(spec, inc.perms, batch.perms)
    assert inc.objective == batch.objective
    assert inc.objective == pytest.approx(_np_objective(spec, pairs, weights, inc.perms), rel=1e-12)
    ref = baseline.baseline_match(spec, pairs, weights, seed=4)
    assert batch.objective >= ref["objective"] - 1e-9 * abs(ref["objective"])


def test_warm_start_resolve_is_stable():
    rng = np.random.default_rng(10)
    spec, shapes = _mlp([8, 16, 16, 4], rng)
    m = GradientMatcher(spec, seed=2)
    m.add(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
    first = m.solve()
    again = m.solve()  # warm: previous perms and duals; nothing changed, so one sweep, same answer
    assert again.sweeps == 1 and again.converged
    _assert_same_perms(spec, again.perms, first.perms)
    m.add(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng), 0.5)
    warm = m.solve()
    assert warm.history[0] == pytest.approx(m.objective(first.perms), rel=1e-12)
    assert warm.objective >= warm.history[0]
    cold = m.solve(warm_start=False)
    assert cold.history[0] == pytest.approx(m.objective({}), rel=1e-12)


def test_init_is_copied_not_aliased():
    rng = np.random.default_rng(12)
    spec, shapes = _mlp([6, 10, 10, 3], rng)
    a = _random_params(spec, shapes, rng)
    b = _random_params(spec, shapes, rng)
    init = random_permutation(spec, a, seed=0)
    saved = {g: p.copy() for g, p in init.items()}
    res = match_weights(spec, a, b, init=init)
    for g in spec.groups:
        np.testing.assert_array_equal(init[g], saved[g])
        assert not np.shares_memory(res.perms[g], init[g])
        res.perms[g][:] = 0
        np.testing.assert_array_equal(init[g], saved[g])
    start = _np_objective(spec, [(a, b)], [1.0], saved)
    assert res.history[0] == pytest.approx(start, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# inputs: torch vs numpy, buffers, errors
# ----------------------------------------------------------------------------------------------


def test_torch_and_numpy_inputs_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    spec, shapes = _small_conv()
    a = _random_params(spec, shapes, rng)
    b = _random_params(spec, shapes, rng)
    res_np = match_weights(spec, a, b, init="identity", seed=1)
    ta = {k: torch.from_numpy(v.astype(np.float64)) for k, v in a.items()}
    tb = {k: torch.from_numpy(v).requires_grad_(True) for k, v in b.items()}
    init = {g: torch.arange(n) for g, n in spec.group_sizes(a).items()}
    res_t = match_weights(spec, ta, tb, seed=1, init=init)
    _assert_same_perms(spec, res_np.perms, res_t.perms)
    assert res_np.objective == res_t.objective


def test_buffers_may_be_absent_and_are_not_matched():
    rng = np.random.default_rng(14)
    axes = {"l1.weight": ("h", None), "bn.weight": ("h",), "bn.running_mean": ("h",),
            "l2.weight": (None, "h")}
    spec = permutation_spec_from_axes_to_perm(axes, buffers=["bn.running_mean"])
    shapes = {"l1.weight": (9, 4), "bn.weight": (9,), "l2.weight": (3, 9)}
    a = _random_params(spec, shapes, rng)
    b = _random_params(spec, shapes, rng)
    without = match_weights(spec, a, b)
    a2 = dict(a, **{"bn.running_mean": 100 * rng.standard_normal(9).astype(np.float32)})
    b2 = dict(b, **{"bn.running_mean": 100 * rng.standard_normal(9).astype(np.float32)})
    with_buf = match_weights(spec, a2, b2)
    np.testing.assert_array_equal(without.perms["h"], with_buf.perms["h"])
    assert without.objective == with_buf.objective


def _tiny():
    spec, shapes = _mlp([4, 5, 3], None)
    rng = np.random.default_rng(0)
    return spec, _random_params(spec, shapes, rng), _random_params(spec, shapes, rng)


def test_error_unknown_and_missing_tensors():
    spec, a, b = _tiny()
    with pytest.raises(ValueError, match="not in the permutation spec"):
        match_weights(spec, dict(a, extra=np.zeros(2)), dict(b, extra=np.zeros(2)))
    a_missing = {k: v for k, v in a.items() if k != "layers.1.bias"}
    with pytest.raises(ValueError, match="layers.1.bias"):
        match_weights(spec, a_missing, b)


def test_error_mismatched_keys_and_shapes():
    spec, a, b = _tiny()
    with pytest.raises(ValueError, match="only in target"):
        match_weights(spec, a, {k: v for k, v in b.items() if k != "layers.0.bias"})
    bad = dict(b, **{"layers.0.bias": np.zeros(6, np.float32)})
    with pytest.raises(ValueError, match="group 'c1' has size"):
        match_weights(spec, a, bad)
    bad = dict(b, **{"layers.0.weight": np.zeros((5, 4, 1), np.float32)})
    with pytest.raises(ValueError, match="layers.0.weight"):
        match_weights(spec, a, bad)
    m = GradientMatcher(spec)
    m.add(a, b)
    wider = {k: np.zeros(v.shape[:-1] + (v.shape[-1] + 1,), np.float32) if k == "layers.0.weight"
             else v for k, v in a.items()}
    with pytest.raises(ValueError, match=r"expected \(5, 4\)"):
        m.add(wider, wider)
    assert m.num_pairs == 1


def test_error_non_finite_names_tensor_and_leaves_store_unchanged():
    spec, a, b = _tiny()
    m = GradientMatcher(spec)
    m.add(a, b)
    bad = dict(b, **{"layers.1.weight": np.full((3, 5), np.nan, np.float32)})
    with pytest.raises(ValueError, match=r"source\['layers.1.weight'\].*NaN"):
        m.add(a, bad)
    bad = dict(a, **{"layers.0.bias": np.array([0, 0, np.inf, 0, 0], np.float32)})
    with pytest.raises(ValueError, match=r"target\['layers.0.bias'\]"):
        m.add(bad, b)
    assert m.num_pairs == 1
    with pytest.raises(ValueError, match="weight must be finite"):
        m.add(a, b, float("nan"))


def test_error_bad_init_and_arguments():
    spec, a, b = _tiny()
    with pytest.raises(ValueError, match="not a permutation"):
        match_weights(spec, a, b, init={"c1": np.array([0, 0, 1, 2, 3])})
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        match_weights(spec, a, b, init={"c1": np.arange(4)})
    with pytest.raises(ValueError, match="does not define"):
        match_weights(spec, a, b, init={"zz": np.arange(5)})
    with pytest.raises(TypeError, match="integers"):
        match_weights(spec, a, b, init={"c1": np.arange(5.0)})
    with pytest.raises(ValueError, match="max_sweeps"):
        match_weights(spec, a, b, max_sweeps=-1)
    with pytest.raises(ValueError, match="tol"):
        match_weights(spec, a, b, tol=float("nan"))
    with pytest.raises(ValueError, match="at least one"):
        match_gradients(spec, [])
    with pytest.raises(ValueError, match="weights has 2 entries"):
        match_gradients(spec, [(a, b)], [1.0, 2.0])
    with pytest.raises(ValueError, match="no pairs"):
        GradientMatcher(spec).solve()
    with pytest.raises(ValueError, match="seed"):
        GradientMatcher(spec, seed=-1)


def test_error_group_on_two_axes_of_one_tensor():
    spec = permutation_spec_from_axes_to_perm({"w": ("h", "h")})
    a = {"w": np.eye(3, dtype=np.float32)}
    with pytest.raises(ValueError, match="more than one axis"):
        match_weights(spec, a, a)


# ----------------------------------------------------------------------------------------------
# native code paths: shared two-axis layout, delta updates, threaded GEMMs, 3-axis tensors
# ----------------------------------------------------------------------------------------------


def test_delta_updates_follow_the_baseline_path():
    # Many sweeps on a chain: later sweeps change few units, so cost terms are corrected on the
    # changed rows/columns only (both layouts); the path must still be the baseline's.
    rng = np.random.default_rng(21)
    spec = chain_spec([("c1", "g1", 2), ("c2", "g2", 2), ("c3", "g3", 2), ("head", None, 2)])
    shapes = {"c1.weight": (24, 3, 3, 3), "c1.bias": (24,), "c2.weight": (24, 24, 3, 3),
              "c2.bias": (24,), "c3.weight": (24, 24, 3, 3), "c3.bias": (24,),
              "head.weight": (5, 24, 1, 1), "head.bias": (5,)}
    pairs = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
             for _ in range(3)]
    weights = [1.0, 0.5, 2.0]
    found_delta = False
    for seed in range(6):
        res = match_gradients(spec, pairs, weights, seed=seed)
        ref = baseline.baseline_match(spec, pairs, weights, seed=seed)
        _assert_same_perms(spec, res.perms, ref["perms"])
        assert res.history[-1] == pytest.approx(res.objective, rel=1e-5)
        found_delta = found_delta or res.counters["delta_builds"] > 0
    assert found_delta  # the correction path was exercised


@pytest.mark.parametrize("num_pairs", [1, 3])
def test_threaded_gemm_split_matches_single_thread(num_pairs):
    from trajtransfer.core.match import set_num_threads

    rng = np.random.default_rng(22)
    # 2 * 256^2 * 4608 flops per cost term: above the threshold that splits GEMMs (and the
    # gathers feeding them) over threads; c2 has 1.2 M floats, above the threshold that splits
    # pair copies and transposes. Several weighted pairs exercise the weighted gathers, and the
    # later sweeps the threaded delta updates.
    spec = chain_spec([("c1", "g1", 2), ("c2", "g2", 2), ("head", None, 0)], bias=False)
    shapes = {"c1.weight": (256, 3, 3, 3), "c2.weight": (512, 256, 3, 3), "head.weight": (4, 512)}
    pairs = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
             for _ in range(num_pairs)]
    weights = [1.0, 0.5, 2.0][:num_pairs]
    before = set_num_threads(0)
    try:
        set_num_threads(1)
        one = match_gradients(spec, pairs, weights, seed=1)
        assert set_num_threads(2) == 2
        two = match_gradients(spec, pairs, weights, seed=1)
    finally:
        set_num_threads(before)
    _assert_same_perms(spec, one.perms, two.perms)
    assert one.objective == two.objective
    assert two.counters["delta_builds"] > 0  # the threaded corrections ran too
    ref = baseline.baseline_match(spec, pairs, weights, seed=1)
    _assert_same_perms(spec, two.perms, ref["perms"])
    assert two.objective >= ref["objective"] - 1e-9 * abs(ref["objective"])


def test_tensor_with_three_permuted_axes():
    rng = np.random.default_rng(23)
    spec = permutation_spec_from_axes_to_perm({"t": ("p", "q", "r"), "u": ("p",), "v": (None, "r")})
    shapes = {"t": (4, 5, 6), "u": (4,), "v": (3, 6)}
    a = _random_params(spec, shapes, rng)
    # (Small 3-way coupled groups: coordinate descent may stop in a local optimum, for the
    # baseline too, so compare paths rather than expect a planted permutation back.)
    c = apply_permutation(spec, random_permutation(spec, a, seed=5), a)
    c = {k: v + 0.3 * rng.standard_normal(v.shape).astype(np.float32) for k, v in c.items()}
    ours = match_weights(spec, a, c, init="identity", seed=2)
    ref = baseline.baseline_match_weights(spec, a, c, seed=2)
    _assert_same_perms(spec, ours.perms, ref["perms"])
    assert ours.objective >= ref["objective"] - 1e-9 * abs(ref["objective"])
    assert ours.sweeps >= 2
    assert ours.objective == pytest.approx(_np_objective(spec, [(a, c)], [1.0], ours.perms),
                                           rel=1e-12)


def test_large_three_axis_tensor_threaded_copies_match_one_thread():
    # (128, 96, 96) = 1.18 M floats: above the threshold that splits pair copies over threads.
    # Its first axis has nothing before it (pre = 1), so the store's transpose is split over the
    # slab's columns, a path the two-axis layouts never take.
    from trajtransfer.core.match import set_num_threads

    rng = np.random.default_rng(24)
    spec = permutation_spec_from_axes_to_perm({"t": ("p", "q", "r"), "u": ("p",)})
    shapes = {"t": (128, 96, 96), "u": (128,)}
    a, b = _random_params(spec, shapes, rng), _random_params(spec, shapes, rng)
    before = set_num_threads(0)
    try:
        set_num_threads(1)
        one = match_weights(spec, a, b, seed=4, max_sweeps=3)
        set_num_threads(2)
        two = match_weights(spec, a, b, seed=4, max_sweeps=3)
    finally:
        set_num_threads(before)
    _assert_same_perms(spec, one.perms, two.perms)
    assert one.objective == two.objective
    assert two.objective == pytest.approx(_np_objective(spec, [(a, b)], [1.0], two.perms),
                                          rel=1e-12)


def test_property_same_path_as_baseline_on_random_chains():
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=40)
    @hyp.given(
        widths=st.lists(st.integers(2, 9), min_size=2, max_size=4),
        spatial=st.sampled_from([0, 2]),
        bias=st.booleans(),
        k=st.integers(1, 3),
        seed=st.integers(0, 2**32 - 1),
    )
    def check(widths, spatial, bias, k, seed):
        rng = np.random.default_rng(seed)
        layers = [(f"l{i}", f"g{i}", spatial) for i in range(len(widths) - 1)] + [("out", None, spatial)]
        spec = chain_spec(layers, bias=bias)
        dims = [3] + widths[:-1] + [widths[-1]]
        shapes = {}
        for i, (name, _, _) in enumerate(layers):
            shapes[f"{name}.weight"] = (dims[i + 1], dims[i]) + (2,) * spatial
            if bias:
                shapes[f"{name}.bias"] = (dims[i + 1],)
        pairs = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
                 for _ in range(k)]
        weights = list(rng.uniform(0.1, 2.0, size=k))
        ours = match_gradients(spec, pairs, weights, seed=seed % 1000)
        ref = baseline.baseline_match(spec, pairs, weights, seed=seed % 1000)
        assert ours.objective >= ref["objective"] - 1e-9 * abs(ref["objective"])
        assert ours.objective == pytest.approx(_np_objective(spec, pairs, weights, ours.perms),
                                               rel=1e-9)
        assert np.all(np.diff(ours.history) >= 0)

    check()


def test_fgmt_loop_incremental_terms_equal_fresh_solves():
    # One matcher, a pair added per step, each solve warm-started from the previous result: the
    # cost terms carried over (updated at add time) must give exactly what a fresh matcher over
    # the same pairs and start gives, with less GEMM work.
    rng = np.random.default_rng(31)
    spec, shapes = _small_conv()
    pairs = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
             for _ in range(5)]
    weights = [1.0, 0.5, 1.5, 1.0, 0.8]
    m = GradientMatcher(spec, seed=6)
    prev = None
    saved_work = False
    for s, ((t, src), w) in enumerate(zip(pairs, weights), start=1):
        m.add(t, src, w)
        res = m.solve(prev, warm_start=True)
        fresh = match_gradients(spec, pairs[:s], weights[:s], init=prev, seed=6)
        _assert_same_perms(spec, res.perms, fresh.perms)
        assert res.objective == fresh.objective
        saved_work = saved_work or res.counters["member_builds"] < fresh.counters["member_builds"]
        prev = res.perms
    assert saved_work


# ----------------------------------------------------------------------------------------------
# exact objective from cached per-pair terms; add()'s fused finiteness check; clear_pairs
# ----------------------------------------------------------------------------------------------


def _native_and_odd():
    """Tensors stored as given (static, group on axis 0, trailing axes: 'a', 'l0'), transposed
    on add ('x': group on a middle axis), with two groups ('y'), 1-D ('z'), unpermuted ('w')."""
    axes = {
        "a": ("p", None, None),          # (7, 3, 2): static, stored as (7, 6)
        "x": (None, "p", None),          # (3, 7, 2)
        "y": ("q", None, "p"),           # (5, 4, 7)
        "z": ("q",),                     # (5,)
        "w": (None, None),               # (2, 2) unpermuted
    }
    spec = permutation_spec_from_axes_to_perm(axes)
    shapes = {"a": (7, 3, 2), "x": (3, 7, 2), "y": (5, 4, 7), "z": (5,), "w": (2, 2)}
    return spec, shapes


@pytest.mark.parametrize("make", ["native_odd", "mlp"])
def test_cached_objectives_equal_fresh_and_independent(make):
    # Solves from the identity, from random inits and warm, interleaved with adds: every
    # history[0] and objective (served from cached per-pair terms, moved between permutations on
    # changed rows only) equals the uncached objective() bit for bit and a float64 NumPy sum.
    rng = np.random.default_rng(31)
    if make == "mlp":
        spec, shapes = _mlp([12, 16, 9, 3], rng)
    else:
        spec, shapes = _native_and_odd()
    m = GradientMatcher(spec, seed=5)
    pairs, weights = [], []
    for step in range(6):
        pair = (_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
        w = [1.0, 0.5, 2.0, 1.25, 0.75, 3.0][step]
        pairs.append(pair)
        weights.append(w)
        m.add(*pair, w)
        starts = [None, random_permutation(spec, pair[0], seed=step), "warm"]
        for init in starts:
            if init == "warm":
                res = m.solve()
            else:
                ident = {g: np.arange(len(p)) for g, p in res.perms.items()} if step else None
                res = m.solve(init if init is not None else ident, warm_start=step % 2 == 0)
            fresh = m.objective(res.perms)
            assert res.objective == fresh
            assert res.objective == pytest.approx(_np_objective(spec, pairs, weights, res.perms),
                                                  rel=1e-12)
            start = (init if init not in (None, "warm") else None)
            if start is not None:
                assert res.history[0] == m.objective(start)
    assert m.solve({}, warm_start=False).history[0] == m.objective({})


def test_identity_start_objective_equals_fresh_bitwise():
    rng = np.random.default_rng(32)
    spec, shapes = _native_and_odd()
    pairs = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
             for _ in range(3)]
    m = GradientMatcher(spec, seed=1)
    for t, s in pairs:
        m.add(t, s, 0.7)
    res = m.solve(warm_start=False)
    assert res.history[0] == m.objective({})
    assert res.history[0] == pytest.approx(
        _np_objective(spec, pairs, [0.7] * 3, {g: np.arange(n) for g, n in
                                                [("p", 7), ("q", 5)]}), rel=1e-12)


@pytest.mark.parametrize("name", ["a", "x", "y", "z", "w"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("side", ["target", "source"])
def test_non_finite_rejected_in_every_layout_and_nothing_added(name, bad, side):
    rng = np.random.default_rng(33)
    spec, shapes = _native_and_odd()
    t, s = _random_params(spec, shapes, rng), _random_params(spec, shapes, rng)
    m = GradientMatcher(spec, seed=0)
    m.add(t, s)
    before = m.solve(warm_start=False)
    t2, s2 = _random_params(spec, shapes, rng), _random_params(spec, shapes, rng)
    poisoned = (t2 if side == "target" else s2)[name]
    poisoned.flat[poisoned.size // 2] = bad
    other = (s2 if side == "target" else t2)[name]
    other.flat[poisoned.size // 2] = 0.0  # inf * 0 = NaN must be caught too
    with pytest.raises(ValueError, match=rf"{side}\['{name}'\].*NaN or infinite"):
        m.add(t2, s2)
    assert m.num_pairs == 1
    after = m.solve(warm_start=False)
    assert after.objective == before.objective
    _assert_same_perms(spec, after.perms, before.perms)


def test_extreme_finite_values_are_accepted():
    # float32 max squared and summed still fits a float64: no false non-finite alarm
    spec, shapes = _native_and_odd()
    big = {n: np.full(shp, np.finfo(np.float32).max, np.float32) for n, shp in shapes.items()}
    m = GradientMatcher(spec)
    m.add(big, big)  # (a float32 cost matrix of these would overflow: no solve here)
    ident = {"p": np.arange(7), "q": np.arange(5)}
    assert np.isfinite(m.objective(ident))
    assert m.objective(ident) == pytest.approx(_np_objective(spec, [(big, big)], [1.0], ident),
                                               rel=1e-12)


def test_clear_pairs_then_cold_solve_equals_a_new_matcher():
    rng = np.random.default_rng(34)
    spec, shapes = _small_conv()
    old = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng)) for _ in range(3)]
    new = [(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng)) for _ in range(2)]
    m = GradientMatcher(spec, seed=3)
    for t, s in old:
        m.add(t, s, 1.5)
    m.solve()
    m.clear_pairs()
    assert m.num_pairs == 0
    with pytest.raises(ValueError, match="no pairs"):
        m.solve()
    fresh = GradientMatcher(spec, seed=3)
    for (t, s), w in zip(new, [0.5, 2.0]):
        m.add(t, s, w)
        fresh.add(t, s, w)
    a = m.solve(warm_start=False)
    b = fresh.solve(warm_start=False)
    assert a.objective == b.objective and a.history == b.history and a.sweeps == b.sweeps
    _assert_same_perms(spec, a.perms, b.perms)
    assert a.objective == pytest.approx(_np_objective(spec, new, [0.5, 2.0], a.perms), rel=1e-12)


def test_clear_pairs_keeps_perms_and_duals_for_warm_solves():
    rng = np.random.default_rng(35)
    spec, shapes = _mlp([10, 24, 24, 4], rng)
    m = GradientMatcher(spec, seed=7)
    m.add(_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
    first = m.solve()
    m.clear_pairs()
    pair = (_random_params(spec, shapes, rng), _random_params(spec, shapes, rng))
    m.add(*pair)
    # warm_start, no init: starts from the kept permutations
    warm = m.solve()
    assert warm.history[0] == pytest.approx(_np_objective(spec, [pair], [1.0], first.perms),
                                            rel=1e-12)
    # identity start with kept duals (GMT's use): the same optima as cold LAPs on this
    # tie-free data, so the same coordinate-descent path
    ident = {g: np.arange(shapes[f"layers.{i}.weight"][0]) for i, g in enumerate(spec.groups)}
    m.clear_pairs()
    m.add(*pair)
    kept = m.solve(ident, warm_start=True)
    cold = match_gradients(spec, [pair], seed=7)
    _assert_same_perms(spec, kept.perms, cold.perms)
    assert kept.objective == cold.objective
    # the shapes of the first pair still apply
    bad = _random_params(spec, shapes, rng)
    bad["layers.0.weight"] = bad["layers.0.weight"][:, :5]
    with pytest.raises(ValueError, match="expected"):
        m.add(bad, bad)


def test_clear_pairs_before_any_add_is_a_no_op():
    spec, shapes = _mlp([3, 4, 2], np.random.default_rng(0))
    m = GradientMatcher(spec)
    m.clear_pairs()
    assert m.num_pairs == 0
