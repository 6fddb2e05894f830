"""Learning transfer: Naive/GMT/FGMT/Oracle invariants on a tiny digits MLP."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import trajtransfer.core.match as match_mod  # noqa: E402
from trajtransfer.kit.data import load_digits_data  # noqa: E402
from trajtransfer.kit.models import MLP  # noqa: E402
from trajtransfer.core.permute import apply_permutation, random_permutation  # noqa: E402
from trajtransfer.kit.training import evaluate, train  # noqa: E402
from transfer_setup import trained_source_and_target  # noqa: E402
from trajtransfer.method.trajectory import Trajectory  # noqa: E402
from trajtransfer.method.transfer import paired_gradients, transfer  # noqa: E402

K = 4


def _mlp(seed, hidden=(32,)):
    torch.manual_seed(seed)
    return MLP(64, hidden, 10, bias=True, activation="tanh")  # tanh: no dead units, no LAP ties


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
    return trained_source_and_target(_mlp, K)


def _run(setup, method, **kw):
    data, traj, target_init, target_final = setup
    kw.setdefault("batch_size", 64)
    if method == "oracle":
        kw.setdefault("target_final", target_final)
    return transfer(_mlp(0), traj, target_init, data, method=method, **kw)


def test_naive_is_init_plus_source_displacement(setup):
    data, traj, target_init, _ = setup
    res = _run(setup, "naive", eval_every=1)
    assert res.num_gradient_pairs == 0 and res.num_solves == 0
    assert res.eval_steps == list(range(K + 1)) and res.objective == [None] * K
    for name in target_init:
        assert torch.equal(res.final_params[name], target_init[name] + (traj[K][name] - traj[0][name]))
    best = res.best_params
    for name in target_init:
        assert torch.equal(best[name], target_init[name] + (traj[res.best_step][name] - traj[0][name]))
    # reported accuracies are the accuracies of those parameters
    m = _mlp(0)
    m.load_state_dict(res.final_params)
    assert res.final_accuracy == evaluate(m, data.val)
    assert res.best_accuracy == max(res.accuracy[1:])
    assert all(np.array_equal(p["c1"], np.arange(32)) for p in res.perms)


class _Counter:
    """Counts GradientMatcher.add / solve and match_weights calls, delegating to the real ones."""

    def __init__(self, monkeypatch):
        self.adds = self.solves = self.weight_matchings = 0
        real_add, real_solve, real_mw = (match_mod.GradientMatcher.add, match_mod.GradientMatcher.solve,
                                         match_mod.match_weights)

        def add(obj, *a, **k):
            self.adds += 1
            return real_add(obj, *a, **k)

        def solve(obj, *a, **k):
            self.solves += 1
            return real_solve(obj, *a, **k)

        def mw(*a, **k):
            self.weight_matchings += 1
            return real_mw(*a, **k)

        monkeypatch.setattr(match_mod.GradientMatcher, "add", add)
        monkeypatch.setattr(match_mod.GradientMatcher, "solve", solve)
        monkeypatch.setattr(match_mod, "match_weights", mw)


@pytest.mark.parametrize("method,pairs", [("gmt", K * (K + 1) // 2), ("fgmt", K)])
def test_gradient_pair_counts(setup, monkeypatch, method, pairs):
    c = _Counter(monkeypatch)
    res = _run(setup, method, eval_every=K)
    assert res.num_gradient_pairs == pairs == c.adds == res.num_source_gradients
    assert res.num_solves == K == c.solves and c.weight_matchings == 0
    assert len(res.perms) == K and all(o is not None for o in res.objective)
    assert res.eval_steps == [0, K]


def test_oracle_solves_exactly_once(setup, monkeypatch):
    c = _Counter(monkeypatch)
    res = _run(setup, "oracle")
    assert c.weight_matchings == 1 and c.adds == 1 and c.solves == 1  # match_weights -> one pair
    assert res.num_solves == 1 and res.num_gradient_pairs == 0
    assert res.objective[0] is not None and res.objective[1:] == [None] * (K - 1)
    # the same permutation at every step, and it is the weight matching of the total displacements
    assert all(np.array_equal(p["c1"], res.perms[0]["c1"]) for p in res.perms)
    data, traj, target_init, target_final = setup
    ref = match_mod.match_weights(_mlp(0).permutation_spec(),
                                  {n: target_final[n] - target_init[n] for n in target_init},
                                  traj.displacement(K), tol=1e-7)
    assert np.array_equal(ref.perms["c1"], res.perms[0]["c1"])
    with pytest.raises(ValueError, match="target_final"):
        transfer(_mlp(0), traj, target_init, data, method="oracle")


def test_transfer_is_reproducible_with_a_seed(setup):
    a = _run(setup, "fgmt", seed=3)
    b = _run(setup, "fgmt", seed=3)
    assert a.accuracy == b.accuracy and a.objective == b.objective and a.best_step == b.best_step
    assert all(np.array_equal(p["c1"], q["c1"]) for p, q in zip(a.perms, b.perms))
    assert all(torch.equal(a.final_params[n], b.final_params[n]) for n in a.final_params)


@pytest.mark.parametrize("method", ["fgmt", "gmt"])
def test_reusing_lap_duals_does_not_change_the_result(setup, monkeypatch, method):
    # tanh units have no zero-gradient ties, so the optimal assignments are unique
    made = []
    real_init = match_mod.GradientMatcher.__init__

    def init(obj, *a, **k):
        made.append(obj)
        real_init(obj, *a, **k)

    monkeypatch.setattr(match_mod.GradientMatcher, "__init__", init)
    warm = _run(setup, method, seed=2)
    # GMT keeps one matcher (clear_pairs between steps) only when it may reuse the duals
    assert len(made) == 1
    cold = _run(setup, method, seed=2, reuse_duals=False)
    assert len(made) == 1 + (K if method == "gmt" else 1)
    assert warm.config["reuse_duals"] and not cold.config["reuse_duals"]
    assert all(np.array_equal(p["c1"], q["c1"]) for p, q in zip(warm.perms, cold.perms))
    assert warm.accuracy == cold.accuracy
    np.testing.assert_allclose(warm.objective, cold.objective, rtol=1e-9)


def test_gmt_source_cache_recomputes_only_the_target_side(setup):
    plain = _run(setup, "gmt", seed=4)
    cached = _run(setup, "gmt", seed=4, cache_source=True)
    assert cached.num_gradient_pairs == K * (K + 1) // 2 and cached.num_source_gradients == K
    assert cached.config["cache_source"]
    # step 1 uses the same first minibatch either way
    assert np.array_equal(plain.perms[0]["c1"], cached.perms[0]["c1"])
    assert plain.objective[0] == cached.objective[0]
    # with a planted permutation the cached source gradients are exactly as good
    data, traj, _, _ = setup
    spec = _mlp(0).permutation_spec()
    pi = random_permutation(spec, traj[0], seed=3)
    res = transfer(_mlp(0), traj, apply_permutation(spec, pi, traj[0]), data, method="gmt",
                   batch_size=64, cache_source=True)
    assert all(np.array_equal(p["c1"], pi["c1"]) for p in res.perms)


def test_gmt_and_fgmt_agree_at_step_one(setup):
    g = _run(setup, "gmt", seed=5, steps=K)
    f = _run(setup, "fgmt", seed=5)
    assert np.array_equal(g.perms[0]["c1"], f.perms[0]["c1"])
    assert g.objective[0] == f.objective[0]
    assert g.accuracy[:2] == f.accuracy[:2]


def test_planted_permutation_is_recovered(setup):
    """Target init = π·(source init): every step must find π and reproduce π·trajectory."""
    data, traj, _, _ = setup
    spec = _mlp(0).permutation_spec()
    pi = random_permutation(spec, traj[0], seed=11)
    planted = apply_permutation(spec, pi, {n: v for n, v in traj[0].items()})
    src_model = _mlp(0)
    for method in ("fgmt", "gmt"):
        res = transfer(_mlp(0), traj, planted, data, method=method, batch_size=64)
        assert all(np.array_equal(p["c1"], pi["c1"]) for p in res.perms), method
        expect = apply_permutation(spec, pi, traj[K])
        for n, v in expect.items():
            torch.testing.assert_close(res.final_params[n], v, rtol=0, atol=1e-6)
        # the permuted network computes the same function, so each step's accuracy is the source's
        for s, acc in zip(res.eval_steps, res.accuracy):
            src_model.load_state_dict(traj[s])
            assert acc == evaluate(src_model, data.val), (method, s)
    # whereas Naive from the planted init is just some other network
    naive = transfer(_mlp(0), traj, planted, data, method="naive")
    assert not torch.equal(naive.final_params["layers.0.weight"], expect["layers.0.weight"])


@pytest.mark.parametrize("method", ["fgmt", "gmt"])
def test_greedy_match_start_with_one_group_is_the_identity_start(setup, method):
    """One permutation group: the greedy pass and the identity start's first sweep both solve the
    whole objective's one LAP, so every step's permutation is the same (tanh: unique optima)."""
    ident = _run(setup, method, seed=6, match_init="identity")
    greedy = _run(setup, method, seed=6, match_init="greedy")
    assert greedy.config["match_init"] == "greedy" and ident.config["match_init"] == "identity"
    assert all(np.array_equal(p["c1"], q["c1"]) for p, q in zip(ident.perms, greedy.perms))
    assert ident.accuracy == greedy.accuracy
    np.testing.assert_allclose(greedy.objective, ident.objective, rtol=1e-6)  # tracked objectives
    data, traj, target_init, _ = setup
    with pytest.raises(ValueError, match="match_init"):
        transfer(_mlp(0), traj, target_init, data, method=method, match_init="random")


def test_greedy_match_start_recovers_a_planted_permutation_in_a_deep_mlp():
    """Target init = π·(source init) for an MLP with three groups: from the greedy start each
    step's solve finds π, so the transferred network is π·(source trajectory)."""
    data = load_digits_data(seed=0)
    src = _mlp(3, hidden=(24, 20, 16))
    init = {k: v.clone() for k, v in src.state_dict().items()}
    train(src, data.train, epochs=1, lr=0.05, batch_size=32, seed=0)
    traj = Trajectory([init, src.state_dict()], num_splits=3)
    spec = src.permutation_spec()
    pi = random_permutation(spec, init, seed=12)
    planted = apply_permutation(spec, pi, init)
    for method in ("fgmt", "gmt"):
        res = transfer(_mlp(0, hidden=(24, 20, 16)), traj, planted, data, method=method, batch_size=64,
                       match_init="greedy", max_sweeps=0)
        for p in res.perms:
            for g in pi:
                assert np.array_equal(p[g], pi[g]), (method, g)


