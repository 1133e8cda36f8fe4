"""The policies the online-learning study compares (``bench/online_study.py``).

Each answers a micro-batch of clicks with one slate per click.  ``SystemPolicy`` is the stream's own
online loop — :class:`stream.online.OnlineRecommender` with its GRU4Rec session state in Redis,
multi-path candidates and DRN's dueling Q-network, and the worker's own model-lifecycle controller
(:class:`stream.control.controller.Controller`: DBGD rounds, drift watch, retrain policy, promotion gate,
guardrail) with :func:`models.retrain.train_candidate` for major updates — with parts switched off for
the ablations.  Nothing of the orchestration is copied here.  The baselines: the recently most clicked items, and
river's ``reco.BiasedMF`` learning from every click and every skipped slot.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import redis
from river import optim, reco

from models.__main__ import publish_first_version
from models.gru4rec import GRU4Rec
from models.itemstats import ItemStats
from models.recommend import popular_items
from models.registry import ModelRegistry
from models.retrain import RetrainConfig, train_candidate
from models.sessions import SessionStore
from stream.control.clock import ManualClock
from stream.control.controller import Controller
from stream.control.store import RedisControlStore
from stream.control.trainer import InlineTrainer
from stream.online import OnlineRecommender
from stream.records import Click, ModelUpdate, new_impression_id
from stream.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One click of a simulated user, which asks for the next slate."""

    session_id: str
    user: str
    item_id: str
    ts: float
    impression_id: str | None = None   # the slate the click came from, if any
    position: int | None = None


@dataclass
class Slate:
    items: list[str]
    impression_id: str


_DEFAULTS = {name: f.default for name, f in Settings.model_fields.items()}


@dataclass
class SystemOptions:
    """How the study runs the system: which parts learn, and the settings of the online loop."""

    explore: bool = True               # interleave the explorer (DBGD's minor updates need it)
    dbgd: bool = True                  # decide DBGD rounds (W moves when the explorer wins)
    retrains: bool = True              # major retrains: on a detected CTR drop and every ``retrain_every_clicks``
    slate_size: int = 10
    dbgd_window: int = _DEFAULTS["dbgd_window"]       # the minor update's knobs: the settings' defaults unless
    dbgd_alpha: float = _DEFAULTS["dbgd_alpha"]       # --set (docs/benchmarks.md: how the defaults were chosen)
    dbgd_eta: float = _DEFAULTS["dbgd_eta"]
    dbgd_explorers: int = _DEFAULTS["dbgd_explorers"]
    retrain_every_clicks: int = 5_000
    retrain_window_s: float = 200.0    # simulated seconds of the log a retrain reads
    retrain_epochs: int = 5
    retrain_learning_rate: float = 0.05
    retrain_margin: float = 0.0        # a positive margin let repeated retrains ratchet quality down
    drift_min_impressions: int = 2000
    drift_retrain_after: int = 4000    # a drift retrain waits for this many impressions after the change
    popular_half_life_s: float = 60.0
    fresh_window_s: float = 300.0
    guardrail: bool = True             # the rollback guardrail after each major promotion
    guardrail_click_lag_s: float = 1.0  # think times are scaled 1/120 here: clicks come about a second later
    guardrail_delay_s: float = 15.0
    seed: int = 0


