"""The rollback guardrail: after a major promotion, roll back if the new version's online CTR drops.

Wald's sequential probability ratio test on the slates' click outcomes.  When a major version is
promoted, the CTR of the version it replaced, over its last impressions, is the baseline ``p0``
(at least ``min_baseline`` impressions, else there is nothing to compare with and the new version is
kept).  Every interleaved impression of the new version (its DBGD steps included) is a Bernoulli
outcome; the test weighs "CTR is p0" against "CTR is ``p1 = p0 (1 - drop)``":

* log-likelihood ratio ≥ log((1 - β) / α): a significant drop, roll back to the previous major version;
* ≤ log(β / (1 - α)): no drop, keep it and stop watching;
* after ``max_impressions`` without a verdict: keep it.

**Clicks come late.** A slate's click arrives after the slate (the user's think time) and is credited to
the version that made the slate.  Counted as they happen, a version's first impressions have no clicks yet,
so right after a promotion its CTR reads far too low: in the online study that alone rolled back nearly
every retrain within 200–600 impressions.  So an impression enters the test ``click_lag_s`` after it was
shown (clicks as they arrive: about the typical think time, so numerator and denominator cover the same
slates), and no verdict is given before ``delay_s`` has passed since the version's first outcome, so what
the lag estimate gets wrong is a small share of what has been counted.  A lag set too long biases the CTR
up (towards keeping the version), one too short biases it down.

Examples
--------
>>> import random
>>> rng = random.Random(0)
>>> g = Guardrail(alpha=0.01, beta=0.05, drop=0.2, min_baseline=1000, delay_s=0, click_lag_s=0)
>>> g.watch("v2", previous="v1", baseline_impressions=10_000, baseline_clicks=1_000)
>>> verdict = None
>>> while verdict is None:
...     verdict = g.observe(100, sum(rng.random() < 0.05 for _ in range(100)), now=0.0)  # the CTR halved
>>> verdict.action, verdict.impressions < 2000
('rollback', True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class GuardVerdict:
    action: str            # "rollback" or "keep"
    version: str
    previous: str
    impressions: int
    clicks: int
    baseline_ctr: float
    reason: str


class Guardrail:
    def __init__(self, alpha: float = 0.01, beta: float = 0.05, drop: float = 0.2, min_baseline: int = 2000,
                 max_impressions: int = 50_000, delay_s: float = 300.0, click_lag_s: float = 60.0) -> None:
        if not (0 < alpha < 1 and 0 < beta < 1 and 0 < drop < 1):
            raise ValueError("alpha, beta and drop must lie in (0, 1)")
        self.alpha, self.beta, self.drop = alpha, beta, drop
        self.min_baseline, self.max_impressions = min_baseline, max_impressions
        self.delay_s, self.click_lag_s = delay_s, click_lag_s
        self.upper, self.lower = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
        self.watching: dict | None = None

    def watch(self, version: str, previous: str | None, baseline_impressions: int, baseline_clicks: int) -> str | None:
        """Start watching a newly promoted major version; a reason string if it cannot be watched."""
        self.watching = None
        if previous is None:
            return "no previous major version to roll back to"
        if baseline_impressions < self.min_baseline:
            return f"baseline of {baseline_impressions} impressions (< {self.min_baseline}): nothing to compare with"
        p0 = baseline_clicks / baseline_impressions
        if not 0 < p0 < 1:
            return f"baseline CTR {p0:.4f}: a drop cannot be tested"
        self.watching = {"version": version, "previous": previous, "p0": p0, "p1": p0 * (1 - self.drop),
                         "llr": 0.0, "impressions": 0, "clicks": 0, "shown": [], "first": None}
        return None

    def observe(self, impressions: int, clicks: int, now: float) -> GuardVerdict | None:
        """Outcomes of the watched version at ``now``; a verdict when the test decides."""
        w = self.watching
        if w is None:
            return None
        if w["first"] is None:
            w["first"] = now
        if impressions > 0:
            w["shown"].append([now, impressions])
        w["clicks"] += max(0, clicks)
        while w["shown"] and w["shown"][0][0] <= now - self.click_lag_s:  # impressions whose clicks are in by now
            w["impressions"] += w["shown"].pop(0)[1]
        if w["impressions"] <= 0 or now - w["first"] < self.delay_s:
            return None
        p0, p1, n, c = w["p0"], w["p1"], w["impressions"], min(w["clicks"], w["impressions"])
        w["llr"] = c * math.log(p1 / p0) + (n - c) * math.log((1 - p1) / (1 - p0))
        ctr = c / n
        if w["llr"] >= self.upper:
            return self._end("rollback", f"online CTR {ctr:.4f} against {p0:.4f} before it: a drop of {self.drop:.0%} "
                                         f"or more is significant (SPRT, false-alarm rate {self.alpha})")
        if w["llr"] <= self.lower:
            return self._end("keep", f"online CTR {ctr:.4f} against {p0:.4f} before it: no significant drop")
        if n >= self.max_impressions:
            return self._end("keep", f"no verdict after {n} impressions (CTR {ctr:.4f} vs {p0:.4f})")
        return None

    def _end(self, action: str, reason: str) -> GuardVerdict:
        w, self.watching = self.watching, None
        return GuardVerdict(action, w["version"], w["previous"], w["impressions"], min(w["clicks"], w["impressions"]),
                            w["p0"], reason)

    def to_dict(self) -> dict:
        return {"watching": self.watching}

    def restore(self, d: dict) -> None:
        self.watching = d.get("watching")
