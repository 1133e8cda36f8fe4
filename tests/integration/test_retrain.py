"""Major retrains from the Kafka log against real Kafka and Redis: new items, the promotion gate, the drift trigger.

Each retrain goes the production way: the controller starts a job process (``python -m stream retrain-job``)
that reads the log from Kafka and publishes a candidate; the controller's gate decides on a later tick."""

from __future__ import annotations

import json
import time
import random

import pytest
import redis
import torch

from models.__main__ import publish_first_version
from models.data import load_dataset
from models.prerank import PreRankings
from models.recommend import ModelCache
from models.registry import ModelRegistry
from models.sessions import SessionStore
from stream.control.controller import Controller
from stream.control.store import RedisControlStore
from stream.keys import control_state
from stream.online import OnlineRecommender
from stream.records import Click, ModelUpdate
from stream.settings import Settings
from stream.trainer import ProcessTrainer
from tests.kafka_helpers import ServiceProcess, consume, produce

pytestmark = pytest.mark.integration


def _clicks(rows) -> list[tuple[bytes, bytes]]:
    return [(str(s).encode(), json.dumps({"session_id": str(s), "item_id": str(i), "ts": float(t)}).encode())
            for s, i, t in rows]


def _real_sessions(shared_data, n: int, t0: float, split: str = "test") -> list[tuple]:
    train, test = load_dataset("yoochoose-100k", shared_data)
    data = test if split == "test" else train
    sessions = [g for _, g in data.groupby("SessionId", sort=False) if len(g) >= 2]
    sessions = sessions[:n] if split == "test" else sessions[-n:]
    rows = []
    for k, g in enumerate(sessions):
        for j, item in enumerate(g["ItemId"]):
            rows.append((f"{split}-{k}", item, t0 + 10 * k + j))
    return rows


def _retrain_now(services, topics, tmp_path, timeout: float = 240.0, **settings) -> tuple[Controller, ModelUpdate]:
    """A controller asked for a retrain: its job process runs; the decision it announces."""
    s = Settings(kafka=services.kafka, redis=services.redis, topic_prefix=topics, **settings)
    client = redis.Redis.from_url(services.redis)
    store = RedisControlStore(client, topics)
    controller = Controller(s, ModelRegistry(client, namespace=topics), store, ProcessTrainer(s, tmp_path / "jobs"))
    store.push_request({"by": "test"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        updates = controller.tick()
        if updates:
            return controller, updates[0]
        assert controller.job is not None, f"the job ended without a decision: {controller.last_retrain}"
        time.sleep(0.5)
    pytest.fail(f"no decision within {timeout} s; job log: {list((tmp_path / 'jobs').glob('*'))}")


def test_retrain_gives_new_items_embeddings_and_makes_them_recommendable(services, topics, tiny_gru, shared_data,
                                                                          tmp_path):
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=topics)
    v1 = publish_first_version(registry, tiny_gru)
    anchor = str(tiny_gru.item_ids[2000])  # a known, rarely clicked item that new items now follow
    launched = [(f"launch-{k}", item, 1000.0 + 12 * k + 0.1 * j)
                for k in range(200) for j, item in enumerate([anchor, "new-1", "new-2"])]
    older = _real_sessions(shared_data, 3000, 1000.0, split="train")  # the log: recent traffic, launches among it
    newest = _real_sessions(shared_data, 400, 50_000.0)  # held out by the retrain: the newest sessions
    rows = older + launched + newest
    produce(services.kafka, f"{topics}clicks", _clicks(rows))
    worker = OnlineRecommender(Settings(redis=services.redis, topic_prefix=topics), registry,
                               SessionStore(client, topics))  # sessions the stream answered lately
    recent = [Click(session_id=str(s), item_id=str(i), ts=float(t)) for s, i, t in newest[:50]]
    worker.process(recent, [0.0] * len(recent))

    _, outcome = _retrain_now(services, topics, tmp_path, retrain_epochs=2, retrain_learning_rate=0.02,
                              retrain_holdout=400 / 3600, retrain_margin=0.01, retrain_window_s=1e10)

    assert outcome.action == "promoted" and outcome.kind == "major", outcome.reason
    assert registry.current_version() == outcome.version != v1 and outcome.parent == v1
    summary = outcome.summary
    assert summary["new_items"] == 2 and summary["parent"] == v1 and summary["clicks"] == len(rows)
    assert set(summary["offline"]["new"]) >= {"recall@20", "mrr@20"}
    active = {c.session_id for c in recent}  # the job pre-ranked them with the candidate before reporting it
    assert summary["prerank"]["sessions"] == len(active), summary["prerank"]
    assert set(PreRankings(client, topics).get_many(outcome.version, SessionStore(client, topics).get_many(
        sorted(active)))) == active
    loaded = ModelCache(registry).refresh(force=True)
    assert {"new-1", "new-2"} <= set(loaded.item_ids)
    emb = loaded.emb[loaded.index["new-1"]]
    assert torch.count_nonzero(emb) == emb.numel()  # a learned row, not the zero row of unknown items
    hidden = loaded.hidden([None])  # a session that just clicked the anchor
    hidden, _ = loaded.version.gru.step(hidden, loaded.indices([anchor]), score=False)
    top, _ = loaded.catalog.top(hidden[-1], 40)  # the GRU recall path of the stream and serving (top-40)
    ranked = [loaded.item_ids[i] for i in top[0].tolist()]
    assert "new-1" in ranked, ranked


def test_a_worse_model_is_not_promoted(services, topics, tiny_gru, shared_data, tmp_path):
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=topics)
    v1 = publish_first_version(registry, tiny_gru)
    rng = random.Random(3)
    items = [str(i) for i in tiny_gru.item_ids]
    noise = [(f"noise-{k}", rng.choice(items), 1000.0 + k + 0.1 * j) for k in range(1500) for j in range(4)]
    produce(services.kafka, f"{topics}clicks", _clicks(noise + _real_sessions(shared_data, 300, 90_000.0)))

    # shuffled clicks at a large learning rate: the warm-started model unlearns the real transitions
    _, outcome = _retrain_now(services, topics, tmp_path, retrain_epochs=3, retrain_learning_rate=0.5,
                              retrain_holdout=300 / 1800, retrain_margin=0.01, retrain_window_s=1e10)

    assert outcome.action == "rejected" and "worse than the current version" in outcome.reason
    assert registry.current_version() == v1
    assert outcome.version in registry.versions()  # published for inspection, not promoted
    offline = registry.meta(outcome.version)["summary"]["offline"]
    assert offline["new"]["recall@20"] < offline["current"]["recall@20"] - 0.01


