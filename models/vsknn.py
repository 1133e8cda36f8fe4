"""V-SKNN: vector-multiplication session-based k-nearest neighbours (Ludewig & Jannach, UMUAI 2018), kept up to date
click by click.

The baseline that matched or beat GRU4Rec in the published session-based comparisons. A session is a set of items; the
current session is a vector whose last item weighs 1 and earlier ones less (``weighting``, by position). Neighbours
are drawn from the ``sample_size`` most recent past sessions sharing an item with it, the ``k`` most similar
(similarity: the dot product of the weighted current vector with a neighbour's binary one) vote for their items, each
vote scaled by the similarity and by how far back in the current session the most recent shared item lies
(``weighting_score``). The defaults are session-rec's (``VMContextKNN``): k 100, sample 1,000, ``div`` for both.

Learning is incremental (:meth:`VSKNN.learn`, one click at a time, in time order), so the same object can be
evaluated prequentially on a stream and serve as a recall path. It keeps, per item, only the ``sample_size`` sessions
that clicked it most recently: a session older than that many others sharing the item can never be sampled through
it, so the bound loses nothing.

>>> knn = VSKNN(k=2, sample_size=10)
>>> for t, (session, item) in enumerate([("a", "x"), ("a", "y"), ("b", "x"), ("b", "z"), ("c", "w")]):
...     knn.learn(session, item, float(t))
>>> knn.recommend(["x"], 3)
[('x', 2.0), ('y', 1.0), ('z', 1.0)]
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Sequence

WEIGHTINGS = {  # weight of the item at 1-based position i of a session of length n (the last one: 1)
    "same": lambda i, n: 1.0,
    "div": lambda i, n: i / n,
    "linear": lambda i, n: max(1.0 - 0.1 * (n - i), 0.0),
    "quadratic": lambda i, n: (i / n) ** 2,
    "log": lambda i, n: 1.0 / math.log10(n - i + 1.7),
}
SCORE_WEIGHTINGS = {  # decay of a neighbour's vote by how many steps back its most recent shared item is (1: last)
    "same": lambda step: 1.0,
    "div": lambda step: 1.0 / step,
    "linear": lambda step: max(1.0 - 0.1 * (step - 1), 0.0),
    "quadratic": lambda step: 1.0 / step ** 2,
    "log": lambda step: 1.0 / math.log10(step + 1.7),
}


class VSKNN:
    """Session kNN over the sessions seen so far; ``learn`` a click, ``recommend`` for a session's items."""

    def __init__(self, k: int = 100, sample_size: int = 1000, weighting: str = "div",
                 weighting_score: str = "div") -> None:
        if weighting not in WEIGHTINGS or weighting_score not in SCORE_WEIGHTINGS:
            raise ValueError(f"weightings are {sorted(WEIGHTINGS)}, not {weighting!r} / {weighting_score!r}")
        self.k, self.sample_size = k, sample_size
        self.weight, self.decay = WEIGHTINGS[weighting], SCORE_WEIGHTINGS[weighting_score]
        self.sessions: dict[str, set[str]] = {}
        self.last_time: dict[str, float] = {}
        self.item_sessions: dict[str, OrderedDict[str, None]] = {}  # item -> sessions, least recently active first

    def learn(self, session: str, item: str, t: float) -> None:
        """Add one click (in time order): ``session`` becomes the most recent session of every item it holds."""
        items = self.sessions.setdefault(session, set())
        items.add(item)
        self.last_time[session] = t
        for i in items:
            holders = self.item_sessions.setdefault(i, OrderedDict())
            holders[session] = None
            holders.move_to_end(session)
            if len(holders) > self.sample_size:
                holders.popitem(last=False)

    def _sample(self, items: set[str], exclude: str | None) -> list[str]:
        candidates = {s for i in items for s in self.item_sessions.get(i, ())} - {exclude}
        return heapq.nlargest(self.sample_size, candidates, key=lambda s: (self.last_time[s], s))

    def scores(self, session_items: Sequence[str], exclude_session: str | None = None) -> dict[str, float]:
        """Every item the neighbours vote for, with its score; ``exclude_session`` (the session itself) is never its
        own neighbour."""
        if not session_items:
            return {}
        n = len(session_items)
        weights: dict[str, float] = {}
        for pos, item in enumerate(session_items, 1):
            weights[item] = self.weight(pos, n)  # a repeated item weighs by its last position
        neighbours = []
        for s in self._sample(set(weights), exclude_session):
            sim = sum(w for i, w in weights.items() if i in self.sessions[s])
            neighbours.append((sim, s))
        out: dict[str, float] = {}
        for sim, s in heapq.nlargest(self.k, neighbours, key=lambda x: (x[0], self.last_time[x[1]], x[1])):
            held = self.sessions[s]
            step = next(step for step, item in enumerate(reversed(session_items), 1) if item in held)
            vote = sim * self.decay(step)
            for item in held:
                out[item] = out.get(item, 0.0) + vote
        return out

    def recommend(self, session_items: Sequence[str], n: int, exclude_session: str | None = None,
                  exclude_items: set[str] | None = None) -> list[tuple[str, float]]:
        """The ``n`` best-scored items (ties: item id), leaving out ``exclude_items``."""
        scored = self.scores(session_items, exclude_session)
        if exclude_items:
            scored = {i: v for i, v in scored.items() if i not in exclude_items}
        return heapq.nsmallest(n, scored.items(), key=lambda kv: (-kv[1], kv[0]))
