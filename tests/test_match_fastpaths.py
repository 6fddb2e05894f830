"""The per-step fast paths of GradientMatcher (FGMT adds one pair and solves at every step).

Each fast path must give exactly what the checked path gives: the zero-copy float32 view of
gradients, ``solve("identity")`` instead of explicit identity permutations, the objective cache
extended by ``add`` and the pages faulted in by ``reserve``.
"""

from __future__ import annotations

import numpy as np
import pytest

from trajtransfer._arrays import float32_view
from trajtransfer.core.match import GradientMatcher
from trajtransfer.core.spec import mlp_spec


def _pairs(rng: np.random.Generator, k: int, dead: int = 3) -> list:
    """k (target, source) gradient-like pairs of an MLP 6-16-4, some hidden units dead."""
    out = []
    for _ in range(k):
        pair = []
        for _side in range(2):
            g = {"layers.0.weight": rng.standard_normal((16, 6)).astype(np.float32),
                 "layers.0.bias": rng.standard_normal(16).astype(np.float32),
                 "layers.1.weight": rng.standard_normal((4, 16)).astype(np.float32),
                 "layers.1.bias": rng.standard_normal(4).astype(np.float32)}
            rows = rng.choice(16, size=dead, replace=False)  # dead units: zero rows / columns
            g["layers.0.weight"][rows] = 0.0
            g["layers.0.bias"][rows] = 0.0
            g["layers.1.weight"][:, rows] = 0.0
            pair.append(g)
        out.append(tuple(pair))
    return out


def _fgmt_loop(pairs: list, start, reserve: bool, warm_start: bool = True) -> list:
    m = GradientMatcher(mlp_spec(1), seed=3)
    results = []
    for k, (t, s) in enumerate(pairs):
        m.add(t, s)
        if k == 0 and reserve:
            m.reserve(len(pairs))
        results.append(m.solve(start, warm_start=warm_start, tol=0.0))
    return results


@pytest.mark.parametrize("warm_start", [True, False])
def test_identity_string_equals_explicit_identity_bitwise(warm_start):
    pairs = _pairs(np.random.default_rng(0), 8)
    explicit = _fgmt_loop(pairs, {"c1": np.arange(16)}, reserve=True, warm_start=warm_start)
    named = _fgmt_loop(pairs, "identity", reserve=True, warm_start=warm_start)
    for a, b in zip(explicit, named):
        np.testing.assert_array_equal(a.perms["c1"], b.perms["c1"])
        assert a.objective == b.objective
        assert a.history == b.history
        assert a.sweeps == b.sweeps


def test_identity_string_starts_from_identity_not_the_previous_solve():
    # After a solve that moved away from the identity, "identity" restarts from it (history[0]
    # is the objective at the identity), whereas init=None with warm_start continues.
    pairs = _pairs(np.random.default_rng(1), 3)
    m = GradientMatcher(mlp_spec(1), seed=0)
    for t, s in pairs:
        m.add(t, s)
    first = m.solve("identity")
    assert not np.array_equal(first.perms["c1"], np.arange(16))
    again = m.solve("identity")
    assert again.history[0] == m.objective({"c1": np.arange(16)})
    assert m.solve(None).history[0] == m.objective(again.perms)


def test_identity_string_rejects_other_strings():
    m = GradientMatcher(mlp_spec(1))
    t, s = _pairs(np.random.default_rng(2), 1)[0]
    m.add(t, s)
    with pytest.raises(ValueError, match="one of \\('identity', 'greedy'\\) or None"):
        m.solve("previous")


def test_bad_init_still_names_the_group():
    m = GradientMatcher(mlp_spec(1))
    t, s = _pairs(np.random.default_rng(3), 1)[0]
    m.add(t, s)
    bad = np.arange(16)
    bad[0] = 1  # shape and dtype pass; only the native permutation check can refuse it
    with pytest.raises(ValueError, match=r"init\['c1'\] is not a permutation"):
        m.solve({"c1": bad})
    assert m.solve({"c1": np.arange(16)}).sweeps >= 1  # nothing was changed by the refusal


