"""Matching with block-structured groups (attention heads): costs against brute force, planted
permutations recovered, objectives against an independent float64 evaluation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from trajtransfer.core import device_lap
from trajtransfer.core.block_groups import BlockPairs
from trajtransfer.core.match import GradientMatcher, match_gradients, match_weights
from trajtransfer.core.permute import apply_permutation, invert_permutation, random_permutation
from trajtransfer.core.spec import transformer_spec
from trajtransfer.kit.models import ViT
from test_match_device import _emulated_cuda_batch_solve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layer_params(seed: int, width: int = 12, heads: int = 4) -> dict:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(width, heads, 2 * width, 0.0, batch_first=True)
    return {f"blocks.0.{k}": v.detach().double().numpy() for k, v in layer.state_dict().items()}


def _oracle_objective(spec, perms, target: dict, source: dict) -> float:
    moved = apply_permutation(spec, perms, source)
    return float(sum(np.sum(target[k] * moved[k]) for k in target))


def _block_pairs(spec, target: dict, source: dict) -> BlockPairs:
    names = list(spec.axes_to_perm)
    sizes = spec.group_sizes(target)
    pairs = BlockPairs(spec.groups, sizes, [target[n].shape for n in names],
                       [spec.axes_to_perm[n] for n in names], spec.inner_of, "cpu")
    pairs.add([torch.from_numpy(target[n]).float() for n in names],
              [torch.from_numpy(source[n]).float() for n in names], 1.0)
    return pairs


@pytest.fixture
def layer_problem():
    """One encoder layer, H = 4 heads of d = 3, random (target, source) and random held perms."""
    spec = transformer_spec(1, heads=4)
    target, source = _layer_params(0), _layer_params(1)
    held = random_permutation(spec, target, seed=7)
    return spec, target, source, held


def test_head_cost_against_all_head_permutations(layer_problem):
    spec, target, source, held = layer_problem
    pairs = _block_pairs(spec, target, source)
    g = spec.groups.index("blocks.0.heads")
    cost, _ = pairs.cost(g, [torch.from_numpy(held[h]) for h in spec.groups])
    cost = cost.double().numpy()
    # Over all H! head permutations (the others held fixed), the exact objective minus the
    # assignment's cost is one constant: the cost matrix is the objective's coordinate function.
    gaps, objs = [], []
    for sigma in itertools.permutations(range(4)):
        perms = {**held, "blocks.0.heads": np.array(sigma)}
        obj = _oracle_objective(spec, perms, target, source)
        objs.append(obj)
        gaps.append(obj - cost[np.arange(4), list(sigma)].sum())
    assert np.ptp(gaps) < 1e-4 * max(1.0, np.ptp(objs))
    assert np.ptp(objs) > 1e-2  # the heads matter: a cost that ignored them would fail


def test_inner_cost_against_all_within_head_permutations(layer_problem):
    spec, target, source, held = layer_problem
    pairs = _block_pairs(spec, target, source)
    perms_t = [torch.from_numpy(held[h]) for h in spec.groups]
    for inner in ("blocks.0.qk", "blocks.0.v"):
        cost, _ = pairs.cost(spec.groups.index(inner), perms_t)
        cost = cost.double().numpy()
        assert cost.shape == (4, 3, 3)
        for h in range(4):  # row h: the source head h's own permutation, the others held
            gaps, objs = [], []
            for tau in itertools.permutations(range(3)):
                rows = held[inner].copy()
                rows[h] = tau
                obj = _oracle_objective(spec, {**held, inner: rows}, target, source)
                objs.append(obj)
                gaps.append(obj - cost[h, np.arange(3), list(tau)].sum())
            assert np.ptp(gaps) < 1e-4 * max(1.0, np.ptp(objs)), (inner, h)


def test_descent_solves_each_group_exactly(layer_problem):
    # After convergence no single group can improve: each is at its LAP optimum against brute
    # force over all head permutations.
    spec, target, source, _ = layer_problem
    res = match_weights(spec, target, source, init="identity")
    assert res.converged
    best = max(_oracle_objective(spec, {**res.perms, "blocks.0.heads": np.array(s)}, target, source)
               for s in itertools.permutations(range(4)))
    assert res.objective >= best - 1e-4 * abs(best)
    assert res.objective == pytest.approx(_oracle_objective(spec, res.perms, target, source),
                                          rel=1e-6)


def _vit_state(seed: int, norm_first: bool = True) -> tuple:
    torch.manual_seed(seed)
    model = ViT(image_size=8, patch_size=4, width=24, heads=3, depth=2, norm_first=norm_first)
    return model.permutation_spec(), {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("init", ["greedy", "identity"])
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_planted_permutations_recovered_on_a_noisy_vit(init, norm_first, kind):
    # From the identity, coordinate moves alone stall here with two heads swapped; the joint
    # moves of heads and their dimensions get out.
    spec, a = _vit_state(0, norm_first)
    pi = random_permutation(spec, a, seed=3)
    gen = torch.Generator().manual_seed(1)
    b = {k: v + 1e-3 * v.std().nan_to_num(0) * torch.randn(v.shape, generator=gen)
         for k, v in apply_permutation(spec, pi, a).items()}
    if kind == "numpy":
        a, b = {k: v.numpy() for k, v in a.items()}, {k: v.numpy() for k, v in b.items()}
    res = match_weights(spec, a, b, init=init)
    want = invert_permutation(pi, spec)
    for g in spec.groups:
        np.testing.assert_array_equal(np.asarray(res.perms[g]), want[g], err_msg=g)
    assert isinstance(res.perms["blocks.0.qk"], np.ndarray if kind == "numpy" else torch.Tensor)


def test_match_gradients_objective_and_history():
    spec, _ = _vit_state(0)
    rng = np.random.default_rng(0)
    pairs = []
    for k in range(3):
        _, t = _vit_state(10 + k)
        _, s = _vit_state(20 + k)
        pairs.append(({n: v.numpy() for n, v in t.items()}, {n: v.numpy() for n, v in s.items()}))
    weights = list(rng.uniform(0.5, 2.0, size=3))
    res = match_gradients(spec, pairs, weights, init="greedy")
    exact = sum(w * _oracle_objective(spec, res.perms, t, s) for w, (t, s) in zip(weights, pairs))
    ident = sum(w * _oracle_objective(spec, None, t, s) for w, (t, s) in zip(weights, pairs))
    assert res.objective == pytest.approx(exact, rel=1e-6)
    assert res.objective > ident
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(res.history[1:], res.history[2:]))


def test_on_device_descent_with_the_cuda_kernel_equals_host(monkeypatch):
    spec, a = _vit_state(0)
    _, b = _vit_state(1)
    host = match_weights(spec, a, b, init="greedy", backend="torch")
    monkeypatch.setattr(device_lap, "cuda_lap_available", lambda device: True)
    monkeypatch.setattr(device_lap, "cuda_batch_solve", _emulated_cuda_batch_solve())
    m = GradientMatcher(spec, backend="torch")
    m.add(a, b)
    assert not m._path.lap.synchronous
    dev = m.solve("greedy", warm_start=False)
    for g in spec.groups:
        assert torch.equal(dev.perms[g], host.perms[g]), g
    assert dev.objective == pytest.approx(host.objective, rel=1e-6)


def test_block_specs_refuse_the_native_backend_and_bad_inits():
    spec, a = _vit_state(0)
    with pytest.raises(ValueError, match="backend='native' does not take specs with block"):
        match_weights(spec, a, a, backend="native")
    with pytest.raises(ValueError, match=r"init\['blocks.0.qk'\] must have shape \(3, 8\)"):
        match_weights(spec, a, a, init={"blocks.0.qk": np.arange(8)})
    bad = np.tile(np.arange(8), (3, 1))
    bad[1, 0] = 1
    with pytest.raises(ValueError, match="not a permutation of 0..7 in every row"):
        match_weights(spec, a, a, init={"blocks.0.qk": bad})


def test_init_is_honoured_and_a_warm_resolve_stays():
    spec, a = _vit_state(0)
    pi = random_permutation(spec, a, seed=5)
    b = apply_permutation(spec, pi, a)
    want = invert_permutation(pi, spec)
    m = GradientMatcher(spec)
    m.add(a, b)
    res = m.solve(want, max_sweeps=0)
    assert res.objective == pytest.approx(_oracle_objective(
        spec, want, {k: v.numpy() for k, v in a.items()}, {k: v.numpy() for k, v in b.items()}),
        rel=1e-6)
    again = m.solve(warm_start=True)
    for g in spec.groups:
        np.testing.assert_array_equal(again.perms[g].numpy(), want[g])


def test_joint_move_is_the_best_over_heads_and_their_dimensions(layer_problem):
    # Brute force over all H! head permutations, each with its best within-head alignments
    # (all d! per head and inner group, the others held): the joint move reaches that optimum.
    spec, target, source, held = layer_problem
    pairs = _block_pairs(spec, target, source)
    groups = spec.groups
    perms = [torch.from_numpy(held[g].copy()) for g in groups]
    start = float(pairs.objective(perms))
    gain = pairs.joint_move(groups.index("blocks.0.heads"), perms, 0.0)
    moved = float(pairs.objective(perms))
    assert gain is not None and moved == pytest.approx(start + gain, rel=1e-5)
    best = -np.inf
    rows = list(itertools.permutations(range(3)))
    for sigma in itertools.permutations(range(4)):
        trial = {**held, "blocks.0.heads": np.array(sigma)}
        for inner in ("blocks.0.qk", "blocks.0.v"):  # rows are independent given sigma
            tau = held[inner].copy()
            for h in range(4):
                scores = []
                for r in rows:
                    tau[h] = r
                    scores.append(_oracle_objective(spec, {**trial, inner: tau}, target, source))
                tau[h] = rows[int(np.argmax(scores))]
            trial[inner] = tau
        best = max(best, _oracle_objective(spec, trial, target, source))
    assert moved == pytest.approx(best, rel=1e-5)
