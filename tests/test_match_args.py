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


def _matcher():
    rng = np.random.default_rng(0)
    shapes = {"layers.0.weight": (6, 3), "layers.0.bias": (6,), "layers.1.weight": (2, 6),
              "layers.1.bias": (2,)}
    params = lambda: {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}  # noqa: E731
    m = tt.GradientMatcher(tt.mlp_spec(1))
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
