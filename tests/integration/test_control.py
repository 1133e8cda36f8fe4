"""The controller's decisions against a real Redis registry: races between deciders, broken candidates,
a leader change, the guardrail.  Time is a ManualClock; outcomes are the messages workers would send.

Retrain jobs here are started by :class:`ScriptedTrainer`, which only records the job: the test then
publishes the candidate itself and leaves its outcome in the store, as the job process would
(the process itself, reading Kafka, is covered by ``test_retrain.py``)."""

from __future__ import annotations


import numpy as np
import pytest
import redis

from models.__main__ import publish_first_version
from models.recommend import ModelCache
from models.registry import ModelRegistry
from stream.control.clock import ManualClock
from stream.control.controller import Controller
from stream.control.store import RedisControlStore
from stream.settings import Settings
from tests.model_helpers import small_gru

pytestmark = pytest.mark.integration
GOOD = {"current": {"recall@20": 0.30, "mrr@20": 0.10}, "new": {"recall@20": 0.31, "mrr@20": 0.11}}


class ScriptedTrainer:
    def __init__(self) -> None:
        self.jobs: list[dict] = []

    def start(self, job: dict) -> None:
        self.jobs.append(job)

    def alive(self, job_id: str) -> bool | None:
        return True



@pytest.fixture
def world(services, prefix):
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=prefix)
    store = RedisControlStore(client, prefix)
    v1 = publish_first_version(registry, small_gru(1))

    def controller(trainer=None, **overrides) -> Controller:
        s = Settings(topic_prefix=prefix, dbgd_window=100, dbgd_window_s=1e9, retrain_every_s=0,
                     guardrail_min_baseline=1000, **overrides)
        return Controller(s, ModelRegistry(client, namespace=prefix), store, trainer or ScriptedTrainer(),
                          ManualClock(1000.0))

    return registry, store, v1, controller


def _retraining(controller, store: RedisControlStore) -> tuple[Controller, ScriptedTrainer]:
    """A controller that has started a retrain job (asked through the queue, as an operator would)."""
    trainer = ScriptedTrainer()
    c = controller(trainer)
    store.push_request({"by": "test"})
    assert c.tick() == [] and len(trainer.jobs) == 1
    return c, trainer


def _round(version: str, explorer_clicks: int = 5) -> list[dict]:
    return [{"version": version, "impressions": 50, "current": 1, "explorer": explorer_clicks} for _ in range(2)]


def _finish_job(registry: ModelRegistry, store: RedisControlStore, job: dict, offline: dict = GOOD,
                seed: int = 2) -> str:
    """What the job process does: publish a candidate trained on the job's base, leave the outcome in the store."""
    w, e = registry.ranker_weights(job["based_on"])
    candidate = registry.publish_major(small_gru(seed), w, e, parent=job["based_on"], summary={"trigger": job["trigger"]})
    store.put_job_result(job["id"], {"version": candidate, "reason": "published",
                                     "summary": {"offline": offline, "trigger": job["trigger"]}})
    return candidate


def test_a_retrain_finishing_after_a_dbgd_step_is_re_decided_on_it_and_neither_is_lost(world):
    registry, store, v1, controller = world
    c, trainer = _retraining(controller, store)
    assert trainer.jobs[0]["based_on"] == v1                           # the retrain starts on v1
    step = c.feedback(_round(v1))[0]                                   # meanwhile a DBGD round ends
    assert step.kind == "minor" and step.action == "promoted" and registry.current_version() == step.version
    candidate = _finish_job(registry, store, trainer.jobs[0])          # and the retrain finishes
    update = c.tick()[0]
    assert update.action == "promoted" and update.version == candidate == registry.current_version()
    assert update.parent == step.version and f"re-decided on {step.version}" in update.reason
    assert registry.meta(step.version)["parent"] == v1                 # the step is in the history, not overwritten


def test_a_dbgd_step_decided_while_a_major_was_promoted_is_dropped_and_says_so(world):
    registry, store, v1, controller = world

    class RacingRegistry(ModelRegistry):
        """A second decider promotes a major version between this DBGD decision and its promotion."""

        def publish_minor(self, parent, ranker, explorer, summary=None):
            version = super().publish_minor(parent, ranker, explorer, summary)
            w, e = self.ranker_weights(parent)
            self.major = self.publish_major(small_gru(3), w, e, parent=parent)
            self.promote(self.major, based_on=parent)
            return version

    c = controller()
    c.registry = RacingRegistry(registry.r, namespace=registry.ns)
    update = c.feedback(_round(v1))[0]
    assert update.kind == "minor" and update.action == "rejected" and "re-decided" in update.reason
    assert registry.current_version() == c.registry.major             # the major version was not overwritten
    assert c.rounds.version == c.registry.major and c.rounds.impressions == 0  # a new round on the new current


