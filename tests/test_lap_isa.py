"""The TRAJTRANSFER_LAP_ISA override: honoured when it can be, a warning that says what runs when not."""

from __future__ import annotations

import pytest

from isa_subprocess import run_with_isa
from trajtransfer.core.isa import ISAS, active_isa, override_problem

_SCRIPT = "import trajtransfer as tt; print(tt._core.lap.simd_level())"


def test_unknown_override_warns_and_names_what_runs():
    out = run_with_isa(_SCRIPT, "bogus")
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning: TRAJTRANSFER_LAP_ISA='bogus' is not one of base, avx2, avx512" in out.stderr
    assert f"runs the {out.stdout.strip()} kernels" in out.stderr


@pytest.mark.parametrize("isa", ISAS)
def test_supported_override_runs_silently_and_unsupported_one_warns(isa):
    out = run_with_isa(_SCRIPT, isa)
    assert out.returncode == 0, out.stderr
    if ISAS.index(isa) <= ISAS.index(active_isa()):
        assert out.stdout.strip() == isa and "Warning" not in out.stderr
    else:  # this CPU lacks it: the solver falls back, and says so
        assert "is not supported by this CPU" in out.stderr


def test_override_problem_rules():
    assert override_problem(None, "avx2") is None
    assert override_problem("avx2", "avx2") is None and override_problem("base", "avx512") is None
    assert "not supported by this CPU; the LAP runs the avx2 kernels" in override_problem("avx512", "avx2")
    assert "is not one of" in override_problem("AVX2", "avx512")