class SystemPolicy:
    """streamrec's online loop, in process, against a real Redis (its own namespace).

    The click path is :class:`stream.online.OnlineRecommender`; every model decision is made by the
    worker's own :class:`stream.control.controller.Controller`, fed the batch's outcomes and a tick
    after each batch, on the study's simulated clock.  Its retrains run inline
    (:class:`stream.control.trainer.InlineTrainer`, on the log this policy keeps in place of Kafka's)."""

    def __init__(self, name: str, client: redis.Redis, model_path: str, opts: SystemOptions, namespace: str) -> None:
        self.name, self.client, self.opts, self.prefix = name, client, opts, namespace
        self.settings = Settings(
            topic_prefix=namespace, explore=opts.explore, slate_size=opts.slate_size, dbgd_window=opts.dbgd_window,
            dbgd_window_s=1e12, dbgd_alpha=opts.dbgd_alpha, dbgd_eta=opts.dbgd_eta,
            dbgd_explorers=opts.dbgd_explorers, seed=opts.seed,
            popular_half_life_s=opts.popular_half_life_s, fresh_window_s=opts.fresh_window_s,
            stats_snapshot_s=1e12, session_ttl_s=24 * 3600, torch_threads=1, retrain_window_s=opts.retrain_window_s,
            retrain_every_clicks=opts.retrain_every_clicks if opts.retrains else 0, drift_retrain=opts.retrains,
            drift_min_impressions=opts.drift_min_impressions, drift_retrain_after=opts.drift_retrain_after,
            retrain_epochs=opts.retrain_epochs, retrain_learning_rate=opts.retrain_learning_rate,
            retrain_margin=opts.retrain_margin, guardrail=opts.guardrail,
            guardrail_click_lag_s=opts.guardrail_click_lag_s, guardrail_delay_s=opts.guardrail_delay_s)
        self.registry = ModelRegistry(client, namespace=namespace)
        publish_first_version(self.registry, GRU4Rec.load(model_path, device="cpu"), opts.dbgd_alpha, opts.seed,
                              explorers=opts.dbgd_explorers)
        self.online = OnlineRecommender(self.settings, self.registry,
                                        SessionStore(client, namespace, self.settings.session_ttl_s,
                                                     self.settings.session_max_items))
        self.clock = ManualClock()
        store = RedisControlStore(client, namespace)
        self.controller = Controller(self.settings, self.registry, store, InlineTrainer(self._train, store),
                                     self.clock)
        self.clicks_log: list[dict] = []    # what Kafka's clicks and recommendations topics would hold
        self.slates_log: list[dict] = []
        self.events: list[dict] = []        # DBGD acceptances, drift detections, retrains: for the plot

    def answer(self, requests: list[Request], t: float) -> list[Slate]:
        clicks = [Click(session_id=r.session_id, item_id=r.item_id, ts=r.ts, user_id=r.user,
                        impression_id=r.impression_id, position=r.position) for r in requests]
        start = len(self.clicks_log)
        offsets = [(0, start + n) for n in range(len(clicks))]
        for (_, off), c in zip(offsets, clicks):
            self.clicks_log.append({**c.model_dump(), "_partition": 0, "_offset": off})
        slates, feedback = self.online.process(clicks, [r.ts for r in requests], offsets)
        for n, s in enumerate(slates):
            self.slates_log.append({**s.model_dump(), "ts": requests[n].ts, "_partition": 0,
                                    "_offset": len(self.slates_log)})
        self.clock.set(requests[-1].ts)
        drops = self.controller.drift.drops
        updates = self.controller.feedback(feedback.as_messages()) + self.controller.tick()
        if self.controller.drift.drops > drops:
            self.events.append({"t": t, "event": "drift detected"})
        for u in updates:
            self._record(u, t)
        self.online.refresh_model(force=True)
        return [Slate(s.items, s.impression_id) for s in slates]

    def _record(self, update: ModelUpdate, t: float) -> None:
        if update.kind == "minor":
            if update.action == "promoted" and update.summary.get("accepted"):
                self.events.append({"t": t, "event": "DBGD accepted"})
            return
        trigger = (update.summary or {}).get("trigger", "")
        event = {"promoted": f"retrain ({trigger}): promoted", "rejected": f"retrain ({trigger}): not promoted",
                 "rolled_back": "guardrail rollback", "kept": "guardrail kept"}[update.action]
        self.events.append({"t": t, "event": event, "reason": update.reason})
        log.info("%s: %s at %.0f s (%s)", self.name, event, t, update.reason)

    def _train(self, job: dict) -> dict:
        """The controller's retrain job, on this policy's log: what the job process does with Kafka's."""
        o = self.opts
        clicks = [c for c in self.clicks_log if job["since"] <= c["ts"] <= job["until"]]
        slates = [s for s in self.slates_log if job["since"] <= s["ts"] <= job["until"]]
        config = RetrainConfig(epochs=o.retrain_epochs, learning_rate=o.retrain_learning_rate, alpha=o.dbgd_alpha,
                               explorers=o.dbgd_explorers, seed=o.seed, half_life_s=o.popular_half_life_s, fresh_window_s=o.fresh_window_s)
        candidate = train_candidate(self.registry, clicks, slates, config, job["trigger"], based_on=job["based_on"])
        return {"version": candidate.version, "reason": candidate.reason, "summary": candidate.summary}

    def close(self) -> None:
        keys = list(self.client.scan_iter(f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start: start + 1000])


