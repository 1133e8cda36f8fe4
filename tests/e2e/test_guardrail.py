"""The rollback guardrail end to end: a real worker, the closed-loop simulator clicking on its slates, and an
operator who promotes first a good major version, then a deliberately bad one."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import redis
import torch

from models.__main__ import publish_first_version
from models.gru4rec import GRU4Rec, GRU4RecParams
from models.registry import ModelRegistry
from simulator.clickmodel import ClickModel
from simulator.loop import ClosedLoop
from simulator.organic import organic_log
from simulator.population import Population
from simulator.scenario import Scenario
from simulator.world import World, WorldConfig
from stream.settings import Settings
from tests.kafka_helpers import ServiceProcess, consume

pytestmark = pytest.mark.e2e
MAX_IMPRESSIONS = 3000


def _updates(services, topics: str, until, timeout: float) -> list[dict]:
    got = consume(services.kafka, [f"{topics}model-updates"], timeout=timeout,
                  until=lambda r: until([v for _, v, *_ in r[f"{topics}model-updates"]]))
    return [v for _, v, *_ in got[f"{topics}model-updates"]]


def test_a_bad_major_version_is_rolled_back_while_the_simulator_runs_and_a_good_one_is_kept(
        services, topics, stream_env, tmp_path):
    world = World(WorldConfig(n_items=500, n_users=200, seed=1, launched_later=0.0))
    clicks = ClickModel(world, Scenario(launches=False))
    log = organic_log(Population(world, clicks, seed=2), 3000)
    gru = GRU4Rec(GRU4RecParams(layers=[48], n_epochs=3, loss="cross-entropy", n_sample=256, batch_size=64,
                                learning_rate=0.05, seed=1), device="cpu").fit(log)
    registry = ModelRegistry(redis.Redis.from_url(services.redis), namespace=topics)
    v1 = publish_first_version(registry, gru)
    env = dict(stream_env, STREAMREC_EXPLORE="false", STREAMREC_DRIFT_RETRAIN="false",  # the guardrail alone acts
               STREAMREC_GUARDRAIL_ALPHA="0.001",
               STREAMREC_GUARDRAIL_MIN_BASELINE="800", STREAMREC_GUARDRAIL_BASELINE_IMPRESSIONS="4000",
               STREAMREC_GUARDRAIL_MAX_IMPRESSIONS=str(MAX_IMPRESSIONS), STREAMREC_RETRAIN_CHECK_S="1",
               STREAMREC_GUARDRAIL_DELAY_S="5", STREAMREC_GUARDRAIL_CLICK_LAG_S="1")  # users click within ~1 s
    worker = ServiceProcess(["stream", "worker"], env, tmp_path / "worker.log").start()
    loop = ClosedLoop(Settings(kafka=services.kafka, topic_prefix=topics), Population(world, clicks, seed=3), clicks,
                      rate=150, duration=100.0, slate_timeout=5.0, window_s=5.0)
    summary: dict = {}
    simulator = threading.Thread(target=lambda: summary.update(loop.run()), daemon=True)
    try:
        simulator.start()
        time.sleep(20)                                                   # the baseline: v1's CTR
        w, e = registry.ranker_weights(v1)
        good = registry.publish_major(gru, w, e, parent=v1, summary={"by": "test", "what": "the same model"})
        registry.promote(good, based_on=v1)
        kept = _updates(services, topics, lambda us: any(u.get("action") in ("kept", "rolled_back") for u in us), 90)
        verdict = next((u for u in kept if u.get("action") in ("kept", "rolled_back")), None)
        assert verdict is not None, (kept, worker.log()[-3000:])
        assert verdict["action"] == "kept" and verdict["version"] == good, verdict  # no false alarm
        time.sleep(10)  # the good version's own CTR becomes the next baseline (GUARDRAIL_MIN_BASELINE impressions)
        bad_gru = GRU4Rec.load(io.BytesIO(registry.gru_blob(v1)))
        with torch.no_grad():                                            # embeddings of the wrong items
            perm = torch.from_numpy(np.random.default_rng(0).permutation(bad_gru.model.Wy.weight.shape[0]))
            bad_gru.model.Wy.weight.copy_(bad_gru.model.Wy.weight[perm])
        bad = registry.publish_major(bad_gru, -w, -e, parent=good, summary={"by": "test", "what": "deliberately bad"})
        promoted_at = time.monotonic()
        registry.promote(bad, based_on=good)
        updates = _updates(services, topics, lambda us: any(u.get("action") == "rolled_back" for u in us), 90)
        rollback = next((u for u in updates if u.get("action") == "rolled_back"), None)
        assert rollback is not None, (updates, worker.log()[-3000:])
        took = time.monotonic() - promoted_at
        assert worker.alive(), worker.log()[-3000:]
    finally:
        simulator.join(timeout=120)
        worker.stop()
    assert rollback["kind"] == "rollback" and rollback["parent"] == bad and rollback["version"] == good
    assert "guardrail" in rollback["reason"] and rollback["summary"]["impressions"] <= MAX_IMPRESSIONS
    assert registry.current_version() == good
    assert took < 90 and summary.get("failed_deliveries") == 0
