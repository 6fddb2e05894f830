"""Adam / AdamW training: the update, the config's validation, and learning transfer of Adam runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trajtransfer.core.permute import apply_permutation, random_permutation  # noqa: E402
from trajtransfer.kit.data import Loader, load_digits_data  # noqa: E402
from trajtransfer.kit.models import MLP  # noqa: E402
from trajtransfer.kit.training import TrainConfig, evaluate, train  # noqa: E402
from trajtransfer.method.trajectory import TrajectoryRecorder  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402
from transfer_setup import tanh_mlp  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return load_digits_data(seed=0)


def _adam_by_hand(model, data, *, lr, betas, eps, weight_decay, decoupled, batch_size, seed):
    """One epoch of Adam written from Kingma & Ba (bias-corrected moments), with L2 decay in the
    gradient or, ``decoupled``, AdamW's θ ← θ(1 − lr·wd) before the step (Loshchilov & Hutter)."""
    b1, b2 = betas
    params = list(model.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, (x, y) in enumerate(Loader(data, batch_size, seed=seed).epoch(), start=1):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, mi, vi in zip(params, m, v):
                g = p.grad if decoupled else p.grad + weight_decay * p
                if decoupled:
                    p.mul_(1 - lr * weight_decay)
                mi.mul_(b1).add_((1 - b1) * g)
                vi.mul_(b2).add_((1 - b2) * g * g)
                m_hat, v_hat = mi / (1 - b1 ** t), vi / (1 - b2 ** t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_and_adamw_follow_the_textbook_update_with_the_configured_constants(data, optimizer):
    kw = dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)
    a, b = tanh_mlp(4), tanh_mlp(4)
    train(a, data.train, epochs=1, batch_size=64, seed=2, optimizer=optimizer, **kw)
    _adam_by_hand(b, data.train, decoupled=optimizer == "adamw", batch_size=64, seed=2, **kw)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_adam_and_adamw_differ_exactly_by_the_weight_decay(data):
    runs = {}
    for opt in ("adam", "adamw"):
        for wd in (0.0, 0.1):
            m = tanh_mlp(5)
            train(m, data.train, epochs=1, lr=1e-2, batch_size=64, optimizer=opt, weight_decay=wd)
            runs[opt, wd] = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    assert torch.equal(runs["adam", 0.0], runs["adamw", 0.0])
    assert not torch.allclose(runs["adam", 0.1], runs["adamw", 0.1], atol=1e-4)


def test_adam_run_from_a_permuted_init_is_the_permuted_run(data, tmp_path):
    """Adam's moments are per element, so with the same minibatches a run from π·θ⁰ is π·(the run
    from θ⁰) at every epoch: the premise of learning transfer holds for Adam as for SGD."""
    src = tanh_mlp(6)
    spec = src.permutation_spec()
    init = {k: v.clone() for k, v in src.state_dict().items()}
    pi = random_permutation(spec, init, seed=3)
    twin = tanh_mlp(0)
    twin.load_state_dict(apply_permutation(spec, pi, init))
    recs = [TrajectoryRecorder(tmp_path / n) for n in ("src", "twin")]
    cfg = TrainConfig(epochs=2, lr=5e-3, batch_size=64, optimizer="adam", seed=1)
    for model, rec in zip((src, twin), recs):
        train(model, data.train, cfg, recorder=rec)
    a, b = recs[0].trajectory(epochs="all"), recs[1].trajectory(epochs="all")
    for i in range(a.num_checkpoints):
        expect = apply_permutation(spec, pi, a.checkpoint(i))
        for n, v in b.checkpoint(i).items():
            torch.testing.assert_close(v, expect[n], rtol=1e-4, atol=1e-5)


def test_recorder_stores_the_weights_of_every_adam_epoch_and_nothing_else(data, tmp_path):
    model = tanh_mlp(7)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    seen = {}
    rec = TrajectoryRecorder(tmp_path)
    train(model, data.train, epochs=3, lr=1e-2, batch_size=64, optimizer="adamw", weight_decay=1e-2,
          recorder=rec, callback=lambda e, _: seen.update({e: {k: v.clone() for k, v in
                                                            model.state_dict().items()}}))
    assert rec.epochs == [-1, 0, 1, 2]
    traj = rec.trajectory(epochs="all")
    for i, e in enumerate(rec.epochs):
        sd = traj.checkpoint(i)
        assert set(sd) == set(init)  # the model's weights only: no moments, no step counts
        ref = init if e == -1 else seen[e]
        for k in init:
            assert torch.equal(sd[k], ref[k]), (e, k)
    # the epochs differ: the recorder did not write one state four times
    assert not torch.equal(traj.checkpoint(1)["layers.0.weight"], traj.checkpoint(2)["layers.0.weight"])


def test_planted_permutation_is_recovered_from_an_adam_trajectory(data, tmp_path):
    """Target init = π·(source init): every step of GMT and FGMT finds π, so the transfer is
    π·(the Adam trajectory) and computes the source's function."""
    rec = TrajectoryRecorder(tmp_path)
    train(tanh_mlp(1), data.train, epochs=3, lr=3e-3, batch_size=32, optimizer="adam", recorder=rec)
    traj = rec.trajectory(num_splits=4, epochs="all")  # every epoch: 12 steps
    spec = tanh_mlp(0).permutation_spec()
    pi = random_permutation(spec, traj[0], seed=9)
    planted = apply_permutation(spec, pi, traj[0])
    src = tanh_mlp(0)
    for method in ("fgmt", "gmt"):
        res = transfer(tanh_mlp(0), traj, planted, data, method=method, batch_size=64,
                       match_init="greedy")
        for p in res.perms:
            for g in pi:
                assert np.array_equal(p[g], pi[g]), (method, g)
        for n, v in apply_permutation(spec, pi, traj[traj.num_steps]).items():
            torch.testing.assert_close(res.final_params[n], v, rtol=0, atol=1e-6)
        src.load_state_dict(traj[traj.num_steps])
        assert res.final_accuracy == evaluate(src, data.val)


def _relu_mlp(seed: int):
    torch.manual_seed(seed)
    return MLP(64, (128,), 10)


def test_adam_trajectory_transfers_to_an_independent_init(data, tmp_path):
    """End to end from the recorder's files: gradient matching beats Naive by a wide margin
    (0.15 to 0.36 over three seed pairs; ReLU: with tanh units Naive is already close here)."""
    rec = TrajectoryRecorder(tmp_path)
    cfg = TrainConfig(epochs=3, lr=1e-3, batch_size=32, optimizer="adam")
    train(_relu_mlp(1), data.train, cfg, recorder=rec, seed=0)
    tgt = _relu_mlp(2)
    target_init = {k: v.clone() for k, v in tgt.state_dict().items()}
    train(tgt, data.train, cfg, seed=1)
    traj = rec.trajectory(num_splits=8)
    acc = {}
    for method in ("naive", "fgmt", "gmt", "oracle"):
        res = transfer(_relu_mlp(0), traj, target_init, data, method=method, batch_size=128,
                       grad_batches=4, target_final=tgt if method == "oracle" else None)
        assert res.num_steps == 8 and len(res.accuracy) == 9
        acc[method] = res.best_accuracy
    assert min(acc["fgmt"], acc["gmt"], acc["oracle"]) > acc["naive"] + 0.1, acc


BAD = [
    ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
    ({"optimizer": "Adam"}, ValueError, "optimizer"),
    ({"betas": (0.9,)}, TypeError, "betas"),
    ({"betas": 0.9}, TypeError, "betas"),
    ({"betas": "ab"}, TypeError, "betas"),
    ({"betas": (0.9, 1.0)}, ValueError, r"betas\[1\]"),
    ({"betas": (-0.1, 0.999)}, ValueError, r"betas\[0\]"),
    ({"betas": (0.9, math.nan)}, ValueError, r"betas\[1\]"),
    ({"betas": (0.9, None)}, TypeError, r"betas\[1\]"),
    ({"eps": 0.0}, ValueError, "eps"),
    ({"eps": -1e-8}, ValueError, "eps"),
    ({"eps": math.inf}, ValueError, "eps"),
    ({"weight_decay": -1e-4}, ValueError, "weight_decay"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"lr": math.nan}, ValueError, "lr"),
    ({"lr": "0.1"}, TypeError, "lr"),
    ({"momentum": -0.5}, ValueError, "momentum"),
    ({"epochs": -1}, ValueError, "epochs"),
    ({"epochs": 2.0}, TypeError, "epochs"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"warmup_epochs": -1}, ValueError, "warmup_epochs"),
    ({"schedule": "linear"}, ValueError, "schedule"),
]


@pytest.mark.parametrize("kwargs, exc, name", BAD)
def test_train_config_names_the_bad_field(data, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        TrainConfig(**kwargs)
    with pytest.raises(exc, match=name):  # the same check for train()'s keyword overrides
        train(tanh_mlp(0), data.train, **kwargs)


def test_train_config_keeps_adam_constants_through_overrides_and_dicts():
    cfg = TrainConfig(optimizer="adamw", betas=[0.5, 0.75], eps=1e-5, weight_decay=0.1)
    assert cfg.betas == (0.5, 0.75) and isinstance(cfg.betas, tuple)
    assert TrainConfig(**cfg.as_dict()) == cfg
    assert TrainConfig(optimizer="adam", betas=(0.0, 0.0)).betas == (0.0, 0.0)  # both ends allowed
