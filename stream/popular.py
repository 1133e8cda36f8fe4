"""Most-clicked items: the foundation's placeholder ranking and, later, the popular recall path.

Counts are kept in a dict; the top list is recomputed at most once per micro-batch (after the
batch's clicks are added), not per click.

Examples
--------
>>> pop = MostClicked()
>>> pop.add_many(["a", "b", "b", "c", "b", "a"])
>>> pop.top(2)
[('b', 3), ('a', 2)]
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class MostClicked:
    """Click counts per item with a cached top-k list."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._top: list[tuple[str, int]] = []
        self._top_k = 0
        self._dirty = False

    def add_many(self, items: Iterable[str]) -> None:
        counts = self.counts
        for item in items:
            counts[item] = counts.get(item, 0) + 1
        self._dirty = True

    def load(self, counts: Iterable[tuple[str, int]]) -> None:
        """Seed from stored counts (a table restored from its changelog)."""
        self.counts.update(counts)
        self._dirty = True

    def top(self, k: int) -> list[tuple[str, int]]:
        """The k most-clicked items, ties broken by item id so the order is deterministic."""
        if self._dirty or k != self._top_k:
            self._top = heapq.nsmallest(k, self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            self._top_k, self._dirty = k, False
        return self._top
