"""The promotion gate: a retrained candidate goes live only if it is not worse offline than the current one.

The retrain job scores the current and the candidate GRU4Rec on the same held-out newest sessions
(Recall@20 and MRR@20 of the next click, :func:`models.retrain.train_candidate`).  The gate promotes
when every metric is a finite number and none dropped by more than ``margin``.  Comparisons are written
so that NaN fails them (``after >= before - margin`` is False for NaN; ``after < before - margin``
would let it through).  That the candidate's weights are finite and its blobs load is checked by the
registry before it publishes and again before it promotes.

Examples
--------
>>> gate = PromotionGate(margin=0.0)
>>> gate.judge({"current": {"recall@20": 0.5, "mrr@20": 0.2}, "new": {"recall@20": 0.51, "mrr@20": 0.2}}).promote
True
>>> gate.judge({"current": {"recall@20": 0.5, "mrr@20": 0.2}, "new": {"recall@20": float("nan"), "mrr@20": 0.3}})
Verdict(promote=False, reason='recall@20 of the candidate is not a finite number (nan)')
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Verdict:
    promote: bool
    reason: str


class PromotionGate:
    def __init__(self, margin: float = 0.0, metrics: tuple[str, ...] = ("recall@20", "mrr@20")) -> None:
        self.margin, self.metrics = margin, metrics

    def judge(self, offline: dict | None) -> Verdict:
        if not offline or "current" not in offline or "new" not in offline:
            return Verdict(False, "no offline comparison with the current version")
        before, after = offline["current"], offline["new"]
        worse = []
        for m in self.metrics:
            a, b = after.get(m), before.get(m)
            if not isinstance(a, (int, float)) or not math.isfinite(a):
                return Verdict(False, f"{m} of the candidate is not a finite number ({a})")
            if not isinstance(b, (int, float)) or not math.isfinite(b):
                return Verdict(False, f"{m} of the current version is not a finite number ({b})")
            if not a >= b - self.margin:
                worse.append(f"{m} ({a:.4f} < {b:.4f} - {self.margin})")
        if worse:
            return Verdict(False, "worse than the current version on " + ", ".join(worse))
        return Verdict(True, "not worse than the current version offline")
