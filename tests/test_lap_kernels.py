"""The LAP row kernels against a scalar oracle, below the solver: tests/cpp/lap_kernels_check.cpp
(every instruction set this CPU runs, both float types and signs, rows of every length up to a few
vectors past 8 W^2, with ties, +-inf and NaN) checks each certifying kernel's minimum, second
minimum and flags, and its row-cache certificate: distinct cached columns with their costs, and
a bound below every other column. Solver-level tests cannot see a wrong second minimum from the
warm pass (it only steers the cold-restart estimate) or a duplicated cached column."""

from __future__ import annotations

import subprocess

from cpp_programs import build_check_program


def test_row_kernels_match_a_scalar_oracle(tmp_path) -> None:
    exe, err = build_check_program("lap_kernels_check", tmp_path, ["-O2"])
    assert not err, err
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert ", 0 failures" in run.stdout