def test_a_candidate_whose_base_was_replaced_by_another_major_is_rejected_as_stale(world):
    registry, store, v1, controller = world
    c, trainer = _retraining(controller, store)
    w, e = registry.ranker_weights(v1)
    other = registry.publish_major(small_gru(4), w, e, parent=v1)
    registry.promote(other, based_on=v1)                               # an operator's major version meanwhile
    candidate = _finish_job(registry, store, trainer.jobs[0])
    update = c.tick()[0]
    assert update.action == "rejected" and update.version == candidate and "stale" in update.reason
    assert registry.current_version() == other


def test_a_nan_or_unloadable_candidate_is_not_promoted_and_the_running_model_keeps_serving(world):
    registry, store, v1, controller = world
    trainer = ScriptedTrainer()
    c = controller(trainer)
    serving = ModelCache(registry)
    assert serving.refresh(force=True).name == v1
    nan = {"current": GOOD["current"], "new": {"recall@20": float("nan"), "mrr@20": float("nan")}}
    store.push_request({"by": "test"})
    c.tick()
    _finish_job(registry, store, trainer.jobs[-1], offline=nan)        # a model whose training produced NaN
    update = c.tick()[0]
    assert update.action == "rejected" and "not a finite number" in update.reason
    store.push_request({"by": "test"})
    c.tick()
    candidate = _finish_job(registry, store, trainer.jobs[-1])
    registry.r.set(registry.key(candidate, "gru:0"), b"\x00" * 64)     # its GRU blob does not load
    update = c.tick()[0]
    assert update.action == "rejected" and "does not load" in update.reason
    assert registry.current_version() == v1 and serving.refresh(force=True).name == v1


def test_a_new_leader_resumes_the_round_the_drift_watch_and_the_running_job(world):
    registry, store, v1, controller = world
    old, first_trainer = _retraining(controller, store)
    assert old.feedback(_round(v1)[:1]) == []                         # half a DBGD round on the old leader
    new = controller(ScriptedTrainer())                                # the partition moves: a new leader
    step = new.feedback(_round(v1)[1:])[0]                             # finishes the round the old one began
    assert step.action == "promoted" and step.summary["impressions"] == 100
    assert new.drift.seen == 100 and new.job["id"] == first_trainer.jobs[0]["id"]
    candidate = _finish_job(registry, store, first_trainer.jobs[0])    # the old leader's job finishes
    assert new.tick()[0].version == candidate == registry.current_version()


def _outcomes(version: str, rng: np.random.Generator, ctr: float, impressions: int) -> list[dict]:
    return [{"version": version, "impressions": 100, "current": int(rng.binomial(100, ctr)), "explorer": 0}
            for _ in range(impressions // 100)]


def test_the_guardrail_rolls_back_a_major_version_that_halves_ctr_and_keeps_a_good_one(world):
    registry, store, v1, controller = world
    rng = np.random.default_rng(0)
    c = controller(explore=False, guardrail_max_impressions=20_000, guardrail_delay_s=0,
                   guardrail_click_lag_s=0)  # clicks come with their slates here
    c.feedback(_outcomes(v1, rng, 0.10, 5000))                         # the baseline: v1 at 10%
    w, e = registry.ranker_weights(v1)
    good = registry.publish_major(small_gru(5), w, e, parent=v1)
    registry.promote(good, based_on=v1)                                # an operator promotes a good version
    kept = [u for batch in range(40) for u in c.feedback(_outcomes(good, rng, 0.10, 500))]
    assert [u.action for u in kept] == ["kept"] and registry.current_version() == good
    bad = registry.publish_major(small_gru(6), w, e, parent=good)
    registry.promote(bad, based_on=good)                               # and then a bad one
    spent, rolled = 0, []
    while not rolled and spent < 20_000:
        rolled = c.feedback(_outcomes(bad, rng, 0.05, 100))
        spent += 100
    assert rolled[0].action == "rolled_back" and rolled[0].kind == "rollback" and "guardrail" in rolled[0].reason
    assert rolled[0].version == good and registry.current_version() == good and spent <= 3000
