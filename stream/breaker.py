"""A circuit breaker for the session store: after a failure, stop asking Redis for a while.

Without it a Redis that is down or slow costs every batch a socket timeout (seconds) before its
fallback slates go out; with it only the probe after each wait does, and the waits double up to a
ceiling while failures go on.

Examples
--------
>>> from stream.control.clock import ManualClock
>>> clock = ManualClock(0.0)
>>> b = Breaker(first_s=1.0, max_s=4.0, clock=clock)
>>> b.allow(), b.failure(), b.allow()
(True, None, False)
>>> clock.advance(1.0); b.allow()
True
>>> b.failure(); clock.advance(1.5); b.allow()       # the second wait is twice the first
False
>>> clock.advance(0.5); b.allow(), b.success(), b.is_open
(True, None, False)
"""

from __future__ import annotations

import time

from stream.control.clock import Clock


class Breaker:
    """Closed (try), or open until ``retry_at`` (do not try); each failure in a row doubles the wait."""

    def __init__(self, first_s: float = 0.5, max_s: float = 8.0, clock: Clock = time.monotonic) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._now = clock
        self.failures = 0
        self.retry_at = 0.0

    @property
    def is_open(self) -> bool:
        return self.failures > 0

    def allow(self) -> bool:
        """Whether to try now: always when closed, once the wait is over when open."""
        return self.failures == 0 or self._now() >= self.retry_at

    def failure(self) -> None:
        self.failures += 1
        self.retry_at = self._now() + min(self.first_s * 2 ** (self.failures - 1), self.max_s)

    def success(self) -> None:
        self.failures, self.retry_at = 0, 0.0
