"""The command line: ``trajtransfer demo --quick`` and a small ``trajtransfer transfer`` run."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from trajtransfer.kit.cli import build_parser, main  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for name in ("NAIVE", "GMT", "FGMT", "target trained", "scratch"):
        assert name in printed
    assert (out / "transfer.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "finetune.png").read_bytes()[:8] == PNG_MAGIC
    res = json.loads((out / "results.json").read_text())
    K = res["steps"]
    assert K == 3 and set(res["methods"]) == {"naive", "gmt", "fgmt", "oracle"}
    assert res["methods"]["gmt"]["num_gradient_pairs"] == K * (K + 1) // 2
    assert res["methods"]["fgmt"]["num_gradient_pairs"] == K
    for d in res["methods"].values():
        assert d["eval_steps"] == list(range(K + 1)) and 0 <= d["best_accuracy"] <= 1
    assert set(res["finetune"]) == {"scratch", "naive", "gmt", "fgmt", "oracle"}
    assert (out / "source_checkpoints" / "epoch_-1.pt").exists()
    # the time split table: its shares are matching / total of each method's transfer
    assert "matching share" in printed and "| LAP |" in printed
    gmt = res["methods"]["gmt"]
    assert gmt["matching_fraction"] == pytest.approx(gmt["timings"]["matching"] / gmt["timings"]["total"])
    assert f"{100 * gmt['matching_fraction']:.1f}%" in printed
    assert gmt["config"]["grad_batches"] == 2 and gmt["config"]["batch_size"] == 128  # --quick caps 10
    expected = "cuda" if __import__("torch").cuda.is_available() else "cpu"  # --device auto
    assert res["device"].startswith(expected) and gmt["config"]["device"].startswith(expected)


@pytest.mark.parametrize("device", ["bogus", "cuda"])
def test_bad_device_is_a_one_line_error(tmp_path, capsys, device):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    try:
        rc = main(["demo", "--quick", "--quiet", "--out", str(tmp_path / "d"), "--device", device])
    except SystemExit as exc:  # argument errors exit from the checks that follow parsing
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("trajtransfer: error: --device") and "\n" not in err
    assert not (tmp_path / "d").exists()  # failed before any work


def test_demo_defaults():
    args = build_parser().parse_args(["demo"])
    assert (args.dataset, args.hidden, args.epochs, args.steps, args.lr, args.batch_size) == \
        ("digits", "512", 2, 10, 0.01, 32)
    assert (args.grad_batches, args.grad_batch_size, args.threads) == (10, 128, 0)  # 0: the policy
    # the generic command keeps the paper's one minibatch per gradient pair
    args = build_parser().parse_args(["transfer"])
    assert (args.grad_batches, args.grad_batch_size) == (1, 0)


def test_transfer_command_on_digits(tmp_path, capsys):
    from trajtransfer.core.match import set_num_threads

    out = tmp_path / "run"
    before = set_num_threads(0)  # query
    try:
        set_num_threads(2)
        main(["transfer", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--steps", "2",
              "--methods", "naive,fgmt", "--finetune-epochs", "0", "--batch-size", "64", "--out", str(out),
              "--quiet", "--threads", "1"])
        assert set_num_threads(0) == 2  # the run's budget was restored afterwards
    finally:
        set_num_threads(before)
    res = json.loads((out / "results.json").read_text())
    assert res["threads"] == 1 and res["methods"]["fgmt"]["config"]["num_threads"] == 1
    assert set(res["methods"]) == {"naive", "fgmt"} and res["finetune"] == {}
    assert res["command"].startswith("trajtransfer transfer --dataset digits")
    assert (out / "transfer.png").read_bytes()[:8] == PNG_MAGIC
    assert not (out / "finetune.png").exists()


def test_transfer_command_actual_trajectory(tmp_path):
    out = tmp_path / "actual"
    main(["transfer", "--dataset", "digits", "--hidden", "16", "--epochs", "2", "--steps", "4",
          "--trajectory", "actual", "--methods", "naive", "--finetune-epochs", "0", "--batch-size", "64",
          "--out", str(out), "--quiet", "--threads", "1"])
    res = json.loads((out / "results.json").read_text())
    assert res["trajectory"] == "actual" and res["steps"] == 4
    # through every epoch's checkpoint: the source's own accuracy at s = 2 is its epoch-0 checkpoint's
    src = res["source"]["trajectory_val_accuracy"]
    assert len(src) == 5 and src[-1] == pytest.approx(res["source"]["val_accuracy"])
    # Naive at s = 2 is θ₂⁰ + (θ₁ at epoch 0 − θ₁⁰), a different point than halfway along init -> end
    lin = tmp_path / "linear"
    main(["transfer", "--dataset", "digits", "--hidden", "16", "--epochs", "2", "--steps", "4",
          "--methods", "naive", "--finetune-epochs", "0", "--batch-size", "64", "--out", str(lin),
          "--quiet", "--threads", "1"])
    res_lin = json.loads((lin / "results.json").read_text())
    assert res_lin["trajectory"] == "linear"
    assert res_lin["methods"]["naive"]["accuracy"][-1] == res["methods"]["naive"]["accuracy"][-1]  # same end
    assert res_lin["source"]["trajectory_val_accuracy"][2] != src[2]
    with pytest.raises(SystemExit) as bad:  # the message: tests/test_cli_args.py
        main(["transfer", "--dataset", "digits", "--epochs", "3", "--steps", "4", "--trajectory", "actual",
              "--out", str(tmp_path / "bad"), "--quiet"])
    assert bad.value.code == 2


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["transfer", "--dataset", "digits", "--methods", "naive,magic", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["demo", "--hidden", "a,b", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nothing"])


def test_cli_reports_missing_data_in_one_line(tmp_path, capsys):
    """MNIST cannot be downloaded: without a path the CLI exits 2 with a one-line message."""
    rc = main(["transfer", "--dataset", "mnist", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("trajtransfer: error:") and "nothing is downloaded" in err
    assert "Traceback" not in err
