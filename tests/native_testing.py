"""The test-only extension ``trajtransfer._testing`` (the GPU LAP kernel's host emulation, the
matcher's shuffle), or a skip with the reason where it is absent, as in a release wheel."""

from __future__ import annotations

from types import ModuleType

import pytest

REASON = ("needs trajtransfer._testing, the test-only extension: a source install builds it "
          "(CMake option TRAJTRANSFER_TEST_MODULE, on by default); release wheels leave it out")


def load_testing_module() -> ModuleType:
    return pytest.importorskip("trajtransfer._testing", reason=REASON)
