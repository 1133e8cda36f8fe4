"""Ranking a session from its GRU4Rec state: the code the stream and the serving endpoint share.

Both services must give a session the same ranking, so both call :func:`rank` here:

1. **Candidates** (multi-path recall): GRU4Rec's top-N over the catalog (the session's own items
   left out unless configured; exact, or an IVF index for large catalogs, :mod:`models.recall`),
   then recently popular and fresh items from :class:`ItemStats`.
2. **Features**: the state is the GRU's last hidden layer plus the session's context (hour,
   length, time since the last click, activeness); each candidate brings its item embedding, recent
   clicks, rolling CTR, freshness and its standardised GRU score (similarity to the state).
3. **Q-values** of DRN's dueling network with the current weights W and, for exploration, with the
   explorers W~ (one for DBGD, several for multileave gradient descent); each list sorted by its Q-values.

The stream interleaves (or multileaves) the lists; the serving endpoint shows the current one.
:class:`ModelCache` follows the registry's ``model:current`` and keeps the loaded version in memory.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import numpy as np
import torch

from models.itemstats import ItemStats
from models.ranker import N_ACTION_SCALARS, SIMILARITY, DuelingQNetwork, RankerStack
from models.recall import CatalogIndex, padded
from models.registry import ModelRegistry, ModelVersion
from models.sessions import SessionState

log = logging.getLogger(__name__)

POPULAR_VERSION = "popular"  # the model_version of slates made without a model


@dataclass(frozen=True)
class CandidateParams:
    gru: int = 40              # top-N items by GRU4Rec score
    popular: int = 5           # recently popular items added
    fresh: int = 5             # newly seen items added
    exclude_seen: bool = True  # leave the session's own items out


def ranker_for(model_version: ModelVersion, weights: np.ndarray, seed: int) -> DuelingQNetwork:
    net = DuelingQNetwork(model_version.gru.model.layers[-1], seed=seed)
    net.set_weights(weights)
    return net.eval()


@dataclass
class LoadedModel:
    """A registry version made ready for scoring."""

    version: ModelVersion
    current: DuelingQNetwork
    explorers: list[DuelingQNetwork]  # W~: one for DBGD, several for MGD
    emb: torch.Tensor          # (items + 1, H): the last row is zeros, for candidates the GRU does not know
    item_ids: list[str]        # model index -> item id
    index: dict[str, int]      # item id -> model index
    catalog: CatalogIndex      # GRU4Rec's top-N recall
    _moments: tuple | None = None

    def __post_init__(self) -> None:
        self.bias = torch.cat([self.catalog.b, torch.zeros(1)])  # GRU4Rec's item biases, aligned with emb's rows
        self._stacks = {True: RankerStack([self.current, *self.explorers]), False: RankerStack([self.current])}
        if self._moments is None:  # here, where the model loads (beside the stream), not in its first batch
            gru = self.version.gru.model
            w, b = gru.Wy.weight.detach(), gru.By.weight.detach().reshape(-1)
            n = w.shape[0]
            self._moments = (w.mean(0), b.mean(), w.T @ w / n, (b[:, None] * w).mean(0), (b * b).mean())

    def rankers(self, explore: bool) -> RankerStack:
        """W and its explorers side by side (the stream's interleaving), or W alone (the serving endpoint)."""
        return self._stacks[explore]

    @classmethod
    def from_version(cls, mv: ModelVersion, seed: int, previous: LoadedModel | None = None,
                     ann_min_items: int = 10_000, ann_probe: float = 0.065) -> LoadedModel:
        """Prepare ``mv``; a minor version of the ``previous`` model's GRU reuses its embeddings and index
        (and ``ModelRegistry.load(..., loaded=previous.version)`` has already reused the GRU itself)."""
        if previous is not None and previous.gru_version == mv.meta["gru_version"]:
            emb, ids, index, catalog, moments = (previous.emb, previous.item_ids, previous.index, previous.catalog,
                                                 previous._moments)
        else:
            w, b, ids_list = mv.gru.item_embeddings()
            emb = torch.cat([torch.as_tensor(w), torch.zeros(1, w.shape[1])])
            ids, index, moments = list(ids_list), {item: i for i, item in enumerate(ids_list)}, None
            catalog = CatalogIndex(torch.as_tensor(w), torch.as_tensor(b), min_items=ann_min_items, probe=ann_probe,
                                   trained=mv.index)  # the lists the registry stored with the version, if any
        explorers = [ranker_for(mv, w, seed) for w in np.atleast_2d(mv.explorers)]
        return cls(mv, ranker_for(mv, mv.ranker, seed), explorers, emb, ids, index, catalog, moments)

    def positions(self, items: list[str]) -> list[int]:
        """Model indices of item ids, -1 for items the GRU does not know (cold start)."""
        return list(map(self.index.get, items, repeat(-1)))

    def indices(self, items: list[str]) -> torch.Tensor:
        """:meth:`positions` as a tensor."""
        return torch.tensor(self.positions(items), dtype=torch.long)

    def score_moments(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of h's GRU scores over the whole catalog, without computing them.

        Scores are s_i = h.w_i + b_i, so mean = h.mean(w) + mean(b) and
        E[s^2] = h^T (W^T W / n) h + 2 h.mean(b_i w_i) + mean(b^2): a few small products per click (the
        catalog's moments are computed once, when the model is loaded: 12 ms for 43k items).
        """
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

    def hidden(self, states: list[SessionState | None]) -> torch.Tensor:
        """GRU hidden states (layers, B, H) of sessions; rebuilt from stored items when the GRU version changed."""
        gru = self.version.gru
        layers, size = len(gru.model.layers), gru.model.layers[-1]
        hidden = gru.init_hidden(len(states))
        kept, rows, stale = [], [], []  # states of this GRU version: copied in one go
        for b, st in enumerate(states):
            if st is None or not st.items:
                continue
            if st.version == self.gru_version and st.hidden is not None and st.hidden.size == layers * size:
                kept.append(b)
                rows.append(st.hidden)
            else:
                stale.append(b)
        if stale:  # new GRU weights: re-encode the sessions' recent items (batched), never mix versions
            hidden[:, stale] = gru.encode([self.indices(states[b].items) for b in stale])
        if kept:
            stacked = torch.from_numpy(np.stack(rows).astype(np.float32, copy=False))  # (n, layers * size)
            hidden[:, kept] = stacked.reshape(len(kept), layers, size).transpose(0, 1)
        return hidden


class ModelCache:
    """The registry's current version, loaded once per version and re-checked at most every ``refresh_s``."""

    def __init__(self, registry: ModelRegistry, seed: int = 0, refresh_s: float = 0.5,
                 ann_min_items: int = 10_000, freeze_gc: bool = False, ann_probe: float = 0.065) -> None:
        self.registry, self.seed, self.refresh_s, self.ann_min_items = registry, seed, refresh_s, ann_min_items
        self.freeze_gc, self.ann_probe = freeze_gc, ann_probe
        self.model: LoadedModel | None = None
        self._checked_at = -math.inf
        self._failed: tuple[str, float] | None = None  # (version, when) of the last load that failed
        self.retry_failed_s = 30.0

    def refresh(self, force: bool = False) -> LoadedModel | None:
        """Switch to ``model:current`` if it changed; the old model stays in use until the new one is ready."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.refresh_s:
            return self.model
        self._checked_at = now
        current = self.registry.current_version()
        if current is None or (self.model is not None and self.model.name == current):
            return self.model
        if self._failed is not None and self._failed[0] == current and now - self._failed[1] < self.retry_failed_s:
            return self.model  # a broken version is retried every retry_failed_s, not on every batch
        try:
            mv = self.registry.load(current, loaded=self.model.version if self.model is not None else None)
        except Exception as err:  # noqa: BLE001 - a version that does not load: keep what is loaded
            self._failed = (current, now)
            log.error("model %s does not load (%s); keeping %s, retrying in %.0f s", current, err,
                      self.model.name if self.model is not None else "no model", self.retry_failed_s)
            return self.model
        self._failed = None
        first = self.model is None
        self.model = LoadedModel.from_version(mv, self.seed, self.model, self.ann_min_items, self.ann_probe)
        if first and self.freeze_gc:
            # Everything alive now (imported libraries, the app, the first model: ~300k objects in a worker)
            # lives as long as the process.  Frozen, the cyclic collector stops walking it: a full collection
            # then took 9 ms instead of 167 ms, a stall every few thousand clicks (in-process, batches of 32).
            gc.freeze()
        log.info("now using model %s (%s, GRU %s, %s recall over %d items)", current, mv.meta["kind"],
                 mv.meta["gru_version"], self.model.catalog.kind, self.model.catalog.n)
        return self.model


def session_context(clicks: int, first_ts: float, prev_ts: float | None, ts: float) -> list[float]:
    """The context right after a session's ``clicks``-th click at ``ts``.

    Hour of day (sin, cos), log session length, log seconds since the previous click, log clicks
    per minute (activeness).

    >>> [round(x, 3) for x in session_context(1, 0.0, None, 0.0)]
    [0.0, 1.0, 0.693, 0.0, 0.693]
    """
    hour = (ts % 86400) / 3600.0
    since = max(ts - prev_ts, 0.0) if prev_ts is not None else 0.0
    minutes = max((ts - first_ts) / 60.0, 1.0)
    return [math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24), math.log1p(clicks),
            math.log1p(since), math.log1p(clicks / minutes)]


def state_context(st: SessionState) -> list[float]:
    """:func:`session_context` of a stored session, as the stream computed it for the session's last click."""
    return session_context(st.clicks, st.first_ts, st.prev_ts, st.last_ts)


def candidates(model: LoadedModel, last: torch.Tensor, seen_items: list[list[str]], stats: ItemStats, t: float,
               params: CandidateParams) -> tuple[np.ndarray, list[str]]:
    """GRU4Rec's top-N per row, then the recently popular and fresh items not already there.

    Returns a (B, C) int64 array of candidates, -1 padding at the end of each row, and the items the GRU
    does not know among the extras: candidate ``n_items + j`` is ``unknown[j]`` (cold start).
    Everything is done on whole-batch arrays, so the cost hardly grows with the batch.
    """
    n_items = len(model.item_ids)
    seen = padded([[i for i in model.positions(items) if i >= 0] for items in seen_items], fill=-3) \
        if params.exclude_seen else None  # -3: matches no item and no probe below
    top_idx, _ = model.catalog.top_np(last.detach().float().numpy(), params.gru, seen)
    extra = list(dict.fromkeys(stats.popular(t, params.popular) + stats.fresh(t, params.fresh)))
    if not extra:
        return top_idx, []
    extra_idx = np.array(model.positions(extra), dtype=np.int64)
    new = extra_idx < 0
    unknown = [item for item, is_new in zip(extra, new.tolist()) if is_new]
    code = extra_idx.copy()  # what a kept extra becomes in the candidate array
    code[new] = n_items + np.arange(len(unknown))
    probe = np.where(new, -2, extra_idx)  # -2 matches neither an item nor the padding
    drop = (top_idx[:, :, None] == probe[None, None, :]).any(1)  # already among the GRU's top-N
    if seen is not None:
        drop |= (seen[:, :, None] == probe[None, None, :]).any(1)
        for j in np.flatnonzero(new).tolist():  # unknown items are compared by id
            drop[:, j] |= np.fromiter((extra[j] in items for items in seen_items), bool, len(seen_items))
    rows = np.concatenate([top_idx, np.where(drop, -1, code[None, :])], 1)
    order = np.argsort(rows < 0, axis=1, kind="stable")  # padding to the end, order kept
    return np.take_along_axis(rows, order, 1), unknown


@dataclass
class Ranked:
    """One session's candidates in the order of each ranker, with their Q-values.

    Items and Q-values are kept apart (the stream interleaves the item lists and looks scores up only for
    the slate's k items); :attr:`current` and :attr:`explorer` give them as (item, Q) pairs.
    """

    items: tuple[str, ...]                      # W's order
    q: list[float]
    explorer_items: tuple[str, ...] | None      # W~'s order (None without exploration)
    explorer_q: list[float] | None

    @property
    def current(self) -> list[tuple[str, float]]:
        return list(zip(self.items, self.q))

    @property
    def explorer(self) -> list[tuple[str, float]] | None:
        return None if self.explorer_items is None else list(zip(self.explorer_items, self.explorer_q))


@dataclass
class RankedBatch:
    """A batch's rankings as arrays: ``order[b, j]`` holds session b's candidates (codes into ``names``, -1 after
    its ``counts[b]``) in ranker j's order (0: W, 1...: the explorers), ``q[b, j]`` their Q-values rounded to 6
    decimals.

    The stream interleaves the orders of a whole batch at once (:func:`models.interleave.team_draft_batch`)
    and turns only the slates' items into ids; :meth:`rows` gives each session's :class:`Ranked`.
    """

    names: list[str]
    order: np.ndarray   # (B, rankers, depth) int64
    q: np.ndarray       # (B, rankers, depth) float64
    counts: list[int]

    def items(self, b: int, ranker: int = 0, n: int | None = None) -> tuple[str, ...]:
        """Session b's first ``n`` items (all of them by default) in ``ranker``'s order."""
        n = self.counts[b] if n is None else min(n, self.counts[b])
        return self.take(self.order[b, ranker, :n].tolist())

    def take(self, codes: list[int]) -> tuple[str, ...]:
        """The item ids of candidate codes."""
        return _take(self.names, codes)

    def rows(self) -> list[Ranked]:
        order, q = self.order.tolist(), self.q.tolist()
        out = []
        for b, n in enumerate(self.counts):
            rankers = [(_take(self.names, o[:n]), v[:n]) for o, v in zip(order[b], q[b])]
            out.append(Ranked(*rankers[0], *(rankers[1] if len(rankers) > 1 else (None, None))))
        return out


def rank(model: LoadedModel, last: torch.Tensor, contexts: list[list[float]], seen_items: list[list[str]],
         stats: ItemStats, t: float, params: CandidateParams, explore: bool = True,
         depth: int | None = None) -> list[Ranked]:
    """Rank candidates for a batch of sessions: :func:`rank_batch`, one :class:`Ranked` per session."""
    return rank_batch(model, last, contexts, seen_items, stats, t, params, explore, depth).rows()


def rank_states(model: LoadedModel, states: list[SessionState], stats: ItemStats, t: float,
                params: CandidateParams, depth: int | None = None) -> list[Ranked]:
    """W's ranking (no exploration) of stored sessions as they stand after their last click.

    What the serving endpoint answers when it ranks a session itself, and what a new version pre-ranks
    before its promotion (:mod:`models.prerank`): one function, so the two cannot drift apart.  ``t`` is
    the time of the item statistics (0: none yet, then the newest click among ``states``).
    """
    hidden = model.hidden(states)[-1]
    return rank(model, hidden, [state_context(st) for st in states], [st.items for st in states], stats,
                t or max(st.last_ts for st in states), params, explore=False, depth=depth)


def rank_batch(model: LoadedModel, last: torch.Tensor, contexts: list[list[float]], seen_items: list[list[str]],
               stats: ItemStats, t: float, params: CandidateParams, explore: bool = True,
               depth: int | None = None) -> RankedBatch:
    """Rank candidates for a batch of sessions.

    ``last`` is each session's last GRU layer (B, H), ``contexts`` its :func:`session_context`,
    ``seen_items`` its recent items, ``t`` the time the item statistics are read at.  ``depth`` keeps
    only each list's best ``depth`` candidates (all of them when None): team-draft interleaving of a
    k-item slate never looks past 2k.
    """
    cand, unknown = candidates(model, last, seen_items, stats, t, params)
    n_items = len(model.item_ids)
    lengths = (cand >= 0).sum(1)
    cand = np.ascontiguousarray(cand[:, : max(int(lengths.max()), 1)])
    valid = cand >= 0
    known = valid & (cand < n_items)
    rows = torch.from_numpy(np.where(known, cand, n_items))  # row n_items of emb is zeros: unknown and padding
    emb = model.emb[rows]
    mean, std = model.score_moments(last)
    # the GRU score h.w_i + b_i of each candidate, standardised over the catalog (0 for unknown items and padding)
    sim = ((last.unsqueeze(1) * emb).sum(2) + model.bias[rows] - mean) / std
    sim = torch.nan_to_num(sim, nan=0.0, posinf=0.0, neginf=0.0).masked_fill_(torch.from_numpy(~known), 0.0)
    names = model.item_ids + unknown if unknown else model.item_ids
    distinct, slot = np.unique(cand, return_inverse=True)  # features once per distinct candidate of the batch
    feats = stats.features_many([names[v] if v >= 0 else "" for v in distinct.tolist()], t)
    scalars = torch.zeros(*cand.shape, N_ACTION_SCALARS)
    scalars[..., :3] = torch.from_numpy(feats[slot.reshape(cand.shape)])
    scalars[..., SIMILARITY] = sim
    context = torch.tensor(contexts, dtype=torch.float32)
    q = model.rankers(explore).q(last, context, emb, scalars).masked_fill_(torch.from_numpy(~valid)[..., None],
                                                                          -math.inf)
    keep = q.shape[1] if depth is None else min(depth, q.shape[1])
    by_ranker = q.transpose(1, 2)                                          # (B, rankers, C)
    order = torch.argsort(by_ranker, dim=2, descending=True, stable=True)[..., :keep]  # ties keep the candidates' order
    values = by_ranker.gather(2, order).double().round(decimals=6)  # 6 decimals: compact JSON in slates and Redis
    codes = np.take_along_axis(cand[:, None, :], order.numpy(), 2)
    return RankedBatch(names, codes, values.numpy(), lengths.tolist())


def _take(names: list[str], positions: list[int]) -> tuple[str, ...]:
    """``names`` at ``positions``, looked up in C by ``operator.itemgetter`` (a Python loop cost 10 ms a batch)."""
    return itemgetter(*positions)(names) if len(positions) > 1 else tuple(names[v] for v in positions)


def popular_items(stats: ItemStats, t: float, k: int, fresh: int = 0) -> list[tuple[str, float]]:
    """The slate without a model or a session: the most recently clicked items, then up to ``fresh`` new ones.

    Each item is scored by its recent (decayed) clicks.
    """
    new = stats.fresh(t, min(fresh, k))
    popular = [i for i in stats.popular(t, k) if i not in set(new)][: k - len(new)]
    ordered = sorted(popular, key=lambda i: (-stats.recent_clicks(i, t), i)) + new
    return [(i, float(stats.recent_clicks(i, t))) for i in ordered]
