"""The serving endpoint against real Redis and Kafka: the stream's ranking, degradation, admin, a schema-driven run."""

from __future__ import annotations

import json
import time

import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hsettings
from schemathesis.checks import not_a_server_error

from infra import local
from models.__main__ import publish_first_version
from models.data import load_dataset
from models.itemstats import ItemStats, write_snapshot
from models.registry import ModelRegistry
from stream.keys import retrain_requests
from models.sessions import SessionState, SessionStore
from serving.app import create_app
from stream.online import OnlineRecommender
from stream.records import Click, Recommendation
from stream.settings import Settings
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration


def _settings(services, prefix: str, redis_url: str | None = None, **extra) -> Settings:
    return Settings(kafka=services.kafka, redis=redis_url or services.redis, topic_prefix=prefix,
                    stats_snapshot_s=0, **extra)


def _publish_without_exploration(registry: ModelRegistry, gru) -> str:
    """A first version whose explorer equals W, so the stream's interleaved slate is W's own ranking."""
    version = publish_first_version(registry, gru, promote=False)
    w, _ = registry.ranker_weights(version)
    same = registry.publish_major(gru, w, w, summary={"source": "test"})
    registry.promote(same, based_on=registry.current_version())
    return same


@pytest.mark.parametrize("ann_min_items, stored", [(10_000, 0), (0, 0), (10_000, 20)],
                         ids=["exact-recall", "ivf-recall", "stored-ranking"])
def test_serving_returns_the_ranking_the_stream_would(services, topics, tiny_gru, shared_data, ann_min_items, stored):
    """Serving ranks itself (stored=0) or answers from the ranking the stream kept with the session (stored=20)."""
    settings = _settings(services, topics, ann_min_items=ann_min_items, session_ranking_items=stored)
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=topics)
    version = _publish_without_exploration(registry, tiny_gru)
    stream = OnlineRecommender(settings, registry, SessionStore(client, topics, settings.session_ttl_s,
                                                                settings.session_max_items))
    _, test = load_dataset("yoochoose-100k", shared_data)
    warmup = [Click(session_id=f"w{sid}", item_id=str(item), ts=1000.0 + i)
              for i, (sid, item, _) in enumerate(test.head(300).itertuples(index=False))]
    stream.process(warmup, [0.0] * len(warmup))  # some traffic, so popular items and CTR are not all equal
    session = next(g for _, g in test.groupby("SessionId", sort=False) if len(g) >= 5)
    impressions = []
    with TestClient(create_app(settings)) as http:
        for n, item in enumerate(session["ItemId"].astype(str)):
            click = Click(session_id="scripted", item_id=item, ts=2000.0 + 7.0 * n)
            slates, _ = stream.process([click], [time.time()], [(0, n)])
            http.app.state.recommender.refresh()  # what the background thread does every model_refresh_s
            got = http.get("/recommendations/scripted", params={"k": settings.slate_size})
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["model_version"] == version and body["fallback"] is False and body["reason"] is None
            assert [i["item_id"] for i in body["items"]] == slates[0].items, f"after click {n}"
            assert [i["score"] for i in body["items"]] == pytest.approx(slates[0].scores, abs=1e-5)
            impressions.append(body["impression_id"])
        unknown = http.get("/recommendations/never-seen", params={"k": 5}).json()
        assert unknown["fallback"] is True and unknown["reason"] == "unknown-session"
        assert len(unknown["items"]) == 5 and unknown["model_version"] == "popular"
        assert http.get("/readyz").json()["model_version"] == version
        assert http.app.state.recommender.model.catalog.kind == ("ivf" if ann_min_items == 0 else "exact")
        text = http.get("/metrics").text
        assert 'streamrec_serving_model{version="%s"} 1.0' % version in text
        assert 'streamrec_serving_fallbacks_total{reason="unknown-session"} 1.0' in text
        assert 'streamrec_serving_requests_total{route="/recommendations/{session_id}",status="200"}' in text
        by = "stream" if stored else "serving"
        assert f'streamrec_serving_ranked_by_total{{by="{by}"}} {float(len(impressions))}' in text, text
    published = consume(services.kafka, [f"{topics}recommendations"], timeout=30,
                        until=lambda r: {v["impression_id"] for _, v, *_ in r[f"{topics}recommendations"]}
                        >= set(impressions))
    served = [Recommendation.model_validate(v) for key, v, *_ in published[f"{topics}recommendations"]
              if v["impression_id"] in impressions]  # the wire contract of `recommendations`
    assert len(served) == len(impressions) and all(v.source == "serving" and v.session_id == "scripted"
                                                   for v in served)


