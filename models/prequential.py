"""Prequential (test-then-learn) scoring of slates on a time-ordered log, as in streaming recommender evaluation
(StreamingRec: Jugovac, Jannach & Karimi, RecSys 2018).

Every click *t* of a session that has a click *t+1* is a target: the slate a recommender showed right after click
*t* (having learned everything up to and including it) is scored against click *t+1*: a hit if the item is among
the slate's first ``k``, and its reciprocal rank. The last click of a session has no target. A next item that never
appeared before (in the training part or the stream so far) cannot be recommended by anything that learns from the
past, so those targets are counted apart (``unseen``) and left out of HitRate and MRR. The log's order is its
``Time`` column when that holds timestamps (ties keep the file's order); when it is only an order key within each
session (Diginetica's click position), sessions follow one another in ``SessionId`` order (:func:`log_order`).

>>> import pandas as pd
>>> log = pd.DataFrame({"SessionId": [1, 1, 2, 1, 2], "ItemId": ["a", "b", "a", "c", "d"], "Time": [1, 2, 3, 4, 5]})
>>> [(t.index, t.session, t.next_item, t.unseen) for t in targets(log, known={"a", "b"}, order="time")]
[(0, '1', 'b', False), (1, '1', 'c', True), (2, '2', 'd', True)]
>>> score = Prequential(k=2)
>>> score.add(0, "b", False, ["x", "b"]); score.add(1, "c", True, ["c"]); score.add(2, "d", True, [])
>>> s = score.summary(); s["scored"], s["hit_rate"], s["mrr"], s["unseen"]
(1, 1.0, 0.5, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Target:
    """Click ``index`` (its place in the time-ordered log) of ``session``: the item clicked and the click after it."""

    index: int
    session: str
    item: str
    next_item: str
    unseen: bool


def log_order(log: pd.DataFrame) -> str:
    """``time`` when ``Time`` looks like unix seconds (after 1973), else ``session`` (an order key per session).

    >>> log_order(pd.DataFrame({"Time": [1396437466.9]})), log_order(pd.DataFrame({"Time": [0.0, 1.0]}))
    ('time', 'session')
    """
    return "time" if len(log) and float(log["Time"].min()) > 1e8 else "session"


def ordered(log: pd.DataFrame, order: str | None = None) -> pd.DataFrame:
    """The log in replay order (``time``: by Time; ``session``: by SessionId then Time; stable), ids as strings,
    index 0..n-1."""
    keys = ["Time"] if (order or log_order(log)) == "time" else ["SessionId", "Time"]
    out = log.sort_values(keys, kind="stable").reset_index(drop=True)
    return out.assign(SessionId=out.SessionId.astype(str), ItemId=out.ItemId.astype(str))


def targets(log: pd.DataFrame, known: Iterable[str] = (), order: str | None = None) -> list[Target]:
    """The targets of a log (the streamed part), in replay order; ``known``: items seen before it (training)."""
    log = ordered(log, order)
    seen, last_index, out = set(known), {}, []
    sessions, items = log.SessionId.tolist(), log.ItemId.tolist()
    for index, (session, item) in enumerate(zip(sessions, items)):
        previous = last_index.get(session)
        if previous is not None:
            out.append(Target(previous, session, items[previous], item, item not in seen))
        last_index[session] = index
        seen.add(item)
    return sorted(out, key=lambda t: t.index)


@dataclass
class Prequential:
    """HitRate@k and MRR@k of slates against their targets, overall and in windows of the log."""

    k: int = 20
    _hits: list[tuple[int, float]] = field(default_factory=list)  # (target index, reciprocal rank or 0)
    unseen: int = 0
    missing: int = 0

    def add(self, index: int, next_item: str, unseen: bool, slate: Sequence[str] | None) -> None:
        """Score the slate shown after click ``index`` (None: no slate came for it, counted as ``missing``)."""
        if unseen:
            self.unseen += 1
            return
        if slate is None:
            self.missing += 1
            slate = []
        top = list(slate[: self.k])
        self._hits.append((index, 1.0 / (top.index(next_item) + 1) if next_item in top else 0.0))

    def summary(self) -> dict:
        rr = np.array([r for _, r in self._hits])
        return {"k": self.k, "scored": len(rr), "hit_rate": float((rr > 0).mean()) if len(rr) else None,
                "mrr": float(rr.mean()) if len(rr) else None, "unseen": self.unseen, "missing": self.missing}

    def windows(self, size: int) -> list[tuple[int, float]]:
        """(last target index, HitRate@k) over consecutive windows of ``size`` scored targets, in log order."""
        ordered = sorted(self._hits)
        return [(ordered[i + size - 1][0], float(np.mean([r > 0 for _, r in ordered[i: i + size]])))
                for i in range(0, len(ordered) - size + 1, size)]
