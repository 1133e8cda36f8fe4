"""Online metrics of a worker: per window and cumulative, as JSON on ``metrics`` and in Prometheus format.

What a user watches to see whether the system learns, how fast it is, and what exploration does:

- impressions (slates shown), clicks on slates, CTR overall, per model version and per interleaving team;
- HitRate@K and MRR@K of every click against the session's previous slate (did we show what the
  user clicked next, and how high) -- computed whether or not the click came through the slate;
- catalog coverage (distinct items shown / catalog size), click->slate latency percentiles,
  clicks/s, how far behind the log the worker is (seconds since the newest processed click was produced);
- the model version and its age, DBGD rounds and accepted updates, the CTR drift detector's state.

Windows are cut by the caller (a Faust timer every ``metrics_window_s``); cumulative latency
quantiles are river's streaming ``stats.Quantile``.  Hand-made streams in ``tests/unit`` check the
arithmetic.

Examples
--------
>>> m = OnlineMetrics(k=3)
>>> m.observe_slate("s1", "imp1", ["a", "b", "c"], ["current", "explorer", "current"], "v1", 12.0)
>>> m.observe_click("s1", "b", impression_id="imp1", position=1)
>>> w = m.window(now=10.0, window_s=10.0)
>>> w["impressions"], w["slate_clicks"], w["ctr"], w["ctr_by_team"]["explorer"], w["hit_rate"], w["mrr"]
(1, 1, 1.0, 1.0, 1.0, 0.5)
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, defaultdict

import numpy as np
from river import stats



class _Counts:
    def __init__(self) -> None:
        self.impressions = 0
        self.slate_clicks = 0
        self.clicks = 0
        self.hits = 0
        self.rr = 0.0
        self.judged = 0            # clicks that had a previous slate to judge against
        self.by_version: dict[str, list[int]] = defaultdict(lambda: [0, 0])   # version -> [impressions, clicks]
        self.by_team: dict[str, list[int]] = defaultdict(lambda: [0, 0])      # team -> [slots shown, clicks]
        self.items: set[str] = set()
        self.latency: list[float] = []


class OnlineMetrics:
    def __init__(self, k: int = 10, catalog_size: int | None = None, max_tracked: int = 200_000) -> None:
        self.k = k
        self.catalog_size = catalog_size
        self.max_tracked = max_tracked
        self._slates: OrderedDict[str, tuple[str, list[str], list[str] | None]] = OrderedDict()  # impression ->
        self._last_slate: OrderedDict[str, list[str]] = OrderedDict()                            # session -> items
        self.win, self.total = _Counts(), _Counts()
        self.p50, self.p99 = stats.Quantile(0.5), stats.Quantile(0.99)
        self.behind_s = 0.0
        self.started = time.time()

    # ------------------------------------------------------------------ observations

    def observe_click(self, session_id: str, item_id: str, impression_id: str | None = None,
                      position: int | None = None, produced_at: float | None = None) -> None:
        for c in (self.win, self.total):
            c.clicks += 1
        previous = self._last_slate.get(session_id)
        if previous is not None:
            rank = previous.index(item_id) + 1 if item_id in previous[: self.k] else 0
            for c in (self.win, self.total):
                c.judged += 1
                if rank:
                    c.hits += 1
                    c.rr += 1.0 / rank
        if impression_id is not None and position is not None:
            entry = self._slates.pop(impression_id, None)
            if entry is not None:
                version, items, teams = entry
                if position < len(items) and items[position] == item_id:
                    for c in (self.win, self.total):
                        c.slate_clicks += 1
                        c.by_version[version][1] += 1
                        if teams:
                            c.by_team[teams[position]][1] += 1
        if produced_at is not None:
            self.behind_s = max(time.time() - produced_at, 0.0)

    def observe_slate(self, session_id: str, impression_id: str, items: list[str], teams: list[str] | None,
                      version: str, latency_ms: float) -> None:
        self._slates[impression_id] = (version, items, teams)
        self._last_slate[session_id] = items
        self._last_slate.move_to_end(session_id)
        for d in (self._slates, self._last_slate):
            while len(d) > self.max_tracked:
                d.popitem(last=False)
        for c in (self.win, self.total):
            c.impressions += 1
            c.by_version[version][0] += 1
            for team in teams or ():
                c.by_team[team][0] += 1
            c.items.update(items)
            c.latency.append(latency_ms)
        self.p50.update(latency_ms)
        self.p99.update(latency_ms)

    # ------------------------------------------------------------------ reports

    def _report(self, c: _Counts, seconds: float) -> dict:
        lat = np.asarray(c.latency) if c.latency else None

        def ratio(a: float, b: float) -> float | None:
            return a / b if b else None

        return {
            "impressions": c.impressions, "clicks": c.clicks, "slate_clicks": c.slate_clicks,
            "ctr": ratio(c.slate_clicks, c.impressions),
            "ctr_by_version": {v: ratio(k, n) for v, (n, k) in c.by_version.items()},
            "ctr_by_team": {t: ratio(k, n) for t, (n, k) in c.by_team.items()},   # clicks per slot shown
            "clicks_by_team": {t: k for t, (_, k) in c.by_team.items()},
            "hit_rate": ratio(c.hits, c.judged), "mrr": ratio(c.rr, c.judged), "k": self.k,
            "coverage": ratio(len(c.items), self.catalog_size or 0), "distinct_items": len(c.items),
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat is not None else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat is not None else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat is not None else None,
            "clicks_per_s": c.clicks / seconds if seconds > 0 else None,
        }

    def window(self, now: float | None = None, window_s: float = 5.0) -> dict:
        """The window's figures and the cumulative ones; starts a new window."""
        now = time.time() if now is None else now
        report = self._report(self.win, window_s)
        cumulative = self._report(self.total, max(now - self.started, 1e-9))
        cumulative.pop("latency_p95_ms")
        cumulative["latency_p50_ms"] = _finite(self.p50.get())
        cumulative["latency_p99_ms"] = _finite(self.p99.get())
        report.update(cumulative=cumulative, behind_log_s=self.behind_s, window_s=window_s)
        self.win = _Counts()
        return report


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
