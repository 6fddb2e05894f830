"""Factored gradient pairs (``G = Δᵀ A``) kept as factors by the native core.

Oracles: the same pairs made dense (``delta.T @ inputs``) in the native core, and the same
factored pairs on the torch path (``backend="torch"``), on tie-free problems (independent random
factors): identical permutations and sweeps, objectives equal up to the float32 rounding of the
dense products (the factored objective is summed in float64 from the factors themselves); a
fresh matcher for ``clear_pairs``; the dense path of ``transfer()``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from trajtransfer._native import _core  # noqa: E402
from trajtransfer.core.factored import Factored, keeps_factors, takes_factors  # noqa: E402
from trajtransfer.core.match import GradientMatcher, match_gradients  # noqa: E402
from trajtransfer.core.spec_fx import spec_from_model  # noqa: E402
from factored_sides import densified, random_side  # noqa: E402
from spec_shapes import mlp_spec_and_shapes  # noqa: E402


class _ConvNet(nn.Module):
    """1×1 convolutions (both axes permuted), BatchNorm, a 3×3 convolution and Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 30, 1)
        self.bn = nn.BatchNorm2d(30)
        self.pw = nn.Conv2d(30, 28, 1)
        self.k3 = nn.Conv2d(28, 26, 3, padding=1)
        self.fc = nn.Linear(26, 24)
        self.head = nn.Linear(24, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.k3(torch.relu(self.pw(x))))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(torch.relu(self.fc(x)))


def _mlp():
    return mlp_spec_and_shapes([40, 48, 36, 30, 5])  # three hidden groups, two dynamic terms


def _conv():
    model = _ConvNet()
    spec = spec_from_model(model, torch.zeros(2, 3, 5, 5))
    shapes = {n: tuple(v.shape) for n, v in model.state_dict().items() if n not in spec.buffers}
    return spec, shapes


PROBLEMS = {"mlp": _mlp, "conv": _conv}


def _pairs(problem, count, rows=5, seed=0):
    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(seed)
    return spec, shapes, [(random_side(shapes, rng, rows), random_side(shapes, rng, rows))
                          for _ in range(count)]


def _same_perms(a, b, spec):
    for g in spec.perm_to_axes:
        assert np.array_equal(np.asarray(a.perms[g]), np.asarray(b.perms[g])), g


def _dense_bytes(shapes, pairs):
    return 8 * pairs * sum(int(np.prod(s)) for s in shapes.values())


# ----------------------------------------------------------------- against the dense pairs
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_fgmt_loop_keeps_factors_and_equals_the_dense_loop(problem):
    # One pair per step, warm solves and identity starts: static terms at add, dynamic terms
    # built, extended by new pairs, corrected and rebuilt, all from the factors.
    spec, shapes, pairs = _pairs(problem, 8, seed=1)
    fac, dense = GradientMatcher(spec), GradientMatcher(spec, backend="native")
    builds = corrections = 0
    for step, (t, s) in enumerate(pairs):
        fac.add(t, s, 0.5 + step)
        dense.add(densified(t), densified(s), 0.5 + step)
        init = "identity" if step % 3 == 2 else None
        a, b = fac.solve(init), dense.solve(init)
        _same_perms(a, b, spec)
        assert a.sweeps == b.sweeps
        np.testing.assert_allclose(a.objective, b.objective, rtol=1e-6)
        np.testing.assert_allclose(a.history, b.history, rtol=1e-5)
        builds += a.counters["member_builds"]
        corrections += a.counters["delta_builds"]
    assert fac.backend == "native"
    assert builds > 0 and corrections > 0
    assert fac.pair_store_bytes < dense.pair_store_bytes == _dense_bytes(shapes, len(pairs))


