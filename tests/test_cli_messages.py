"""``--version``, and errors that name their fix: a missing optional dependency (the extra that
installs it) or a missing Fashion-MNIST (the Debian package, --data-root), raised in one line and
before any training."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import trajtransfer
from trajtransfer.kit import data as tt_data
from trajtransfer.kit._extras import MissingExtraError

PLOT_FIX = 'pip install "trajtransfer[plot]"'
DEMO_FIX = 'pip install "trajtransfer[demo]"'

# A small transfer run; without --quiet, so any training would log to stderr.
SMALL_RUN = ["--hidden", "16", "--epochs", "1", "--steps", "2", "--methods", "naive",
             "--finetune-epochs", "0", "--threads", "1"]


def _cli_without(module: str, argv: list) -> subprocess.CompletedProcess:
    """``main(argv)`` in a fresh interpreter where importing ``module`` fails as if it were absent
    (a None entry in sys.modules)."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{module!r}] = None
        from trajtransfer.kit.cli import main
        raise SystemExit(main({argv!r}))
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_version_flag_prints_the_package_version():
    proc = subprocess.run([sys.executable, "-m", "trajtransfer", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"trajtransfer {trajtransfer.__version__}"


def test_cli_without_matplotlib_stops_before_training(tmp_path):
    out = tmp_path / "run"
    proc = _cli_without("matplotlib", ["transfer", "--dataset", "digits", *SMALL_RUN, "--out", str(out)])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"trajtransfer: error: plotting needs matplotlib, which is not installed: {PLOT_FIX}"]
    assert not out.exists()  # no data loaded, nothing trained or written


def test_cli_demo_without_scikit_learn_stops_before_training(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    proc = _cli_without("sklearn", ["demo", "--quick", "--out", str(out)])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"trajtransfer: error: the digits dataset needs scikit-learn, which is not installed: {DEMO_FIX}"]
    assert list(out.rglob("*")) == []  # no checkpoints, no results.json


def test_digits_loader_names_the_demo_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingExtraError, match=r"scikit-learn.*trajtransfer\[demo\]") as info:
        tt_data.load_digits_data()
    assert isinstance(info.value, ImportError) and "\n" not in str(info.value)


def test_plots_name_the_plot_extra(monkeypatch, tmp_path):
    from trajtransfer.kit.plot import plot_transfer_curves

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    curve = {"eval_steps": [0, 1], "accuracy": [0.1, 0.2], "best_step": 1}
    with pytest.raises(ImportError, match=r"matplotlib.*trajtransfer\[plot\]"):
        plot_transfer_curves({"gmt": curve}, tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()


def _assert_fashion_mnist_fix(message: str) -> None:
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message
    assert "\n" not in message


def test_missing_fashion_mnist_names_the_debian_package_and_data_root(monkeypatch, tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as info:
        tt_data.load_fashion_mnist(absent)
    _assert_fashion_mnist_fix(str(info.value))
    assert str(absent) in str(info.value)
    # the default folder (Debian's) missing
    monkeypatch.setattr(tt_data, "FASHION_MNIST_DIR", str(absent))
    with pytest.raises(FileNotFoundError) as info:
        tt_data.load_fashion_mnist()
    _assert_fashion_mnist_fix(str(info.value))
    # a folder without the idx files
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte") as info:
        tt_data.load_fashion_mnist(tmp_path)
    _assert_fashion_mnist_fix(str(info.value))


def test_cli_missing_fashion_mnist_is_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from trajtransfer.kit.cli import main

    out = tmp_path / "run"
    rc = main(["transfer", "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "absent"),
               *SMALL_RUN, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    (line,) = err.splitlines()
    assert line.startswith("trajtransfer: error: fashion-mnist:")
    _assert_fashion_mnist_fix(line)
    assert not (out / "results.json").exists()
