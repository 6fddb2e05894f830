"""Factored gradient pairs (``Factored(delta, inputs)``, ``G = Δᵀ A``) in the matcher.

Oracles: the same pairs made dense (``delta.T @ inputs``) and matched by the native core, on
tie-free problems (independent random factors): equal cost matrices up to float32 rounding,
equal permutations, and objectives equal up to the float32 rounding of the dense products (the
factored objective is summed in float64 from the factors themselves); and explicit products for
the factored objective.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import trajtransfer as tt  # noqa: E402
from trajtransfer.core.factored import Factored, factored_pays  # noqa: E402
from trajtransfer.core.match import GradientMatcher, _CompiledSpec, match_gradients  # noqa: E402
from trajtransfer.core.spec import permutation_spec_from_axes_to_perm  # noqa: E402
from trajtransfer.core.torch_pairs import TorchPairs  # noqa: E402
from factored_sides import densified, random_side  # noqa: E402
from spec_shapes import mlp_spec_and_shapes  # noqa: E402


def _mlp():
    return mlp_spec_and_shapes([40, 48, 36, 5])


def _mixed():
    # Linear -> 1x1 conv -> BN -> 3x3 conv -> Linear head: factors for the Linear and 1x1 weights,
    # dense for the rest (BN, the 3x3 kernel, the biases).
    spec = permutation_spec_from_axes_to_perm({
        "fc.weight": ("a", None), "fc.bias": ("a",),
        "pw.weight": ("b", "a", None, None), "pw.bias": ("b",),
        "bn.weight": ("b",), "bn.bias": ("b",),
        "k3.weight": ("c", "b", None, None), "k3.bias": ("c",),
        "head.weight": (None, "c"), "head.bias": (None,)})
    shapes = {"fc.weight": (30, 50), "fc.bias": (30,), "pw.weight": (28, 30, 1, 1),
              "pw.bias": (28,), "bn.weight": (28,), "bn.bias": (28,),
              "k3.weight": (26, 28, 3, 3), "k3.bias": (26,), "head.weight": (4, 26),
              "head.bias": (4,)}
    return spec, shapes


PROBLEMS = {"mlp": _mlp, "mixed": _mixed}


def _pairs(problem, count, rows=6, seed=0):
    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(seed)
    return spec, shapes, [(random_side(shapes, rng, rows), random_side(shapes, rng, rows)) for _ in range(count)]


def _same_perms(a, b, spec):
    for g in spec.perm_to_axes:
        assert np.array_equal(np.asarray(a.perms[g]), np.asarray(b.perms[g])), g


# ---------------------------------------------------------------------------- the structure
def test_factored_dense_and_norm_follow_the_definition():
    rng = np.random.default_rng(0)
    d, a = rng.standard_normal((7, 3)), rng.standard_normal((7, 4))
    f = Factored(torch.from_numpy(d), torch.from_numpy(a), (3, 4, 1, 1))
    np.testing.assert_allclose(f.dense().numpy(), (d.T @ a).reshape(3, 4, 1, 1))
    np.testing.assert_allclose(float(f.norm()), np.linalg.norm(d.T @ a))
    np.testing.assert_allclose(Factored(d, a).norm(), np.linalg.norm(d.T @ a))
    assert tt.Factored is Factored


@pytest.mark.parametrize("delta, inputs, shape, error, words", [
    (np.zeros((4, 3)), np.zeros((5, 2)), None, ValueError, "rows"),
    (np.zeros((4, 3, 1)), np.zeros((4, 2)), None, ValueError, "delta must be 2-D"),
    (np.zeros((4, 3)), np.zeros((4, 2)), (3, 3), ValueError, "shape (3, 3)"),
    (np.zeros((4, 3)), np.zeros((4, 2)), (2, 3), ValueError, "shape (2, 3)"),
    ([[1.0]], np.zeros((1, 2)), None, TypeError, "delta must be a numpy array"),
    (np.zeros((4, 3), dtype=complex), np.zeros((4, 2)), None, TypeError, "real numeric"),
    (np.zeros((4, 3)), torch.zeros(4, 2), None, TypeError, "both"),
])
def test_bad_factors_are_clear_errors(delta, inputs, shape, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        Factored(delta, inputs, shape)


def test_the_cheaper_form_rule():
    assert factored_pays(128, 1024, 784)          # 231k floats against 803k
    assert not factored_pays(128, 10, 1024)       # an output layer: its gradient is smaller
    assert not factored_pays(6, 3, 4)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_non_finite_factors_name_the_tensor_and_add_nothing(backend):
    spec, shapes, pairs = _pairs("mlp", 1)
    t, s = pairs[0]
    bad = dict(s)
    f = bad["layers.1.weight"]
    delta = f.delta.clone()
    delta[0, 0] = float("nan")
    bad["layers.1.weight"] = Factored(delta, f.inputs, f.shape)
    m = GradientMatcher(spec, backend=backend)
    m.add(t, s)
    with pytest.raises(ValueError, match=r"source\['layers.1.weight'\] contains NaN"):
        m.add(t, bad)
    assert m.num_pairs == 1


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_factors_that_do_not_fit_the_spec_name_the_tensor(backend):
    spec, shapes, pairs = _pairs("mlp", 1)
    t, s = pairs[0]
    wrong = dict(t)
    wrong["layers.0.weight"] = Factored(torch.zeros(3, 40), torch.zeros(3, 48))
    with pytest.raises(ValueError, match="layers.0.weight"):
        match_gradients(spec, [(wrong, s)], backend=backend)


# ------------------------------------------------------------------------ cost and results
def _objective64(compiled, pairs, perms):
    """Σ_k (0.5 + k) <T_k, π(S_k)> with the gradients formed and summed in float64, and the
    sum of its terms' magnitudes (the scale of float32 rounding)."""
    total = scale = 0.0
    for k, (t, s) in enumerate(pairs):
        for n, axes in zip(compiled.names, compiled.axis_groups):
            x, y = (p[n].delta.double().T @ p[n].inputs.double() if isinstance(p[n], Factored)
                    else p[n].double() for p in (t, s))
            y = y.reshape(x.shape if x.shape == compiled.shapes[n] else compiled.shapes[n])
            x = x.reshape(compiled.shapes[n])
            for a, g in enumerate(axes):
                if g >= 0:
                    y = y.index_select(a, perms[g])
            total += (0.5 + k) * float((x * y).sum())
            scale += (0.5 + k) * float((x * y).abs().sum())
    return total, scale


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("rows", [(5,), (5, 3, 7)])
def test_factored_cost_matrices_equal_dense_ones(problem, rows):
    # Static terms, dynamic full builds, and the cached terms' corrections (a few slices moved)
    # and rebuilds (most moved), against a store holding the same pairs dense; with rows that
    # differ between pairs, the factors are kept per pair instead of in stacks.
    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(1)
    pairs = [(random_side(shapes, rng, rows[i % len(rows)]), random_side(shapes, rng, rows[i % len(rows)]))
             for i in range(6)]
    compiled = _CompiledSpec(spec, densified(pairs[0][0]), "target")
    sizes = [compiled.sizes[g] for g in compiled.groups]
    stores = [TorchPairs(sizes, [compiled.shapes[n] for n in compiled.names],
                         compiled.axis_groups, "cpu") for _ in range(2)]
    rng = np.random.default_rng(2)
    host = [np.arange(n) for n in sizes]
    corrections = 0
    for step, (t, s) in enumerate(pairs):
        for store, kind in zip(stores, (lambda p: p, densified)):
            store.add([kind(t)[n] for n in compiled.names], [kind(s)[n] for n in compiled.names],
                      0.5 + step)
        for g, n in enumerate(sizes):
            k = 2 if step % 2 else n
            idx = rng.choice(n, size=k, replace=False)
            host[g][idx] = host[g][rng.permutation(idx)]
        perms = [torch.from_numpy(p.copy()) for p in host]
        for g in range(len(sizes)):
            cached, (_, delta) = stores[0].cost(g, perms, host)
            corrections += delta
            dense, _ = stores[1].cost(g, perms)
            torch.testing.assert_close(cached, dense, rtol=1e-4, atol=1e-3)
        # The factored objective is float64 from the (weighted, float32) factors: against float64
        # products, up to float32 rounding of the terms (it cancels to ~1e-5 relative here).
        expected, scale = _objective64(compiled, pairs[:step + 1], perms)
        np.testing.assert_allclose(float(stores[0].objective(perms)), expected, rtol=0,
                                   atol=1e-6 * scale)
    assert corrections > 0
    assert stores[0]._factors[0] and stores[0].store_bytes() < stores[1].store_bytes()
    assert (stores[0]._stacks[0] is None) == (len(rows) > 1)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("start", [None, "greedy"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_factored_pairs_match_like_dense_ones(problem, start, backend):
    spec, shapes, pairs = _pairs(problem, 4, seed=3)
    weights = [1.0, 0.5, 2.0, 1.5]
    fac = match_gradients(spec, pairs, weights, init=start, backend=backend)
    dense = match_gradients(spec, [(densified(t), densified(s)) for t, s in pairs], weights,
                            init=start, backend="native")
    _same_perms(fac, dense, spec)
    assert fac.sweeps == dense.sweeps
    np.testing.assert_allclose(fac.objective, dense.objective, rtol=1e-6)
    np.testing.assert_allclose(fac.history, dense.history, rtol=1e-5)


def test_factored_objective_is_the_dense_inner_product():
    spec, shapes, pairs = _pairs("mlp", 2, seed=4)
    m = GradientMatcher(spec)
    for t, s in pairs:
        m.add(t, s)
    res = m.solve()
    expected = 0.0
    for t, s in pairs:
        moved = tt.apply_permutation(spec, res.perms, densified(s))
        expected += sum(float((densified(t)[n].double() * moved[n].double()).sum()) for n in shapes)
    # The dense products are float32-rounded; the factored objective is float64 throughout.
    np.testing.assert_allclose(res.objective, expected, rtol=1e-7)
    np.testing.assert_allclose(m.objective(res.perms), res.objective, rtol=1e-12)


@pytest.mark.parametrize("backend, path", [("auto", "native"), ("torch", "torch")])
def test_fgmt_loop_with_factors_equals_the_dense_loop(backend, path):
    # One pair per step, warm solves and identity starts: the factor stacks grow past their
    # first capacity, cached terms are corrected and rebuilt.
    spec, shapes, pairs = _pairs("mlp", 9, seed=5)
    fac, dense = GradientMatcher(spec, backend=backend), GradientMatcher(spec, backend="native")
    for step, (t, s) in enumerate(pairs):
        fac.add(t, s)
        dense.add(densified(t), densified(s))
        init = "identity" if step % 2 else None
        a = fac.solve(init, exact_objective=False)
        b = dense.solve(init, exact_objective=False)
        _same_perms(a, b, spec)
        np.testing.assert_allclose(a.objective, b.objective, rtol=1e-5)
    assert fac.backend == path and dense.backend == "native"


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_rows_that_differ_and_mixed_forms_per_tensor(backend):
    # Pairs of different rows (and target rows != source rows), and a tensor that arrives dense
    # in some pairs and factored in others, all sum into one objective.
    spec, shapes = _mlp()
    rng = np.random.default_rng(6)
    pairs = [(random_side(shapes, rng, 4), random_side(shapes, rng, 7)), (random_side(shapes, rng, 3),
             random_side(shapes, rng, 3)), (random_side(shapes, rng, 5), random_side(shapes, rng, 5))]
    pairs[1][0]["layers.1.weight"] = pairs[1][0]["layers.1.weight"].dense()
    pairs[2] = (densified(pairs[2][0]), pairs[2][1])
    fac = match_gradients(spec, pairs, backend=backend)
    dense = match_gradients(spec, [(densified(t), densified(s)) for t, s in pairs], backend="native")
    _same_perms(fac, dense, spec)
    np.testing.assert_allclose(fac.objective, dense.objective, rtol=1e-6)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_the_dearer_form_is_stored_dense(backend):
    spec, shapes = _mlp()
    rng = np.random.default_rng(7)
    m = GradientMatcher(spec, backend=backend)
    m.add(random_side(shapes, rng, 200), random_side(shapes, rng, 200))  # 200 rows: every layer dearer
    dense_bytes = 8 * sum(int(np.prod(s)) for s in shapes.values())
    assert m.pair_store_bytes >= dense_bytes
    m2 = GradientMatcher(spec, backend=backend)
    m2.add(random_side(shapes, rng, 4), random_side(shapes, rng, 4))
    assert m2.pair_store_bytes < m.pair_store_bytes


def test_native_backend_keeps_the_factors():
    spec, shapes, pairs = _pairs("mixed", 2, seed=8)
    m = GradientMatcher(spec, backend="native")
    for t, s in pairs:
        m.add(t, s)
    native = m.solve()
    dense = match_gradients(spec, [(densified(t), densified(s)) for t, s in pairs], backend="native")
    _same_perms(native, dense, spec)
    np.testing.assert_allclose(native.objective, dense.objective, rtol=1e-6)
    assert m.backend == "native"
    assert m.pair_store_bytes < 8 * 2 * sum(int(np.prod(s)) for s in shapes.values())


def test_numpy_factors_give_numpy_results():
    spec, shapes, pairs = _pairs("mlp", 2, seed=9)
    as_np = [tuple({n: Factored(x.delta.numpy(), x.inputs.numpy(), x.shape)
                    if isinstance(x, Factored) else x.numpy() for n, x in side.items()}
                   for side in pair) for pair in pairs]
    res = match_gradients(spec, as_np)
    assert all(isinstance(p, np.ndarray) for p in res.perms.values())
    _same_perms(res, match_gradients(spec, pairs), spec)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_reserve_after_the_stores_grew_keeps_every_pair(backend):
    # Seven pairs grow the stores past 4 by doubling; a smaller reserve afterwards keeps them.
    spec, shapes, pairs = _pairs("mlp", 7, seed=10)
    for t, s in pairs:
        t["layers.2.weight"] = t["layers.2.weight"].dense()  # one tensor dense in every pair
    m = GradientMatcher(spec, backend=backend)
    for t, s in pairs:
        m.add(t, s)
    m.reserve(6)
    m.reserve(9)
    dense = match_gradients(spec, [(densified(t), densified(s)) for t, s in pairs], backend="native")
    res = m.solve()
    _same_perms(res, dense, spec)
    np.testing.assert_allclose(res.objective, dense.objective, rtol=1e-6)
