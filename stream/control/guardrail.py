"""The rollback guardrail: after a major promotion, roll back if the new version's online CTR drops.

Wald's sequential probability ratio test on the slates' click outcomes.  When a major version is
promoted, the CTR of the version it replaced, over its last impressions, is the baseline ``p0``
(at least ``min_baseline`` impressions, else there is nothing to compare with and the new version is
kept).  Every interleaved impression of the new version (its DBGD steps included) is a Bernoulli
outcome; the test weighs "CTR is p0" against "CTR is ``p1 = p0 (1 - drop)``":

* log-likelihood ratio ≥ log((1 - β) / α): a significant drop, roll back to the previous major version;
* ≤ log(β / (1 - α)): no drop, keep it and stop watching;
* after ``max_impressions`` without a verdict: keep it.

The false-alarm rate (rolling back a version whose CTR equals the baseline's) is at most about
``alpha`` (Wald's bound α / (1 - β); truncation only lowers it), and lower still for a version that
is better; the chance of missing a drop of ``drop`` or more is about ``beta``.  The baseline is itself
an estimate: with fewer baseline impressions its noise adds to the false-alarm rate, hence
``min_baseline``.  ``tests/unit/test_control.py`` measures both rates by simulation.

Examples
--------
>>> import random
>>> rng = random.Random(0)
>>> g = Guardrail(alpha=0.01, beta=0.05, drop=0.2, min_baseline=1000)
>>> g.watch("v2", previous="v1", baseline_impressions=10_000, baseline_clicks=1_000)
>>> verdict = None
>>> while verdict is None:
...     verdict = g.observe(100, sum(rng.random() < 0.05 for _ in range(100)))  # the CTR halved
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
                 max_impressions: int = 50_000) -> None:
        if not (0 < alpha < 1 and 0 < beta < 1 and 0 < drop < 1):
            raise ValueError("alpha, beta and drop must lie in (0, 1)")
        self.alpha, self.beta, self.drop = alpha, beta, drop
        self.min_baseline, self.max_impressions = min_baseline, max_impressions
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
                         "llr": 0.0, "impressions": 0, "clicks": 0}
        return None

    def observe(self, impressions: int, clicks: int) -> GuardVerdict | None:
        """Outcomes of the watched version; a verdict when the test decides."""
        w = self.watching
        if w is None or impressions <= 0:
            return None
        clicks = max(0, min(clicks, impressions))
        p0, p1 = w["p0"], w["p1"]
        w["llr"] += clicks * math.log(p1 / p0) + (impressions - clicks) * math.log((1 - p1) / (1 - p0))
        w["impressions"] += impressions
        w["clicks"] += clicks
        ctr = w["clicks"] / w["impressions"]
        if w["llr"] >= self.upper:
            return self._end("rollback", f"online CTR {ctr:.4f} against {p0:.4f} before it: a drop of {self.drop:.0%} "
                                         f"or more is significant (SPRT, false-alarm rate {self.alpha})")
        if w["llr"] <= self.lower:
            return self._end("keep", f"online CTR {ctr:.4f} against {p0:.4f} before it: no significant drop")
        if w["impressions"] >= self.max_impressions:
            return self._end("keep", f"no verdict after {w['impressions']} impressions (CTR {ctr:.4f} vs {p0:.4f})")
        return None

    def _end(self, action: str, reason: str) -> GuardVerdict:
        w, self.watching = self.watching, None
        return GuardVerdict(action, w["version"], w["previous"], w["impressions"], w["clicks"], w["p0"], reason)

    def to_dict(self) -> dict:
        return {"watching": self.watching}

    def restore(self, d: dict) -> None:
        self.watching = d.get("watching")