def test_paired_gradients_use_the_same_batches():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 64, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    a, b = _mlp(1), _mlp(1)
    ga, gb = paired_gradients(a, b, batches)
    assert all(torch.equal(ga[n], gb[n]) for n in ga)  # same weights, same batches -> same gradients
    ref = _mlp(1)
    loss = sum(torch.nn.functional.cross_entropy(ref(x), y) for x, y in batches) / 3
    loss.backward()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(ga[n], p.grad, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="minibatch"):
        paired_gradients(a, b, [])


def test_options_and_validation(setup, capsys):
    data, traj, target_init, _ = setup
    res = _run(setup, "naive", steps=2 * K, eval_every=3)  # re-split: K' = 8
    assert res.num_steps == 2 * K and res.eval_steps == [0, 3, 6, 8]
    seen = []
    res = _run(setup, "fgmt", warm_start="both", verbose=True, callback=seen.append, keep_perms="final")
    assert res.num_solves == 2 * K and len(res.perms) == 1
    assert [i.step for i in seen] == list(range(1, K + 1)) and seen[-1].num_gradient_pairs == K
    err = capsys.readouterr().err
    assert err.count("[fgmt] step") == K
    cold = _run(setup, "fgmt")
    assert res.objective[0] >= cold.objective[0] - 1e-12  # identity start is one of the two
    warm = _run(setup, "gmt", warm_start=True, rtol=1e-6)
    assert warm.num_solves == K and warm.config["warm_start"] is True
    assert set(warm.timings) >= {"gradients", "matching", "evaluation", "total"}
    no_eval = transfer(_mlp(0), traj, target_init, data.train, method="naive")
    assert no_eval.eval_steps == [] and no_eval.best_step == K and no_eval.best_accuracy is None
    for bad, msg in [({"method": "sgd"}, "method"), ({"eval_every": 0}, "eval_every"),
                     ({"steps": 0}, "steps"), ({"warm_start": "yes"}, "warm_start"),
                     ({"keep_perms": "some"}, "keep_perms"), ({"grad_batches": 0}, "grad_batches"),
                     ({"bn_batches": -1}, "bn_batches")]:
        kw = {"method": "naive", **bad}
        with pytest.raises(ValueError, match=msg):
            transfer(_mlp(0), traj, target_init, data, **kw)
    with pytest.raises(ValueError, match="shape"):
        transfer(MLP(64, (16,), 10), traj, target_init, data, method="naive")