def test_reserve_prefault_and_cache_in_add_change_nothing():
    # Objective terms extended by add(), pages faulted in by reserve(): the same solves, bit for
    # bit, as a matcher without reserve, and every objective equals the uncached objective().
    pairs = _pairs(np.random.default_rng(4), 10)
    with_reserve = _fgmt_loop(pairs, "identity", reserve=True)
    without = _fgmt_loop(pairs, "identity", reserve=False)
    m = GradientMatcher(mlp_spec(1), seed=3)
    for t, s in pairs:
        m.add(t, s)
    for a, b in zip(with_reserve, without):
        np.testing.assert_array_equal(a.perms["c1"], b.perms["c1"])
        assert a.objective == b.objective
    assert with_reserve[-1].objective == m.objective(with_reserve[-1].perms)


def test_float32_view_is_zero_copy_only_when_nothing_needs_converting():
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    v = float32_view(t)
    assert v is not None and v.dtype == np.float32 and v.flags.c_contiguous
    assert v.ctypes.data == t.data_ptr()  # a view, not a copy
    assert float32_view(t.t()) is None  # strided
    assert float32_view(t.double()) is None
    assert float32_view(t.clone().requires_grad_(True)) is None
    assert float32_view(t.to(torch.bfloat16)) is None
    assert float32_view(torch.complex(t, t).conj()) is None
    a = np.zeros((3, 4), dtype=np.float32)
    assert float32_view(a) is a
    assert float32_view(a.T) is None
    assert float32_view(a.astype(np.float64)) is None
    assert float32_view([1.0, 2.0]) is None


def test_tensor_inputs_of_every_kind_give_the_same_solve():
    torch = pytest.importorskip("torch")
    pairs = _pairs(np.random.default_rng(5), 4)
    ref = _fgmt_loop(pairs, "identity", reserve=True)
    kinds = [
        lambda a: torch.from_numpy(a),                                # zero-copy fast path
        lambda a: torch.from_numpy(a.astype(np.float64)),             # converted
        lambda a: torch.from_numpy(a).clone().requires_grad_(True),   # detached
        lambda a: torch.from_numpy(np.asfortranarray(a)) if a.ndim == 2 else torch.from_numpy(a),
    ]
    for kind in kinds:
        conv = [tuple({k: kind(v) for k, v in side.items()} for side in pair) for pair in pairs]
        got = _fgmt_loop(conv, "identity", reserve=True)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a.perms["c1"], b.perms["c1"])
            assert a.objective == b.objective


def test_tracked_objective_skips_the_exact_pass_and_agrees_with_it():
    # exact_objective=False returns the tracked value (history[-1]); it must agree with the
    # exact float64 objective at the same permutations, and not change the permutations.
    rng = np.random.default_rng(5)
    spec = mlp_spec(2)
    shapes = {"layers.0.weight": (48, 20), "layers.0.bias": (48,), "layers.1.weight": (40, 48),
              "layers.1.bias": (40,), "layers.2.weight": (6, 40), "layers.2.bias": (6,)}
    pairs = [tuple({k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
                   for _ in range(2)) for _ in range(3)]
    exact, tracked = GradientMatcher(spec, seed=3), GradientMatcher(spec, seed=3)
    for t, s_ in pairs:
        exact.add(t, s_)
        tracked.add(t, s_)
        a = exact.solve("identity")
        b = tracked.solve("identity", exact_objective=False)
        for g in a.perms:
            np.testing.assert_array_equal(a.perms[g], b.perms[g])
        assert b.objective == b.history[-1]
        assert b.objective == pytest.approx(a.objective, rel=1e-5)
        assert tracked.objective(b.perms) == a.objective