def test_a_ctr_drop_found_by_adwin_starts_a_retrain_in_the_worker(services, topics, stream_env, tmp_path, tiny_gru,
                                                                   shared_data):
    registry = ModelRegistry(redis.Redis.from_url(services.redis), namespace=topics)
    v1 = publish_first_version(registry, tiny_gru)
    env = dict(stream_env, STREAMREC_RETRAIN_CHECK_S="1", STREAMREC_DRIFT_MIN_IMPRESSIONS="300",
               STREAMREC_DATA_DIR=str(tmp_path / "worker-data"),
               STREAMREC_DRIFT_RETRAIN_AFTER="2000", STREAMREC_DBGD_WINDOW="1000000000",
               STREAMREC_RETRAIN_MARGIN="1.0", STREAMREC_RETRAIN_WINDOW_S="1000000")
    worker = ServiceProcess(["stream", "worker"], env, tmp_path / "worker.log").start()
    client = redis.Redis.from_url(services.redis)
    try:
        def outcome(ctr: float, n: int) -> list[tuple[None, bytes]]:
            return [(None, json.dumps({"version": v1, "impressions": 50, "current": round(50 * ctr),
                                       "explorer": 0}).encode()) for _ in range(n)]
        before_rows = _real_sessions(shared_data, 50, 500.0, split="train")  # traffic of the old regime
        produce(services.kafka, f"{topics}clicks", _clicks(before_rows))
        time.sleep(1.0)  # the change comes after them (Kafka timestamps are milliseconds)
        produce(services.kafka, f"{topics}dbgd-feedback", outcome(0.10, 20))  # 1,000 impressions at 10%
        produce(services.kafka, f"{topics}dbgd-feedback", outcome(0.0, 30))   # then no clicks at all
        deadline = time.monotonic() + 120
        def drift() -> dict:
            return json.loads(client.get(control_state(topics)) or "{}").get("drift") or {}

        while drift().get("drops", 0) < 1:
            assert time.monotonic() < deadline and worker.alive(), worker.log()[-3000:]
            time.sleep(0.2)
        assert drift()["retrain_pending"]  # waiting for traffic after the change
        # the traffic after the change, which the retrain must learn from (and nothing from before it)
        log_rows = _real_sessions(shared_data, 600, 1000.0, split="train") + _real_sessions(shared_data, 60, 9e4)
        produce(services.kafka, f"{topics}clicks", _clicks(log_rows))
        produce(services.kafka, f"{topics}dbgd-feedback", outcome(0.0, 20))   # 2,500 since the change: now retrain
        got = consume(services.kafka, [f"{topics}model-updates"], timeout=180,
                      until=lambda r: any(v.get("summary", {}).get("trigger") == "drift"
                                          for _, v, *_ in r[f"{topics}model-updates"]))
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()
    updates = [v for _, v, *_ in got[f"{topics}model-updates"] if v.get("summary", {}).get("trigger") == "drift"]
    assert updates, worker.log()[-3000:]
    assert "CTR drift: ADWIN found a drop" in worker.log()
    update = updates[0]
    # learned from the traffic after the change alone: the old regime's clicks are not in its window
    assert update["kind"] == "major" and update["parent"] == v1 and update["summary"]["clicks"] == len(log_rows)
    assert update["action"] == "promoted" and registry.current_version() == update["version"]  # margin 1.0
    jobs = list((tmp_path / "worker-data" / "retrain-logs").glob("retrain-*.log"))
    assert len(jobs) == 1  # the retrain ran in its own process, which left its log beside the worker's data