def test_timings_split_the_wall_time(setup):
    res = _run(setup, "gmt", grad_batches=2)
    t = res.timings
    assert set(t) >= {"gradients", "matching", "matching_gemm", "matching_lap", "evaluation", "bn",
                      "overhead", "total"}
    # the phases are disjoint intervals of one call: with the overhead they add up to its wall time
    assert t["gradients"] + t["matching"] + t["evaluation"] + t["overhead"] == pytest.approx(t["total"])
    assert min(t["gradients"], t["matching"], t["evaluation"]) > 0 and t["overhead"] >= 0
    assert t["bn"] == 0.0  # no BatchNorm in the MLP: nothing recalibrated
    # the matcher's own split is part of the matching's wall time
    assert 0 < t["matching_gemm"] + t["matching_lap"] <= t["matching"] + 1e-6
    assert res.config["grad_batches"] == 2 and res.num_gradient_pairs == K * (K + 1) // 2


def test_training_sgd_matches_torch_optim_sgd():
    data = load_digits_data(seed=0)
    a, b = _mlp(4), _mlp(4)
    train(a, data.train, epochs=1, lr=0.1, batch_size=64, weight_decay=1e-3, seed=2)
    # the same minibatch order, with torch's own optimizer
    from trajtransfer.kit.data import Loader

    opt = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for x, y in Loader(data.train, 64, seed=2).epoch():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(b(x), y).backward()
        opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_presets_hold_the_spec_values():
    from trajtransfer.kit.presets import list_presets, preset

    table = {  # algorithm-spec §3.2 / §3.4: (K, schedule, grad batches, batch, bn batches)
        ("reference", "mnist_mlp"): (10, "cosine", 1, 128, 0),
        ("reference", "cifar10_conv8"): (30, "cosine", 2, 128, 0),
        ("reference", "cifar10_cifar100_conv8"): (15, "cosine", 1, 128, 0),
        ("reference", "imagenet_resnet18"): (30, "cosine", 100, 128, 20),
        ("reference", "imagenet_cars_resnet18"): (15, "cosine", 10, 128, 2),
        ("paper", "mnist_mlp"): (5, "uniform", 1, 128, 0),
        ("paper", "cifar10_conv8"): (30, "uniform", 2, 128, 0),
        ("paper", "cifar10_cifar100_conv8"): (15, "uniform", 2, 128, 0),
        ("paper", "imagenet_resnet18"): (40, "uniform", 100, 128, 20),
        ("paper", "imagenet_cub_resnet18"): (15, "uniform", 5, 128, 2),
    }
    for (kind, name), (k, sched, gb, bs, bn) in table.items():
        p = preset(kind, name)
        assert (p.steps, p.schedule, p.grad_batches, p.batch_size, p.bn_batches) == (k, sched, gb, bs, bn)
        assert p.transfer_kwargs()["steps"] == k
    ref = preset("reference", "mnist_mlp")
    assert ref.finetune.epochs == 3 and ref.finetune.optimizer == "sgd" and ref.model.kwargs["activation"] is None
    assert sum(p.numel() for p in ref.model.build().parameters()) == 3_252_224
    assert preset("paper", "mnist_mlp").model.kwargs["activation"] == "relu"
    imnet = preset("reference", "imagenet_resnet18")
    assert (imnet.finetune.optimizer, imnet.finetune.lr, imnet.train.warmup_epochs) == ("adamw", 1e-6, 5)
    assert len(list_presets()) == 12 and "reference/mnist_mlp" in list_presets()
    with pytest.raises(ValueError, match="kind"):
        preset("official", "mnist_mlp")
    with pytest.raises(ValueError, match="mnist_mlp"):
        preset("paper", "mnist")
