"""The online loop's steps 2-6 for one micro-batch of clicks (docs/architecture.md, "The stream worker").

For every click: read the session's state, step it through GRU4Rec (batched across sessions),
gather candidates (GRU4Rec's top-N over the catalog, recently popular and fresh items), score them
with the current ranker W and the explorer W~ (DRN's dueling Q-network), merge the two rankings by
interleaving, store the new state, and return one slate per click.  Clicks that come back with a
slate's ``impression_id`` are credited to the team of the clicked slot; the returned feedback goes
to the controller (stream/control).

A session's clicks inside one batch are stepped in rounds (its first click in round 0, its second
in round 1, ...), so each round is one batched GRU step and order within a session holds; then
the whole batch is scored and ranked in one pass.
Without a model in the registry the slate is the recently popular items.

This module is plain Python and torch with a Redis client handed in: the Faust agents call it,
and tests drive it directly.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

import numpy as np
import redis
import torch

from models.interleave import CURRENT, EXPLORER, probabilistic, team_draft, team_draft_batch, team_name
from models.itemstats import ItemStats, Snapshot, write_snapshot
from models.newitems import NewItemGate
from models.recommend import POPULAR_VERSION, LoadedModel, ModelCache, RankedBatch, popular_items, \
    rank_batch, session_context
from models.registry import ModelRegistry
from models.sessions import SessionState, SessionStore
from stream.records import Click, Recommendation, new_impression_id
from stream.keys import clicks_count
from stream.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["POPULAR_VERSION", "Feedback", "OnlineRecommender"]


@dataclass
class Feedback:
    """Per model version: interleaved impressions shown and clicks credited to each team (``current``,
    ``explorer``, and ``explorer2``... when several explorers are multileaved)."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(
        lambda: {"impressions": 0, CURRENT: 0, EXPLORER: 0}))

    def credit(self, version: str, team: str) -> None:
        self.counts[version][team] = self.counts[version].get(team, 0) + 1

    def as_messages(self) -> list[dict]:
        return [{"version": v, **c} for v, c in self.counts.items()]


