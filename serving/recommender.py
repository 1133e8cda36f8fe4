"""A session's slate for the serving endpoint: the stream's ranking, or a flagged fallback, never an error.

A session gets what the stream's current weights W ranked for it after its last click (without the
explorer's interleaving: serving exploits, the stream explores).  The stream keeps the top of that
ranking with the session's state (``STREAMREC_SESSION_RANKING_ITEMS``), so while the version that
made it is still current the answer is one Redis read, no model work.  A DBGD step (a minor version: the
same GRU4Rec, W moved) does not make it stale (``STREAMREC_SERVING_STORED_MINOR_LAG``): the answer is then
W's ranking from a few steps back, and names the version that made it.  A major promotion makes every stored
ranking stale at once, so before it is promoted a major version pre-ranks the recently active sessions
(:mod:`models.prerank`); serving answers from that while the session has not clicked since (read in the
same round trip as the states while the current version has pre-rankings).  Otherwise (no valid ranking of
the current version, a larger ``k``, or stored rankings turned off) it ranks itself with :func:`models.recommend.rank_states` on the session's stored GRU state, the
item statistics the workers snapshot to Redis, and the registry's current model: the same code the
stream and the pre-ranking run.

Degradation (the design notes' service degradation), each one flagged with a ``reason``:

- ``unknown-session``: no state for the session -> recently popular and fresh items;
- ``no-model``: nothing promoted yet -> popular and fresh items;
- ``redis-unavailable``: Redis did not answer -> the last cached model cannot see the session, so
  popular and fresh items from the last cached statistics; for ``serving_redis_retry_s`` after a
  failure requests do not even try Redis, so a dead Redis costs no latency;
- ``ranking-failed``: anything unexpected while ranking -> popular items, logged.

The model and the statistics are refreshed by a background thread, so a request never waits for
a model to load and a promotion is a swap of one reference (hot reload with no failed request).

Requests that arrive together are ranked together (:class:`RequestBatcher`): one Redis round trip
and one batched pass through GRU4Rec's recall and the Q-network, as the stream does with clicks.
Under load this is what keeps Python's per-request overhead from setting the throughput.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import redis
import torch

from models.itemstats import ItemStats, read_snapshot
from models.prerank import PreRankings
from models.recommend import POPULAR_VERSION, LoadedModel, ModelCache, popular_items, rank_states
from models.registry import ModelRegistry
from models.sessions import SessionState, SessionStore
from stream.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Served:
    items: list[tuple[str, float]]
    model_version: str
    fallback: bool
    reason: str | None = None
    ranked_by: str = "serving"  # "stream": the stored ranking, "prerank": ranked before the version's promotion
    #                             (models/prerank.py), "serving": ranked for this request, or the fallback


class ServingRecommender:
    def __init__(self, settings: Settings, freeze_gc: bool = False) -> None:
        self.s = settings
        timeout = settings.serving_redis_timeout_s
        self.fast = redis.Redis.from_url(settings.redis, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.slow = redis.Redis.from_url(settings.redis, socket_timeout=10.0, socket_connect_timeout=2.0)
        self.sessions = SessionStore(self.fast, settings.topic_prefix, settings.session_ttl_s,
                                     settings.session_max_items)
        self.registry = ModelRegistry(self.slow, namespace=settings.topic_prefix, **settings.registry_pacing())
        self.preranked = PreRankings(self.fast, settings.topic_prefix, settings.session_ttl_s)
        self.models = ModelCache(self.registry, settings.seed, refresh_s=0.0, ann_min_items=settings.ann_min_items,
                                 freeze_gc=freeze_gc, ann_probe=settings.ann_probe)
        self.params = settings.candidate_params()
        self.stats = ItemStats(settings.popular_half_life_s, settings.fresh_window_s)
        self.stats_t = 0.0
        self.redis_ok = True
        self._redis_down_until = 0.0
        self._prerankings: tuple[str, str] | None = None  # (model, version whose pre-rankings answer for it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        torch.set_num_threads(settings.serving_torch_threads)

    # ------------------------------------------------------------------ background refresh

    def refresh(self) -> None:
        """Follow ``model:current`` and the statistics snapshot; keep the last good ones when Redis fails."""
        try:
            self.models.refresh(force=True)
            self._follow_prerankings()
            snapshot = read_snapshot(self.slow, self.s.topic_prefix, self.stats_t)
            if snapshot is not None:
                self.stats, self.stats_t = snapshot
            self.redis_ok = True
        except (redis.RedisError, OSError) as err:
            if self.redis_ok:
                log.warning("Redis unreachable, serving the cached model and statistics: %s", err)
            self.redis_ok = False
        except Exception:  # noqa: BLE001 - a bad version in the registry must not stop the refresher
            log.exception("could not load the current model; keeping %s", self.model_name)

    def _prerank_version(self, model: LoadedModel) -> str:
        """Whose pre-rankings answer for ``model``: its own, or (``serving_stored_minor_lag``) for a minor version
        those of the major version it steps from, which made them (see :meth:`_stored_applies`)."""
        lagged = self.s.serving_stored_minor_lag and model.gru_version != model.name
        return model.gru_version if lagged else model.name

    def _follow_prerankings(self) -> None:
        """Note whether the current model has pre-rankings: then requests read them with the session states, in the
        same round trip (a second read per batch cost ~10-15% of the requests/s after a promotion)."""
        model = self.model
        if model is None or self.s.prerank_window_s <= 0:
            self._prerankings = None
            return
        version = self._prerank_version(model)
        self._prerankings = (model.name, version) if self.slow.exists(self.preranked.key(version)) else None

    def start(self) -> None:
        """Load the current model and start following the registry (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="model-refresh", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.s.model_refresh_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def model(self) -> LoadedModel | None:
        return self.models.model

    @property
    def model_name(self) -> str | None:
        return self.model.name if self.model is not None else None

    @property
    def ready(self) -> bool:
        return self.model is not None and self.redis_ok

    # ------------------------------------------------------------------ a request

    def _fallback(self, k: int, reason: str) -> Served:
        t = self.stats_t or time.time()
        return Served(popular_items(self.stats, t, k, fresh=self.s.candidates_fresh), POPULAR_VERSION, True, reason)

    def recommend_many(self, requests: list[tuple[str, int]]) -> list[Served]:
        """Slates for several (session_id, k) requests: one Redis round trip and one batched ranking pass."""
        model, stats, t = self.model, self.stats, self.stats_t
        if time.monotonic() < self._redis_down_until:
            return [self._fallback(k, "redis-unavailable") for _, k in requests]
        try:
            states, prefetched = self._read(list(dict.fromkeys(sid for sid, _ in requests)), model)
        except (redis.RedisError, OSError) as err:
            log.warning("Redis failed during a request (%s); fallbacks for %.1f s", err, self.s.serving_redis_retry_s)
            self._redis_down_until = time.monotonic() + self.s.serving_redis_retry_s
            return [self._fallback(k, "redis-unavailable") for _, k in requests]
        if model is None:
            return [self._fallback(k, "no-model") for _, k in requests]
        out: list[Served | None] = [None] * len(requests)
        known = []
        for n, (sid, k) in enumerate(requests):
            st = states.get(sid)
            if st is None or not st.items:
                out[n] = self._fallback(k, "unknown-session")
            elif st.ranking is not None and k <= len(st.ranking) and self._stored_applies(st, model):
                out[n] = Served(st.ranking[:k], st.ranking_version, False, ranked_by="stream")
            else:
                known.append(n)
        if known and prefetched is not None:
            known = self._preranked(requests, states, known, out, *prefetched)
        if known:
            batch = [states[requests[n][0]] for n in known]
            try:
                ranked = rank_states(model, batch, stats, t, self.params, depth=max(requests[n][1] for n in known))
            except Exception:  # noqa: BLE001 - degrade, do not fail the requests
                log.exception("ranking %d sessions failed; serving popular items", len(batch))
                ranked = None
            for j, n in enumerate(known):
                k = requests[n][1]
                out[n] = (Served(ranked[j].current[:k], model.name, False) if ranked is not None
                          else self._fallback(k, "ranking-failed"))
        return out

    def _stored_applies(self, st: SessionState, model: LoadedModel) -> bool:
        """Whether the stream's stored ranking answers: made by the current version, or (``serving_stored_minor_lag``)
        by an earlier minor version of the same GRU4Rec, i.e. W some DBGD steps behind.  A DBGD step is promoted
        every few hundred impressions; treating it as stale would leave serving ranking nearly every request itself."""
        if st.ranking_version == model.name:
            return True
        return self.s.serving_stored_minor_lag and st.ranking_version is not None and st.version == model.gru_version

    def _read(self, session_ids: list[str], model: LoadedModel | None) -> tuple[dict, tuple[str, dict] | None]:
        """The sessions' states and, while the current model has pre-rankings (as of the last refresh), the
        pre-rankings' version and stored entries: one round trip.  Without any, no pre-ranking is looked up.
        The states are read as ``SessionStore.get_many`` reads them (serving's store keeps no cache)."""
        live = self._prerankings
        if model is None or live is None or live[0] != model.name:
            return self.sessions.get_many(session_ids), None
        pipe = self.fast.pipeline(transaction=False)
        pipe.mget([self.sessions.key(sid) for sid in session_ids])
        pipe.hmget(self.preranked.key(live[1]), session_ids)
        blobs, preranked = pipe.execute()
        return ({sid: SessionStore.decode(b) for sid, b in zip(session_ids, blobs)},
                (live[1], dict(zip(session_ids, preranked))))

    def _preranked(self, requests: list[tuple[str, int]], states: dict, waiting: list[int], out: list[Served | None],
                   version: str, blobs: dict) -> list[int]:
        """Answer the requests a pre-ranking of ``version`` still covers (:mod:`models.prerank`); return the rest."""
        found = self.preranked.valid(version, blobs, {requests[n][0]: states[requests[n][0]] for n in waiting})
        left = []
        for n in waiting:
            sid, k = requests[n]
            ranking = found.get(sid)
            if ranking is not None and k <= len(ranking):
                out[n] = Served(ranking[:k], version, False, ranked_by="prerank")
            else:
                left.append(n)
        return left


class RequestBatcher:
    """Collects the requests waiting on the event loop and answers them with one ``recommend_many`` call.

    While one batch is being ranked, new requests queue; the next batch takes all of them (up to
    ``max_batch``).  The batches are run by a task of their own, not by the request that found the
    batcher idle: a request is answered as soon as its batch is, however long the load keeps the queue
    full (when that request drove the loop itself, it waited until the queue ran dry: under steady load
    that starved one request per busy spell, wrk's p99 of 368 ms at a p50 of 2.6 ms).  An idle server adds
    one turn of the event loop.
    """

    def __init__(self, recommender: ServingRecommender, max_batch: int = 64) -> None:
        self.recommender, self.max_batch = recommender, max_batch
        self._queue: list[tuple[str, int, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None

    async def recommend(self, session_id: str, k: int) -> Served:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((session_id, k, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Answer batch after batch until nothing waits; between batches the requests that arrived join the queue."""
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                self._answer(batch)
                await asyncio.sleep(0)  # let the requests that arrived meanwhile join the next batch
        finally:
            self._drainer = None

    def _answer(self, batch: list[tuple[str, int, asyncio.Future]]) -> None:
        try:
            results = self.recommender.recommend_many([(sid, k) for sid, k, _ in batch])
        except Exception as err:  # noqa: BLE001 - hand the error to every waiting request
            for *_, f in batch:
                if not f.done():
                    f.set_exception(err)
            return
        for (*_, f), served in zip(batch, results):
            if not f.done():  # a request whose client went away was cancelled
                f.set_result(served)
