"""Per-session state in Redis: the stream writes it, the serving endpoint reads it.

One string per session (``{prefix}session:{id}``): the GRU hidden state (float32 bytes, all layers),
the last N item ids, the GRU version that produced the state, the click count, the first, previous
and last click times, the (partition, offset) of the last click applied, and the ranking the current
weights W gave the session after its last click with the model version that made it (the serving
endpoint answers from it without ranking again while that version is current).  Keys expire after
``ttl`` seconds of inactivity. A micro-batch reads its sessions with one MGET and writes them with one
script that runs SET ... EX for each: one command per batch.  (A hash per session needed HSET and EXPIRE
and a reply per field: 17 ms of Redis work for a 256-click batch in process; a SET per session in a
pipeline, 6 ms; and redis-py's per-command bookkeeping alone was 2.2 ms of client CPU for 256 SETs,
against 0.5 ms for the script.)  The fields are orjson's JSON (the standard library's encoder took 18 µs
per stored ranking). The stream is the source of truth: a state whose version differs from the current
GRU is rebuilt from its stored items, never stepped with mixed weights.

The stream worker that owns a session's partition is its only writer, so it may keep what it wrote
(``cache_size`` > 0): a batch then reads Redis only for sessions it has not written itself, and a
session's next click costs no round trip (an MGET was 7-8% of a small batch's time, in process).
What is kept is the encoded bytes, exactly what went to Redis: no object is shared with the caller,
the memory is about 1.3 KB a session (1.1 KB encoded for a session of 20 clicks), and the garbage
collector has nothing more to walk.  Entries expire like the keys (``ttl_s`` after their last write).
The worker drops them all whenever its partitions change (:meth:`SessionStore.forget`), since another
worker may have written meanwhile, and drops a batch's sessions when writing them to Redis failed.
Readers that do not own the sessions (the serving endpoint) use no cache.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import orjson
import redis

log = logging.getLogger(__name__)


@dataclass
class SessionState:
    items: list[str] = field(default_factory=list)
    hidden: np.ndarray | None = None
    version: str | None = None
    clicks: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    prev_ts: float | None = None  # the click before the last one: the serving endpoint rebuilds the stream's context
    partition: int = -1   # where the last applied click came from: a redelivered click (a crash, an aborted
    offset: int = -1      # transaction) is answered again but does not step the state twice
    ranking: list[tuple[str, float]] | None = None  # W's top items (and Q) after the last click
    ranking_version: str | None = None               # the model version that ranked them
    events: list[str] = field(default_factory=list)  # the last event ids applied: a repeat is a duplicate


#: SET key value EX ttl for every key, as one command: a batch's states cost the client one command to pack and
#: parse instead of one per session (256 states: 0.5 ms of client CPU instead of 2.2, ``redis-py`` pipelining).
#: With a count (ARGV[2] > 0) the last key is a counter, incremented first: a script runs whole, with nothing between
#: its commands (and reaches the AOF as one MULTI/EXEC), so states and their count need no transaction, and a
#: counter that cannot be incremented fails the script before any state is written
_SET_ALL = ("local n, last = tonumber(ARGV[2]), #KEYS "
            "if n > 0 then redis.call('INCRBY', KEYS[last], n) last = last - 1 end "
            "for i = 1, last do redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ARGV[1]) end return last")


class SessionStore:
    def __init__(self, client: redis.Redis, prefix: str = "", ttl_s: int = 1800, max_items: int = 20,
                 cache_size: int = 0) -> None:
        self.r, self.prefix, self.ttl_s, self.max_items = client, prefix, ttl_s, max_items
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # session -> (written at, bytes)

    def key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def get_many(self, session_ids: list[str]) -> dict[str, SessionState | None]:
        if not session_ids:
            return {}
        blobs: dict[str, bytes | None] = {}
        if self._cache:
            now, cache = time.monotonic(), self._cache
            for sid in session_ids:
                hit = cache.get(sid)
                if hit is not None and now - hit[0] < self.ttl_s:
                    blobs[sid] = hit[1]
        missing = [sid for sid in session_ids if sid not in blobs] if blobs else session_ids
        if missing:  # a key of another type reads as missing
            blobs.update(zip(missing, self.r.mget([self.key(sid) for sid in missing])))
        return {sid: self.decode(blobs[sid]) for sid in session_ids}

    def get(self, session_id: str) -> SessionState | None:
        return self.get_many([session_id])[session_id]

    def put_many(self, states: dict[str, SessionState], count: tuple[str, int] | None = None) -> None:
        """Write ``states`` in one command; ``count`` (key, n) adds n to a counter in the same script, atomically
        with the states (the stream's count of clicks applied).  If the write fails, the kept copies of these
        sessions are dropped: Redis stays the truth for them."""
        key, n = count if count is not None and count[1] > 0 else (None, 0)
        if not states and not n:
            return
        now, cache = time.monotonic(), self._cache
        blobs = [self._encode(s) for s in states.values()]
        keys = [*map(self.key, states), *([key] if n else [])]
        if self.cache_size:
            for sid, blob in zip(states, blobs):
                cache[sid] = (now, blob)
                cache.move_to_end(sid)
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        try:
            self.r.eval(_SET_ALL, len(keys), *keys, self.ttl_s, n, *blobs)
        except Exception:
            self.forget(list(states))
            raise

    def forget(self, session_ids: list[str] | None = None) -> None:
        """Drop kept states: these sessions', or all (the partitions moved: another worker may have written)."""
        if session_ids is None:
            self._cache.clear()
        else:
            for sid in session_ids:
                self._cache.pop(sid, None)

    def _encode(self, s: SessionState) -> bytes:
        """The fields as orjson, then a zero byte (JSON never holds a raw one), then the hidden state's float32 bytes."""
        meta = orjson.dumps({"items": s.items[-self.max_items:], "n": s.clicks, "t0": s.first_ts, "t1": s.last_ts,
                             "tp": s.prev_ts, "v": s.version, "p": s.partition, "o": s.offset, "r": s.ranking,
                             "rv": s.ranking_version, "e": s.events or None})
        hidden = b"" if s.hidden is None else np.asarray(s.hidden, dtype=np.float32).tobytes()
        return meta + b"\0" + hidden

    @staticmethod
    def decode(blob: bytes | None) -> SessionState | None:
        """The stored state, or None for a missing key or one that does not decode (written by something else, or
        damaged: that session starts again rather than failing the whole batch of other sessions with it)."""
        if not blob:
            return None
        try:
            meta, _, h = blob.partition(b"\0")
            m = orjson.loads(meta)
            r = m.get("r")
            hidden = np.frombuffer(h, dtype=np.float32).copy() if h else None
            return SessionState(
                items=[str(i) for i in m["items"]], hidden=hidden, version=m.get("v"),
                clicks=int(m.get("n", 0)), first_ts=m.get("t0", 0.0), last_ts=m.get("t1", 0.0), prev_ts=m.get("tp"),
                partition=m.get("p", -1), offset=m.get("o", -1), ranking=[(i, q) for i, q in r] if r else None,
                ranking_version=m.get("rv"), events=m.get("e") or [],
            )
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            log.warning("a stored session state does not decode (%s); the session starts again", err)
            return None
