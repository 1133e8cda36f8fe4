"""What the stream knows about items from the traffic itself: recent clicks, click-through, freshness.

Recent clicks decay with a half-life, so "popular" means popular lately; rolling CTR is clicks
on slates over impressions (smoothed); an item's freshness falls with the time since the stream
first saw it.  These feed the popular and fresh recall paths and the ranker's action features.
Kept in memory by each worker (after a restart they rebuild from the traffic); a worker writes a
snapshot to Redis (:meth:`ItemStats.to_bytes`) at most every ``stats_snapshot_s``, which the
serving endpoint reads so that it ranks with the same features the stream used.

Each item gets a slot the first time it is clicked or shown, and the figures live in numpy arrays
indexed by slot.  That is for the snapshot: with per-item dictionaries, copying and packing a
43k-item catalog took tens of milliseconds of Python, once a second, and a thread doing it held the
GIL the stream needed (p99 of click->slate latency at 1,000 clicks/s 33-49 ms with snapshots, 22 ms
without: ``bench/stream_throughput --latency-only``).  Now a snapshot copies five arrays and the
append-only JSON of the item names in the stream's thread and packs them in another.

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
>>> s.drop(["a"]); s.popular(10.0, 2), round(s.recent_clicks("b", 10.0), 3)
(['b'], 1.0)
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from itertools import repeat

import numpy as np
import redis


class ItemStats:
    def __init__(self, half_life_s: float = 3600.0, fresh_window_s: float = 3600.0, refresh_s: float = 1.0) -> None:
        self.decay = math.log(2) / half_life_s
        self.fresh_window_s = fresh_window_s
        self.refresh_s = refresh_s
        self._slot: dict[str, int] = {}      # item -> slot in the arrays
        self._names: list[str] = []          # slot -> item
        self._names_json = bytearray()       # the names as JSON strings, each followed by a comma (append-only)
        self._order = np.zeros(1024, np.int64)  # slots of clicked items, in the order first clicked ...
        self._n_order = 0                       # ... in its first _n_order places
        self._count = np.zeros(0)            # decayed click count, as of _at
        self._at = np.zeros(0)
        self._first = np.zeros(0)            # first click's time; NaN: shown, never clicked
        self._slate = np.zeros(0, np.int64)  # clicks on slates
        self._shown = np.zeros(0, np.int64)  # times in a slate
        self._popular: list[str] = []
        self._popular_at = -math.inf

    def _new_slot(self, item: str) -> int:
        s = len(self._names)
        if s == len(self._count):  # full: double the arrays
            grow = max(1024, s)
            self._count, self._at = np.append(self._count, np.zeros(grow)), np.append(self._at, np.zeros(grow))
            self._first = np.append(self._first, np.full(grow, np.nan))
            self._slate = np.append(self._slate, np.zeros(grow, np.int64))
            self._shown = np.append(self._shown, np.zeros(grow, np.int64))
        self._slot[item] = s
        self._names.append(item)
        self._names_json += json.dumps(item).encode() + b","
        return s

    def _append_order(self, s: int) -> None:
        if self._n_order == len(self._order):
            self._order = np.append(self._order, np.zeros(max(1024, len(self._order)), np.int64))
        self._order[self._n_order] = s
        self._n_order += 1

    def click(self, item: str, t: float, from_slate: bool = False) -> None:
        s = self._slot.get(item)
        if s is None:
            s = self._new_slot(item)
        if math.isnan(self._first[s]):  # first click
            self._first[s] = t
            self._append_order(s)
            count, at = 0.0, t
        else:
            count, at = float(self._count[s]), float(self._at[s])
        self._count[s] = count * math.exp(-self.decay * max(t - at, 0.0)) + 1.0
        self._at[s] = t
        if from_slate:
            self._slate[s] += 1

    def drop(self, items: Iterable[str]) -> None:
        """Forget ``items`` (every figure): the arrays are rebuilt without their slots, O(items known), so call it
        rarely and for many at once (``models/newitems.py`` evicts in batches)."""
        gone = {s for s in map(self._slot.get, items) if s is not None}
        if not gone:
            return
        n = len(self._names)
        keep = np.array([s for s in range(n) if s not in gone], dtype=np.int64)
        new_slot = np.full(n, -1, np.int64)
        new_slot[keep] = np.arange(len(keep))
        order = new_slot[self._order[: self._n_order]]
        self._order, self._n_order = order[order >= 0].copy(), int((order >= 0).sum())
        self._count, self._at, self._first = self._count[keep], self._at[keep], self._first[keep]
        self._slate, self._shown = self._slate[keep], self._shown[keep]
        self._names = [self._names[s] for s in keep.tolist()]
        self._slot = {item: s for s, item in enumerate(self._names)}
        self._names_json = bytearray(b"".join(json.dumps(item).encode() + b"," for item in self._names))
        self._popular_at = -math.inf

    def shown(self, items: Iterable[str]) -> None:
        """Count one impression for each item (an item listed twice counts twice): all of a batch's slates at once."""
        get, slots = self._slot.get, []
        for item in items:
            s = get(item)
            slots.append(self._new_slot(item) if s is None else s)
        np.add.at(self._shown, np.array(slots, dtype=np.int64), 1)

    def _clicked(self, item: str) -> int | None:
        s = self._slot.get(item)
        return None if s is None or math.isnan(self._first[s]) else s

    def recent_clicks(self, item: str, t: float) -> float:
        s = self._clicked(item)
        if s is None:
            return 0.0
        return float(self._count[s]) * math.exp(-self.decay * max(t - float(self._at[s]), 0.0))

    def ctr(self, item: str) -> float:
        """Clicks on slates per impression, smoothed towards 1% with 20 pseudo-impressions."""
        s = self._slot.get(item)
        return 0.2 / 20 if s is None else (int(self._slate[s]) + 0.2) / (int(self._shown[s]) + 20)

    def freshness(self, item: str, t: float) -> float:
        s = self._clicked(item)
        return 0.0 if s is None else math.exp(-max(t - float(self._first[s]), 0.0) / self.fresh_window_s)

    def features_many(self, items: list[str], t: float) -> np.ndarray:
        """The ranker's action features of items at time t, (n, 3) float32: log(1 + recent clicks), CTR, freshness.

        The ranker asks for thousands per batch, so only the slot look-ups are per item; the arithmetic
        is numpy's (the same rules as :meth:`recent_clicks`, :meth:`ctr` and :meth:`freshness`).
        """
        slots = np.fromiter(map(self._slot.get, items, repeat(-1)), dtype=np.int64, count=len(items))
        if not self._names:  # nothing seen yet: every item unknown
            slots[:] = -1
            count = last = np.zeros(len(items))
            first, slate, shown = np.full(len(items), np.nan), np.zeros(len(items)), np.zeros(len(items))
        else:
            known = slots >= 0
            at = np.where(known, slots, 0)
            first = np.where(known, self._first[at], np.nan)
            clicked = ~np.isnan(first)
            count, last = np.where(clicked, self._count[at], 0.0), np.where(clicked, self._at[at], t)
            slate, shown = np.where(known, self._slate[at], 0), np.where(known, self._shown[at], 0)
        out = np.empty((len(items), 3), dtype=np.float32)
        out[:, 0] = np.log1p(count * np.exp(-self.decay * np.maximum(t - last, 0.0)))
        out[:, 1] = (slate + 0.2) / (shown + 20)
        out[:, 2] = np.nan_to_num(np.exp(-np.maximum(t - first, 0.0) / self.fresh_window_s), nan=0.0)
        return out

    def popular(self, t: float, k: int) -> list[str]:
        """The k items with the most recent clicks (recomputed at most every ``refresh_s``); ties: first clicked first."""
        # also when time went back: one far-future timestamp must not freeze the list until the clock catches up
        if not 0 <= t - self._popular_at < self.refresh_s or len(self._popular) < k:
            order = self._order[: self._n_order]
            recent = self._count[order] * np.exp(-self.decay * np.maximum(t - self._at[order], 0.0))
            if len(recent) > k > 0:  # everything at least as large as the k-th largest, then a stable sort of those
                candidates = np.flatnonzero(recent >= np.partition(recent, len(recent) - k)[len(recent) - k])
            else:
                candidates = np.arange(len(recent))
            top = candidates[np.argsort(-recent[candidates], kind="stable")][:k]
            self._popular = [self._names[s] for s in order[top].tolist()]
            self._popular_at = t
        return self._popular[:k]

    def fresh(self, t: float, k: int) -> list[str]:
        """Up to k items first clicked within the freshness window, newest first."""
        out = []
        for s in self._order[max(0, self._n_order - k): self._n_order][::-1].tolist():  # each step adds one or stops
            if t - self._first[s] > self.fresh_window_s or len(out) >= k:
                break
            out.append(self._names[s])
        return out

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> Snapshot:
        """A frozen copy of the figures, cheap to take (array copies); pack it with :meth:`Snapshot.to_bytes`."""
        n = len(self._names)
        return Snapshot(np.array([self.decay, self.fresh_window_s, self.refresh_s]), bytes(self._names_json),
                        self._order[: self._n_order].copy(), self._count[:n].copy(), self._at[:n].copy(),
                        self._first[:n].copy(), self._slate[:n].copy(), self._shown[:n].copy())

    def to_bytes(self) -> bytes:
        """Everything in compact arrays (a 43k-item catalog is about 2 MB), for Redis."""
        return self.snapshot().to_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ItemStats:
        z = np.load(io.BytesIO(blob))
        decay, fresh_window_s, refresh_s = z["params"].tolist()
        stats = cls(math.log(2) / decay, fresh_window_s, refresh_s)
        names = json.loads(z["items"].tobytes())
        if "order" not in z:  # an earlier release's snapshot: clicked items, then shown counts by name
            for item, first, (count, at), sc in zip(names, z["first"].tolist(), z["counts"].tolist(),
                                                     z["slate_clicks"].tolist()):
                s = stats._new_slot(item)
                stats._first[s], stats._count[s], stats._at[s], stats._slate[s] = first, count, at, sc
                stats._append_order(s)
            for item, n in zip(json.loads(z["shown_items"].tobytes()), z["shown"].tolist()):
                s = stats._slot.get(item)
                s = stats._new_slot(item) if s is None else s  # may grow the arrays: index them after
                stats._shown[s] = n
            return stats
        stats._names = names
        stats._slot = {item: s for s, item in enumerate(names)}
        raw = z["items"].tobytes()
        stats._names_json = bytearray(raw[1:-1] + b"," if names else b"")
        stats._order, stats._n_order = z["order"].copy(), len(z["order"])
        counts = z["counts"]
        stats._count, stats._at = counts[:, 0].copy(), counts[:, 1].copy()
        stats._first, stats._slate, stats._shown = z["first"].copy(), z["slate_clicks"].copy(), z["shown"].copy()
        return stats


class Snapshot:
    """:meth:`ItemStats.snapshot`: copies of the arrays, packed by :meth:`to_bytes` (from a thread, if need be)."""

    def __init__(self, params: np.ndarray, names_json: bytes, order: np.ndarray, count: np.ndarray, at: np.ndarray,
                 first: np.ndarray, slate: np.ndarray, shown: np.ndarray) -> None:
        self.params, self.names_json, self.order = params, names_json, order
        self.count, self.at, self.first, self.slate, self.shown = count, at, first, slate, shown

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        names = b"[" + self.names_json[:-1] + b"]"  # drop the last comma
        np.savez(buf, params=self.params, items=np.frombuffer(names, dtype=np.uint8), order=self.order,
                 counts=np.stack([self.count, self.at], axis=1), first=self.first, slate_clicks=self.slate,
                 shown=self.shown)
        return buf.getvalue()


def snapshot_key(prefix: str = "") -> str:
    """The Redis key of the workers' item statistics (``{prefix}itemstats``; ``...:t`` holds its time)."""
    return f"{prefix}itemstats"


def write_snapshot(client: redis.Redis, prefix: str, stats: ItemStats | Snapshot, t: float) -> None:
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
