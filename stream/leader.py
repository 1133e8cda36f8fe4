"""The one DBGD decision-maker per model.

Every worker sends its interleaving outcomes (impressions and clicks per team, per model version)
to ``dbgd-feedback``, a single-partition topic, so exactly one worker — the one assigned that
partition — sees them all and decides.  At the end of a window (``dbgd_window`` impressions of the
current version, or ``dbgd_window_s`` seconds) it runs the DBGD step, publishes the result as a new
minor version (new W if the explorer won, and a fresh explorer either way), promotes it, and
announces it on ``model-updates``; every worker picks it up from ``model:current``.
"""

from __future__ import annotations

import logging
import time

from models.dbgd import DuelingBanditGD
from models.interleave import CURRENT, EXPLORER
from models.registry import ModelRegistry
from stream.records import ModelUpdate
from stream.settings import Settings

log = logging.getLogger(__name__)


class DbgdLeader:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.s, self.registry = settings, registry
        self.version: str | None = None
        self.dbgd: DuelingBanditGD | None = None
        self.round_started = time.monotonic()

    def _sync(self, current: str) -> None:
        if current == self.version:
            return
        w, w_explorer = self.registry.ranker_weights(current)
        self.dbgd = DuelingBanditGD(w, self.s.dbgd_alpha, self.s.dbgd_eta, self.s.dbgd_window, seed=self.s.seed)
        self.dbgd.delta = w_explorer - w  # the explorer the workers are using now
        self.version, self.round_started = current, time.monotonic()

    def observe(self, message: dict) -> ModelUpdate | None:
        """Count one worker's feedback; at the end of a window publish and promote the next minor version."""
        updates = self.observe_many([message])
        return updates[-1] if updates else None

    def observe_many(self, messages: list[dict]) -> list[ModelUpdate]:
        """:meth:`observe` for messages in their order, reading ``model:current`` once (one Redis round trip per
        batch instead of per message: the agent gets one message per worker batch, hundreds a second)."""
        current = self.registry.current_version()
        if current is None:
            return []
        updates = []
        for message in messages:
            update = self._observe(current, message)
            if update is not None:
                updates.append(update)
                current = update.version
        return updates

    def _observe(self, current: str, message: dict) -> ModelUpdate | None:
        self._sync(current)
        if message.get("version") != current:
            return None  # outcomes of an older version do not count towards this round
        d = self.dbgd
        d.record_impression(int(message.get("impressions", 0)))
        d.record_click(CURRENT, int(message.get(CURRENT, 0)))
        d.record_click(EXPLORER, int(message.get(EXPLORER, 0)))
        timed_out = time.monotonic() - self.round_started >= self.s.dbgd_window_s
        outcome = d.maybe_update(force=timed_out)
        if outcome is None:
            return None
        summary = {"accepted": outcome.accepted, "impressions": outcome.impressions,
                   "current_clicks": outcome.current_clicks, "explorer_clicks": outcome.explorer_clicks,
                   "accepted_updates": d.accepted_updates, "rounds": d.rounds}
        new = self.registry.publish_minor(current, d.weights, d.explorer_weights, summary)
        self.registry.promote(new)
        self.version, self.round_started = new, time.monotonic()
        log.info("DBGD round %d on %s: explorer %d vs current %d clicks in %d impressions -> %s %s", d.rounds,
                 current, outcome.explorer_clicks, outcome.current_clicks, outcome.impressions,
                 "accepted, W moved" if outcome.accepted else "kept W", new)
        return ModelUpdate(version=new, kind="minor", parent=current, summary=summary)

    def state(self) -> dict:
        """The current DBGD round, for the metrics: impressions so far, clicks per team, rounds, accepted updates."""
        d = self.dbgd
        if d is None:
            return {}
        return {"version": self.version, "round_impressions": d.impressions, "window": d.window,
                "current_clicks": d.clicks[CURRENT], "explorer_clicks": d.clicks[EXPLORER], "rounds": d.rounds,
                "accepted_updates": d.accepted_updates}
