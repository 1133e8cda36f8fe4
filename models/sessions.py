"""Per-session state in Redis: the stream writes it, the serving endpoint reads it.

One hash per session (``{prefix}session:{id}``): the GRU hidden state (float32 bytes, all layers),
the last N item ids, the GRU version that produced the state, the click count, the first, previous
and last click times, the (partition, offset) of the last click applied, and the ranking the current
weights W gave the session after its last click with the model version that made it (the serving
endpoint answers from it without ranking again while that version is current).  Keys expire after
``ttl`` seconds of inactivity.  Reads and writes are pipelined once per micro-batch.  The stream is
the source of truth: a state whose version differs from the current GRU is rebuilt from its stored
items, never stepped with mixed weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import redis


@dataclass
class SessionState:
    items: list[str] = field(default_factory=list)
    hidden: np.ndarray | None = None
    version: str | None = None
    clicks: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    prev_ts: float | None = None  # the click before the last one: the serving endpoint rebuilds the stream's context
    partition: int = -1   # where the last applied click came from: a redelivered click (at-least-once
    offset: int = -1      # after a crash) is answered again but does not step the state twice
    ranking: list[tuple[str, float]] | None = None  # W's top items (and Q) after the last click
    ranking_version: str | None = None               # the model version that ranked them


class SessionStore:
    def __init__(self, client: redis.Redis, prefix: str = "", ttl_s: int = 1800, max_items: int = 20) -> None:
        self.r, self.prefix, self.ttl_s, self.max_items = client, prefix, ttl_s, max_items

    def key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def get_many(self, session_ids: list[str]) -> dict[str, SessionState | None]:
        pipe = self.r.pipeline(transaction=False)
        for sid in session_ids:
            pipe.hgetall(self.key(sid))
        return {sid: self._decode(raw) for sid, raw in zip(session_ids, pipe.execute())}

    def get(self, session_id: str) -> SessionState | None:
        return self.get_many([session_id])[session_id]

    def put_many(self, states: dict[str, SessionState]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for sid, s in states.items():
            mapping = {"items": json.dumps(s.items[-self.max_items:]), "n": s.clicks, "t0": s.first_ts,
                       "t1": s.last_ts, "v": s.version or "", "p": s.partition, "o": s.offset,
                       "tp": "" if s.prev_ts is None else s.prev_ts}
            if s.hidden is not None:
                mapping["h"] = np.asarray(s.hidden, dtype=np.float32).tobytes()
            if s.ranking is not None:
                mapping["r"] = json.dumps(s.ranking)
                mapping["rv"] = s.ranking_version or ""
            pipe.hset(self.key(sid), mapping=mapping)
            pipe.expire(self.key(sid), self.ttl_s)
        pipe.execute()

    @staticmethod
    def _decode(raw: dict) -> SessionState | None:
        if not raw:
            return None
        h = raw.get(b"h")
        r = raw.get(b"r")
        return SessionState(
            items=json.loads(raw[b"items"]), hidden=np.frombuffer(h, dtype=np.float32).copy() if h else None,
            version=raw.get(b"v", b"").decode() or None, clicks=int(raw.get(b"n", 0)),
            first_ts=float(raw.get(b"t0", 0)), last_ts=float(raw.get(b"t1", 0)),
            prev_ts=float(raw[b"tp"]) if raw.get(b"tp") else None,
            partition=int(raw.get(b"p", -1)), offset=int(raw.get(b"o", -1)),
            ranking=[(i, q) for i, q in json.loads(r)] if r else None, ranking_version=raw.get(b"rv", b"").decode() or None,
        )