class PopularPolicy:
    """The recently most clicked items (decayed counts), leaving out what the session already clicked."""

    def __init__(self, name: str, slate_size: int = 10, half_life_s: float = 60.0) -> None:
        self.name, self.k = name, slate_size
        self.stats = ItemStats(half_life_s, 300.0)
        self.seen: dict[str, list[str]] = defaultdict(list)
        self.events: list[dict] = []

    def answer(self, requests: list[Request], t: float) -> list[Slate]:
        for r in requests:
            self.stats.click(r.item_id, r.ts, from_slate=r.impression_id is not None)
            self.seen[r.session_id].append(r.item_id)
        now = max(r.ts for r in requests)
        pool = [i for i, _ in popular_items(self.stats, now, self.k + 20)]
        out = []
        for r in requests:
            seen = set(self.seen[r.session_id])
            out.append(Slate([i for i in pool if i not in seen][: self.k], new_impression_id()))
        return out

    def close(self) -> None:
        pass


class BiasedMFPolicy:
    """river's ``reco.BiasedMF`` learning online: 1 for each click, 0 for each slot of a slate left unclicked.

    Users are the simulated users (they come back), so this baseline knows who is asking, which the
    session-based system does not.  Scoring uses the model's own parameters for every item it has
    learned about, as one matrix product per batch (``predict_one`` item by item would be the same
    numbers, far slower); items it has never seen are not recommended.
    """

    def __init__(self, name: str, slate_size: int = 10, seed: int = 0) -> None:
        self.name, self.k = name, slate_size
        self.model = reco.BiasedMF(
            n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05), l2_bias=0.0,
            l2_latent=0.001, latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed), seed=seed)
        self.shown: dict[str, list[str]] = {}   # impression -> items
        self.seen: dict[str, list[str]] = defaultdict(list)
        self.events: list[dict] = []

    def answer(self, requests: list[Request], t: float) -> list[Slate]:
        m = self.model
        for r in requests:
            shown = self.shown.pop(r.impression_id, None) if r.impression_id else None
            if shown is not None:
                for pos, item in enumerate(shown):
                    if pos != r.position:
                        m.learn_one(r.user, item, 0.0)
            m.learn_one(r.user, r.item_id, 1.0)
            self.seen[r.session_id].append(r.item_id)
        items = list(m.i_biases)
        ib = np.array([m.i_biases[i] for i in items])
        il = np.stack([m.i_latents[i] for i in items])
        out = []
        for r in requests:
            ul = m.u_latents.get(r.user)
            scores = ib + (il @ ul if ul is not None else 0.0)
            seen = set(self.seen[r.session_id])
            order = np.argsort(-scores, kind="stable")
            slate = [items[j] for j in order[: self.k + len(seen)] if items[j] not in seen][: self.k]
            imp = new_impression_id()
            self.shown[imp] = slate
            out.append(Slate(slate, imp))
        return out

    def close(self) -> None:
        pass