def _objective64(spec, pairs, weights, perms):
    """Σ_k w_k <T_k, π(S_k)> summed in float64 (gradients kept as factors formed in float64,
    the others as the float32 tensors the matcher stores), and the sum of its terms' magnitudes
    (the scale of float32 rounding)."""
    total = scale = 0.0
    for w, (t, s) in zip(weights, pairs):
        for n, axes in spec.axes_to_perm.items():
            if n in spec.buffers:
                continue
            kept = keeps_factors(t[n], s[n], takes_factors(t[n].shape, [
                -1 if g is None else 0 for g in axes]))
            x, y = (p[n].delta.double().T @ p[n].inputs.double() if kept
                    else densified(p)[n].double() for p in (t, s))
            x, y = x.numpy().reshape(t[n].shape), y.numpy().reshape(t[n].shape)
            for a, g in enumerate(axes):
                if g is not None:
                    y = np.take(y, perms[g], axis=a)
            total += w * float((x * y).sum())
            scale += w * float(np.abs(x * y).sum())
    return total, scale


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_exact_objective_at_any_permutation_is_the_float64_one(problem):
    spec, shapes, pairs = _pairs(problem, 3, seed=2)
    weights = [1.0, 2.0, 3.0]
    fac, dense = GradientMatcher(spec), GradientMatcher(spec, backend="native")
    for w, (t, s) in zip(weights, pairs):
        fac.add(t, s, w)
        dense.add(densified(t), densified(s), w)
    rng = np.random.default_rng(3)
    sizes = {g: len(p) for g, p in fac.solve().perms.items()}
    for _ in range(3):
        perms = {g: rng.permutation(n) for g, n in sizes.items()}
        expected, scale = _objective64(spec, pairs, weights, perms)
        # From the factors in float64: exact up to the summation order.
        np.testing.assert_allclose(fac.objective(perms), expected, rtol=0, atol=1e-12 * scale)
        # The dense pairs carry the float32 rounding of Δᵀ A.
        np.testing.assert_allclose(dense.objective(perms), expected, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_greedy_start_from_factors_equals_the_dense_one(problem):
    spec, shapes, pairs = _pairs(problem, 4, seed=4)
    weights = [1.0, 0.5, 2.0, 1.5]
    fac = match_gradients(spec, pairs, weights, init="greedy", backend="native")
    dense = match_gradients(spec, [(densified(t), densified(s)) for t, s in pairs], weights,
                            init="greedy", backend="native")
    _same_perms(fac, dense, spec)
    np.testing.assert_allclose(fac.history[0], dense.history[0], rtol=1e-6)
    np.testing.assert_allclose(fac.objective, dense.objective, rtol=1e-6)


# --------------------------------------------------------------- against the torch path
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("start", [None, "greedy"])
def test_native_and_torch_paths_agree_on_factored_pairs(problem, start):
    spec, shapes, pairs = _pairs(problem, 5, seed=5)
    native, dev = GradientMatcher(spec), GradientMatcher(spec, backend="torch")
    for k, (t, s) in enumerate(pairs):
        native.add(t, s, 1.0 + 0.25 * k)
        dev.add(t, s, 1.0 + 0.25 * k)
        a, b = native.solve(start), dev.solve(start)
        _same_perms(a, b, spec)
        np.testing.assert_allclose(a.objective, b.objective, rtol=1e-6)
    assert (native.backend, dev.backend) == ("native", "torch")


# ------------------------------------------------------------- mixed forms, clear, errors
def test_dense_and_factored_pairs_mix_in_one_matcher():
    # Pair 0 all dense, pair 1 factored with target rows != source rows, pair 2 with one
    # tensor dense on one side only (so dense on both), pair 3 with more rows than pay (dense).
    spec, shapes = _mlp()
    rng = np.random.default_rng(6)
    pairs = [(densified(random_side(shapes, rng, 4)), densified(random_side(shapes, rng, 4))),
             (random_side(shapes, rng, 3), random_side(shapes, rng, 7)),
             (random_side(shapes, rng, 5), random_side(shapes, rng, 5)),
             (random_side(shapes, rng, 60), random_side(shapes, rng, 60)),
             (random_side(shapes, rng, 4), random_side(shapes, rng, 4))]
    pairs[2][0]["layers.1.weight"] = pairs[2][0]["layers.1.weight"].dense()
    fac, dense = GradientMatcher(spec), GradientMatcher(spec, backend="native")
    for k, (t, s) in enumerate(pairs):
        fac.add(t, s, 1.0 + k)
        dense.add(densified(t), densified(s), 1.0 + k)
        a, b = fac.solve(), dense.solve()
        _same_perms(a, b, spec)
        np.testing.assert_allclose(a.objective, b.objective, rtol=1e-6)
    assert fac.pair_store_bytes < dense.pair_store_bytes


def test_clear_pairs_then_new_factored_pairs_equals_a_fresh_matcher():
    spec, shapes, first = _pairs("mlp", 3, seed=7)
    _, _, second = _pairs("mlp", 4, seed=8)
    m = GradientMatcher(spec)
    for t, s in first:
        m.add(t, s)
        m.reserve(3)
    m.solve()
    m.clear_pairs()
    fresh = GradientMatcher(spec)
    for t, s in second:
        m.add(t, s)
        fresh.add(t, s)
    a, b = m.solve(warm_start=False), fresh.solve(warm_start=False)
    _same_perms(a, b, spec)
    assert a.objective == b.objective
    assert m.pair_store_bytes == fresh.pair_store_bytes


def test_bad_factors_name_the_tensor_and_add_nothing():
    spec, shapes, pairs = _pairs("mlp", 1, seed=9)
    t, s = pairs[0]
    m = GradientMatcher(spec)
    m.add(t, s)
    f = t["layers.2.weight"]
    inputs = f.inputs.clone()
    inputs[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"target\['layers.2.weight'\] contains NaN or inf"):
        m.add(dict(t, **{"layers.2.weight": Factored(f.delta, inputs, f.shape)}), s)
    wrong = Factored(torch.zeros(5, 36), torch.zeros(5, 30))  # (36, 30): transposed
    with pytest.raises(ValueError, match=r"source\['layers.1.weight'\] has shape \(36, 30\)"):
        m.add(t, dict(s, **{"layers.1.weight": wrong}))
    assert m.num_pairs == 1


def test_the_binding_takes_factor_tuples_and_checks_them():
    # Tensors: a Linear weight (both axes permuted), a 1x1 kernel (trailing axes unpermuted),
    # and a bias (no factors).
    sizes, shapes = [6, 5], [[5, 6], [4, 5, 1, 1], [5]]
    axes = [[1, 0], [-1, 1, -1, -1], [1]]
    rng = np.random.default_rng(10)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def side(rows):
        return [(f32(rows, 5), f32(rows, 6)), (f32(rows, 4), f32(rows, 5)), f32(5)]

    def dense(sd):
        return [(x[0].T @ x[1]).reshape(sh) if isinstance(x, tuple) else x
                for x, sh in zip(sd, shapes)]

    fac = _core.match.Matcher(sizes, shapes, axes)
    ref = _core.match.Matcher(sizes, shapes, axes)
    pairs = [(side(3), side(2)), (side(0), side(4))]  # zero rows: a zero gradient
    for t, s in pairs:
        fac.add(t, s, 1.5)
        ref.add([np.ascontiguousarray(x, np.float32) for x in dense(t)],
                [np.ascontiguousarray(x, np.float32) for x in dense(s)], 1.5)
    a = fac.solve(None, False, True, 100, 1e-9, 0)
    b = ref.solve(None, False, True, 100, 1e-9, 0)
    assert all(np.array_equal(p, q) for p, q in zip(a["perms"], b["perms"]))
    np.testing.assert_allclose(a["objective"], b["objective"], rtol=1e-6)
    t, s = side(3), side(3)
    with pytest.raises(ValueError, match=r"target #0 inputs has shape \(3, 5\), expected \(3, 6\)"):
        fac.add([(t[0][0], t[0][1][:, :5].copy())] + t[1:], s, 1.0)
    with pytest.raises(ValueError, match=r"source #1 inputs has shape \(2, 5\), expected \(3, 5\)"):
        fac.add(t, [s[0], (s[1][0], s[1][1][:2].copy()), s[2]], 1.0)
    with pytest.raises(TypeError, match="target #0 delta must have dtype float32"):
        fac.add([(t[0][0].astype(np.float64), t[0][1])] + t[1:], s, 1.0)
    with pytest.raises(ValueError, match="tensor #0 comes as factors"):  # one side only
        fac.add(t, [np.zeros((5, 6), np.float32)] + s[1:], 1.0)
    with pytest.raises(ValueError, match="source #2: a tuple must be"):  # a bias
        fac.add(t, s[:2] + [(f32(3, 5), f32(3, 1))], 1.0)
    bad = t[1][0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="tensor #1 contains NaN"):
        fac.add([t[0], (bad, t[1][1]), t[2]], s, 1.0)
    assert fac.num_pairs == 2


# ------------------------------------------------------------------------------ transfer()
def test_transfer_with_factors_on_the_cpu_takes_the_native_core(monkeypatch):
    from trajtransfer.kit.models import MLP
    from trajtransfer.method.transfer import transfer
    from transfer_setup import trained_source_and_target

    def make(seed):
        torch.manual_seed(seed)
        return MLP(64, (32, 28, 24), 10, bias=True, activation="tanh")

    data, traj, target_init, _ = trained_source_and_target(make, 3)
    added = []
    real_add = GradientMatcher.add

    def add(self, target, source, weight=1.0):
        real_add(self, target, source, weight)
        added.append((sum(isinstance(x, Factored) for x in target.values()), self.backend))

    monkeypatch.setattr(GradientMatcher, "add", add)
    # Eight rows: the hidden layers' factors are the cheaper form, the output layer's are not.
    runs = [transfer(make(0), traj, target_init, data, method="fgmt", batch_size=8,
                     factored_pairs=fac, num_threads=1) for fac in (False, True)]
    half = len(added) // 2
    assert added[:half] and set(added[:half]) == {(0, "native")}
    assert set(added[half:]) == {(4, "native")}  # every weight; the output layer's made dense
    dense, fac = runs
    for pa, pb in zip(dense.perms, fac.perms):
        for g in pa:
            assert torch.equal(pa[g], pb[g]), g
    assert dense.sweeps == fac.sweeps and max(dense.sweeps) >= 2
    np.testing.assert_allclose(dense.objective, fac.objective, rtol=1e-5)
