"""Build the standalone C++ check programs of tests/cpp against the source tree's csrc/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build_check_program(name: str, out_dir: Path, flags: list[str],
                        extra_sources: tuple[str, ...] = ()) -> tuple[Path, str]:
    """Compile tests/cpp/<name>.cpp (plus csrc-relative `extra_sources`) with `flags`.

    Skips the calling test without a C++ compiler or a source tree. Returns the executable's
    path and the compiler's stderr ('' on success; the caller decides whether a failed build is
    a skip, as for sanitizer builds, or a failure)."""
    src = ROOT / "tests" / "cpp" / f"{name}.cpp"
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None or not src.exists():
        pytest.skip("needs a C++ compiler and the source tree")
    exe = out_dir / name
    build = subprocess.run(
        [cxx, "-std=c++17", *flags, f"-I{ROOT / 'csrc'}", str(src),
         *(str(ROOT / "csrc" / s) for s in extra_sources), "-o", str(exe)],
        capture_output=True, text=True, timeout=300)
    return exe, ("" if build.returncode == 0 else build.stderr[-3000:] or "build failed")
