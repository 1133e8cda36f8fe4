"""The online loop's steps 2-6 for one micro-batch of clicks (DESIGN.md, "The online loop").

For every click: read the session's state, step it through GRU4Rec (batched across sessions),
gather candidates (GRU4Rec's top-N over the catalog, recently popular and fresh items), score them
with the current ranker W and the explorer W~ (DRN's dueling Q-network), merge the two rankings by
interleaving, store the new state, and return one slate per click.  Clicks that come back with a
slate's ``impression_id`` are credited to the team of the clicked slot; the returned feedback goes
to the DBGD leader.

A session's clicks inside one batch are stepped in rounds (its first click in round 0, its second
in round 1, ...), so each round is one batched GRU step and order within a session holds; then
the whole batch is scored and ranked in one pass.
Without a model in the registry the slate is the recently popular items.

This module is plain Python and torch with a Redis client handed in: the Faust agents call it,
and tests drive it directly.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from models.interleave import CURRENT, EXPLORER, probabilistic, team_draft
from models.ranker import DuelingQNetwork
from models.registry import ModelRegistry, ModelVersion
from stream.itemstats import ItemStats
from stream.records import Click, Recommendation, new_impression_id
from stream.sessions import SessionState, SessionStore
from stream.settings import Settings

log = logging.getLogger(__name__)

POPULAR_VERSION = "popular"


@dataclass
class LoadedModel:
    """A registry version made ready for scoring."""

    version: ModelVersion
    current: DuelingQNetwork
    explorer: DuelingQNetwork
    emb: torch.Tensor          # (items + 1, H): the last row is zeros, for candidates the GRU does not know
    item_ids: list[str]        # model index -> item id
    index: dict[str, int]      # item id -> model index
    _moments: tuple | None = None

    def indices(self, items: list[str]) -> torch.Tensor:
        """Model indices of item ids, -1 for items the GRU does not know (cold start)."""
        get = self.index.get
        return torch.tensor([get(i, -1) for i in items], dtype=torch.long)

    def score_moments(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of h's GRU scores over the whole catalog, without computing them.

        Scores are s_i = h.w_i + b_i, so mean = h.mean(w) + mean(b) and
        E[s^2] = h^T (W^T W / n) h + 2 h.mean(b_i w_i) + mean(b^2): a few small products per click.
        """
        if self._moments is None:
            gru = self.version.gru.model
            w, b = gru.Wy.weight.detach(), gru.By.weight.detach().reshape(-1)
            n = w.shape[0]
            self._moments = (w.mean(0), b.mean(), w.T @ w / n, (b[:, None] * w).mean(0), (b * b).mean())
        mw, mb, cov, bw, b2 = self._moments
        mean = h @ mw + mb
        second = ((h @ cov) * h).sum(1) + 2 * (h @ bw) + b2
        return mean.unsqueeze(1), (second - mean**2).clamp(min=1e-12).sqrt().unsqueeze(1)

    @property
    def name(self) -> str:
        return self.version.version

    @property
    def gru_version(self) -> str:
        return self.version.meta["gru_version"]


