"""When a major retrain is due, and which window of the log it reads.

Four reasons, checked on every controller tick: a request waiting in the queue (``POST /admin/retrain``,
``python -m stream retrain``), a CTR drop the drift watch found (:meth:`RetrainPolicy.request`), the
schedule (``every_s``), or the clicks answered since the last retrain (``every_clicks``).  A request may
say where its window starts (``since``: the drift detector's cut, so a drift retrain learns from the
traffic after the change alone); later windows do not reach back before the last such cut either,
until ``window_s`` has passed it.  One retrain at a time: the controller asks only when none runs.

Examples
--------
>>> p = RetrainPolicy(every_s=600, window_s=3600)
>>> p.started(1000.0, clicks=0)
>>> p.due(1500.0, None, clicks=10) is None
True
>>> p.due(1700.0, None, clicks=10)
Due(trigger='schedule', since=-1900.0, request=None)
>>> p.request("drift", since=1650.0)
>>> p.due(1701.0, None, clicks=10).since, p.window_start(1800.0)
(1650.0, 1650.0)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Due:
    """A retrain to start now: why, and where its window begins."""

    trigger: str
    since: float
    request: dict | None = None


class RetrainPolicy:
    def __init__(self, every_s: float = 0.0, every_clicks: int = 0, window_s: float = 3600.0) -> None:
        self.every_s, self.every_clicks, self.window_s = every_s, every_clicks, window_s
        self.last_at: float | None = None        # when the last retrain started (None: the policy is new)
        self.clicks_at_last: int | None = None
        self.floor: float | None = None          # no window reaches back before this (the last drift's cut)
        self.waiting: list[dict] = []            # requests from inside the controller (drift), before the queue's

    def request(self, by: str, since: float | None = None, **details) -> None:
        """Ask for a retrain at the next check (the drift watch does, with its cut as ``since``)."""
        self.waiting.append({"by": by, "since": since, **details})

    def window_start(self, now: float, since: float | None = None) -> float:
        """``since`` if given, else ``window_s`` back, not before the floor."""
        if since is not None:
            return since
        start = now - self.window_s
        return max(start, self.floor) if self.floor is not None else start

    def due(self, now: float, queued: dict | None, clicks: int) -> Due | None:
        """The retrain to start now, if any: an internal request, a queued one, the schedule, the click count."""
        if self.last_at is None:
            self.last_at = now
        if self.clicks_at_last is None:
            self.clicks_at_last = clicks
        request = self.waiting.pop(0) if self.waiting else queued
        if request is not None:
            since = request.get("since")
            since = float(since) if isinstance(since, (int, float)) and not isinstance(since, bool) else None
            if since is not None:
                self.floor = since
            return Due(str(request.get("by", "request")), self.window_start(now, since), request)
        if self.every_s and now - self.last_at >= self.every_s:
            return Due("schedule", self.window_start(now))
        if self.every_clicks and clicks - self.clicks_at_last >= self.every_clicks:
            return Due("clicks", self.window_start(now))
        return None

    def started(self, now: float, clicks: int) -> None:
        """A retrain started: the schedule and the click count run from here."""
        self.last_at, self.clicks_at_last = now, clicks

    def to_dict(self) -> dict:
        return {"last_at": self.last_at, "clicks_at_last": self.clicks_at_last, "floor": self.floor,
                "waiting": self.waiting}

    def restore(self, d: dict) -> None:
        self.last_at, self.clicks_at_last = d.get("last_at"), d.get("clicks_at_last")
        self.floor, self.waiting = d.get("floor"), list(d.get("waiting", []))
