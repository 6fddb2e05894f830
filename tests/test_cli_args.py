"""Command-line argument checks: one-line errors with exit code 2, before anything is trained."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from trajtransfer.kit import cli  # noqa: E402


@pytest.fixture
def runs(monkeypatch):
    """The argument namespaces run_experiment was called with (it trains nothing here)."""
    calls = []
    monkeypatch.setattr(cli, "run_experiment", calls.append)
    return calls


def _error(argv, runs, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert runs == []  # rejected before any data was loaded or model trained
    assert err.startswith("trajtransfer: error: ") and err.endswith("\n")
    assert err.count("\n") == 1, err  # one line, no traceback, no usage block
    return err


# (extra arguments, text the message must contain): each list has exactly one problem.
BAD = [
    (["--epochs", "0"], "--epochs"),
    (["--match-init", "random"], "--match-init"),
    (["--threads", "-1"], "--threads"),
    (["--steps", "-5"], "--steps"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--finetune-lr", "inf"], "--finetune-lr"),
    (["--momentum", "nan"], "--momentum"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--train-subset", "-5"], "--train-subset"),
    (["--methods", ""], "--methods"),
    (["--methods", " , "], "--methods"),
    (["--methods", "naive,magic"], "--methods"),
    (["--finetune-epochs", "-1"], "--finetune-epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--grad-batches", "0"], "--grad-batches"),
    (["--grad-batch-size", "-1"], "--grad-batch-size"),
    (["--eval-every", "0"], "--eval-every"),
    (["--hidden", "a,b"], "--hidden"),
    (["--hidden", "16,0"], "--hidden"),
    (["--dataset", "imagenet"], "--dataset"),
    (["--activation", "swish"], "--activation"),
    (["--model", "conv8"], "--model conv8"),
    (["--model", "resnet18"], "--model resnet18"),
    (["--model", "vit"], "--model vit"),
    (["--trajectory", "actual", "--epochs", "3", "--steps", "4"], "--steps 4"),
]


@pytest.mark.parametrize("command", ["demo", "transfer"])
@pytest.mark.parametrize("extra,names", BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
def test_bad_argument_is_one_line_error(tmp_path, runs, capsys, command, extra, names):
    out = tmp_path / "out"
    dataset = [] if "--dataset" in extra else ["--dataset", "digits"]
    err = _error([command, *dataset, *extra, "--out", str(out)], runs, capsys)
    assert names in err
    assert not out.exists()  # the output folder is made only once every argument is fine


def test_conv_model_on_digits_says_what_works(tmp_path, runs, capsys):
    err = _error(["transfer", "--dataset", "digits", "--model", "conv8", "--out", str(tmp_path)],
                 runs, capsys)
    assert "64 features" in err and "--model mlp" in err and "fashion-mnist" in err


def _unwritable_outs(tmp_path: Path) -> list:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    outs = [a_file, a_file / "sub"]
    if Path("/proc/self").is_dir():  # not even root can create folders there
        outs.append(Path("/proc/trajtransfer-out"))
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        outs.append(locked / "out")
    return outs


def test_bad_out_is_one_line_error(tmp_path, runs, capsys):
    for out in _unwritable_outs(tmp_path):
        err = _error(["demo", "--quick", "--out", str(out)], runs, capsys)
        assert "--out" in err and str(out) in err


@pytest.mark.parametrize("hidden,expected", [(None, [64]), ("--hidden=32", [32]),
                                             ("--hid=32,16", [32, 16])])
def test_quick_keeps_an_explicit_hidden(tmp_path, runs, hidden, expected):
    argv = ["demo", "--quick", "--out", str(tmp_path)] + ([hidden] if hidden else [])
    assert cli.main(argv) == 0
    (args,) = runs
    assert args.hidden == expected
    assert (args.epochs, args.steps, args.finetune_epochs, args.grad_batches) == (2, 3, 1, 2)


def test_good_arguments_reach_the_experiment(tmp_path, runs):
    out = tmp_path / "new" / "run"
    argv = ["transfer", "--dataset", "cifar10", "--model", "conv8", "--hidden", "8",
            "--methods", "FGMT, naive", "--train-subset", "0", "--threads", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    (args,) = runs
    assert args.hidden == [8] and out.is_dir()


def test_module_entry_point_reports_bad_argument_in_one_line(tmp_path):
    # The console script as a user runs it: nothing but the one line on stderr, exit code 2.
    import subprocess

    import trajtransfer

    env = dict(os.environ)
    root = str(Path(trajtransfer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "trajtransfer", "demo", "--epochs", "0",
                           "--out", str(tmp_path / "o")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "trajtransfer: error: --epochs must be >= 1, got 0\n"
