"""Shared pytest configuration: a hypothesis profile for CI (no deadlines on shared machines)."""

from __future__ import annotations

import os

import pytest

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.register_profile("dev", deadline=None, max_examples=60)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)


@pytest.fixture
def one_torch_thread():
    """Tiny models: a multi-thread torch pool only adds contention on shared CI cores (100x here)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
