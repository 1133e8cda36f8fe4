"""Scenarios: what changes in the world during a run, at simulated times, deterministically.

* **drift** at ``drift_at`` s, in two flavours that can be combined:

  - *season* (the ``drift`` preset): every item belongs to one of two seasons
    (:attr:`simulator.world.World.season`); the items of the season in fashion are ``season_strength``
    more attractive (logit), the others as much less, and at ``drift_at`` the season turns.  What users
    want changes item by item inside every category, as it does when a season or a trend turns, while
    the best slate is as good as before: a model that learns online can recover what a frozen one loses;
  - *trend* (the ``trend`` preset): one category's attractiveness rises by ``drift_boost`` (logit),
    every other category's falls by ``drift_penalty``;
* **launches**: items with a launch time appear when it comes (see :class:`simulator.world.World`);
* **flash** at ``flash_at`` s for ``flash_duration`` s: one item's attractiveness jumps by ``flash_boost``.

Examples
--------
>>> s = Scenario(drift_at=10, drift_category=2)
>>> s.category_shift(5.0, 4).tolist(), s.category_shift(12.0, 4).tolist()
([0.0, 0.0, 0.0, 0.0], [-1.0, -1.0, 1.5, -1.0])
>>> s = Scenario(drift_at=10, drift_boost=0.0, drift_penalty=0.0, season_strength=1.0)
>>> seasons = np.array([0, 1, 1])
>>> s.season_shift(5.0, seasons).tolist(), s.season_shift(12.0, seasons).tolist()
([1.0, -1.0, -1.0], [-1.0, 1.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRESETS = ("none", "drift", "trend", "launches", "flash", "all")


@dataclass
class Scenario:
    drift_at: float | None = None
    drift_category: int = 0
    drift_boost: float = 1.5
    drift_penalty: float = 1.0
    season_strength: float = 0.0
    flash_at: float | None = None
    flash_duration: float = 60.0
    flash_item: int = 0
    flash_boost: float = 4.0
    launches: bool = True

    @classmethod
    def preset(cls, name: str, duration_s: float, seed: int = 0) -> "Scenario":
        """Named scenarios for the CLI: events placed relative to the run's duration."""
        if name not in PRESETS:
            raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(PRESETS)}")
        rng = np.random.default_rng(seed + 7)
        s = cls(launches=name in ("launches", "all"))
        if name in ("drift", "trend", "all"):
            s.drift_at, s.drift_category = duration_s / 2, int(rng.integers(0, 1 << 16))
        if name in ("drift", "all"):  # the season turns (see the module doc); no category trend
            s.season_strength, s.drift_boost, s.drift_penalty = 1.0, 0.0, 0.0
        if name in ("flash", "all"):
            s.flash_at, s.flash_duration, s.flash_item = duration_s / 3, duration_s / 10, int(rng.integers(0, 1 << 16))
        return s

    def category_shift(self, t: float, n_categories: int) -> np.ndarray:
        """Logit shift per category at time ``t``."""
        shift = np.zeros(n_categories)
        if self.drift_at is not None and t >= self.drift_at:
            shift -= self.drift_penalty
            shift[self.drift_category % n_categories] = self.drift_boost
        return shift

    def season_shift(self, t: float, seasons: np.ndarray) -> np.ndarray:
        """Logit shift per item at time ``t``: + for the season in fashion (0 before the drift, 1 after), - for the other."""
        if not self.season_strength:
            return np.zeros(len(seasons))
        in_fashion = 1 if self.drift_at is not None and t >= self.drift_at else 0
        return np.where(seasons == in_fashion, self.season_strength, -self.season_strength)

    def item_shift(self, t: float, n_items: int) -> tuple[int, float] | None:
        """(item, logit boost) while a flash of popularity is on, else None."""
        if self.flash_at is not None and self.flash_at <= t < self.flash_at + self.flash_duration:
            return self.flash_item % n_items, self.flash_boost
        return None
