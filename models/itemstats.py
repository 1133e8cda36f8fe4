"""What the stream knows about items from the traffic itself: recent clicks, click-through, freshness.

Recent clicks decay with a half-life, so "popular" means popular lately; rolling CTR is clicks
on slates over impressions (smoothed); an item's freshness falls with the time since the stream
first saw it.  These feed the popular and fresh recall paths and the ranker's action features.
Kept in memory by each worker (after a restart they rebuild from the traffic); a worker writes a
snapshot to Redis (:meth:`ItemStats.to_bytes`) at most every ``stats_snapshot_s``, which the
serving endpoint reads so that it ranks with the same features the stream used.

Examples
--------
>>> s = ItemStats(half_life_s=10.0)
>>> s.click("a", 0.0); s.click("a", 0.0); s.click("b", 10.0)
>>> round(s.recent_clicks("a", 10.0), 3), round(s.recent_clicks("b", 10.0), 3)
(1.0, 1.0)
>>> s.popular(10.0, 1)
['a']
>>> ItemStats.from_bytes(s.to_bytes()).popular(10.0, 2)
['a', 'b']
"""

from __future__ import annotations

import heapq
import io
import json
import math
from collections import OrderedDict

import numpy as np
import redis


class ItemStats:
    def __init__(self, half_life_s: float = 3600.0, fresh_window_s: float = 3600.0, refresh_s: float = 1.0) -> None:
        self.decay = math.log(2) / half_life_s
        self.fresh_window_s = fresh_window_s
        self.refresh_s = refresh_s
        self._clicks: dict[str, tuple[float, float]] = {}   # item -> (decayed count, at time)
        self._shown: dict[str, int] = {}
        self._slate_clicks: dict[str, int] = {}
        self.first_seen: OrderedDict[str, float] = OrderedDict()
        self._popular: list[str] = []
        self._popular_at = -math.inf

    def click(self, item: str, t: float, from_slate: bool = False) -> None:
        count, at = self._clicks.get(item, (0.0, t))
        self._clicks[item] = (count * math.exp(-self.decay * max(t - at, 0.0)) + 1.0, t)
        if item not in self.first_seen:
            self.first_seen[item] = t
        if from_slate:
            self._slate_clicks[item] = self._slate_clicks.get(item, 0) + 1

    def shown(self, items: list[str]) -> None:
        for item in items:
            self._shown[item] = self._shown.get(item, 0) + 1

    def recent_clicks(self, item: str, t: float) -> float:
        count, at = self._clicks.get(item, (0.0, t))
        return count * math.exp(-self.decay * max(t - at, 0.0))

    def ctr(self, item: str) -> float:
        """Clicks on slates per impression, smoothed towards 1% with 20 pseudo-impressions."""
        return (self._slate_clicks.get(item, 0) + 0.2) / (self._shown.get(item, 0) + 20)

    def freshness(self, item: str, t: float) -> float:
        first = self.first_seen.get(item)
        return 0.0 if first is None else math.exp(-max(t - first, 0.0) / self.fresh_window_s)

    def features_many(self, items: list[str], t: float) -> np.ndarray:
        """The ranker's action features of items at time t, (n, 3) float32: log(1 + recent clicks), CTR, freshness.

        The ranker asks for thousands per batch, so only the dictionary look-ups are per item; the arithmetic
        is numpy's (the same rules as :meth:`recent_clicks`, :meth:`ctr` and :meth:`freshness`).
        """
        nothing = (0.0, t)
        clicks = np.array([self._clicks.get(i, nothing) for i in items], dtype=np.float64).reshape(-1, 2)
        slate = np.fromiter((self._slate_clicks.get(i, 0) for i in items), dtype=np.float64, count=len(items))
        shown = np.fromiter((self._shown.get(i, 0) for i in items), dtype=np.float64, count=len(items))
        first = np.fromiter((self.first_seen.get(i, np.nan) for i in items), dtype=np.float64, count=len(items))
        out = np.empty((len(items), 3), dtype=np.float32)
        out[:, 0] = np.log1p(clicks[:, 0] * np.exp(-self.decay * np.maximum(t - clicks[:, 1], 0.0)))
        out[:, 1] = (slate + 0.2) / (shown + 20)
        out[:, 2] = np.nan_to_num(np.exp(-np.maximum(t - first, 0.0) / self.fresh_window_s), nan=0.0)
        return out

    def popular(self, t: float, k: int) -> list[str]:
        """The k items with the most recent clicks (recomputed at most every ``refresh_s``)."""
        if t - self._popular_at >= self.refresh_s or len(self._popular) < k:
            self._popular = [item for item, _ in heapq.nlargest(
                k, ((i, c * math.exp(-self.decay * max(t - at, 0.0))) for i, (c, at) in self._clicks.items()),
                key=lambda x: x[1])]
            self._popular_at = t
        return self._popular[:k]

    def fresh(self, t: float, k: int) -> list[str]:
        """Up to k items first seen within the freshness window, newest first."""
        out = []
        for item, first in reversed(self.first_seen.items()):
            if t - first > self.fresh_window_s or len(out) >= k:
                break
            out.append(item)
        return out

    # ------------------------------------------------------------------ snapshots

    def to_bytes(self) -> bytes:
        """Everything in compact arrays (a 43k-item catalog is about 2 MB), for Redis."""
        items = list(self.first_seen)  # every clicked item, in the order first seen
        n = len(items)
        nothing = (0.0, 0.0)
        counts = np.fromiter((x for i in items for x in self._clicks.get(i, nothing)), dtype=np.float64,
                             count=2 * n).reshape(-1, 2)
        shown = list(self._shown)
        buf = io.BytesIO()
        np.savez(buf, params=np.array([self.decay, self.fresh_window_s, self.refresh_s]),
                 items=np.frombuffer(json.dumps(items).encode(), dtype=np.uint8),
                 first=np.fromiter(self.first_seen.values(), dtype=np.float64, count=n), counts=counts,
                 slate_clicks=np.fromiter((self._slate_clicks.get(i, 0) for i in items), dtype=np.int64, count=n),
                 shown_items=np.frombuffer(json.dumps(shown).encode(), dtype=np.uint8),
                 shown=np.fromiter(self._shown.values(), dtype=np.int64, count=len(shown)))
        return buf.getvalue()

    def copy(self) -> ItemStats:
        """A copy that the stream can go on changing this one beside (a snapshot is written from a thread)."""
        other = ItemStats.__new__(ItemStats)
        other.__dict__.update(self.__dict__)
        other._clicks, other._shown, other._slate_clicks = dict(self._clicks), dict(self._shown), dict(self._slate_clicks)
        other.first_seen, other._popular = OrderedDict(self.first_seen), list(self._popular)
        return other

    @classmethod
    def from_bytes(cls, blob: bytes) -> ItemStats:
        z = np.load(io.BytesIO(blob))
        decay, fresh_window_s, refresh_s = z["params"].tolist()
        stats = cls(math.log(2) / decay, fresh_window_s, refresh_s)
        items = json.loads(z["items"].tobytes())
        for item, first, (count, at), sc in zip(items, z["first"].tolist(), z["counts"].tolist(),
                                                 z["slate_clicks"].tolist()):
            stats.first_seen[item] = first
            stats._clicks[item] = (count, at)
            if sc:
                stats._slate_clicks[item] = sc
        stats._shown = dict(zip(json.loads(z["shown_items"].tobytes()), z["shown"].tolist()))
        return stats


def snapshot_key(prefix: str = "") -> str:
    """The Redis key of the workers' item statistics (``{prefix}itemstats``; ``...:t`` holds its time)."""
    return f"{prefix}itemstats"


def write_snapshot(client: redis.Redis, prefix: str, stats: ItemStats, t: float) -> None:
    """Store ``stats`` as read at time ``t``, both keys in one transaction."""
    pipe = client.pipeline(transaction=True)
    pipe.set(snapshot_key(prefix), stats.to_bytes())
    pipe.set(snapshot_key(prefix) + ":t", repr(float(t)))
    pipe.execute()


def read_snapshot(client: redis.Redis, prefix: str, known_t: float | None = None) -> tuple[ItemStats, float] | None:
    """The stored statistics and their time, or None if there are none or they are still at ``known_t``."""
    t = client.get(snapshot_key(prefix) + ":t")
    if t is None or float(t) == known_t:
        return None  # nothing new: do not move the (megabytes of) statistics
    blob = client.get(snapshot_key(prefix))
    return None if blob is None else (ItemStats.from_bytes(blob), float(t))
