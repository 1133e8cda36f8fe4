"""The controller's sense of time, injected: wall time in the worker, simulated time in the online study."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float:
        """Seconds (unix time in the worker)."""


class SystemClock:
    """Wall time."""

    def __call__(self) -> float:
        return time.time()


class ManualClock:
    """Time that moves only when told to (tests, the online study's simulated time).

    >>> clock = ManualClock(100.0)
    >>> clock.advance(5); clock()
    105.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, t: float) -> None:
        self.now = max(self.now, t)
