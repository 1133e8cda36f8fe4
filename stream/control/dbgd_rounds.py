"""DBGD / MGD rounds: count each window of interleaved impressions of the current version and decide the step.

Workers send, per batch and model version, the interleaved impressions and the clicks credited to each
team (``current``, ``explorer``, ``explorer2``...).  Outcomes of other versions do not count towards the
round.  At the end of a window (``window`` impressions, or ``window_s`` seconds of the injected clock)
:class:`models.mgd.MultileaveGD` decides: W moves by η times the mean direction of the explorers whose team
won more clicks than the current ranker's (with one explorer: DRN's DBGD, W moves towards the explorer if it
won), and fresh explorers are drawn either way (``explorers`` of them: the next round may have more than the
version in use, e.g. a new major published with one).  The result is a :class:`Step` the controller
publishes and promotes; nothing here touches the registry's pointer.

The round is plain data (:meth:`DbgdRounds.to_dict`), so a new leader resumes it; the explorers it
draws next depend only on ``(seed, rounds)``, so a resumed leader draws the same ones.

Examples
--------
>>> import numpy as np
>>> rounds = DbgdRounds(alpha=0.1, eta=0.5, window=100, window_s=1e9, seed=0)
>>> w = np.ones(4, dtype=np.float32); w_explorer = w * 1.1
>>> rounds.observe("v1", w, w_explorer, {"version": "v1", "impressions": 60, "current": 1, "explorer": 3}, now=0.0)
>>> step = rounds.observe("v1", w, w_explorer, {"version": "v1", "impressions": 60, "current": 0, "explorer": 2}, now=1.0)
>>> step.accepted, bool(np.allclose(step.weights, 1.05)), rounds.rounds, step.explorers.shape
(True, True, 1, (1, 4))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.interleave import CURRENT, EXPLORER, team_clicks
from models.mgd import MultileaveGD


@dataclass
class Step:
    """The end of one round on ``based_on``: the next W and explorers (n, d) to publish as a minor version."""

    based_on: str
    weights: np.ndarray
    explorers: np.ndarray
    accepted: bool
    summary: dict


class DbgdRounds:
    def __init__(self, alpha: float, eta: float, window: int, window_s: float, seed: int = 0,
                 explorers: int = 1) -> None:
        self.alpha, self.eta, self.window, self.window_s, self.seed = alpha, eta, window, window_s, seed
        self.explorers = explorers
        self.version: str | None = None
        self.impressions = 0
        self.clicks: dict[str, int] = {CURRENT: 0, EXPLORER: 0}
        self.rounds = 0
        self.accepted_updates = 0
        self.started: float | None = None

    def _restart(self, version: str, now: float) -> None:
        self.version, self.started = version, now
        self.impressions, self.clicks = 0, {CURRENT: 0, EXPLORER: 0}

    def observe(self, current: str, weights: np.ndarray, explorers: np.ndarray, message: dict,
                now: float) -> Step | None:
        """Count one worker's outcomes; a :class:`Step` when the round on ``current`` ends.  ``explorers``: the
        version's explorer weights, one row each (a single vector for one explorer)."""
        if self.version != current:
            self._restart(current, now)
        if message.get("version") != current:
            return None  # outcomes of another version do not count towards this round
        self.impressions += int(message.get("impressions", 0))
        for team, n in team_clicks(message).items():
            self.clicks[team] = self.clicks.get(team, 0) + n
        timed_out = now - (self.started if self.started is not None else now) >= self.window_s
        if self.impressions < self.window and not (timed_out and self.impressions > 0):
            return None
        return self._decide(current, weights, np.atleast_2d(explorers))

    def _decide(self, current: str, weights: np.ndarray, explorers: np.ndarray) -> Step:
        seed = self.seed + 1_000_003 * (self.rounds + 1)
        d = MultileaveGD(weights, len(explorers), self.alpha, self.eta, self.window, seed=seed)
        d.deltas = (explorers - d.weights[None, :]).astype(np.float32)  # the explorers in use
        d.record_impression(self.impressions)
        for team, n in self.clicks.items():
            if team in d.clicks:  # a team this version does not have cannot have been shown
                d.record_click(team, n)
        outcome = d.maybe_update(force=True)
        following = MultileaveGD(d.weights, self.explorers, self.alpha, self.eta, self.window, seed=seed + 1)
        self.rounds += 1
        self.accepted_updates += int(outcome.accepted)
        explorer_clicks = sum(n for team, n in outcome.clicks.items() if team != CURRENT)
        summary = {"accepted": outcome.accepted, "impressions": outcome.impressions,
                   "current_clicks": outcome.clicks[CURRENT], "explorer_clicks": explorer_clicks,
                   "clicks": outcome.clicks, "winners": outcome.winners, "explorers": len(explorers),
                   "accepted_updates": self.accepted_updates, "rounds": self.rounds}
        return Step(current, d.weights, following.explorer_weights, outcome.accepted, summary)

    def moved_on(self, version: str, now: float) -> None:
        """The round's version is no longer current (a step was promoted, or another decision came first)."""
        self._restart(version, now)

    def state(self) -> dict:
        """The current round, for the metrics: impressions so far, clicks per team, rounds, accepted updates."""
        return {"version": self.version, "round_impressions": self.impressions, "window": self.window,
                "current_clicks": self.clicks.get(CURRENT, 0),
                "explorer_clicks": sum(n for team, n in self.clicks.items() if team != CURRENT),
                "clicks": dict(self.clicks), "explorers": self.explorers,
                "rounds": self.rounds, "accepted_updates": self.accepted_updates, "started": self.started}

    def to_dict(self) -> dict:
        """What a new leader resumes from (:meth:`restore`): the metrics' view is all of it."""
        return self.state()

    def restore(self, d: dict) -> None:
        self.version, self.started = d.get("version"), d.get("started")
        self.impressions = int(d.get("round_impressions", 0))
        clicks = d.get("clicks") or {CURRENT: d.get("current_clicks", 0), EXPLORER: d.get("explorer_clicks", 0)}
        self.clicks = {team: int(n) for team, n in clicks.items()}
        self.rounds, self.accepted_updates = int(d.get("rounds", 0)), int(d.get("accepted_updates", 0))
