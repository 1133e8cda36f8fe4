"""Is the clicks consumer stuck?  A plain class fed by the intake, with an injected clock.

Why it exists: once in CI, after a broker restart, librdkafka timed the clicks consumer's group session out
(``SESSTMOUT``, the coordinator unknown), the intake logged the lost partitions, and then the worker said nothing
for 240 s: no new assignment, no error, no slate.  librdkafka is meant to rejoin by itself; known issues where it
does not (confluentinc/librdkafka#3396), or where a call blocks past its timeout (#5456), fit what was seen.  A
worker that is alive but silent is the worst kind of failure, so the intake asks this watch, between batches,
whether to give up its consumer and start a new one (which rejoins the group from the committed offsets):

* a poll that has not returned for ``stuck_s`` (the intake bounds its wait with :meth:`poll_overdue`);
* the group not up and steady for ``stuck_s`` while a broker is up (from librdkafka's statistics, fed to
  :meth:`stats`): with every broker down there is nothing to rejoin, and a new consumer would not help.

>>> clock = iter([0.0, 0.0, 10.0, 40.0]).__next__
>>> watch = GroupWatch(stuck_s=30.0, clock=clock)
>>> up = '{"brokers": {"b1": {"nodeid": 1, "state": "UP"}}, "cgrp": {"state": "%s", "join_state": "%s"}}'
>>> watch.stats(up % ("up", "steady"))
>>> watch.stats(up % ("query-coord", "init"))
>>> watch.stuck() is None
True
>>> watch.stuck()
'the consumer group has been query-coord/init for 40 s with a broker up'
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["GroupWatch"]

STEADY = ("up", "steady")


class GroupWatch:
    """Remembers since when the consumer group has not been steady, as librdkafka's statistics report it."""

    def __init__(self, stuck_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stuck_s, self.clock = stuck_s, clock
        self.group: tuple[str, str] = STEADY
        self.broker_up = True
        self._unsteady_since: float | None = None

    def stats(self, payload: str) -> None:
        """librdkafka's statistics JSON (``stats_cb``): the group's state and join state, and whether any broker
        (not the bootstrap placeholders, whose node id is -1) is up."""
        try:
            doc = json.loads(payload)
        except ValueError:
            log.debug("unreadable consumer statistics")
            return
        cgrp = doc.get("cgrp") or {}
        group = (str(cgrp.get("state", "")), str(cgrp.get("join_state", "")))
        brokers = (doc.get("brokers") or {}).values()
        self.broker_up = any(b.get("nodeid", -1) >= 0 and b.get("state") == "UP" for b in brokers)
        now = self.clock()
        if group == STEADY:
            self._unsteady_since = None
        elif self._unsteady_since is None:
            self._unsteady_since = now
        self.group = group

    def stuck(self) -> str | None:
        """Why the consumer should be replaced now, or None."""
        if self._unsteady_since is None or not self.broker_up:
            return None
        age = self.clock() - self._unsteady_since
        if age < self.stuck_s:
            return None
        return f"the consumer group has been {'/'.join(self.group)} for {age:.0f} s with a broker up"

    def poll_overdue(self, waited_s: float) -> str | None:
        """Why a poll that has not returned after ``waited_s`` should be given up, or None."""
        if waited_s < self.stuck_s:
            return None
        return f"a poll has not returned in {waited_s:.0f} s"

    def reset(self) -> None:
        """A new consumer: nothing known about its group yet."""
        self.group, self.broker_up, self._unsteady_since = STEADY, True, None
