"""transfer_many: N targets of one source trajectory, against N single transfers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import trajtransfer as tt  # noqa: E402
import trajtransfer.method.pairs as pairs_mod  # noqa: E402
from test_bn import BNNet  # noqa: E402
from trajtransfer.kit.data import ArrayDataset, DatasetSplits  # noqa: E402
from trajtransfer.method.trajectory import Trajectory  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402
from trajtransfer.method.transfer_many import ensemble_accuracy, transfer_many  # noqa: E402
from transfer_setup import tanh_mlp, trained_source_and_target  # noqa: E402

K = 4
N = 3


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
    data, traj, _, final = trained_source_and_target(tanh_mlp, K)
    inits = [tanh_mlp(10 + i).state_dict() for i in range(N)]
    return data, traj, inits, final


def _same_result(single, member, exact=True):
    assert member.method == single.method and member.num_steps == single.num_steps
    assert len(member.perms) == len(single.perms)
    for step, (a, b) in enumerate(zip(single.perms, member.perms), 1):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[g], b[g]) for g in a), f"step {step}"
    assert member.eval_steps == single.eval_steps and member.best_step == single.best_step
    assert member.accuracy == pytest.approx(single.accuracy, abs=1e-12 if exact else 1e-6)
    for got, want in ((member.final_params, single.final_params), (member.best_params, single.best_params)):
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0 if exact else 1e-5,
                                       atol=0 if exact else 1e-6)
    assert member.num_gradient_pairs == single.num_gradient_pairs
    assert member.num_source_gradients == single.num_source_gradients
    assert member.num_solves == single.num_solves
    # None where no solve happened (Naive, Oracle after step 1)
    assert [o is None for o in member.objective] == [o is None for o in single.objective]
    assert [o for o in member.objective if o is not None] == pytest.approx(
        [o for o in single.objective if o is not None], rel=1e-9)


@pytest.mark.parametrize("method, options", [
    ("fgmt", {}),
    ("gmt", {}),
    ("gmt", {"cache_source": True, "warm_start": "both"}),
    ("fgmt", {"factored_pairs": False, "eval_every": 3}),
    ("naive", {}),
])
def test_members_equal_single_transfers(setup, method, options):
    data, traj, inits, _ = setup
    kw = dict(batch_size=64, seed=5, num_threads=1, **options)  # one thread: bitwise equal
    singles = [transfer(tanh_mlp(0), traj, init, data, method=method, **kw) for init in inits]
    many = transfer_many(tanh_mlp(0), traj, inits, data, method=method, **kw)
    assert len(many.members) == N
    for single, member in zip(singles, many.members):
        _same_result(single, member)
    # one source gradient per pair of one single transfer, not one per member
    assert many.num_source_gradients == singles[0].num_source_gradients
    assert many.eval_steps == singles[0].eval_steps


def test_oracle_members_take_their_own_end_points(setup):
    data, traj, inits, final = setup
    finals = [final, inits[0], inits[2]]
    singles = [transfer(tanh_mlp(0), traj, i, data, method="oracle", target_final=f, seed=1,
                        num_threads=1)
               for i, f in zip(inits, finals)]
    many = transfer_many(tanh_mlp(0), traj, inits, data, method="oracle", target_finals=finals, seed=1,
                         num_threads=1)
    for single, member in zip(singles, many.members):
        _same_result(single, member)


def test_source_gradients_are_computed_once_per_pair(setup, monkeypatch):
    data, traj, inits, _ = setup
    calls = {"n": 0}
    real = pairs_mod.mean_gradient

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(pairs_mod, "mean_gradient", counting)
    res = transfer_many(tanh_mlp(0), traj, inits, data, method="fgmt", batch_size=64)
    assert calls["n"] == K + N * K  # K source gradients, K target gradients per member
    assert res.num_source_gradients == K


def _bn_problem():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    ds = ArrayDataset(x, y, 3)
    data = DatasetSplits(ds.subset(slice(0, 128)), ds.subset(slice(128, 160)), ds.subset(slice(128, 160)))
    src0, src1 = BNNet(), BNNet()
    traj = Trajectory([src0.state_dict(), src1.state_dict()], num_splits=3)
    return data, traj, [BNNet().state_dict() for _ in range(3)]


@pytest.mark.parametrize("method", ["fgmt", "gmt"])
def test_batchnorm_members_equal_single_transfers(method):
    data, traj, inits = _bn_problem()
    kw = dict(batch_size=16, bn_batches=2, seed=2, method=method, num_threads=1)
    singles = [transfer(BNNet(), traj, init, data, **kw) for init in inits]
    many = transfer_many(BNNet(), traj, inits, data, **kw)
    for single, member in zip(singles, many.members):
        assert single.config["uses_batchnorm"]
        _same_result(single, member)


def _numpy_ensemble(states, make, data) -> float:
    """Accuracy of the mean softmax, computed member by member in float64 numpy."""
    probs = 0.0
    for state in states:
        m = make()
        m.load_state_dict(state)
        m.eval()
        with torch.no_grad():
            logits = m(data.x).double().numpy()
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = probs + e / e.sum(axis=1, keepdims=True)
    return float(np.mean(np.argmax(probs, axis=1) == data.y.numpy()))


def test_ensemble_accuracy_is_the_mean_probability_vote(setup):
    data, traj, inits, _ = setup
    res = transfer_many(tanh_mlp(0), traj, inits, data, method="fgmt", batch_size=64, eval_every=2)
    assert res.eval_steps == [0, 2, 4] and len(res.accuracy) == 3
    # float32 against float64 probabilities: a near-tie may flip one sample's vote
    one = 1 / len(data.val)
    assert abs(res.accuracy[0] - _numpy_ensemble(inits, lambda: tanh_mlp(0), data.val)) <= one
    assert abs(res.final_accuracy - _numpy_ensemble([m.final_params for m in res.members],
                                                    lambda: tanh_mlp(0), data.val)) <= one
    assert res.member_accuracy == [m.accuracy for m in res.members]
    d = res.to_dict()
    assert d["final_accuracy"] == res.final_accuracy and len(d["members"]) == N


def test_ensemble_of_bn_members_uses_their_recalibrated_statistics():
    data, traj, inits = _bn_problem()
    res = transfer_many(BNNet(), traj, inits, data, method="fgmt", batch_size=16, bn_batches=2)
    want = _numpy_ensemble([m.final_params for m in res.members], BNNet, data.val)
    assert abs(res.final_accuracy - want) <= 1 / len(data.val)


def test_one_member_ensemble_is_the_member(setup):
    data, traj, inits, _ = setup
    res = transfer_many(tanh_mlp(0), traj, inits[:1], data, method="fgmt", batch_size=64)
    # argmax of the softmax is the argmax of the logits
    assert res.accuracy == res.members[0].accuracy


def test_without_eval_data_nothing_is_evaluated(setup):
    data, traj, inits, _ = setup
    res = transfer_many(tanh_mlp(0), traj, inits, data.train, method="fgmt", batch_size=64)
    assert res.eval_steps == [] and res.accuracy == [] and res.final_accuracy is None
    assert all(m.best_step == K for m in res.members)
    assert set(res.timings) == {"gradients", "matching", "evaluation", "ensemble", "total"}


def test_bad_arguments_are_refused_by_name(setup):
    data, traj, inits, final = setup
    run = lambda targets, **kw: transfer_many(tanh_mlp(0), traj, targets, data, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="target_inits is empty"):
        run([])
    with pytest.raises(TypeError, match="target_inits must be a list"):
        run(inits[0])  # one state dict, not a list of them
    with pytest.raises(TypeError, match="target_inits must be a list"):
        run(tanh_mlp(3))
    with pytest.raises(TypeError, match=r"target_inits\[1\] must be an nn.Module"):
        run([inits[0], "model.pt"])
    wide = tanh_mlp(4).state_dict()
    wide["layers.0.weight"] = torch.zeros(33, 64)
    with pytest.raises(ValueError, match=r"target_inits\[2\].*layers.0.weight.*shape"):
        run([inits[0], inits[1], wide])
    with pytest.raises(ValueError, match=r"target_inits\[0\].*needs target_final"):
        run(inits, method="oracle")
    with pytest.raises(ValueError, match="target_finals has 1 entries"):
        run(inits, method="oracle", target_finals=[final])
    with pytest.raises(TypeError, match="target_finals"):
        run(inits, method="oracle", target_final=final)
    with pytest.raises(TypeError, match="unexpected keyword.*bogus"):
        run(inits, bogus=1)
    with pytest.raises(ValueError, match="method must be one of"):
        run(inits, method="sgd")
    with pytest.raises(ValueError, match="eval_every"):
        run(inits, eval_every=0)
    with pytest.raises(ValueError, match="at least one model"):
        ensemble_accuracy([], data.val)
    with pytest.raises(TypeError, match="dataset must be an ArrayDataset"):
        ensemble_accuracy([tanh_mlp(0)], data)


def test_exported_at_the_top_level():
    assert tt.transfer_many is transfer_many
    assert tt.ensemble_accuracy is ensemble_accuracy
    assert "transfer_many" in dir(tt)


def test_ensemble_command_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import json

    from trajtransfer.kit.cli import main

    out = tmp_path / "ens"
    assert main(["ensemble", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--steps", "2",
                 "--members", "2", "--finetune-epochs", "1", "--batch-size", "64", "--threads", "1",
                 "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| member 1 |" in printed and "| ensemble |" in printed
    assert (out / "ensemble.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    tr = res["transfer"]
    assert res["method"] == "fgmt" and len(tr["members"]) == 2 and tr["eval_steps"] == [0, 1, 2]
    assert tr["num_source_gradients"] == 2
    assert len(res["finetuned"]["member_test"]) == 2 and 0 <= res["finetuned"]["ensemble_test"] <= 1


@pytest.mark.parametrize("argv, message", [
    (["--methods", "gmt,fgmt"], "takes one method"),
    (["--methods", "oracle"], "needs each member's trained end point"),
    (["--members", "0"], "--members must be >= 1"),
])
def test_ensemble_command_refuses_bad_arguments(tmp_path, capsys, argv, message):
    pytest.importorskip("matplotlib")
    from trajtransfer.kit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["ensemble", "--dataset", "digits", "--out", str(tmp_path / "e"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_ensemble_plot_needs_an_evaluated_ensemble(setup, tmp_path):
    pytest.importorskip("matplotlib")
    from trajtransfer.kit.plot import plot_ensemble_curves

    data, traj, inits, _ = setup
    res = transfer_many(tanh_mlp(0), traj, inits[:2], data.train, method="naive")
    with pytest.raises(ValueError, match="not evaluated"):
        plot_ensemble_curves(res, tmp_path / "e.png")


def test_progress_names_the_member(setup, capsys):
    data, traj, inits, _ = setup
    seen = []
    transfer_many(tanh_mlp(0), traj, inits[:2], data, method="fgmt", batch_size=64, verbose=True,
                  callback=lambda i, info: seen.append((i, info.step)))
    assert seen == [(i, s) for s in range(1, K + 1) for i in range(2)]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 * K and err[0].startswith("member 0: [fgmt] step   1/4")
    assert err[1].startswith("member 1: [fgmt] step   1/4")
