"""The fine-tuning scenario end to end on digits (a few epochs and steps), its parts, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trajtransfer import MLP, TrainConfig, evaluate, finetune_transfer  # noqa: E402
from trajtransfer.kit.data import load_digits_data  # noqa: E402
from trajtransfer.kit.finetune import class_task, head_names, with_new_head  # noqa: E402

HIDDEN = (32, 32)
PRE, NEW = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


@pytest.fixture(scope="module")
def digits():
    return load_digits_data()


@pytest.fixture(scope="module")
def run(digits):
    return finetune_transfer(digits, hidden=HIDDEN, pretrain=TrainConfig(epochs=3, lr=0.05, batch_size=32),
                             finetune=TrainConfig(epochs=2, lr=0.02, batch_size=32), steps=4, lmc_points=3,
                             methods=("naive", "gmt", "fgmt"), grad_batches=2, num_threads=1)


def _net(state):
    net = MLP(64, HIDDEN, len(NEW))
    net.load_state_dict(state)
    return net


def test_class_task_keeps_and_renumbers_the_classes(digits):
    task = class_task(digits, [7, 5], train_subset=50)
    for split, full in ((task.train, digits.train), (task.val, digits.val), (task.test, digits.test)):
        assert split.num_classes == 2 and set(split.y.tolist()) <= {0, 1}
        # the i-th kept sample is the i-th sample of the full split with label 7 or 5
        keep = np.flatnonzero(np.isin(full.y.numpy(), [7, 5]))[:len(split)]
        assert torch.equal(split.x, full.x[keep])
        assert split.y.tolist() == [0 if c == 7 else 1 for c in full.y[keep].tolist()]
    assert len(task.train) == 50 and len(task.test) == int(np.isin(digits.test.y.numpy(), [5, 7]).sum())
    for bad in ([], [1, 1], [3, 10]):
        with pytest.raises(ValueError, match="classes"):
            class_task(digits, bad)


def test_new_head_keeps_the_body_and_reinitializes_the_head():
    torch.manual_seed(0)
    pre = MLP(64, HIDDEN, 5)
    new = with_new_head(pre, lambda nc: MLP(64, HIDDEN, nc), 3, seed=1)
    assert head_names(new) == ["layers.2.weight", "layers.2.bias"]
    assert new.layers[2].weight.shape == (3, 32)
    for k in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"):
        assert torch.equal(new.state_dict()[k], pre.state_dict()[k])
    torch.manual_seed(1)
    assert torch.equal(new.layers[2].weight, MLP(64, HIDDEN, 3).layers[2].weight)  # the seeded init
    with pytest.raises(ValueError, match="only the head"):  # a body that depends on the classes
        with_new_head(pre, lambda nc: MLP(64, (32, nc), nc), 3, seed=1)
    with pytest.raises(ValueError, match="head names"):
        with_new_head(pre, lambda nc: MLP(64, HIDDEN, nc), 3, seed=1, head=["fc.weight"])


def test_scenario_rows_and_shapes(run):
    assert list(run.rows) == ["direct", "naive", "gmt", "fgmt"]
    K = run.config["steps"]
    assert K == 4 and len(run.trajectory) == K + 1 and len(run.source_curve) == K + 1
    for m, res in run.transfers.items():
        assert res.num_steps == K and res.eval_steps == list(range(K + 1))
        for k, v in res.best_params.items():
            assert v.shape == run.target_start[k].shape
        assert res.best_params["layers.2.weight"].shape == (len(NEW), HIDDEN[-1])
    assert run.transfers["gmt"].num_gradient_pairs == K * (K + 1) // 2
    assert run.transfers["fgmt"].num_gradient_pairs == K
    for r in run.rows.values():
        for key in ("start_val", "start_test", "after_val", "after_test"):
            assert 0.0 <= r[key] <= 1.0
    assert set(run.lmc) == {"naive", "gmt", "fgmt"} and run.lmc["fgmt"].alphas == [0.0, 0.5, 1.0]
    d = json.loads(json.dumps(run.to_dict()))
    assert d["config"]["head"] == ["layers.2.weight", "layers.2.bias"]
    assert d["config"]["train_samples"]["finetune"] == int(np.isin(load_digits_data().train.y.numpy(), NEW).sum())


def test_best_step_is_the_recorded_maximum_and_the_start_evaluates_to_it(digits, run):
    task = class_task(digits, NEW)
    for m, res in run.transfers.items():
        acc = dict(zip(res.eval_steps, res.accuracy))
        best = max(range(1, res.num_steps + 1), key=lambda s: (acc[s], -s))  # first maximum, s >= 1
        assert res.best_step == best == run.rows[m]["best_step"]
        assert res.best_accuracy == acc[best]
        net = _net(res.best_params)
        assert evaluate(net, task.val) == run.rows[m]["start_val"] == acc[best]
        assert evaluate(net, task.test) == run.rows[m]["start_test"]
    direct = _net(run.target_start)
    assert evaluate(direct, task.val) == run.rows["direct"]["start_val"]


def test_transferred_head_is_the_targets_head_plus_the_displacement_permuted_on_its_input(run):
    origin = run.trajectory[0]
    for m, res in run.transfers.items():
        s = res.best_step
        delta = run.trajectory[s]["layers.2.weight"] - origin["layers.2.weight"]
        perm = res.perms[s - 1]["c2"]
        expect = run.target_start["layers.2.weight"] + delta[:, perm]  # classes (rows) not permuted
        assert torch.allclose(res.best_params["layers.2.weight"], expect, atol=1e-6)
        bias = run.target_start["layers.2.bias"] + run.trajectory[s]["layers.2.bias"] - origin["layers.2.bias"]
        assert torch.allclose(res.best_params["layers.2.bias"], bias, atol=1e-6)
    assert all(torch.equal(p["c2"], torch.arange(HIDDEN[-1])) for p in run.transfers["naive"].perms)


def test_lmc_curves_start_at_the_targets_own_fine_tuning(run):
    accs = {round(c.accuracy[0], 12) for c in run.lmc.values()}
    assert len(accs) == 1  # the same α = 0 end point for every method
    for m, c in run.lmc.items():
        assert c.accuracy[-1] == run.rows[m]["start_val"]
        assert run.rows[m]["barrier"] == c.barrier


def test_actual_trajectory_goes_through_every_epoch(digits):
    res = finetune_transfer(digits, hidden=(16,), pretrain=TrainConfig(epochs=1, batch_size=64),
                            finetune=TrainConfig(epochs=2, batch_size=64), steps=4, trajectory="actual",
                            methods=("fgmt",), after_epochs=0, lmc_points=0, num_threads=1)
    assert res.trajectory.num_checkpoints == 3 and res.trajectory.num_steps == 4
    assert res.lmc == {} and "LMC" not in res.table()
    r = res.rows["fgmt"]
    assert (r["after_val"], r["after_test"]) == (r["start_val"], r["start_test"])  # 0 epochs: no change


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": ("bogus",)}, "methods"),
    ({"trajectory": "curvy"}, "trajectory"),
    ({"lmc_points": 1}, "lmc_points"),
    ({"after_epochs": -1}, "after_epochs"),
    ({"steps": 3, "trajectory": "actual", "finetune": TrainConfig(epochs=2)}, "multiple"),
    ({"finetune_classes": (5, 11)}, "classes"),
])
def test_bad_arguments_are_named(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        finetune_transfer(digits, **kwargs)


def test_data_must_be_splits(digits):
    with pytest.raises(TypeError, match="data"):
        finetune_transfer(digits.train)


def test_cli_smoke(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from trajtransfer.kit.cli import main

    out = tmp_path / "ft"
    rc = main(["finetune-transfer", "--dataset", "digits", "--hidden", "16", "--pretrain-epochs", "1",
               "--finetune-epochs", "1", "--batch-size", "64", "--steps", "2", "--methods", "naive,fgmt",
               "--lmc-points", "3", "--out", str(out), "--quiet", "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "direct fine-tuning" in printed and "| FGMT |" in printed and "LMC barrier" in printed
    for png in ("transfer.png", "lmc.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    assert set(res["rows"]) == {"direct", "naive", "fgmt"} and res["config"]["finetune_classes"] == list(NEW)
    assert res["command"].startswith("trajtransfer finetune-transfer")


@pytest.mark.parametrize("args, match", [
    (["--finetune-classes", "5-12"], "--finetune-classes"),
    (["--pretrain-classes", "a"], "--pretrain-classes"),
    (["--methods", "naive,bogus"], "--methods"),
    (["--lmc-points", "1"], "--lmc-points"),
    (["--steps", "3", "--trajectory", "actual", "--finetune-epochs", "2"], "multiple"),
    (["--finetune-lr", "0"], "--finetune-lr"),
])
def test_cli_bad_arguments_are_one_line_errors(tmp_path, capsys, args, match):
    from trajtransfer.kit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["finetune-transfer", "--dataset", "digits", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and match in err and "\n" not in err
    assert not (tmp_path / "x").exists()  # refused before any work
