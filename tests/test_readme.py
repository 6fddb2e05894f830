"""The README's quick-start Python block runs as written (it asserts its own result)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_python_block_runs():
    if not README.exists():
        pytest.skip("README.md is not next to the tests")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    quick = next(b for b in blocks if "linear_sum_assignment" in b and "match_weights" in b)
    exec(compile(quick, "README.md (quick start)", "exec"), {})