class OnlineRecommender:
    def __init__(self, settings: Settings, registry: ModelRegistry, sessions: SessionStore,
                 background_refresh: bool = False, freeze_gc: bool = False) -> None:
        self.s = settings
        self.registry, self.sessions = registry, sessions
        self.models = ModelCache(registry, settings.seed, settings.model_refresh_s, settings.ann_min_items,
                                 freeze_gc=freeze_gc, ann_probe=settings.ann_probe)
        self.stats = ItemStats(settings.popular_half_life_s, settings.fresh_window_s)
        self.new_items = NewItemGate(settings.new_item_min_sessions, settings.new_items_pending_max,
                                     settings.new_items_max)
        self.params = settings.candidate_params()
        self.rng = random.Random(settings.seed)
        self.np_rng = np.random.default_rng(settings.seed)  # team_draft_batch's coins
        self.pending: OrderedDict[str, tuple[str, list[str], list[str]]] = OrderedDict()  # impression -> (v, items, teams)
        self.max_pending = 200_000
        self.last_slate: OrderedDict[str, str] = OrderedDict()  # session -> its last impression (organic credit)
        self._snapshot_at = float("-inf")
        self._snapshot_thread: threading.Thread | None = None
        torch.set_num_threads(settings.torch_threads)
        self.background_refresh = background_refresh  # the worker: new versions load beside the stream
        self._follower: threading.Thread | None = None

    def _follow_registry(self) -> None:
        while True:
            time.sleep(self.s.model_refresh_s)
            try:
                self.models.refresh(force=True)
            except Exception as err:  # noqa: BLE001 - Redis down or a bad version: keep the loaded model
                log.warning("could not check the registry: %s", err)

    @property
    def depth(self) -> int | None:
        """How much of each ranking the stream needs: team-draft fills a k-slot slate from each list's first 2k
        (a team's i-th pick skips at most k - 1 items the other team took), and the stored ranking its own top.
        Probabilistic interleaving may pick from anywhere in a list, so it gets all of it."""
        if self.s.explore and self.s.interleaving != "team-draft":
            return None
        return max(2 * self.s.slate_size, self.s.session_ranking_items)

    @property
    def model(self) -> LoadedModel | None:
        return self.models.model

    def refresh_model(self, force: bool = False) -> None:
        """Switch to the registry's current version if it changed (checked at most every model_refresh_s).

        With ``background_refresh`` a thread does this, and a batch never waits for a model to load: a
        new major version of a 43k-item catalog takes about 5 s to load and index."""
        if not self.background_refresh or force:
            self.models.refresh(force)
        elif self._follower is None:  # first batch: load what is there now, then follow from a thread
            self.models.refresh(force=True)  # before the thread starts: two loads at once would build two indexes
            self._follower = threading.Thread(target=self._follow_registry, name="model-refresh", daemon=True)
            self._follower.start()

    def snapshot_stats(self, t: float, force: bool = False) -> None:
        """Write the item statistics to Redis (at most every ``stats_snapshot_s``) for the serving endpoint.

        With a positive interval the stream takes a copy of the arrays (:meth:`ItemStats.snapshot`, well
        under a millisecond) and a thread packs and writes it while the stream goes on; with 0 (or ``force``)
        it is written before ranking, so the serving endpoint sees exactly the statistics this batch was
        ranked with (the parity tests).
        """
        now = time.monotonic()
        if not force and now - self._snapshot_at < self.s.stats_snapshot_s:
            return
        if not force and self.s.stats_snapshot_s > 0:
            if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
                return  # the previous one is still being written
            self._snapshot_at = now
            self._snapshot_thread = threading.Thread(target=self._write_snapshot, args=(self.stats.snapshot(), t),
                                                     name="stats-snapshot", daemon=True)
            self._snapshot_thread.start()
            return
        self._snapshot_at = now
        self._write_snapshot(self.stats, t)

    def _write_snapshot(self, stats: ItemStats | Snapshot, t: float) -> None:
        try:
            write_snapshot(self.registry.r, self.s.topic_prefix, stats, t)
        except redis.RedisError as err:
            log.warning("could not write the item statistics snapshot: %s", err)

    def _count(self, n: int) -> None:
        """Clicks answered by all workers together: the retrain schedule by clicks reads it."""
        try:
            self.registry.r.incrby(clicks_count(self.s.topic_prefix), n)
        except redis.RedisError as err:
            log.warning("could not count clicks: %s", err)

    # ------------------------------------------------------------------ the batch

    def process(self, clicks: list[Click], produced_at: list[float], offsets: list[tuple[int, int]] | None = None,
                answer: bool = True) -> tuple[list[Recommendation | None], Feedback]:
        """One slate per click, in the clicks' order, plus the DBGD feedback of this batch.

        ``offsets`` are the clicks' (partition, offset) in ``clicks``: a click at or before the
        session's last applied offset is a redelivery (a crash, an aborted transaction) and is answered
        from the stored state without stepping it again, counting it again, or crediting it again.  A
        click repeating an ``event_id`` its session already applied is a duplicate: its slate is None.
        With ``answer`` False the clicks are applied to session state and not answered (they were,
        with fallbacks, while Redis was away): the slates are all None and the feedback holds only the
        clicks' credit to the teams of earlier slates.

        Side effects outside the session states (item statistics, the click count, DBGD credit) follow
        the state write, for the clicks it applied first: a batch that fails changes nothing but what
        Redis kept, and its replay counts each click once.
        """
        offsets = offsets or [(-1, -1)] * len(clicks)
        self.refresh_model()
        feedback = Feedback()
        now = time.time()
        t = max(c.ts for c in clicks)
        m = self.model  # one version for the whole batch, whatever the refresher swaps in meanwhile
        if m is None:
            for click in clicks:
                self._credit(click, feedback)
            self._click_stats(clicks, None)
            self._count(len(clicks))
            if not answer:
                return [None] * len(clicks), feedback
            return [self.popular_slate(c, p, now) for c, p in zip(clicks, produced_at)], feedback

        states = self.sessions.get_many(list({c.session_id: None for c in clicks}))
        fresh, kept = self._classify(clicks, offsets, states)
        self.snapshot_stats(t)  # the statistics this batch is ranked with
        rounds: list[list[int]] = []
        seen_in_batch: dict[str, int] = defaultdict(int)
        for i in kept:
            r = seen_in_batch[clicks[i].session_id]
            seen_in_batch[clicks[i].session_id] += 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        last = torch.empty(len(clicks), m.emb.shape[1])
        contexts: list[list[float]] = [[]] * len(clicks)
        seen: list[list[str]] = [[]] * len(clicks)
        for idx in rounds:  # one batched GRU step per round; order within each session holds
            self._step(m, [clicks[i] for i in idx], [offsets[i] for i in idx], [fresh[i] for i in idx], states, idx,
                       last, contexts, seen)
        if len(kept) < len(clicks):  # duplicates are not ranked
            last, contexts, seen = last[kept], [contexts[i] for i in kept], [seen[i] for i in kept]
        ranked = rank_batch(m, last, contexts, seen, self.stats, t, self.params, explore=self.s.explore,
                            depth=self.depth) if kept else None
        if ranked is not None and self.s.session_ranking_items:  # W's ranking after each session's last click
            top = self.s.session_ranking_items
            q_top = ranked.q[:, 0, :top].tolist()
            last_click = {clicks[i].session_id: b for b, i in enumerate(kept)}  # a session's last click ranks it
            for sid, b in last_click.items():
                st = states[sid]
                st.ranking = list(zip(ranked.items(b, 0, top), q_top[b]))
                st.ranking_version = m.name
        applied = [i for i in range(len(clicks)) if fresh[i]]
        self._write(states, len(applied))
        for i in applied:
            self._credit(clicks[i], feedback)
        self._click_stats([clicks[i] for i in applied], m)
        if not answer or ranked is None:
            return [None] * len(clicks), feedback
        slates: list[Recommendation | None] = [None] * len(clicks)
        for i, slate in zip(kept, self._slates(m, [clicks[i] for i in kept], [produced_at[i] for i in kept], ranked,
                                               feedback)):
            slates[i] = slate
        if self.s.dbgd_credit_organic:
            self._credit_organic(clicks, slates, fresh, feedback)
        return slates, feedback

    def _credit_organic(self, clicks: list[Click], slates: list[Recommendation | None], fresh: list[bool],
                        feedback: Feedback) -> None:
        """``dbgd_credit_organic``: a fresh click that names no slate credits the team whose slot in its session's
        previous slate holds its item, if any does. Run after the batch's slates exist, in click order, because a
        session's previous slate may be one this batch made (a replayed log sends a session's clicks together)."""
        for click, slate, is_fresh in zip(clicks, slates, fresh):
            sid = click.session_id
            if is_fresh and click.impression_id is None and sid in self.last_slate:
                entry = self.pending.pop(self.last_slate.pop(sid), None)
                if entry is not None and click.item_id in entry[1]:
                    feedback.credit(entry[0], entry[2][entry[1].index(click.item_id)])
            if slate is not None:
                self.last_slate[sid] = slate.impression_id
                self.last_slate.move_to_end(sid)
                if len(self.last_slate) > self.max_pending:
                    self.last_slate.popitem(last=False)

    def _click_stats(self, clicks: list[Click], m: LoadedModel | None) -> None:
        """Count the clicks in the item statistics; an item outside the catalog only once enough sessions clicked it
        (``models/newitems.py``)."""
        index = m.index if m is not None else {}
        for click in clicks:
            if self.new_items.admit(click.item_id, click.session_id, known=click.item_id in index):
                self.stats.click(click.item_id, click.ts, from_slate=click.impression_id is not None)
        evicted = self.new_items.evict()
        if evicted:
            self.stats.drop(evicted)

    def _classify(self, clicks: list[Click], offsets: list[tuple[int, int]],
                  states: dict[str, SessionState | None]) -> tuple[list[bool], list[int]]:
        """Each click: fresh (to apply), a redelivery (to answer, not apply) or a duplicate event (neither).
        Returns (fresh per click, the indices of the clicks to answer)."""
        fresh, kept = [False] * len(clicks), []
        ids: dict[str, set[str]] = {}
        for i, (click, off) in enumerate(zip(clicks, offsets)):
            st = states.get(click.session_id)
            if self._redelivered(st, off):
                kept.append(i)
                continue
            if click.event_id is not None:
                known = ids.get(click.session_id)
                if known is None:
                    known = ids[click.session_id] = set(st.events) if st is not None else set()
                if click.event_id in known:
                    continue
                known.add(click.event_id)
            fresh[i] = True
            kept.append(i)
        return fresh, kept

    def _write(self, states: dict[str, SessionState | None], applied: int) -> None:
        """The states and the count of clicks applied: one script, which Redis runs atomically, so a worker killed
        mid-write leaves both or neither (a state written without its count would never be counted: its replay is
        not fresh).  One command instead of a MULTI/EXEC pipeline: 0.02-0.03 ms less client time a batch."""
        written = {sid: st for sid, st in states.items() if st is not None}
        self.sessions.put_many(written, count=(clicks_count(self.s.topic_prefix), applied))

    def _credit(self, click: Click, feedback: Feedback) -> None:
        """A click on a slot of a slate credits that slot's team."""
        if click.impression_id is None or click.position is None:
            return
        entry = self.pending.pop(click.impression_id, None)
        if entry is None:
            return
        version, items, teams = entry
        if click.position < len(teams) and items[click.position] == click.item_id:
            feedback.credit(version, teams[click.position])

    def _step(self, m: LoadedModel, clicks: list[Click], offsets: list[tuple[int, int]], fresh: list[bool],
              states: dict, positions: list[int], last: torch.Tensor, contexts: list, seen: list) -> None:
        """Advance a round's sessions by their click; record each click's final hidden state, context and history."""
        before = m.hidden([states.get(c.session_id) for c in clicks])
        hidden, _ = m.version.gru.step(before, m.indices([c.item_id for c in clicks]), score=False)
        redelivered = [not f for f in fresh]
        if any(redelivered):
            dup = torch.tensor(redelivered)
            hidden[:, dup] = before[:, dup]
        rows = hidden.transpose(0, 1).reshape(len(clicks), -1).numpy()  # each session's layers, one row
        for b, click in enumerate(clicks):
            prior = states.get(click.session_id)
            if prior is None:
                contexts[positions[b]] = session_context(1, click.ts, None, click.ts)
            elif redelivered[b]:
                contexts[positions[b]] = session_context(prior.clicks, prior.first_ts, prior.prev_ts, prior.last_ts)
            else:
                contexts[positions[b]] = session_context(prior.clicks + 1, prior.first_ts, prior.last_ts, click.ts)
            if not redelivered[b]:
                st = prior or SessionState(first_ts=click.ts)
                st.partition, st.offset = offsets[b]
                st.items = (st.items + [click.item_id])[-self.s.session_max_items:]
                st.hidden = rows[b]
                st.prev_ts = st.last_ts if st.clicks else None
                st.version, st.clicks, st.last_ts = m.gru_version, st.clicks + 1, click.ts
                if click.event_id is not None and self.s.event_id_memory:
                    st.events = (st.events + [click.event_id])[-self.s.event_id_memory:]
                states[click.session_id] = st
            seen[positions[b]] = list(states[click.session_id].items)
        last[positions] = hidden[-1]

    #: batches at least this large are interleaved with team_draft_batch (array steps cost ~0.4 ms whatever the
    #: batch; team_draft's Python loop ~12 µs a slate)
    BATCH_INTERLEAVE = 32

    def _slates(self, m: LoadedModel, clicks: list[Click], produced_at: list[float], ranked: RankedBatch,
                feedback: Feedback) -> list[Recommendation]:
        """Interleave each click's two rankings into its slate; remember the teams to credit later clicks."""
        now = time.time()
        k, slates, shown = self.s.slate_size, [], []
        for b, (items, teams, scores) in enumerate(self._interleave(ranked, k)):
            imp = new_impression_id()
            self.pending[imp] = (m.name, tuple(items), tuple(teams))  # tuples of str: the GC stops tracking them
            if len(self.pending) > self.max_pending:
                self.pending.popitem(last=False)
            shown.extend(items)
            slates.append(Recommendation(
                session_id=clicks[b].session_id, impression_id=imp, items=items, scores=scores, teams=teams,
                model_version=m.name, source="stream", ts=now, latency_ms=max(0.0, (now - produced_at[b]) * 1000),
                event_id=clicks[b].event_id))
        if slates:
            feedback.counts[m.name]["impressions"] += len(slates)
        self.stats.shown(shown)
        return slates

    def _interleave(self, ranked: RankedBatch, k: int):
        """Each session's slate: (items, teams, scores)."""
        n = len(ranked.counts)
        if not self.s.explore:  # exploration off: the current ranking is the slate
            for b in range(n):
                items = list(ranked.items(b, 0, k))
                yield items, [CURRENT] * len(items), ranked.q[b, 0, : len(items)].tolist()
        elif self.s.interleaving == "team-draft" and (n >= self.BATCH_INTERLEAVE or ranked.order.shape[1] > 2):
            slate, team, position = team_draft_batch(ranked.order, k, self.np_rng)
            rows = np.arange(n)[:, None]
            scores = ranked.q[rows, team, position].tolist()
            teams = np.array([team_name(j) for j in range(ranked.order.shape[1])])[team].tolist()
            for b, row in enumerate(slate.tolist()):
                m = row.index(-1) if -1 in row else k
                yield list(ranked.take(row[:m])), teams[b][:m], scores[b][:m]
        else:
            merge = team_draft if self.s.interleaving == "team-draft" else probabilistic
            for r in ranked.rows():
                items, teams = merge(r.items, r.explorer_items, k, self.rng)
                q = {CURRENT: dict(zip(r.items, r.q)), EXPLORER: dict(zip(r.explorer_items, r.explorer_q))}
                yield items, teams, [q[team][item] for item, team in zip(items, teams)]

    @staticmethod
    def _redelivered(st: SessionState | None, offset: tuple[int, int]) -> bool:
        return st is not None and offset[0] >= 0 and st.partition == offset[0] and offset[1] <= st.offset

    def popular_slate(self, click: Click, produced_at: float, now: float, fallback: bool = False) -> Recommendation:
        """The recently popular items: the slate without a model, and the ``fallback`` when session state is away."""
        scored = popular_items(self.stats, click.ts, self.s.slate_size)
        return Recommendation(
            session_id=click.session_id, impression_id=new_impression_id(), items=[i for i, _ in scored],
            scores=[sc for _, sc in scored], model_version=POPULAR_VERSION,
            source="stream", ts=now, latency_ms=max(0.0, (now - produced_at) * 1000), event_id=click.event_id,
            fallback=fallback)
