"""Exactly once with real Kafka and Redis: a Redis outage under load, and a producer that sends every click twice.

What a read_committed reader of ``recommendations`` sees, and what Redis keeps, are compared with an
offline replay of each session's clicks (``test_faults._replayed_offline``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
import redis

from infra import local
from models.__main__ import publish_first_version
from models.registry import ModelRegistry
from stream.keys import clicks_count
from tests.integration.test_faults import _answered, _click, _replayed_offline, _scripted_sessions
from tests.kafka_helpers import ServiceProcess, consume, produce, produce_paced

pytestmark = pytest.mark.integration


def test_a_redis_outage_under_load_answers_with_fallbacks_and_applies_every_click_once_afterwards(
        services, topics, stream_env, tmp_path, tiny_gru):
    own = local.start_redis(tmp_path / "redis")
    port = int(own.address.rsplit(":", 1)[1].split("/")[0])
    client = redis.Redis.from_url(own.address)
    registry = ModelRegistry(client, namespace=topics)
    publish_first_version(registry, tiny_gru)
    sessions, records = _scripted_sessions(tiny_gru, seed=7, n=800, prefix="o")
    env = dict(stream_env, STREAMREC_REDIS=own.address, STREAMREC_BATCH_SIZE="64")
    worker = ServiceProcess(["stream", "worker"], env, tmp_path / "worker.log").start()
    slates_topic = f"{topics}recommendations"
    sender = threading.Thread(target=produce_paced, args=(services.kafka, f"{topics}clicks", records, 150.0))
    try:
        warm = [(f"warm{n}".encode(), _click(f"warm{n}", str(tiny_gru.item_ids[n]), 999.0)) for n in range(5)]
        produce(services.kafka, f"{topics}clicks", warm)  # the worker up and answering before the load begins
        consume(services.kafka, [slates_topic], timeout=120, until=lambda r: len(r[slates_topic]) >= 5)
        sender.start()
        time.sleep(2.0)
        local.stop_pid(own.pid)
        down_at = time.time()
        time.sleep(10.0)                                                   # 10 s without Redis, under load
        own = local.start_redis(tmp_path / "redis", port=port)             # its AOF: the states written before
        up_at = time.time()
        sender.join(timeout=60)
        per_session = Counter(key.decode() for key, _ in records + warm)
        got = consume(services.kafka, [slates_topic], timeout=180, settle=3.0,
                      until=lambda r: _answered(r[slates_topic], per_session)[0] == 0)
        client = redis.Redis.from_url(own.address)
        deadline = time.monotonic() + 60  # the held clicks are applied once the breaker lets a try through
        while int(client.get(clicks_count(topics)) or 0) < len(records) + len(warm) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert worker.alive(), worker.log()[-2000:]
        short, duplicates = _answered(got[slates_topic], per_session)
        assert short == 0 and duplicates == 0, (short, duplicates)
        slates = [v for _, v, *_ in got[slates_topic]]
        fallbacks = [s for s in slates if s["fallback"]]
        during = [s for s in fallbacks if down_at <= s["ts"] <= up_at + 1]
        print(f"\n[redis outage] {len(records)} clicks, {len(fallbacks)} fallback slates, worst fallback latency "
              f"{max(s['latency_ms'] for s in fallbacks):.0f} ms")
        spread = (min(s["ts"] for s in during) - down_at, up_at - max(s["ts"] for s in during)) if during else None
        assert spread is not None and max(spread) < 3.0, f"the outage's clicks were not answered throughout: {spread}"
        assert max(s["latency_ms"] for s in during) < 3000, "the breaker did not bound the latency during the outage"
        assert int(client.get(clicks_count(topics))) == len(records) + len(warm)  # every click applied, once
        _replayed_offline(client, ModelRegistry(client, namespace=topics), sessions, topics)
    finally:
        worker.stop()
        local.stop_pid(own.pid)


def test_a_producer_sending_every_click_twice_with_one_event_id_gets_one_slate_per_event(
        services, topics, stream_env, tmp_path, tiny_gru):
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=topics)
    publish_first_version(registry, tiny_gru)
    sessions, records = _scripted_sessions(tiny_gru, seed=9, n=200, prefix="d")
    with_ids = []
    for n, (key, value) in enumerate(records):
        event = dict(json.loads(value), event_id=f"e{n}")
        with_ids.append((key, json.dumps(event).encode()))
    doubled = [r for pair in zip(with_ids, with_ids) for r in pair]           # the retry right behind the original
    doubled += with_ids[: len(with_ids) // 2]                                  # and half again, much later
    worker = ServiceProcess(["stream", "worker"], dict(stream_env, STREAMREC_BATCH_SIZE="64"),
                            tmp_path / "worker.log").start()
    slates_topic = f"{topics}recommendations"
    try:
        for i in range(0, len(doubled), 200):
            produce(services.kafka, f"{topics}clicks", doubled[i: i + 200])
        per_session = Counter(key.decode() for key, _ in records)
        got = consume(services.kafka, [slates_topic], timeout=120, settle=3.0,
                      until=lambda r: _answered(r[slates_topic], per_session)[0] == 0)
        assert worker.alive(), worker.log()[-2000:]
    finally:
        worker.stop()
    per_event = Counter(v["event_id"] for _, v, *_ in got[slates_topic])
    assert len(per_event) == len(records) and set(per_event.values()) == {1}, per_event.most_common(3)
    assert int(client.get(clicks_count(topics))) == len(records)
    _replayed_offline(client, registry, sessions, topics)
