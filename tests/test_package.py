"""The package surface: exports resolve, and the numpy-only layers work without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import trajtransfer as tt


def test_every_exported_name_resolves():
    missing = [name for name in tt.__all__ if getattr(tt, name, None) is None]
    assert missing == []
    assert sorted(dir(tt)) == sorted(tt.__all__)


def test_version_comes_from_the_extension():
    from trajtransfer._native import _core

    assert tt.__version__ == _core.__version__
    assert tt.__version__.count(".") == 2


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    # A None entry in sys.modules makes `import torch` raise ImportError, as if it were absent.
    prelude = "import sys; sys.modules['torch'] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_lap_and_matching_work_without_torch():
    proc = _run_without_torch(
        """
        import numpy as np
        import scipy.optimize as so
        import trajtransfer as tt
        rng = np.random.default_rng(0)
        c = rng.random((30, 40))
        r, k = tt.linear_sum_assignment(c)
        r0, k0 = so.linear_sum_assignment(c)
        assert abs(c[r, k].sum() - c[r0, k0].sum()) < 1e-12
        spec = tt.mlp_spec(1, bias=False)
        a = {"layers.0.weight": rng.standard_normal((6, 3)).astype(np.float32),
             "layers.1.weight": rng.standard_normal((2, 6)).astype(np.float32)}
        pi = {"c1": rng.permutation(6)}
        b = tt.apply_permutation(spec, pi, a)
        res = tt.match_weights(spec, a, b)
        back = tt.apply_permutation(spec, res.perms, b)
        assert all(np.array_equal(back[k], a[k]) for k in a)
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_torch_only_names_fail_clearly_without_torch():
    proc = _run_without_torch(
        """
        import trajtransfer as tt
        try:
            tt.MLP
        except ImportError as exc:
            print("ImportError", "torch" in str(exc))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ImportError True"


OLD_PATHS = ["lap", "spec", "spec_fx", "permute", "match", "transfer", "trajectory", "bn",
             "models", "data", "training", "presets", "cli", "plot"]


def test_old_flat_paths_are_deprecated_aliases_of_the_tiered_modules():
    # In a fresh interpreter: importing an old path warns once and yields the new module itself.
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning:importlib._bootstrap",
                           "-c", textwrap.dedent(f"""
        import importlib, warnings
        import trajtransfer
        from trajtransfer._moved import MOVED
        assert sorted(MOVED) == sorted({OLD_PATHS!r})
        for old, new in MOVED.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mod = importlib.import_module("trajtransfer." + old)
            assert mod is importlib.import_module("trajtransfer." + new), old
            msgs = [str(w.message) for w in caught if w.category is DeprecationWarning]
            assert len(msgs) == 1 and "trajtransfer." + new in msgs[0], (old, msgs)
        from trajtransfer.match import GradientMatcher
        assert GradientMatcher is trajtransfer.GradientMatcher
        print("ok")
        """)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_package_modules_import_nothing_from_old_paths():
    # The library's own modules use the tiered paths: importing all of them warns about nothing.
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", textwrap.dedent("""
        import importlib, pkgutil
        import trajtransfer
        for info in pkgutil.walk_packages(trajtransfer.__path__, "trajtransfer."):
            if info.name.endswith("__main__"):
                continue
            importlib.import_module(info.name)
        print("ok")
        """)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
