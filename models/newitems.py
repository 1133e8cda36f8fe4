"""Which items outside the model's catalog the item statistics take in: those enough distinct sessions clicked.

Item ids are free text on the wire, and an item the statistics know becomes a popular or fresh candidate
shown to everyone.  Without a gate one client could invent ids without end: the statistics would grow
without bound and the invented items would reach other users' slates.  So an unknown item counts only
after ``min_sessions`` distinct sessions clicked it; until then it waits among at most ``max_pending``
others (the least recently clicked forgotten first), and at most ``max_admitted`` admitted unknown items
are kept (the least recently clicked leave the statistics first).  Items of the catalog always count; a
retrain brings the real new items into the catalog.

Examples
--------
>>> gate = NewItemGate(min_sessions=2, max_pending=10, max_admitted=1)
>>> gate.admit("new", "s1", known=False), gate.admit("new", "s1", known=False), gate.admit("new", "s2", known=False)
(False, False, True)
>>> gate.admit("42", "s1", known=True)
True
>>> gate.admit("b", "s1", known=False), gate.admit("b", "s3", known=False), gate.evict()  # one over: not yet
(False, True, [])
>>> gate.admit("c", "s1", known=False), gate.admit("c", "s3", known=False), gate.evict()  # the two oldest go
(False, True, ['new', 'b'])
"""

from __future__ import annotations

from collections import OrderedDict


class NewItemGate:
    def __init__(self, min_sessions: int = 3, max_pending: int = 100_000, max_admitted: int = 10_000) -> None:
        self.min_sessions, self.max_pending, self.max_admitted = min_sessions, max_pending, max_admitted
        self.pending: OrderedDict[str, set[str]] = OrderedDict()  # item -> the sessions that clicked it so far
        self.admitted: OrderedDict[str, None] = OrderedDict()      # least recently clicked first

    def admit(self, item: str, session_id: str, known: bool) -> bool:
        """Whether this click of ``item`` counts in the statistics."""
        if known:
            return True
        if item in self.admitted:
            self.admitted.move_to_end(item)
            return True
        sessions = self.pending.pop(item, None) or set()
        sessions.add(session_id)
        if len(sessions) >= self.min_sessions:
            self.admitted[item] = None
            return True
        self.pending[item] = sessions  # to the end: recently clicked
        while len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)
        return False

    def evict(self) -> list[str]:
        """The admitted unknown items beyond ``max_admitted`` (least recently clicked), now forgotten: drop them from
        the statistics.  Only once the excess reaches a tenth of the bound (at least 1), so dropping, which rebuilds
        the statistics' arrays, happens in batches."""
        if len(self.admitted) <= self.max_admitted + max(1, self.max_admitted // 10):
            return []
        out = []
        while len(self.admitted) > self.max_admitted:
            out.append(self.admitted.popitem(last=False)[0])
        return out
