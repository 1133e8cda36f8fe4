"""The model-lifecycle controller: the one place where model decisions are made.

Every decision — a DBGD step, starting a retrain, promoting or rejecting its candidate, rolling back —
is made here, by one leader (the worker that owns the single partition of ``dbgd-feedback``; the
Faust agent in :mod:`stream.agents` only feeds it messages and ticks).  The controller is plain
Python: a registry, a store, a trainer and a clock are handed in, so tests and the online study
drive exactly this code with simulated time.

What it is made of (one room each): :class:`~stream.control.dbgd_rounds.DbgdRounds` (the minor
update), :class:`~stream.control.drift.CtrDriftDetector` (ADWIN on CTR),
:class:`~stream.control.retrain_policy.RetrainPolicy` (when and on which window),
:class:`~stream.control.gate.PromotionGate` (offline not worse), :class:`~stream.control.guardrail.Guardrail`
(online CTR after a major promotion).

Promotions are compare-and-set (:meth:`models.registry.ModelRegistry.promote`): each names the version
it was decided on.  If another version became current meanwhile, the decision is made again on the new
one: a retrain's candidate whose base moved on only by DBGD steps (same GRU, so the offline comparison
still holds) is promoted on the new current version; one whose base was replaced by another major
version or a rollback is rejected; a DBGD round's outcome, which was about the old W, is dropped and a
new round starts.  Every promotion, rejection, rollback and guardrail verdict is returned as a
:class:`~stream.records.ModelUpdate` for ``model-updates``, with its reason.

State that must survive a leader change (the DBGD round, the drift detector, the retrain policy, the
guardrail, the running job, CTR tallies) is written to the store after every call and read back when
another instance wrote last.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict

import numpy as np

from models.interleave import team_clicks
from models.registry import InvalidModel, ModelRegistry, RegistryError, StaleBase
from stream.control.clock import Clock, SystemClock
from stream.control.dbgd_rounds import DbgdRounds, Step
from stream.control.drift import CtrDriftDetector
from stream.control.gate import PromotionGate
from stream.control.guardrail import GuardVerdict, Guardrail
from stream.control.retrain_policy import Due, RetrainPolicy
from stream.control.store import ControlStore
from stream.control.trainer import Trainer
from stream.records import ModelUpdate
from stream.settings import Settings

log = logging.getLogger(__name__)


class Controller:
    def __init__(self, settings: Settings, registry: ModelRegistry, store: ControlStore, trainer: Trainer,
                 clock: Clock | None = None) -> None:
        self.s, self.registry, self.store, self.trainer = settings, registry, store, trainer
        self.clock = clock or SystemClock()
        self.me, self.seq = uuid.uuid4().hex, 0
        self._fresh()
        self._lineage_cache: OrderedDict[str, str] = OrderedDict()
        self._weights: tuple[str, np.ndarray, np.ndarray] | None = None

    def _fresh(self) -> None:
        s = self.s
        self.rounds = DbgdRounds(s.dbgd_alpha, s.dbgd_eta, s.dbgd_window, s.dbgd_window_s, s.seed, s.dbgd_explorers)
        self.drift = CtrDriftDetector(s.drift_delta, s.drift_min_impressions, s.drift_retrain_after)
        self.policy = RetrainPolicy(s.retrain_every_s, s.retrain_every_clicks, s.retrain_window_s)
        self.gate = PromotionGate(s.retrain_margin)
        self.guard = Guardrail(s.guardrail_alpha, s.guardrail_beta, s.guardrail_drop, s.guardrail_min_baseline,
                               s.guardrail_max_impressions, s.guardrail_delay_s, s.guardrail_click_lag_s)
        self.job: dict | None = None
        self.tally: dict[str, list[int]] = {}   # major lineage -> [impressions, clicks] of its recent outcomes
        self.last_retrain: dict | None = None
        self.lineage_now: str | None = None     # the major version the current one is built on, as last seen

    # ------------------------------------------------------------------ entry points

    def handle(self, messages: list[dict]) -> list[ModelUpdate]:
        """What the agent calls with a batch of ``dbgd-feedback`` messages: outcomes, and ticks (``{"tick": ts}``)."""
        feedback = [m for m in messages if "tick" not in m]
        ticked = len(feedback) < len(messages)
        self._resume()
        updates = self._feedback(feedback) if feedback else []
        if ticked:
            updates += self._tick()
        self._persist()
        return updates

    def feedback(self, messages: list[dict]) -> list[ModelUpdate]:
        """Interleaving outcomes from the workers: ``{version, impressions, current, explorer, explorer2...}`` each."""
        return self.handle(messages)

    def tick(self) -> list[ModelUpdate]:
        """A timer's tick: look at the running retrain, or start one that is due."""
        return self.handle([{"tick": self.clock()}])

    # ------------------------------------------------------------------ outcomes: drift, guardrail, DBGD

    def _feedback(self, messages: list[dict]) -> list[ModelUpdate]:
        current = self.registry.current_version()
        if current is None:
            return []
        now, updates = self.clock(), []
        self._follow(current)
        for m in messages:
            impressions = int(m.get("impressions", 0))
            clicks = sum(team_clicks(m).values())
            self._watch_drift(impressions, clicks, now)
            lineage = self._lineage(m.get("version"))
            if lineage is not None:
                self._count(lineage, impressions, clicks)
                if self.guard.watching is not None and lineage == self.guard.watching["version"]:
                    verdict = self.guard.observe(impressions, clicks, now)
                    if verdict is not None:
                        updates += self._guard_verdict(verdict, now)
                        current = self.registry.current_version() or current
            if self.s.explore:
                w, w_explorer = self._ranker(current)
                step = self.rounds.observe(current, w, w_explorer, m, now)
                if step is not None:
                    updates.append(self._promote_step(step, now))
                    current = self.registry.current_version() or current
        return updates

    def _follow(self, current: str) -> None:
        """Notice a major version that became current without this controller (an operator's ``publish``): the
        guardrail watches it too.  A rollback's target (an older major) is not watched: it is the known-good one."""
        lineage = self._lineage(current)
        if lineage is None or lineage == self.lineage_now:
            return
        before, self.lineage_now = self.lineage_now, lineage
        watched = self.guard.watching["version"] if self.guard.watching else None
        majors = self.registry.majors()
        if before is not None and lineage != watched and majors and majors[-1] == lineage:
            log.info("major %s became current outside the controller; the guardrail watches it", lineage)
            self._watch(lineage, before)

    def _watch_drift(self, impressions: int, clicks: int, now: float) -> None:
        if self.drift.update(impressions, clicks, now):
            before, after = self.drift.last_change
            log.warning("CTR drift: ADWIN found a drop (CTR %.4f before, %.4f in the newest %d impressions)",
                        before, after, self.drift.state()["window"])
        due, cut_ts = self.drift.retrain_due()
        if due and self.s.drift_retrain:
            log.warning("requesting a major retrain on the traffic since the CTR drop")
            self.policy.request("drift", since=cut_ts, ctr=self.drift.ctr)

    def _promote_step(self, step: Step, now: float) -> ModelUpdate:
        new = self.registry.publish_minor(step.based_on, step.weights, step.explorers, step.summary)
        try:
            self.registry.promote(new, based_on=step.based_on)
        except StaleBase as err:
            self.rounds.moved_on(err.current, now)
            reason = (f"re-decided: the round compared W and W~ of {step.based_on}, but {err.current} is current now; "
                      f"its outcome is dropped and a new round starts on {err.current}")
            log.warning("DBGD step %s %s", new, reason)
            return ModelUpdate(version=new, kind="minor", parent=step.based_on, action="rejected", reason=reason,
                               summary=step.summary)
        except (InvalidModel, LookupError) as err:
            self.rounds.moved_on(step.based_on, now)
            return ModelUpdate(version=new, kind="minor", parent=step.based_on, action="rejected", reason=str(err),
                               summary=step.summary)
        self.rounds.moved_on(new, now)
        log.info("DBGD round %d on %s: clicks per team %s in %d impressions -> %s %s",
                 step.summary["rounds"], step.based_on, step.summary["clicks"], step.summary["impressions"],
                 "accepted, W moved" if step.accepted else "kept W", new)
        return ModelUpdate(version=new, kind="minor", parent=step.based_on, action="promoted",
                           reason=f"explorer(s) {step.summary['winners']} won the round" if step.accepted
                           else "W kept, new explorers drawn",
                           summary=step.summary)

    def _guard_verdict(self, verdict: GuardVerdict, now: float) -> list[ModelUpdate]:
        summary = {"impressions": verdict.impressions, "clicks": verdict.clicks, "baseline_ctr": verdict.baseline_ctr}
        if verdict.action == "keep":
            log.info("guardrail keeps %s: %s", verdict.version, verdict.reason)
            return [ModelUpdate(version=verdict.version, kind="major", parent=verdict.previous, action="kept",
                                reason=verdict.reason, summary=summary)]
        current = self.registry.current_version()
        if current is None or self._lineage(current) != verdict.version:
            log.info("guardrail: %s is no longer current; nothing to roll back", verdict.version)
            return []
        try:
            target = self.registry.rollback(to=verdict.previous, based_on=current)
        except (RegistryError, LookupError) as err:
            log.error("guardrail could not roll %s back to %s: %s", current, verdict.previous, err)
            return []
        self.rounds.moved_on(target, now)
        self.lineage_now = self._lineage(target)
        log.warning("guardrail rolled %s back to %s: %s", current, target, verdict.reason)
        return [ModelUpdate(version=target, kind="rollback", parent=current, action="rolled_back",
                            reason=f"guardrail: {verdict.reason}", summary=summary)]

    # ------------------------------------------------------------------ ticks: retrains and their promotion

    def _tick(self) -> list[ModelUpdate]:
        now, updates = self.clock(), []
        if self.job is not None:
            updates += self._check_job(now)
        if self.job is None and self.registry.current_version() is not None:
            queued = None if self.policy.waiting else self.store.pop_request()
            due = self.policy.due(now, queued, self.store.clicks_total())
            if due is not None:
                self._start_job(due, now)
                if self.job is not None:
                    updates += self._check_job(now)  # an inline trainer is done already
        return updates

    def _start_job(self, due: Due, now: float) -> None:
        job = {"id": uuid.uuid4().hex[:16], "trigger": due.trigger, "since": due.since, "until": now,
               "based_on": self.registry.current_version(), "started": now}
        self.policy.started(now, self.store.clicks_total())
        log.info("major retrain (%s) on %s over the log since %.0f", due.trigger, job["based_on"], due.since)
        self.job = job
        self._persist()  # the job is on record before it runs: a new leader looks for its outcome
        try:
            self.trainer.start(job)
        except Exception as err:  # noqa: BLE001 - a retrain that cannot start must not stop the controller
            log.exception("could not start the retrain job")
            self.job, self.last_retrain = None, {**job, "outcome": f"could not start: {err!r}"}

    def _check_job(self, now: float) -> list[ModelUpdate]:
        job = self.job
        result = self.store.job_result(job["id"])
        if result is None:
            if self.trainer.alive(job["id"]) is False:
                reason = "the retrain process ended without an outcome"
            elif now - job["started"] > self.s.retrain_timeout_s:
                reason = f"no outcome after {self.s.retrain_timeout_s:.0f} s"
            else:
                return []
            log.error("major retrain %s (%s): %s", job["id"], job["trigger"], reason)
            self.job, self.last_retrain = None, {**job, "outcome": reason}
            return []
        self.job = None
        return self._decide_major(job, result, now)

    def _decide_major(self, job: dict, result: dict, now: float) -> list[ModelUpdate]:
        version, summary = result.get("version"), result.get("summary") or {}
        self.last_retrain = {**job, "finished": now, "version": version, "outcome": result.get("reason")}
        if version is None:
            log.warning("major retrain (%s) produced no candidate: %s", job["trigger"], result.get("reason"))
            return []
        verdict = self.gate.judge(summary.get("offline"))
        if not verdict.promote:
            return [self._rejected(version, job["based_on"], verdict.reason, summary)]
        based_on, note = job["based_on"], ""
        try:
            try:
                self.registry.promote(version, based_on=based_on)
            except StaleBase as err:
                if err.current is None or self._lineage(err.current) != self._lineage(based_on):
                    return [self._rejected(version, based_on, f"stale: trained on {based_on}, but {err.current} "
                                                             "(another major version or a rollback) is current now",
                                           summary)]
                note = f"; re-decided on {err.current} (only DBGD steps since {based_on}: the same GRU4Rec)"
                based_on = err.current
                self.registry.promote(version, based_on=based_on)
        except (RegistryError, LookupError) as err:
            return [self._rejected(version, based_on, f"not promotable: {err}", summary)]
        self.last_retrain["outcome"] = "promoted"
        self.rounds.moved_on(version, now)
        self._watch(version, based_on)
        self.lineage_now = version
        log.info("promoted major %s (%s)%s", version, verdict.reason, note)
        return [ModelUpdate(version=version, kind="major", parent=based_on, action="promoted",
                            reason=verdict.reason + note, summary=summary)]

    def _rejected(self, version: str, based_on: str | None, reason: str, summary: dict) -> ModelUpdate:
        log.warning("major %s not promoted: %s", version, reason)
        self.last_retrain["outcome"] = f"rejected: {reason}"
        return ModelUpdate(version=version, kind="major", parent=based_on, action="rejected", reason=reason,
                           summary=summary)

    def _watch(self, version: str, based_on: str) -> None:
        """Start the guardrail on a promoted major version, against the lineage it replaced."""
        if not self.s.guardrail:
            return
        previous = self.registry.previous_major(version)
        impressions, clicks = self.tally.get(self._lineage(based_on) or "", [0, 0])
        why_not = self.guard.watch(version, previous, impressions, clicks)
        if why_not:
            log.info("guardrail not watching %s: %s", version, why_not)

    # ------------------------------------------------------------------ bookkeeping

    def _lineage(self, version: str | None) -> str | None:
        """The major version (GRU) a version is built on; None for a version not in the registry."""
        if not version:
            return None
        if version not in self._lineage_cache:
            try:
                self._lineage_cache[version] = self.registry.meta(version)["gru_version"]
            except LookupError:
                return None
            if len(self._lineage_cache) > 1024:
                self._lineage_cache.popitem(last=False)
        return self._lineage_cache[version]

    def _count(self, lineage: str, impressions: int, clicks: int) -> None:
        """A lineage's recent CTR: counts scaled down past ``guardrail_baseline_impressions`` (an exponential
        window, so the baseline is the version's CTR lately, not since it began)."""
        t = self.tally.setdefault(lineage, [0, 0])
        t[0] += impressions
        t[1] += clicks
        cap = self.s.guardrail_baseline_impressions
        if t[0] > cap:
            scale = cap / t[0]
            t[0], t[1] = cap, int(round(t[1] * scale))
        if len(self.tally) > 4:
            self.tally.pop(next(iter(self.tally)))

    def _ranker(self, version: str) -> tuple[np.ndarray, np.ndarray]:
        if self._weights is None or self._weights[0] != version:
            self._weights = (version, *self.registry.ranker_weights(version))
        return self._weights[1], self._weights[2]

    def state(self) -> dict:
        """For the metrics and the dashboard: the DBGD round, the drift detector, the guardrail, retrains."""
        return {"dbgd": self.rounds.to_dict(), "drift": self.drift.state(), "guardrail": self.guard.to_dict(),
                "retrain": {"running": self.job, "last": self.last_retrain}}

    def _persist(self) -> None:
        self.seq += 1
        self.store.save({"owner": self.me, "seq": self.seq, **self.state(),
                         "detector": self.drift.to_dict(),
                         "policy": self.policy.to_dict(), "job": self.job, "tally": self.tally,
                         "lineage_now": self.lineage_now})

    def _resume(self) -> None:
        """Take over what another instance (an earlier leader) left, unless this one wrote last."""
        state = self.store.load()
        if state.get("owner") == self.me and state.get("seq") == self.seq:
            return
        self._fresh()
        if not state:
            return
        self.rounds.restore(state.get("dbgd") or {})
        if state.get("detector"):
            self.drift = CtrDriftDetector.from_dict(state["detector"])
        self.policy.restore(state.get("policy") or {})
        self.guard.restore(state.get("guardrail") or {})
        self.job = state.get("job")
        self.tally = {k: list(v) for k, v in (state.get("tally") or {}).items()}
        self.last_retrain = (state.get("retrain") or {}).get("last")
        self.lineage_now = state.get("lineage_now")
        log.info("controller resumed from the stored state (DBGD round %s, job %s)", self.rounds.rounds,
                 self.job["id"] if self.job else None)
