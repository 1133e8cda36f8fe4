"""Dueling bandit gradient descent (Yue & Joachims, 2009), DRN's minor update.

The current weights W compete with an explorer W~ = W + ΔW, ΔW = α·U(-1, 1)⊙W, on interleaved
slates.  After a window of M interleaved impressions, if the explorer's team won more clicks,
W ← W + η·ΔW; either way a new ΔW is drawn for the next window.

Examples
--------
>>> import numpy as np
>>> d = DuelingBanditGD(np.ones(4, dtype=np.float32), alpha=0.1, eta=0.5, window=3, seed=0)
>>> for _ in range(3):
...     d.record_impression()
>>> d.record_click("explorer")
>>> outcome = d.maybe_update()
>>> outcome.accepted, bool(np.allclose(d.weights, 1 + 0.5 * outcome.delta))
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.interleave import CURRENT, EXPLORER


@dataclass
class Outcome:
    """The decision at the end of a window."""

    accepted: bool
    impressions: int
    current_clicks: int
    explorer_clicks: int
    delta: np.ndarray


class DuelingBanditGD:
    def __init__(self, weights: np.ndarray, alpha: float = 0.1, eta: float = 0.05, window: int = 1000,
                 seed: int = 0) -> None:
        if not (alpha > 0 and eta > 0 and window > 0):
            raise ValueError("alpha, eta and window must be positive")
        self.weights = np.asarray(weights, dtype=np.float32).copy()
        self.alpha, self.eta, self.window = alpha, eta, window
        self.rng = np.random.default_rng(seed)
        self.accepted_updates = 0
        self.rounds = 0
        self._new_round()

    def _new_round(self) -> None:
        self.delta = (self.alpha * self.rng.uniform(-1.0, 1.0, size=self.weights.shape) * self.weights).astype(np.float32)
        self.impressions = 0
        self.clicks = {CURRENT: 0, EXPLORER: 0}

    @property
    def explorer_weights(self) -> np.ndarray:
        return self.weights + self.delta

    def record_impression(self, n: int = 1) -> None:
        self.impressions += n

    def record_click(self, team: str, n: int = 1) -> None:
        self.clicks[team] += n

    def maybe_update(self, force: bool = False) -> Outcome | None:
        """At the end of a window (or when ``force``d, e.g. by a time limit), decide and start the next round."""
        if self.impressions < self.window and not (force and self.impressions > 0):
            return None
        accepted = self.clicks[EXPLORER] > self.clicks[CURRENT]
        outcome = Outcome(accepted, self.impressions, self.clicks[CURRENT], self.clicks[EXPLORER], self.delta.copy())
        if accepted:
            self.weights = self.weights + self.eta * self.delta
            self.accepted_updates += 1
        self.rounds += 1
        self._new_round()
        return outcome
