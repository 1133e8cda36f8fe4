"""DRN's major update: GRU4Rec and the ranker retrained on a window of the log, published as a candidate.

1. **Data**: the clicks of a window of the ``clicks`` log (and the slates of ``recommendations``),
   as sessions in time order.  The newest ``holdout`` share of sessions (by first click) is held out.
2. **GRU4Rec**: a copy of the current version warm-starts (items it has not seen get new rows,
   :meth:`GRU4Rec.fit` with ``warm_start``) and trains with the same code as offline training.
3. **Ranker**: refit as a *supervised click model* on the logged slates: for each slate the state is
   the new GRU's hidden state after the click that asked for it, the action features are recomputed
   by replaying the window's item statistics, and the label of each slot is whether it was clicked
   (a later click carrying the slate's ``impression_id`` and that ``position``); binary cross-entropy
   on Q, warm-started from the current W.  Why not DRN's double-DQN target with experience replay:
   with the click as the reward, the bootstrap term needs max_a Q(s', a) over the candidates the
   next slate was chosen from, which the log does not keep (only the shown slate); a target built
   from the shown items alone is biased towards whatever was shown.  The immediate-click model is
   what the log supports without that bias, and DBGD keeps adjusting W online between retrains.
4. **Evidence for the decision**: Recall@20 and MRR@20 of next-click prediction on the held-out
   sessions, for the base's and the new GRU on the same events (clicks on items the base GRU knows,
   and only the clicks users made on their own when there are at least 20: a click on a slate could
   only land on what the current version chose to show, which favours the current version).  The
   candidate is published unpromoted; the controller's promotion gate decides
   (:mod:`stream.control.gate`), so a rejected model can be inspected.

The log arrives as data (lists of click and slate records): reading it from Kafka is the stream's job
(:mod:`stream.trainer`), and this module knows nothing of Kafka.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from models.mgd import MultileaveGD
from models.evaluate import NaNModelError, evaluate
from models.gru4rec import GRU4Rec
from models.itemstats import ItemStats
from models.ranker import N_ACTION_SCALARS, SIMILARITY, DuelingQNetwork
from models.recommend import session_context
from models.registry import InvalidModel, ModelRegistry

log = logging.getLogger(__name__)


@dataclass
class RetrainConfig:
    epochs: int = 1
    learning_rate: float | None = None     # None: the current version's
    holdout: float = 0.1                   # newest share of sessions held out for the decision
    cutoff: int = 20
    min_sessions: int = 10
    ranker_epochs: int = 5
    ranker_lr: float = 3e-3
    alpha: float = 0.1                     # DBGD perturbation of the new version's first explorers
    explorers: int = 1                     # how many (1: DBGD, more: multileave gradient descent)
    half_life_s: float = 3600.0            # item statistics replayed for the ranker's features
    fresh_window_s: float = 3600.0
    seed: int = 0


@dataclass
class Candidate:
    """A retrain's result: the published (unpromoted) version, or None and why not."""

    version: str | None
    reason: str
    summary: dict = field(default_factory=dict)


def clicks_frame(records: list[dict]) -> pd.DataFrame:
    """Valid click records as (SessionId, ItemId, Time, impression_id, position), in log order per session."""
    rows = []
    for r in records:
        sid, item, ts = r.get("session_id"), r.get("item_id"), r.get("ts")
        if isinstance(sid, str) and isinstance(item, str) and isinstance(ts, (int, float)) and math.isfinite(ts):
            rows.append((sid, item, float(ts), r.get("impression_id"), r.get("position"),
                         r.get("_partition", 0), r.get("_offset", len(rows))))
    df = pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time", "impression_id", "position", "_p", "_o"])
    return df.sort_values(["_p", "_o"], kind="mergesort").reset_index(drop=True)


