"""Drift in the online click-through rate, detected with river's ADWIN.

Every interleaved impression is a Bernoulli outcome (clicked or not).  ADWIN keeps a window of
them and cuts it when two sub-windows' means differ by more than chance allows (``delta``); a cut
whose newer part has the lower mean is a CTR drop, the signal to retrain early.  Detections before
``min_impressions`` outcomes are ignored (a cold start is not a drift).

Examples
--------
>>> import random
>>> rng = random.Random(0)
>>> d = CtrDriftDetector(min_impressions=500)
>>> any(d.update(100, sum(rng.random() < 0.10 for _ in range(100))) for _ in range(40))
False
>>> any([d.update(100, sum(rng.random() < 0.02 for _ in range(100))) for _ in range(40)])
True
>>> d.drops >= 1, round(d.ctr, 2)
(True, 0.02)
"""

from __future__ import annotations

from river import drift


class CtrDriftDetector:
    def __init__(self, delta: float = 0.002, min_impressions: int = 1000) -> None:
        self.adwin = drift.ADWIN(delta=delta)
        self.min_impressions = min_impressions
        self.seen = 0
        self.drops = 0       # detections where CTR went down
        self.rises = 0       # detections where CTR went up (reported, no action)
        self.last_change: tuple[float, float] | None = None  # (CTR before, CTR after) at the last detection

    @property
    def ctr(self) -> float:
        """ADWIN's current estimate: the mean over its (adaptive) window."""
        return float(self.adwin.estimation)

    def update(self, impressions: int, clicks: int) -> bool:
        """Feed one batch of outcomes; True if the CTR dropped (a drift worth a retrain)."""
        dropped = False
        clicks = max(0, min(clicks, impressions))
        for n in range(impressions):  # clicks spread evenly through the batch
            x = 1.0 if (n * clicks) // impressions != ((n + 1) * clicks) // impressions else 0.0
            before, width = self.adwin.estimation, self.adwin.width
            self.adwin.update(x)
            self.seen += 1
            if self.adwin.drift_detected and self.seen >= self.min_impressions:
                # ADWIN dropped the older part of its window: the mean of what it dropped is the CTR before
                kept = self.adwin.width
                dropped_n = max(width + 1 - kept, 1)
                old = (before * width + x - self.adwin.estimation * kept) / dropped_n
                self.last_change = (float(old), float(self.adwin.estimation))
                if self.adwin.estimation < old:
                    self.drops += 1
                    dropped = True
                else:
                    self.rises += 1
        return dropped

    def state(self) -> dict:
        return {"ctr": self.ctr, "window": int(self.adwin.width), "impressions": self.seen, "drops": self.drops,
                "rises": self.rises, "last_change": self.last_change}