def test_events_are_validated_then_produced_to_clicks(services, topics):
    settings = _settings(services, topics, serving_max_events=3)
    with TestClient(create_app(settings)) as http:
        good = {"session_id": "e1", "item_id": "9", "ts": 5.0}
        one = http.post("/events", json=good).json()
        assert one["accepted"] == 1 and one["results"][0]["status"] == "accepted" and one["results"][0]["event_id"]
        two = http.post("/events", json=[good, dict(good, item_id="10", event_id="mine")])
        assert two.status_code == 202 and [r["event_id"] for r in two.json()["results"]][1] == "mine"
        bad = http.post("/events", json=[good, {"session_id": "e1", "item_id": 7, "ts": 5.0}])
        assert bad.status_code == 422 and bad.json()["detail"] == [{"index": 1,
                                                                    "error": "item_id: Input should be a valid string"}]
        as_json = {"content-type": "application/json"}
        assert http.post("/events", content=b"{not json", headers=as_json).status_code == 400
        assert http.post("/events", json=[good] * 4).status_code == 413
        assert http.post("/events", content=b"x" * (settings.serving_max_body_bytes + 1),
                         headers=as_json).status_code == 413
        assert http.post("/events", json=[]).status_code == 422
        # a cross-site form can send text/plain without a preflight: not accepted
        plain = http.post("/events", content=json.dumps(good).encode(), headers={"content-type": "text/plain"})
        assert plain.status_code == 415 and "application/json" in plain.json()["detail"]
        # a chunked body (no Content-Length) is cut off at the limit, not read whole
        def chunks():
            for _ in range(64):
                yield b" " * (settings.serving_max_body_bytes // 8)
        assert http.post("/events", content=chunks(), headers=as_json).status_code == 413
        deep = b"[" * 100_000 + b"]" * 100_000
        assert http.post("/events", content=deep, headers=as_json).status_code == 400
        nested = http.post("/events", json={"session_id": {"a": {"b": 1}}, "item_id": "9", "ts": 5.0})
        assert nested.status_code == 422 and "session_id" in nested.json()["detail"][0]["error"]
        future = http.post("/events", json=dict(good, ts=time.time() + 10 * 24 * 3600))
        assert future.status_code == 422 and "future" in future.json()["detail"][0]["error"]
        assert http.get("/recommendations/s", params={"k": 0}).status_code == 422
        assert http.get("/recommendations/s", params={"k": settings.serving_max_k + 1}).status_code == 422
    got = consume(services.kafka, [f"{topics}clicks"], timeout=30, until=lambda r: len(r[f"{topics}clicks"]) >= 3,
                  settle=1.0)
    assert sorted(v["item_id"] for _, v, *_ in got[f"{topics}clicks"]) == ["10", "9", "9"]  # nothing from rejects
    assert all(v["event_id"] for _, v, *_ in got[f"{topics}clicks"])
    assert {k for k, *_ in got[f"{topics}clicks"]} == {b"e1"}


def test_fallbacks_while_redis_is_stopped_and_recovery(services, prefix, tiny_gru, tmp_path):
    own = local.start_redis(tmp_path / "redis")
    try:
        client = redis.Redis.from_url(own.address)
        registry = ModelRegistry(client, namespace=prefix)
        version = publish_first_version(registry, tiny_gru)
        stats = ItemStats()
        for n, item in enumerate(tiny_gru.item_ids[:30]):
            stats.click(str(item), 100.0 + n)
        write_snapshot(client, prefix, stats, 130.0)
        store = SessionStore(client, prefix)
        state = SessionState(items=[str(tiny_gru.item_ids[3])], clicks=1, first_ts=120.0, last_ts=120.0)
        store.put_many({"s": state})
        settings = _settings(services, prefix, own.address, serving_redis_retry_s=0.5)
        with TestClient(create_app(settings)) as http:
            assert http.get("/recommendations/s").json()["fallback"] is False
            local.stop_pid(own.pid)
            for _ in range(5):  # every request answered, from the cached model's popular items, flagged
                r = http.get("/recommendations/s", params={"k": 4})
                assert r.status_code == 200
                assert r.json()["fallback"] is True and r.json()["reason"] == "redis-unavailable"
                assert [i["item_id"] for i in r.json()["items"]] == [str(i) for i in tiny_gru.item_ids[26:30][::-1]]
            assert http.get("/healthz").status_code == 200
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["redis"] is False
            own = local.start_redis(tmp_path / "redis", port=int(own.address.rsplit(":", 1)[1].split("/")[0]))
            # restarted on its data directory: the model and the session's state come back from the AOF
            assert ModelRegistry(redis.Redis.from_url(own.address), namespace=prefix).current_version() == version
            assert SessionStore(redis.Redis.from_url(own.address), prefix).get("s").items == state.items
            time.sleep(0.6)
            r = http.get("/recommendations/s")
            assert r.status_code == 200 and r.json()["fallback"] is False, r.json()
            assert http.get("/readyz").status_code == 200
            assert 'streamrec_serving_fallbacks_total{reason="redis-unavailable"} 5.0' in http.get("/metrics").text
    finally:
        local.stop_pid(own.pid)


def test_a_session_state_that_does_not_decode_costs_only_that_session(services, prefix, tiny_gru):
    """Serving batches concurrent requests into one state read: one damaged blob must not fail the others."""
    client = redis.Redis.from_url(services.redis)
    publish_first_version(ModelRegistry(client, namespace=prefix), tiny_gru)
    store = SessionStore(client, prefix)
    store.put_many({"fine": SessionState(items=[str(tiny_gru.item_ids[0])], clicks=1, first_ts=1.0, last_ts=1.0)})
    client.set(store.key("damaged"), b'{"items": 7, "n": "x"}\0\x01\x02\x03')  # not a state this code wrote
    assert store.get_many(["fine", "damaged"])["damaged"] is None
    with TestClient(create_app(_settings(services, prefix))) as http:
        damaged, fine = http.get("/recommendations/damaged"), http.get("/recommendations/fine")
        assert damaged.status_code == 200 and damaged.json()["reason"] == "unknown-session", damaged.text
        assert fine.status_code == 200 and not fine.json()["fallback"] and fine.json()["items"], fine.text


def test_admin_routes_need_the_token(services, prefix, tiny_gru):
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=prefix)
    v1 = publish_first_version(registry, tiny_gru)
    w, e = registry.ranker_weights(v1)
    major = registry.publish_major(tiny_gru, w * 0.5, e * 0.5)
    registry.promote(major, based_on=v1)
    v2 = registry.publish_minor(major, w * 2, e * 2)
    registry.promote(v2, based_on=major)
    with TestClient(create_app(_settings(services, prefix))) as http:
        disabled = http.post("/admin/rollback")
        assert disabled.status_code == 403 and "disabled" in disabled.json()["detail"]
    with TestClient(create_app(_settings(services, prefix, admin_token="s3cret"))) as http:
        missing = http.post("/admin/rollback")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert http.post("/admin/rollback", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert http.post("/admin/retrain", headers={"Authorization": "Bearer nope"}).status_code == 403
        auth = {"Authorization": "Bearer s3cret"}
        done = http.post("/admin/rollback", headers=auth)
        assert done.status_code == 200 and done.json() == {"previous": v2, "current": v1}  # the previous major
        assert registry.current_version() == v1
        assert http.app.state.recommender.model_name == v1
        assert http.post("/admin/rollback", headers=auth, json={"to": "v404"}).status_code == 409
        queued = http.post("/admin/retrain", headers=auth)
        assert queued.status_code == 202 and queued.json()["queued"] == 1
        assert json.loads(client.lindex(retrain_requests(prefix), 0))["request_id"] == queued.json()["request_id"]
    got = consume(services.kafka, [f"{prefix}model-updates"], timeout=30,
                  until=lambda r: len(r[f"{prefix}model-updates"]) >= 1)
    update = got[f"{prefix}model-updates"][0][1]
    assert update["kind"] == "rollback" and update["action"] == "rolled_back" and update["reason"]


def test_no_5xx_anywhere_in_the_openapi_schema(services, topics, tiny_gru):
    """schemathesis generates requests from /openapi.json (paths, k, bodies, tokens); none may get a server error.

    Driven through hypothesis directly (one ``@given`` per operation) rather than schemathesis' pytest
    plugin, whose fixture loader does not run on this pytest.
    """
    client = redis.Redis.from_url(services.redis)
    publish_first_version(ModelRegistry(client, namespace=topics), tiny_gru)
    SessionStore(client, topics).put_many({"known": SessionState(items=[str(tiny_gru.item_ids[1])], clicks=1,
                                                                 first_ts=1.0, last_ts=1.0)})
    app = create_app(_settings(services, topics, admin_token="s3cret"))
    calls: dict[str, int] = {}
    with TestClient(app):  # runs the lifespan: model loaded, refresher running
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for result in schema.get_all_operations():
            operation = result.ok()

            @hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy())
            def run(case) -> None:
                calls[operation.label] = calls.get(operation.label, 0) + 1
                case.call_and_validate(checks=[not_a_server_error])

            run()
    assert {"GET /recommendations/{session_id}", "POST /events", "POST /admin/rollback",
            "POST /admin/retrain", "GET /readyz"} <= set(calls), calls
