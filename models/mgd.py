"""Multileave gradient descent (Schuth, Oosterhuis, Whiteson & de Rijke, WSDM 2016).

DRN's dueling bandit gradient descent (:mod:`models.dbgd`) tries one direction per window: one
explorer W + ΔW against W, and W moves only if that single guess wins.  Multileave gradient descent
tries ``n`` directions at once: n explorers W + ΔW_j (ΔW_j = α·U(-1, 1)⊙W, drawn independently) and
the current ranker share each slate by team-draft multileaving
(:func:`models.interleave.team_draft_batch`); at the end of a window every explorer whose team won
more clicks than the current ranker's is a winner, and W moves by η times the **mean** of the
winners' directions ("MGD winners" in the paper).  With no winner W stays.  With one explorer this is
DBGD exactly (``tests/unit/test_mgd.py`` checks it).

Why: more directions per window means a winning direction is found sooner, and averaging the winners
cancels the parts of their random directions that do not matter — the paper's MGD learned
substantially faster than DBGD.  The cost: each team gets 1/(n + 1) of the slots, so each comparison
rests on fewer clicks.

Examples
--------
>>> import numpy as np
>>> m = MultileaveGD(np.ones(3, dtype=np.float32), explorers=2, alpha=0.1, eta=1.0, window=2, seed=0)
>>> m.explorer_weights.shape
(2, 3)
>>> m.record_impression(2)
>>> m.record_click("explorer"); m.record_click("explorer2"); m.record_click("explorer2")
>>> out = m.maybe_update()
>>> out.winners, bool(np.allclose(m.weights, 1 + out.step))
([0, 1], True)
>>> out.clicks
{'current': 0, 'explorer': 1, 'explorer2': 2}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.interleave import CURRENT, team_name


@dataclass
class MgdOutcome:
    """The decision at the end of a window: which explorers beat the current ranker, and W's move."""

    impressions: int
    clicks: dict[str, int]      # team -> clicks credited in the window
    winners: list[int]          # explorer indices (0-based) whose team won more clicks than the current one
    step: np.ndarray            # the move applied to W: eta * mean of the winners' directions (zeros if none)

    @property
    def accepted(self) -> bool:
        return bool(self.winners)


class MultileaveGD:
    def __init__(self, weights: np.ndarray, explorers: int = 4, alpha: float = 0.1, eta: float = 0.05,
                 window: int = 1000, seed: int = 0) -> None:
        if not (explorers >= 1 and alpha > 0 and eta > 0 and window > 0):
            raise ValueError("explorers must be at least 1; alpha, eta and window must be positive")
        self.weights = np.asarray(weights, dtype=np.float32).copy()
        self.n, self.alpha, self.eta, self.window = explorers, alpha, eta, window
        self.rng = np.random.default_rng(seed)
        self.rounds = self.accepted_updates = 0
        self._new_round()

    def _new_round(self) -> None:
        shape = (self.n, *self.weights.shape)
        self.deltas = (self.alpha * self.rng.uniform(-1.0, 1.0, size=shape) * self.weights).astype(np.float32)
        self.impressions = 0
        self.clicks = {team_name(j): 0 for j in range(self.n + 1)}

    @property
    def explorer_weights(self) -> np.ndarray:
        """(n, d): one row per explorer, W + ΔW_j."""
        return self.weights[None, :] + self.deltas

    def record_impression(self, n: int = 1) -> None:
        self.impressions += n

    def record_click(self, team: str, n: int = 1) -> None:
        if team not in self.clicks:
            raise KeyError(f"no team {team!r} among {list(self.clicks)}")
        self.clicks[team] += n

    def maybe_update(self, force: bool = False) -> MgdOutcome | None:
        """At the end of a window (or when ``force``d, e.g. by a time limit), decide and start the next round."""
        if self.impressions < self.window and not (force and self.impressions > 0):
            return None
        winners = [j for j in range(self.n) if self.clicks[team_name(j + 1)] > self.clicks[CURRENT]]
        step = (self.eta * self.deltas[winners].mean(0) if winners else np.zeros_like(self.weights))
        outcome = MgdOutcome(self.impressions, dict(self.clicks), winners, step.astype(np.float32))
        self.weights = self.weights + outcome.step
        self.accepted_updates += int(outcome.accepted)
        self.rounds += 1
        self._new_round()
        return outcome
