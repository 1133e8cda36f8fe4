"""When to run a major retrain, and running it off the event loop.  Leader-only.

Three reasons to retrain, checked every ``retrain_check_s`` by the leader worker (Faust's
``on_leader`` timer, so one worker of the group does it): a request waiting in the Redis list
``{prefix}retrain:requests`` (pushed by ``POST /admin/retrain`` or by the drift detector), the
schedule (``retrain_every_s``), or the click count since the last retrain (``retrain_every_clicks``).
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

    def due(self) -> str | None:
        """The trigger of a retrain that should start now, if any (a waiting request is taken off the list)."""
        raw = self.r.lpop(requests_key(self.s.topic_prefix))
        if raw is not None:
            return str(json.loads(raw).get("by", "request"))
        if self.s.retrain_every_s and time.time() - self.last_at >= self.s.retrain_every_s:
            return "schedule"
        if self.s.retrain_every_clicks:
            clicks = int(self.r.get(clicks_key(self.s.topic_prefix)) or 0)
            if self.clicks_at_last is None:
                self.clicks_at_last = clicks
            elif clicks - self.clicks_at_last >= self.s.retrain_every_clicks:
                return "clicks"
        return None

    def run(self, trigger: str) -> RetrainOutcome:
        config = RetrainConfig(epochs=self.s.retrain_epochs, learning_rate=self.s.retrain_learning_rate,
                               margin=self.s.retrain_margin, alpha=self.s.dbgd_alpha, seed=self.s.seed,
                               half_life_s=self.s.popular_half_life_s, fresh_window_s=self.s.fresh_window_s)
        since = time.time() - self.s.retrain_window_s
        log.info("major retrain (%s) over the last %.0f s of the log", trigger, self.s.retrain_window_s)
        return retrain_from_log(self.registry, self.s.kafka, self.s.topic_prefix, since, config, trigger)

    async def check(self) -> RetrainOutcome | None:
        """Start a due retrain in a thread and wait for it (the event loop stays free)."""
        if self.running or self.registry.current_version() is None:
            return None
        trigger = self.due()
        if trigger is None:
            return None
        self.running = True
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(None, self.run, trigger)
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
