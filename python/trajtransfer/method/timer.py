"""One phase timer for a transfer: wall seconds per named phase."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from .._devices import synchronize


class PhaseTimer:
    """Accumulates seconds per phase (``with timer("gradients"): ...``).

    On a GPU, work is queued asynchronously: each phase waits for the device when it ends, so
    that its seconds are its own and not the next phase's.
    """

    def __init__(self, device: Any, phases: tuple = ()) -> None:
        self.device = device
        self.seconds: dict = {p: 0.0 for p in phases}
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.add(phase, time.perf_counter() - t0)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + float(seconds)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
