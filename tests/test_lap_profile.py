"""The solver's development profile (csrc/lap/lap_profile.hpp, compiled in only with
-DTT_LAP_PROFILE): tests/cpp/lap_profile_check.cpp builds the solver with it, checks its answers
against brute force and that the phase timers and event counters record what a cold and a warm
solve run, so the profiling build cannot rot unnoticed while release builds compile it out."""

from __future__ import annotations

import subprocess

from cpp_programs import build_check_program


def test_profiled_solver_counts_its_phases(tmp_path) -> None:
    exe, err = build_check_program("lap_profile_check", tmp_path,
                                   ["-O2", "-DTT_LAP_PROFILE", "-Wall", "-Wextra", "-Werror",
                                    "-Wno-psabi", "-pthread"], ("lap/lap_dense.cpp",))
    assert not err, err
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "profile check: 0 failures" in run.stdout
    for phase in ("colmin", "reduce", "cold_arr", "augment", "verify", "warm_pass"):
        assert f"  {phase} " in run.stdout, phase
