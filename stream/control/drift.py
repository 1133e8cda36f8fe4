"""Drift in the online click-through rate, detected with river's ADWIN.

Every interleaved impression is a Bernoulli outcome (clicked or not).  ADWIN keeps a window of
them and cuts it when two sub-windows' means differ by more than chance allows (``delta``); a cut
whose newer part has the lower mean is a CTR drop, the signal to retrain early.  Detections before
``min_impressions`` outcomes are ignored (a cold start is not a drift).

The detector also says *when* the change happened (``cut_ts``), so a retrain can learn from the
traffic after the change alone.  ADWIN's own cut is coarse (it drops whole old buckets and keeps
shrinking its window as evidence comes in), so the time is the most likely single change point in
the window ADWIN held when it cut: the batch split whose two Bernoulli segments fit best.  The detector
can hold the retrain back until ``retrain_after`` impressions have arrived since the cut (:meth:`retrain_due`): right after a drop the
new regime has too few clicks to learn from, and a window that is mostly the old regime teaches the
old preferences again.

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

import math
from collections import deque

import numpy as np
from river import drift


def _bernoulli_ll(clicks: float, n: float) -> float:
    """Log-likelihood of ``clicks`` in ``n`` Bernoulli outcomes at their own mean."""
    if n <= 0:
        return 0.0
    p = min(max(clicks / n, 1e-12), 1 - 1e-12)
    return clicks * math.log(p) + (n - clicks) * math.log(1 - p)


class CtrDriftDetector:
    def __init__(self, delta: float = 0.002, min_impressions: int = 1000, retrain_after: int = 0) -> None:
        self.adwin = drift.ADWIN(delta=delta)
        self.min_impressions = min_impressions
        self.retrain_after = retrain_after
        self.seen = 0
        self.cut_ts: float | None = None     # when the newest regime began (at the last drop)
        self._pending: tuple[float | None, int] | None = None  # (cut_ts, outcomes before it) of a drop not yet retrained
        self._batches: deque[tuple[float, int, int, int]] = deque()  # (ts, outcomes before it, impressions, clicks)
        self.drops = 0       # detections where CTR went down
        self.rises = 0       # detections where CTR went up (reported, no action)
        self.last_change: tuple[float, float] | None = None  # (CTR before, CTR after) at the last detection

    @property
    def ctr(self) -> float:
        """ADWIN's current estimate: the mean over its (adaptive) window."""
        return float(self.adwin.estimation)

    def update(self, impressions: int, clicks: int, ts: float | None = None) -> bool:
        """Feed one batch of outcomes (observed at ``ts``); True if the CTR dropped (a drift worth a retrain)."""
        dropped = False
        clicks = max(0, min(clicks, impressions))
        if ts is not None:
            self._batches.append((ts, self.seen, impressions, clicks))
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
                    self.cut_ts, at = self._change_point(self.seen - int(width) - 1)  # over the whole window
                    self._pending = (self.cut_ts, at)
                else:
                    self.rises += 1
        if ts is not None:
            self._prune(self.seen - int(self.adwin.width))
        return dropped

    def _prune(self, first: int) -> None:
        """Forget batches that ended before outcome number ``first`` (ADWIN no longer holds them)."""
        while len(self._batches) > 1 and self._batches[1][1] <= first:
            self._batches.popleft()

    def _change_point(self, first: int) -> tuple[float | None, int]:
        """(ts, outcomes before it) of the batch where the mean most likely changed, from outcome ``first`` on."""
        self._prune(first)
        batches = list(self._batches)
        if not batches:
            return None, first
        n = np.cumsum([b[2] for b in batches], dtype=float)
        c = np.cumsum([b[3] for b in batches], dtype=float)
        best, split = -np.inf, 0
        for k in range(1, len(batches)):  # segment 1 = batches[:k], segment 2 = batches[k:]
            fit = _bernoulli_ll(c[k - 1], n[k - 1]) + _bernoulli_ll(c[-1] - c[k - 1], n[-1] - n[k - 1])
            if fit > best:
                best, split = fit, k
        return batches[split][0], batches[split][1]

    def retrain_due(self) -> tuple[bool, float | None]:
        """(True, cut_ts) once ``retrain_after`` impressions have followed the last drop (then cleared)."""
        if self._pending is None or self.seen - self._pending[1] < self.retrain_after:
            return False, None
        cut_ts, _ = self._pending
        self._pending = None
        return True, cut_ts

    def state(self) -> dict:
        """What the metrics show: ADWIN's estimate and window, detections, the pending retrain."""
        return {"ctr": self.ctr, "window": int(self.adwin.width), "impressions": self.seen, "drops": self.drops,
                "rises": self.rises, "last_change": self.last_change, "cut_ts": self.cut_ts,
                "retrain_pending": self._pending is not None}

    def to_dict(self, max_batches: int = 256) -> dict:
        """Everything needed to resume elsewhere, as JSON: the counters and the outcomes ADWIN holds, in at most
        ``max_batches`` buckets (neighbouring batches merged), from which :meth:`from_dict` refills ADWIN."""
        batches = list(self._batches)
        while len(batches) > max_batches:
            merged = [batches[i] if i + 1 == len(batches) else
                      (batches[i][0], batches[i][1], batches[i][2] + batches[i + 1][2], batches[i][3] + batches[i + 1][3])
                      for i in range(0, len(batches), 2)]
            batches = merged
        return {"delta": self.adwin.delta, "min_impressions": self.min_impressions,
                "retrain_after": self.retrain_after, "seen": self.seen, "cut_ts": self.cut_ts,
                "pending": list(self._pending) if self._pending is not None else None,
                "batches": [list(b) for b in batches], "drops": self.drops, "rises": self.rises,
                "last_change": list(self.last_change) if self.last_change is not None else None}

    @classmethod
    def from_dict(cls, d: dict) -> "CtrDriftDetector":
        """A detector resumed from :meth:`to_dict`: ADWIN refilled with the outcomes it held (not an exact copy of
        its buckets, but the same outcomes in the same order, so the same evidence), its detections ignored.

        >>> import random
        >>> rng = random.Random(1)
        >>> a = CtrDriftDetector(min_impressions=100)
        >>> for t in range(30):
        ...     _ = a.update(100, sum(rng.random() < 0.1 for _ in range(100)), float(t))
        >>> b = CtrDriftDetector.from_dict(a.to_dict())
        >>> b.seen == a.seen, abs(b.ctr - a.ctr) < 0.01
        (True, True)
        """
        det = cls(d["delta"], d["min_impressions"], d["retrain_after"])
        for ts, _before, impressions, clicks in d["batches"]:
            for n in range(int(impressions)):
                det.adwin.update(1.0 if (n * clicks) // impressions != ((n + 1) * clicks) // impressions else 0.0)
            det._batches.append((ts, _before, impressions, clicks))
        det.seen, det.cut_ts, det.drops, det.rises = d["seen"], d["cut_ts"], d["drops"], d["rises"]
        det._pending = tuple(d["pending"]) if d["pending"] is not None else None
        det.last_change = tuple(d["last_change"]) if d["last_change"] is not None else None
        return det