@dataclass
class Feedback:
    """Per model version: interleaved impressions shown and clicks credited to each team."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(
        lambda: {"impressions": 0, CURRENT: 0, EXPLORER: 0}))

    def as_messages(self) -> list[dict]:
        return [{"version": v, **c} for v, c in self.counts.items()]


def ranker_for(model_version: ModelVersion, weights: np.ndarray, seed: int) -> DuelingQNetwork:
    net = DuelingQNetwork(model_version.gru.model.layers[-1], seed=seed)
    net.set_weights(weights)
    return net.eval()


class OnlineRecommender:
    def __init__(self, settings: Settings, registry: ModelRegistry, sessions: SessionStore) -> None:
        self.s = settings
        self.registry, self.sessions = registry, sessions
        self.stats = ItemStats(settings.popular_half_life_s, settings.fresh_window_s)
        self.rng = random.Random(settings.seed)
        self.model: LoadedModel | None = None
        self._checked_at = -math.inf
        self.pending: OrderedDict[str, tuple[str, list[str], list[str]]] = OrderedDict()  # impression -> (v, items, teams)
        self.max_pending = 200_000
        torch.set_num_threads(settings.torch_threads)

    # ------------------------------------------------------------------ model

    def refresh_model(self, force: bool = False) -> None:
        """Switch to the registry's current version if it changed (checked at most every model_refresh_s)."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.s.model_refresh_s:
            return
        self._checked_at = now
        current = self.registry.current_version()
        if current is None or (self.model is not None and self.model.name == current):
            return
        mv = self.registry.load(current)
        if self.model is not None and self.model.gru_version == mv.meta["gru_version"]:
            mv.gru = self.model.version.gru  # a minor version: same GRU, keep the loaded one
            emb, ids, index = self.model.emb, self.model.item_ids, self.model.index
        else:
            w, _, ids_list = mv.gru.item_embeddings()
            emb = torch.cat([torch.as_tensor(w), torch.zeros(1, w.shape[1])])
            ids, index = list(ids_list), {item: i for i, item in enumerate(ids_list)}
        self.model = LoadedModel(mv, ranker_for(mv, mv.ranker, self.s.seed), ranker_for(mv, mv.explorer, self.s.seed),
                                 emb, ids, index)
        log.info("now serving model %s (%s, GRU %s)", current, mv.meta["kind"], mv.meta["gru_version"])

    # ------------------------------------------------------------------ the batch

    def process(self, clicks: list[Click], produced_at: list[float],
                offsets: list[tuple[int, int]] | None = None) -> tuple[list[Recommendation], Feedback]:
        """One slate per click, in the clicks' order, plus the DBGD feedback of this batch.

        ``offsets`` are the clicks' (partition, offset) in ``clicks``: a click at or before the
        session's last applied offset is a redelivery (at-least-once after a crash) and is answered
        from the stored state without stepping it again.
        """
        offsets = offsets or [(-1, -1)] * len(clicks)
        self.refresh_model()
        feedback = Feedback()
        now = time.time()
        for click in clicks:
            self._credit(click, feedback)
            self.stats.click(click.item_id, click.ts, from_slate=click.impression_id is not None)
        if self.model is None:
            return [self.popular_slate(c, p, now) for c, p in zip(clicks, produced_at)], feedback

        rounds: list[list[int]] = []
        seen_in_batch: dict[str, int] = defaultdict(int)
        for i, click in enumerate(clicks):
            r = seen_in_batch[click.session_id]
            seen_in_batch[click.session_id] += 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        states = self.sessions.get_many(list(seen_in_batch))
        last = torch.empty(len(clicks), self.model.emb.shape[1])
        contexts: list[list[float]] = [[]] * len(clicks)
        seen: list[list[str]] = [[]] * len(clicks)
        for idx in rounds:  # one batched GRU step per round; order within each session holds
            self._step([clicks[i] for i in idx], [offsets[i] for i in idx], states, idx, last, contexts, seen)
        self.sessions.put_many({sid: st for sid, st in states.items() if st is not None})
        return self._rank(clicks, produced_at, last, contexts, seen, feedback), feedback

    def _credit(self, click: Click, feedback: Feedback) -> None:
        if click.impression_id is None or click.position is None:
            return
        entry = self.pending.pop(click.impression_id, None)
        if entry is None:
            return
        version, items, teams = entry
        if click.position < len(teams) and items[click.position] == click.item_id:
            feedback.counts[version][teams[click.position]] += 1

    def _hidden_for(self, states: dict[str, SessionState | None], sids: list[str]) -> torch.Tensor:
        """Hidden states for a round's sessions; rebuilt from stored items when the GRU version changed."""
        m = self.model
        gru = m.version.gru
        layers, size = len(gru.model.layers), gru.model.layers[-1]
        hidden = gru.init_hidden(len(sids))
        for b, sid in enumerate(sids):
            st = states.get(sid)
            if st is None or not st.items:
                continue
            if st.version == m.gru_version and st.hidden is not None and st.hidden.size == layers * size:
                hidden[:, b] = torch.as_tensor(st.hidden).reshape(layers, size)
            else:  # new GRU weights: re-encode the session's recent items, never mix versions
                h = gru.init_hidden(1)
                for item in st.items:
                    h, _ = gru.step(h, m.indices([item]), score=False)
                hidden[:, b] = h[:, 0]
        return hidden

    def _step(self, clicks: list[Click], offsets: list[tuple[int, int]], states: dict, positions: list[int],
              last: torch.Tensor, contexts: list, seen: list) -> None:
        """Advance a round's sessions by their click; record each click's final hidden state, context and history."""
        m = self.model
        gru = m.version.gru
        before = self._hidden_for(states, [c.session_id for c in clicks])
        hidden, _ = gru.step(before, m.indices([c.item_id for c in clicks]), score=False)
        redelivered = [self._redelivered(states.get(c.session_id), off) for c, off in zip(clicks, offsets)]
        if any(redelivered):
            dup = torch.tensor(redelivered)
            hidden[:, dup] = before[:, dup]
        for b, click in enumerate(clicks):
            contexts[positions[b]] = self._context(states.get(click.session_id), click)  # before this click
            if not redelivered[b]:
                st = states.get(click.session_id) or SessionState(first_ts=click.ts)
                st.partition, st.offset = offsets[b]
                st.items = (st.items + [click.item_id])[-self.s.session_max_items:]
                st.hidden = hidden[:, b].reshape(-1).numpy()
                st.version, st.clicks, st.last_ts = m.gru_version, st.clicks + 1, click.ts
                states[click.session_id] = st
            seen[positions[b]] = list(states[click.session_id].items)
        last[positions] = hidden[-1]

    def _rank(self, clicks: list[Click], produced_at: list[float], last: torch.Tensor, contexts: list,
              seen_items: list, feedback: Feedback) -> list[Recommendation]:
        """Candidates, Q-scores of the current ranker and the explorer, interleaving: one slate per click."""
        m = self.model
        scores = m.version.gru.model.score(last)
        mean, std = m.score_moments(last)
        if self.s.exclude_seen:
            for b, items in enumerate(seen_items):
                seen = m.indices(items)
                scores[b, seen[seen >= 0]] = -math.inf
        n_top = min(self.s.candidates_gru, scores.shape[1])
        _, top_idx = torch.topk(scores, n_top, dim=1)
        t = max(c.ts for c in clicks)
        extra = self.stats.popular(t, self.s.candidates_popular) + self.stats.fresh(t, self.s.candidates_fresh)
        extra_idx = m.indices(extra).tolist()
        cand_ids: list[list[str]] = []
        cand_rows: list[list[int]] = []
        item_ids = m.item_ids
        for b, top in enumerate(top_idx.tolist()):
            seen = set(seen_items[b]) if self.s.exclude_seen else set()
            ids = [item_ids[i] for i in top]
            have = set(ids)
            for item, ix in zip(extra, extra_idx):
                if item not in have and item not in seen:
                    ids.append(item)
                    top.append(ix)
                    have.add(item)
            cand_ids.append(ids)
            cand_rows.append(top)
        width = max(len(ids) for ids in cand_ids)
        pad = torch.tensor([row + [-1] * (width - len(row)) for row in cand_rows], dtype=torch.long)
        known = pad >= 0
        emb = m.emb[torch.where(known, pad, m.emb.shape[0] - 1)]
        sim = torch.zeros(pad.shape)
        gathered = scores.gather(1, pad.clamp(min=0))
        sim[known] = ((gathered - mean) / std)[known]
        sim = torch.nan_to_num(sim, nan=0.0, posinf=0.0, neginf=0.0)
        # item features, computed once per distinct candidate of the batch
        features: dict[str, tuple[float, float, float]] = {}
        rows = []
        for ids in cand_ids:
            row = []
            for item in ids:
                f = features.get(item)
                if f is None:
                    f = features[item] = (math.log1p(self.stats.recent_clicks(item, t)), self.stats.ctr(item),
                                          self.stats.freshness(item, t))
                row.append(f)
            rows.append(row + [(0.0, 0.0, 0.0)] * (width - len(row)))
        scalars = torch.zeros(*pad.shape, 5)
        scalars[..., :3] = torch.tensor(rows, dtype=torch.float32)
        scalars[..., 3] = sim
        state = last
        context = torch.tensor(contexts, dtype=torch.float32)
        with torch.no_grad():
            q_cur = m.current(state, context, emb, scalars)
            q_exp = m.explorer(state, context, emb, scalars)
        valid = torch.zeros(pad.shape, dtype=torch.bool)
        for b, ids in enumerate(cand_ids):
            valid[b, : len(ids)] = True
        q_cur = q_cur.masked_fill(~valid, -math.inf)
        q_exp = q_exp.masked_fill(~valid, -math.inf)
        order_cur = torch.argsort(q_cur, dim=1, descending=True)
        order_exp = torch.argsort(q_exp, dim=1, descending=True)
        now = time.time()
        merge = team_draft if self.s.interleaving == "team-draft" else probabilistic
        slates = []
        for b, click in enumerate(clicks):
            n = len(cand_ids[b])
            cur = [cand_ids[b][j] for j in order_cur[b, :n].tolist()]
            exp = [cand_ids[b][j] for j in order_exp[b, :n].tolist()]
            items, teams = merge(cur, exp, self.s.slate_size, self.rng)
            col = {item: j for j, item in enumerate(cand_ids[b])}
            slot_scores = [float((q_cur if team == CURRENT else q_exp)[b, col[item]]) for item, team in zip(items, teams)]
            imp = new_impression_id()
            self.pending[imp] = (m.name, items, teams)
            if len(self.pending) > self.max_pending:
                self.pending.popitem(last=False)
            feedback.counts[m.name]["impressions"] += 1
            self.stats.shown(items)
            slates.append(Recommendation(
                session_id=click.session_id, impression_id=imp, items=items, scores=slot_scores, teams=teams,
                model_version=m.name, source="stream", ts=now, latency_ms=max(0.0, (now - produced_at[b]) * 1000)))
        return slates

    @staticmethod
    def _redelivered(st: SessionState | None, offset: tuple[int, int]) -> bool:
        return st is not None and offset[0] >= 0 and st.partition == offset[0] and offset[1] <= st.offset

    @staticmethod
    def _context(before: SessionState | None, click: Click) -> list[float]:
        """Hour of day (sin, cos), session length, seconds since the last click, clicks per minute."""
        hour = (click.ts % 86400) / 3600.0
        n = (before.clicks if before else 0) + 1
        since = max(click.ts - before.last_ts, 0.0) if before else 0.0
        minutes = max((click.ts - (before.first_ts if before else click.ts)) / 60.0, 1.0)
        return [math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24), math.log1p(n),
                math.log1p(since), math.log1p(n / minutes)]

    def popular_slate(self, click: Click, produced_at: float, now: float) -> Recommendation:
        """The recently popular items: the slate without a model, and the fallback when ranking fails."""
        scored = sorted(((float(self.stats.recent_clicks(i, click.ts)), i) for i in
                         self.stats.popular(click.ts, self.s.slate_size)), key=lambda x: (-x[0], x[1]))
        return Recommendation(
            session_id=click.session_id, impression_id=new_impression_id(), items=[i for _, i in scored],
            scores=[sc for sc, _ in scored], model_version=POPULAR_VERSION,
            source="stream", ts=now, latency_ms=max(0.0, (now - produced_at) * 1000))
