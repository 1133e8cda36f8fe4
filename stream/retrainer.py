"""When to run a major retrain, and running it off the event loop.  Leader-only.

Three reasons to retrain, checked every ``retrain_check_s`` by the leader worker (Faust's
``on_leader`` timer, so one worker of the group does it): a request waiting in the Redis list
``{prefix}retrain:requests`` (pushed by ``POST /admin/retrain`` or by the drift detector), the
schedule (``retrain_every_s``), or the click count since the last retrain (``retrain_every_clicks``).
A request may say where its window starts (``since``: the drift detector's cut, so a drift retrain
learns from the traffic after the change alone); later retrains do not reach back before the last
such cut either, until ``retrain_window_s`` has passed it.
The retrain itself (:func:`models.retrain.retrain_from_log`: read the window back from Kafka,
warm-start, refit, evaluate, promote if not worse, announce) runs in a thread, so the worker keeps
answering clicks while it trains; one retrain at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis

from models.registry import ModelRegistry
from models.retrain import RetrainConfig, RetrainOutcome, requests_key, retrain_from_log
from stream.settings import Settings

log = logging.getLogger(__name__)


def clicks_key(prefix: str) -> str:
    """A counter of clicks answered by all workers (INCRBY once per batch)."""
    return f"{prefix}clicks:count"


def request_retrain(client: redis.Redis, prefix: str, by: str, **details) -> None:
    client.rpush(requests_key(prefix), json.dumps({"by": by, "ts": time.time(), **details}))


class Retrainer:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.s, self.registry, self.r = settings, registry, registry.r
        self.running = False
        self.last_at = time.time()
        self.clicks_at_last: int | None = None
        self.last: RetrainOutcome | None = None
        self.floor: float | None = None  # no window reaches back before this (the last drift's cut)

    def due(self) -> tuple[str, float | None] | None:
        """(trigger, requested window start) of a retrain that should start now, if any.

        A waiting request is taken off the list."""
        raw = self.r.lpop(requests_key(self.s.topic_prefix))
        if raw is not None:
            request = json.loads(raw)
            since = request.get("since")
            since = float(since) if isinstance(since, (int, float)) else None
            if since is not None:
                self.floor = since
            return str(request.get("by", "request")), since
        if self.s.retrain_every_s and time.time() - self.last_at >= self.s.retrain_every_s:
            return "schedule", None
        if self.s.retrain_every_clicks:
            clicks = int(self.r.get(clicks_key(self.s.topic_prefix)) or 0)
            if self.clicks_at_last is None:
                self.clicks_at_last = clicks
            elif clicks - self.clicks_at_last >= self.s.retrain_every_clicks:
                return "clicks", None
        return None

    def window_start(self, now: float, since: float | None = None) -> float:
        """Where a retrain's window starts: ``since`` if given, else ``retrain_window_s`` back, not before the floor."""
        if since is not None:
            return since
        start = now - self.s.retrain_window_s
        return max(start, self.floor) if self.floor is not None else start

    def run(self, trigger: str, since: float | None = None) -> RetrainOutcome:
        config = RetrainConfig(epochs=self.s.retrain_epochs, learning_rate=self.s.retrain_learning_rate,
                               margin=self.s.retrain_margin, alpha=self.s.dbgd_alpha, seed=self.s.seed,
                               half_life_s=self.s.popular_half_life_s, fresh_window_s=self.s.fresh_window_s)
        now = time.time()
        start = self.window_start(now, since)
        log.info("major retrain (%s) over the last %.0f s of the log", trigger, now - start)
        return retrain_from_log(self.registry, self.s.kafka, self.s.topic_prefix, start, config, trigger)

    async def check(self) -> RetrainOutcome | None:
        """Start a due retrain in a thread and wait for it (the event loop stays free)."""
        if self.running or self.registry.current_version() is None:
            return None
        due = self.due()
        if due is None:
            return None
        trigger, since = due
        self.running = True
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(None, self.run, trigger, since)
        except Exception:  # noqa: BLE001 - a failed retrain must not stop the worker
            log.exception("major retrain (%s) failed", trigger)
            return None
        finally:
            self.running = False
            self.last_at = time.time()
            self.clicks_at_last = int(self.r.get(clicks_key(self.s.topic_prefix)) or 0)
        self.last = outcome
        log.info("major retrain (%s): %s -> %s", trigger, outcome.version,
                 "promoted" if outcome.promoted else f"not promoted ({outcome.reason})")
        return outcome
