"""Out-of-range integers given to the matcher: a ValueError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

import trajtransfer as tt
from trajtransfer._native import _core


@pytest.fixture
def restore_threads():
    before = tt.set_num_threads(0)
    yield
    tt.set_num_threads(before)


@pytest.mark.parametrize("n", [2**31, 2**63, 2**80, -(2**70)])
def test_set_num_threads_out_of_range_names_the_argument(n, restore_threads):
    before = tt.set_num_threads(0)
    with pytest.raises(ValueError, match=r"num_threads must be at most 2147483647.*got " + str(n)):
        tt.set_num_threads(n)
    with pytest.raises(ValueError, match="num_threads"):
        _core.match.set_num_threads(n)
    assert tt.set_num_threads(0) == before  # unchanged


def test_set_num_threads_still_takes_int_like_values(restore_threads):
    before = tt.set_num_threads(0)
    assert _core.match.set_num_threads(np.int64(0)) == before
    assert tt.set_num_threads(-(2**31)) == before  # any value <= 0 only queries
    assert _core.match.set_num_threads(np.int32(3)) == 3
    with pytest.raises(TypeError):
        _core.match.set_num_threads(1.5)


def _matcher(backend="auto"):
    rng = np.random.default_rng(0)
    shapes = {"layers.0.weight": (6, 3), "layers.0.bias": (6,), "layers.1.weight": (2, 6),
              "layers.1.bias": (2,)}
    params = lambda: {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}  # noqa: E731
    m = tt.GradientMatcher(tt.mlp_spec(1), backend=backend)
    m.add(params(), params())
    return m


@pytest.mark.parametrize("pairs", [-5, -1, 2**63, 2**100])
def test_reserve_out_of_range_names_the_argument(pairs):
    m = _matcher()
    with pytest.raises(ValueError, match=r"reserve: num_pairs must be >= 0.*got " + str(pairs)):
        m.reserve(pairs)
    assert m.num_pairs == 1
    m.reserve(np.int64(4))  # in range: accepted, and the matcher still solves
    assert sorted(m.solve().perms["c1"].tolist()) == list(range(6))


def test_loose_numbers_and_empty_groups_are_refused_by_name():
    import numpy as np

    from trajtransfer.core.match import GradientMatcher, match_weights
    from trajtransfer.core.spec import mlp_spec

    spec = mlp_spec(1, bias=False)
    a = {"layers.0.weight": np.ones((3, 2), np.float32), "layers.1.weight": np.ones((2, 3), np.float32)}
    with pytest.raises(TypeError, match="max_sweeps must be an integer, got 1.5"):
        match_weights(spec, a, a, max_sweeps=1.5)
    with pytest.raises(TypeError, match="seed must be an integer, got 1.7"):
        GradientMatcher(spec, seed=1.7)
    empty = {"layers.0.weight": np.ones((0, 2), np.float32), "layers.1.weight": np.ones((2, 0), np.float32)}
    with pytest.raises(ValueError, match=r"group\(s\) \['c1'\] have size 0"):
        match_weights(spec, empty, empty)


@pytest.mark.parametrize("backend", ["native", "torch"])
@pytest.mark.parametrize("pairs", [2**40, 2**62])
def test_reserve_beyond_memory_says_how_much_it_needs(pairs, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    m = _matcher() if backend == "native" else _matcher(backend="torch")
    with pytest.raises(MemoryError, match=rf"reserve: {pairs} pairs of this spec need .* GiB \(\d+ bytes a pair\)"):
        m.reserve(pairs)
    assert m.num_pairs == 1  # the store is unchanged and still solves
    assert sorted(m.solve().perms["c1"].tolist()) == list(range(6))


@pytest.mark.parametrize("value", [1.5, "3", None])
def test_reserve_refuses_non_integers(value):
    with pytest.raises(TypeError, match="num_pairs must be an integer"):
        _matcher().reserve(value)