def split_newest(df: pd.DataFrame, holdout: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sessions of at least 2 clicks; the newest ``holdout`` share of them (by first click) is the test set."""
    lengths = df.groupby("SessionId")["ItemId"].transform("size")
    df = df[lengths >= 2]
    first = df.groupby("SessionId")["Time"].min().sort_values(kind="mergesort")
    n_test = max(1, int(round(len(first) * holdout))) if len(first) > 1 else 0
    test_ids = set(first.index[len(first) - n_test:])
    is_test = df["SessionId"].isin(test_ids)
    return df[~is_test].reset_index(drop=True), df[is_test].reset_index(drop=True)


# ---------------------------------------------------------------------- the ranker's training set


@dataclass
class SlateExamples:
    state: torch.Tensor      # (N, H)
    context: torch.Tensor    # (N, 5)
    items: torch.Tensor      # (N, S) model indices, -1 for unknown or padding
    scalars: torch.Tensor    # (N, S, 5)
    labels: torch.Tensor     # (N, S)
    valid: torch.Tensor      # (N, S)
    ts: torch.Tensor         # (N,)


def _hidden_after_each_click(gru: GRU4Rec, sessions: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Last-layer hidden state after every click of every session, batched over sessions of equal length."""
    out: dict[str, torch.Tensor] = {}
    by_len: dict[int, list[str]] = defaultdict(list)
    for sid, items in sessions.items():
        by_len[len(items)].append(sid)
    for length, sids in by_len.items():
        for start in range(0, len(sids), 512):
            chunk = sids[start: start + 512]
            idx = torch.stack([gru.item_indices(sessions[s]) for s in chunk])
            hidden = gru.init_hidden(len(chunk))
            states = []
            for t in range(length):
                hidden, _ = gru.step(hidden, idx[:, t], score=False)
                states.append(hidden[-1])
            stacked = torch.stack(states, 1)  # (B, T, H)
            for b, s in enumerate(chunk):
                out[s] = stacked[b]
    return out


def slate_examples(gru: GRU4Rec, clicks: pd.DataFrame, slates: list[dict], config: RetrainConfig
                   ) -> SlateExamples | None:
    """One example per stream slate that can be matched to the click that asked for it (see module doc)."""
    stream_slates = [s for s in slates if s.get("source") == "stream" and isinstance(s.get("items"), list)]
    if not stream_slates or clicks.empty:
        return None
    sessions = {sid: list(g["ItemId"]) for sid, g in clicks.groupby("SessionId", sort=False)}
    times = {sid: list(g["Time"]) for sid, g in clicks.groupby("SessionId", sort=False)}
    per_session: dict[str, list[dict]] = defaultdict(list)
    for s in sorted(stream_slates, key=lambda s: (s.get("_partition", 0), s.get("_offset", 0))):
        per_session[s["session_id"]].append(s)
    clicked: dict[str, tuple[int, str]] = {}
    for imp, pos, item in zip(clicks["impression_id"], clicks["position"], clicks["ItemId"]):
        if isinstance(imp, str) and isinstance(pos, (int, np.integer)) and not pd.isna(pos):
            clicked[imp] = (int(pos), item)
    hidden = _hidden_after_each_click(gru, {s: sessions[s] for s in per_session if s in sessions})
    # the n-th slate of a session answered its n-th click (one slate per click, same partition, in order)
    asked: list[tuple[float, str, int, dict]] = []
    for sid, session_slates in per_session.items():
        for n, slate in enumerate(session_slates[: len(sessions.get(sid, []))]):
            asked.append((times[sid][n], sid, n, slate))
    if not asked:
        return None
    stats = ItemStats(config.half_life_s, config.fresh_window_s)
    by_time = clicks.sort_values("Time", kind="mergesort")
    click_events = list(zip(by_time["Time"], by_time["ItemId"], by_time["impression_id"]))
    asked.sort(key=lambda a: a[0])
    w = gru.model.Wy.weight.detach()
    b = gru.model.By.weight.detach().reshape(-1)
    width = max(len(a[3]["items"]) for a in asked)
    n_ex = len(asked)
    state = torch.zeros(n_ex, w.shape[1])
    context = torch.zeros(n_ex, 5)
    items = torch.full((n_ex, width), -1, dtype=torch.long)
    scalars = torch.zeros(n_ex, width, N_ACTION_SCALARS)
    labels = torch.zeros(n_ex, width)
    valid = torch.zeros(n_ex, width, dtype=torch.bool)
    ts = torch.zeros(n_ex)
    c = 0
    for e, (t, sid, n, slate) in enumerate(asked):
        while c < len(click_events) and click_events[c][0] <= t:  # the statistics as they stood at that click
            ct, citem, cimp = click_events[c]
            stats.click(citem, ct, from_slate=isinstance(cimp, str))
            c += 1
        state[e] = hidden[sid][n]
        first, prev = times[sid][0], times[sid][n - 1] if n > 0 else None
        context[e] = torch.tensor(session_context(n + 1, first, prev, t))
        slate_items = [str(i) for i in slate["items"]][:width]
        idx = gru.item_indices(slate_items)
        items[e, : len(slate_items)] = idx
        valid[e, : len(slate_items)] = True
        scalars[e, : len(slate_items), :3] = torch.from_numpy(stats.features_many(slate_items, t))
        hit = clicked.get(slate.get("impression_id"))
        if hit is not None and hit[0] < len(slate_items) and slate_items[hit[0]] == hit[1]:
            labels[e, hit[0]] = 1.0
        stats.shown(slate_items)
        ts[e] = t
    # similarity: the GRU score standardised over the catalog, as models.recommend computes it
    for start in range(0, n_ex, 256):
        h = state[start: start + 256]
        full = h @ w.T + b
        mean, std = full.mean(1, keepdim=True), full.std(1, keepdim=True).clamp(min=1e-6)
        idx = items[start: start + 256]
        s = (torch.einsum("bh,bsh->bs", h, w[idx.clamp(min=0)]) + b[idx.clamp(min=0)] - mean) / std
        scalars[start: start + 256, :, SIMILARITY] = s.masked_fill(idx < 0, 0.0)
    return SlateExamples(state, context, items, scalars, labels, valid, ts)


def _ranker_loss(net: DuelingQNetwork, emb: torch.Tensor, ex: SlateExamples, rows: torch.Tensor) -> torch.Tensor:
    idx = ex.items[rows]
    q = net(ex.state[rows], ex.context[rows], emb[torch.where(idx >= 0, idx, emb.shape[0] - 1)], ex.scalars[rows])
    mask = ex.valid[rows]
    return F.binary_cross_entropy_with_logits(q[mask], ex.labels[rows][mask])


def _auc(net: DuelingQNetwork, emb: torch.Tensor, ex: SlateExamples, rows: torch.Tensor) -> float:
    """Probability that a clicked slot outranks an unclicked slot of the same slate."""
    with torch.no_grad():
        idx = ex.items[rows]
        q = net(ex.state[rows], ex.context[rows], emb[torch.where(idx >= 0, idx, emb.shape[0] - 1)], ex.scalars[rows])
    wins = total = 0.0
    for r in range(len(rows)):
        lab, val, qr = ex.labels[rows[r]], ex.valid[rows[r]], q[r]
        pos, neg = qr[(lab > 0) & val], qr[(lab == 0) & val]
        if len(pos) and len(neg):
            wins += float((pos[:, None] > neg[None, :]).float().sum() + 0.5 * (pos[:, None] == neg[None, :]).float().sum())
            total += len(pos) * len(neg)
    return wins / total if total else float("nan")


def refit_ranker(gru: GRU4Rec, weights: np.ndarray, ex: SlateExamples | None, config: RetrainConfig
                 ) -> tuple[np.ndarray, dict]:
    """Supervised click model on the logged slates, warm-started from W; the newest 10% of slates validate."""
    if ex is None or ex.labels.sum() < 5:
        return weights, {"ranker": "kept W: fewer than 5 logged clicks on slates in the window",
                         "slates": 0 if ex is None else len(ex.ts)}
    emb = torch.cat([gru.model.Wy.weight.detach(), torch.zeros(1, gru.model.Wy.weight.shape[1])])
    order = torch.argsort(ex.ts, stable=True)
    n_val = max(1, len(order) // 10)
    train_rows, val_rows = order[:-n_val], order[-n_val:]
    net = DuelingQNetwork(gru.model.layers[-1], seed=config.seed)
    net.set_weights(weights)
    before = {"val_logloss": float(_ranker_loss(net, emb, ex, val_rows).detach()), "val_auc": _auc(net, emb, ex, val_rows)}
    opt = torch.optim.Adam(net.parameters(), lr=config.ranker_lr)
    gen = torch.Generator().manual_seed(config.seed)
    for _ in range(config.ranker_epochs):
        perm = train_rows[torch.randperm(len(train_rows), generator=gen)]
        for start in range(0, len(perm), 256):
            opt.zero_grad()
            loss = _ranker_loss(net, emb, ex, perm[start: start + 256])
            loss.backward()
            opt.step()
    after = {"val_logloss": float(_ranker_loss(net, emb, ex, val_rows).detach()), "val_auc": _auc(net, emb, ex, val_rows)}
    refit = net.get_weights()
    # the refit must be finite and not worse on the newest slates (written so that a NaN loss keeps W)
    keep = not (after["val_logloss"] <= before["val_logloss"]) or not np.isfinite(refit).all()
    summary = {"ranker": "kept W: the refit was worse on the newest slates, or not finite" if keep else
               "refit (click model)",
               "slates": int(len(ex.ts)), "clicked_slates": int(ex.labels.sum()), "before": before, "after": after}
    return (weights if keep else refit), summary


# ---------------------------------------------------------------------- the whole update


def train_candidate(registry: ModelRegistry, clicks: list[dict], slates: list[dict],
                    config: RetrainConfig | None = None, trigger: str = "manual", window: dict | None = None,
                    progress: Callable[[int, dict], None] | None = None, based_on: str | None = None
                    ) -> Candidate:
    """Warm-start GRU4Rec from ``based_on`` (default: the current version) and refit the ranker on a window
    of the log; publish the result as a new major version, **not promoted**.

    The summary's ``offline`` part scores the base's GRU and the candidate on the same held-out events;
    whether that is good enough, and the promotion itself, is the controller's decision
    (:class:`stream.control.gate.PromotionGate`).  A model whose training produced NaN is not published
    (``version`` None and the reason), and neither is one the registry finds broken."""
    config = config or RetrainConfig()
    started = time.time()
    base = based_on or registry.current_version()
    if base is None:
        return Candidate(None, "no current version to warm-start from")
    meta = registry.meta(base)
    df = clicks_frame(clicks)
    train, test = split_newest(df, config.holdout)
    n_sessions = int(df["SessionId"].nunique()) if len(df) else 0
    if train["SessionId"].nunique() < config.min_sessions or test.empty:
        return Candidate(None, f"too little data: {n_sessions} sessions in the window "
                                           f"(at least {config.min_sessions} with 2+ clicks needed)")
    old = registry.training_gru(meta["gru_version"])
    new = copy.deepcopy(old)  # the copy that learns; the serving one stays untouched (read from Redis once)
    new.params.n_epochs = config.epochs
    if config.learning_rate is not None:
        new.params.learning_rate = config.learning_rate
    known_before = set(map(str, old.item_ids))
    t0 = time.perf_counter()
    new.fit(train[["SessionId", "ItemId", "Time"]], progress=progress, warm_start=True)
    train_s = time.perf_counter() - t0
    new_items = [i for i in pd.unique(train["ItemId"]) if i not in known_before]
    common = test[test["ItemId"].isin(known_before)][["SessionId", "ItemId", "Time", "impression_id"]]
    # scored on the clicks users made on their own: a click on a slate could only go to what the current
    # version chose to show, so scoring those favours the current version whatever the users now want
    common = common.assign(organic=common["impression_id"].isna()).drop(columns="impression_id")
    target = "organic" if common["organic"].sum() >= 20 else None
    k = config.cutoff
    summary: dict = {"trigger": trigger, "parent": base, "window": window or {}, "clicks": int(len(df)),
                     "sessions": n_sessions, "train_sessions": int(train["SessionId"].nunique()),
                     "test_sessions": int(test["SessionId"].nunique()), "new_items": len(new_items),
                     "epochs": config.epochs, "train_seconds": round(train_s, 2),
                     "events_per_s": round(len(train) * config.epochs / max(train_s, 1e-9), 1)}
    try:
        before = evaluate(old, common, cutoffs=(k,), target_column=target)
        after = evaluate(new, common, cutoffs=(k,), target_column=target)
    except NaNModelError as err:
        summary.update(reason=str(err), seconds=round(time.time() - started, 2))
        return Candidate(None, str(err), summary)
    summary["offline"] = {"current": before, "new": after, "scored": "organic clicks" if target else "all clicks"}
    w_old, _ = registry.ranker_weights(base)
    examples = slate_examples(new, df, slates, config)
    w_new, ranker_summary = refit_ranker(new, w_old, examples, config)
    summary["ranker"] = ranker_summary
    explorer = MultileaveGD(w_new, config.explorers, alpha=config.alpha, seed=config.seed).explorer_weights
    summary["seconds"] = round(time.time() - started, 2)
    try:
        version = registry.publish_major(new, w_new, explorer, parent=base, summary=summary)
    except InvalidModel as err:
        summary["reason"] = f"not published: {err}"
        return Candidate(None, summary["reason"], summary)
    log.info("retrain (%s) on %s -> candidate %s; recall@%d %.4f -> %.4f, %d new items", trigger, base, version, k,
             before[f"recall@{k}"], after[f"recall@{k}"], len(new_items))
    return Candidate(version, "published, not promoted", summary)
