"""Rankings a new version makes for the recently active sessions before it becomes current.

The serving endpoint answers a session from the ranking the stream stored with it after its last click,
as long as the version that made it is current (:mod:`serving.recommender`).  A promotion makes every
stored ranking stale at once, and until each session clicks again serving would rank every request
itself: after a major promotion that also means re-encoding each session's items with the new GRU
(``bench.serving_latency`` measured 219-693 requests/s in that state against 1,021-2,383 before it).

So a candidate ranks, before it is promoted, the sessions written in the last ``window_s`` seconds
(:func:`prerank_version`; the retrain job runs it after publishing, and the controller promotes when
the job reports).  The rankings live in one hash per version (``{ns}prerank:{version}``, field: the
session id), each with the basis it was made from: the session's click count and last click time.
Serving takes a pre-ranking only while the session's state still has that basis; a session that
clicked since is ranked by the stream (or by serving) as before.  What is stored is exactly what
serving would answer: the same :func:`models.recommend.rank_states` on the same stored state, with the
item statistics of the snapshot serving reads too (the one current when the ranking was made).

Recently active sessions are found without any bookkeeping on the click path: every write of a state
sets its key's expiry to ``ttl_s``, so a key with more than ``ttl_s - window_s`` seconds to live was
written in the last ``window_s`` seconds.  One SCAN over the session keys and a pipelined TTL per
chunk, once per promotion.

Example (no Redis needed for the basis check):

>>> from models.sessions import SessionState
>>> PreRankings.matches({"n": 3, "t": 12.5, "r": [["a", 0.5]]}, SessionState(items=["x"], clicks=3, last_ts=12.5))
True
>>> PreRankings.matches({"n": 3, "t": 12.5, "r": [["a", 0.5]]}, SessionState(items=["x"], clicks=4, last_ts=13.0))
False
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson
import redis

from models.itemstats import ItemStats, read_snapshot
from models.recommend import CandidateParams, LoadedModel, rank_states
from models.registry import ModelRegistry
from models.sessions import SessionState, SessionStore

log = logging.getLogger(__name__)

Ranking = list[tuple[str, float]]


class PreRankings:
    """The pre-rankings of each version, in Redis: written by :func:`prerank_version`, read by serving."""

    def __init__(self, client: redis.Redis, prefix: str = "", ttl_s: int = 1800) -> None:
        self.r, self.prefix, self.ttl_s = client, prefix, ttl_s

    def key(self, version: str) -> str:
        return f"{self.prefix}prerank:{version}"

    def put(self, version: str, rankings: dict[str, tuple[SessionState, Ranking]]) -> None:
        """Store rankings (with the state each was made from); the hash expires ``ttl_s`` after its last write."""
        if not rankings:
            return
        fields = {sid: orjson.dumps({"n": st.clicks, "t": st.last_ts, "r": ranking})
                  for sid, (st, ranking) in rankings.items()}
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.key(version), mapping=fields)
        pipe.expire(self.key(version), self.ttl_s)
        pipe.execute()

    def get_many(self, version: str, states: dict[str, SessionState]) -> dict[str, Ranking]:
        """The pre-rankings of ``version`` that are still valid for these sessions' current states."""
        if not states:
            return {}
        return self.valid(version, dict(zip(states, self.r.hmget(self.key(version), list(states)))), states)

    def valid(self, version: str, blobs: dict[str, bytes | None], states: dict[str, SessionState]) -> dict[str, Ranking]:
        """Of stored pre-rankings (``blobs``, as HMGET returned them), those made from these sessions' states."""
        out = {}
        for sid, st in states.items():
            blob = blobs.get(sid)
            if blob is None or st is None:
                continue
            try:
                entry = orjson.loads(blob)
                if self.matches(entry, st):
                    out[sid] = [(str(i), float(q)) for i, q in entry["r"]]
            except (ValueError, TypeError, KeyError) as err:
                log.warning("a pre-ranking of %s does not decode (%s); ranking the session instead", version, err)
        return out

    @staticmethod
    def matches(entry: dict, state: SessionState) -> bool:
        """Whether a pre-ranking was made from this state (no click since)."""
        return entry.get("n") == state.clicks and entry.get("t") == state.last_ts


def active_sessions(sessions: SessionStore, window_s: float, limit: int) -> list[str]:
    """Sessions whose state was written in the last ``window_s`` seconds, newest first, at most ``limit``."""
    pattern = redis_glob_escape(sessions.key("")) + "*"
    cut = sessions.ttl_s - window_s
    found: list[tuple[int, str]] = []
    prefix_len = len(sessions.key(""))
    cursor = None
    while cursor != 0:  # SCAN's own pages: one pipelined TTL per page
        cursor, keys = sessions.r.scan(cursor or 0, match=pattern, count=1000)
        pipe = sessions.r.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        for key, ttl in zip(keys, pipe.execute()):
            if ttl is not None and ttl > cut:
                found.append((ttl, key.decode()[prefix_len:]))
    found.sort(key=lambda x: -x[0])
    return [sid for _, sid in found[:limit]]


@dataclass
class PreRankResult:
    version: str
    sessions: int
    seconds: float

    def summary(self) -> dict:
        return {"sessions": self.sessions, "seconds": round(self.seconds, 2)}


def prerank_version(client: redis.Redis, registry: ModelRegistry, version: str, sessions: SessionStore,
                    params: CandidateParams, depth: int, window_s: float, limit: int, seed: int = 0,
                    ann_min_items: int = 10_000, ann_probe: float = 0.065, batch: int = 256) -> PreRankResult:
    """Rank the sessions active in the last ``window_s`` with ``version`` (not yet current) and store the rankings.

    ``sessions`` is a store without a cache (this process does not own them); the item statistics are the
    snapshot the workers last wrote, as serving reads them.
    """
    started = time.perf_counter()
    ids = active_sessions(sessions, window_s, limit)
    if not ids:
        return PreRankResult(version, 0, time.perf_counter() - started)
    model = LoadedModel.from_version(registry.load(version), seed, None, ann_min_items, ann_probe)
    snapshot = read_snapshot(client, registry.ns)
    stats, t = snapshot if snapshot is not None else (ItemStats(), 0.0)
    store = PreRankings(client, registry.ns, sessions.ttl_s)
    done = 0
    for start in range(0, len(ids), batch):
        states = {sid: st for sid, st in sessions.get_many(ids[start: start + batch]).items()
                  if st is not None and st.items}
        if states:
            ranked = rank_states(model, list(states.values()), stats, t, params, depth)
            store.put(version, {sid: (st, r.current) for (sid, st), r in zip(states.items(), ranked)})
            done += len(states)
    result = PreRankResult(version, done, time.perf_counter() - started)
    log.info("pre-ranked %d sessions active in the last %.0f s with %s in %.1f s", done, window_s, version,
             result.seconds)
    return result


def redis_glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

