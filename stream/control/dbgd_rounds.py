"""DBGD rounds: count each window of interleaved impressions of the current version and decide the step.

Workers send, per batch and model version, the interleaved impressions and the clicks credited to each
team.  Outcomes of other versions do not count towards the round.  At the end of a window
(``window`` impressions, or ``window_s`` seconds of the injected clock) :class:`models.dbgd.DuelingBanditGD`
decides: W moves towards the explorer if the explorer's team won more clicks, and a fresh explorer is
drawn either way.  The result is a :class:`Step` the controller publishes and promotes; nothing here
touches the registry's pointer.

The round is plain data (:meth:`DbgdRounds.to_dict`), so a new leader resumes it; the explorer it
draws next depends only on ``(seed, rounds)``, so a resumed leader draws the same one.

Examples
--------
>>> import numpy as np
>>> rounds = DbgdRounds(alpha=0.1, eta=0.5, window=100, window_s=1e9, seed=0)
>>> w = np.ones(4, dtype=np.float32); w_explorer = w * 1.1
>>> rounds.observe("v1", w, w_explorer, {"version": "v1", "impressions": 60, "current": 1, "explorer": 3}, now=0.0)
>>> step = rounds.observe("v1", w, w_explorer, {"version": "v1", "impressions": 60, "current": 0, "explorer": 2}, now=1.0)
>>> step.accepted, bool(np.allclose(step.weights, 1.05)), rounds.rounds
(True, True, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.dbgd import DuelingBanditGD
from models.interleave import CURRENT, EXPLORER


@dataclass
class Step:
    """The end of one DBGD round on ``based_on``: the next W and W~ to publish as a minor version."""

    based_on: str
    weights: np.ndarray
    explorer: np.ndarray
    accepted: bool
    summary: dict


class DbgdRounds:
    def __init__(self, alpha: float, eta: float, window: int, window_s: float, seed: int = 0) -> None:
        self.alpha, self.eta, self.window, self.window_s, self.seed = alpha, eta, window, window_s, seed
        self.version: str | None = None
        self.impressions = 0
        self.clicks = {CURRENT: 0, EXPLORER: 0}
        self.rounds = 0
        self.accepted_updates = 0
        self.started: float | None = None

    def _restart(self, version: str, now: float) -> None:
        self.version, self.started = version, now
        self.impressions, self.clicks = 0, {CURRENT: 0, EXPLORER: 0}

    def observe(self, current: str, weights: np.ndarray, explorer: np.ndarray, message: dict,
                now: float) -> Step | None:
        """Count one worker's outcomes; a :class:`Step` when the round on ``current`` ends."""
        if self.version != current:
            self._restart(current, now)
        if message.get("version") != current:
            return None  # outcomes of another version do not count towards this round
        self.impressions += int(message.get("impressions", 0))
        self.clicks[CURRENT] += int(message.get(CURRENT, 0))
        self.clicks[EXPLORER] += int(message.get(EXPLORER, 0))
        timed_out = now - (self.started if self.started is not None else now) >= self.window_s
        if self.impressions < self.window and not (timed_out and self.impressions > 0):
            return None
        return self._decide(current, weights, explorer)

    def _decide(self, current: str, weights: np.ndarray, explorer: np.ndarray) -> Step:
        d = DuelingBanditGD(weights, self.alpha, self.eta, self.window, seed=self.seed + 1_000_003 * (self.rounds + 1))
        d.delta = (np.asarray(explorer, dtype=np.float32) - d.weights).astype(np.float32)  # the explorer in use
        d.record_impression(self.impressions)
        d.record_click(CURRENT, self.clicks[CURRENT])
        d.record_click(EXPLORER, self.clicks[EXPLORER])
        outcome = d.maybe_update(force=True)
        self.rounds += 1
        self.accepted_updates += int(outcome.accepted)
        summary = {"accepted": outcome.accepted, "impressions": outcome.impressions,
                   "current_clicks": outcome.current_clicks, "explorer_clicks": outcome.explorer_clicks,
                   "accepted_updates": self.accepted_updates, "rounds": self.rounds}
        return Step(current, d.weights, d.explorer_weights, outcome.accepted, summary)

    def moved_on(self, version: str, now: float) -> None:
        """The round's version is no longer current (a step was promoted, or another decision came first)."""
        self._restart(version, now)

    def state(self) -> dict:
        """The current round, for the metrics: impressions so far, clicks per team, rounds, accepted updates."""
        return {"version": self.version, "round_impressions": self.impressions, "window": self.window,
                "current_clicks": self.clicks[CURRENT], "explorer_clicks": self.clicks[EXPLORER],
                "rounds": self.rounds, "accepted_updates": self.accepted_updates, "started": self.started}

    def to_dict(self) -> dict:
        """What a new leader resumes from (:meth:`restore`): the metrics' view is all of it."""
        return self.state()

    def restore(self, d: dict) -> None:
        self.version, self.started = d.get("version"), d.get("started")
        self.impressions = int(d.get("round_impressions", 0))
        self.clicks = {CURRENT: int(d.get("current_clicks", 0)), EXPLORER: int(d.get("explorer_clicks", 0))}
        self.rounds, self.accepted_updates = int(d.get("rounds", 0)), int(d.get("accepted_updates", 0))
