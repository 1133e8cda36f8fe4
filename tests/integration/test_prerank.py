"""Pre-ranking before a major promotion, against real Redis: serving's answers equal what it would rank itself."""

from __future__ import annotations

import io

import pytest
import redis
import torch

from models.__main__ import publish_first_version
from models.data import load_dataset
from models.gru4rec import GRU4Rec
from models.prerank import PreRankings, active_sessions, prerank_version
from models.registry import ModelRegistry
from models.sessions import SessionStore
from serving.recommender import ServingRecommender
from stream.online import OnlineRecommender
from stream.records import Click
from stream.settings import Settings

pytestmark = pytest.mark.integration


def test_a_promoted_version_answers_its_preranked_sessions_as_serving_would(services, prefix, tiny_gru, shared_data):
    settings = Settings(redis=services.redis, topic_prefix=prefix, stats_snapshot_s=0)
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=prefix)
    first = publish_first_version(registry, tiny_gru)
    sessions = SessionStore(client, prefix, settings.session_ttl_s, settings.session_max_items)
    stream = OnlineRecommender(settings, registry, sessions)
    _, test = load_dataset("yoochoose-100k", shared_data)
    clicks = [Click(session_id=str(s), item_id=str(i), ts=1000.0 + n)
              for n, (s, i) in enumerate(zip(test.SessionId.head(600), test.ItemId.head(600)))]
    for start in range(0, len(clicks), 100):
        stream.process(clicks[start: start + 100], [0.0] * len(clicks[start: start + 100]))
    stream.snapshot_stats(clicks[-1].ts, force=True)
    ids = sorted({c.session_id for c in clicks})
    assert len(ids) > 50
    idle = ids[0]  # written long ago as far as its key's expiry tells: outside the pre-ranking's window
    client.expire(sessions.key(idle), settings.session_ttl_s - 700)

    second = GRU4Rec.load(io.BytesIO(registry.gru_blob(first)), device="cpu")
    with torch.no_grad():  # another major version: new GRU weights, so every stored state is re-encoded
        second.model.Wy.weight.mul_(1.05)
        second.model.cells[0].weight_hh.mul_(0.9)
    candidate = publish_first_version(registry, second, promote=False)
    assert set(active_sessions(sessions, 600, 10_000)) == set(ids) - {idle}
    result = prerank_version(client, registry, candidate, sessions, settings.candidate_params(),
                             depth=settings.session_ranking_items, window_s=600, limit=10_000)
    assert result.sessions == len(ids) - 1

    moved = ids[1]  # clicks after the pre-ranking, before the promotion: its pre-ranking no longer applies
    state = sessions.get(moved)  # (written as the stream would, without moving the item statistics' snapshot:
    state.items, state.clicks, state.prev_ts, state.last_ts = state.items + [clicks[0].item_id], state.clicks + 1, \
        state.last_ts, 5000.0  # serving's own ranking below must see the statistics the pre-ranking saw)
    sessions.put_many({moved: state})
    registry.promote(candidate, based_on=first)

    serving = ServingRecommender(settings)
    serving.refresh()
    assert serving.model_name == candidate
    requests = [(sid, 10) for sid in ids]
    answered = serving.recommend_many(requests)
    by = {sid: a.ranked_by for (sid, _), a in zip(requests, answered)}
    assert by[idle] == "serving" and by[moved] == "serving"
    assert {by[sid] for sid in ids if sid not in (idle, moved)} == {"prerank"}
    assert all(a.model_version == candidate and not a.fallback for a in answered)

    w, explorers = registry.ranker_weights(candidate)  # a DBGD step on the new version: its pre-rankings still answer
    step = registry.publish_minor(candidate, w + 0.1 * (explorers.reshape(-1, w.size)[0] - w), explorers)
    registry.promote(step, based_on=candidate)
    serving.refresh()
    assert serving.model_name == step
    lagged = serving.recommend_many(requests)
    for a, b in zip(answered, lagged):
        if a.ranked_by == "prerank":  # W one step behind, named as the version that ranked it
            assert (b.ranked_by, b.model_version, b.items) == ("prerank", candidate, a.items)
        else:
            assert (b.ranked_by, b.model_version) == ("serving", step)
    registry.promote(candidate, based_on=step)
    serving.refresh()

    client.delete(PreRankings(client, prefix).key(candidate))  # now serving ranks every session itself
    ranked = serving.recommend_many(requests)
    assert {a.ranked_by for a in ranked} == {"serving"}
    for a, b in zip(answered, ranked):
        # the same function on the same state and statistics; Q-values are stored with 6 decimals and the batch
        # differs (256 sessions then, all at once now), so scores agree to float tolerance, the order exactly
        assert [i for i, _ in a.items] == [i for i, _ in b.items]
        assert [q for _, q in a.items] == pytest.approx([q for _, q in b.items], abs=1e-5)


@pytest.mark.parametrize("lag", [True, False])
def test_after_a_dbgd_step_serving_answers_from_the_ranking_before_it_unless_told_not_to(services, prefix, tiny_gru,
                                                                                          shared_data, lag):
    settings = Settings(redis=services.redis, topic_prefix=prefix, stats_snapshot_s=0, serving_stored_minor_lag=lag)
    client = redis.Redis.from_url(services.redis)
    registry = ModelRegistry(client, namespace=prefix)
    first = publish_first_version(registry, tiny_gru)
    sessions = SessionStore(client, prefix, settings.session_ttl_s, settings.session_max_items)
    _, test = load_dataset("yoochoose-100k", shared_data)
    clicks = [Click(session_id=str(s), item_id=str(i), ts=1000.0 + n)
              for n, (s, i) in enumerate(zip(test.SessionId.head(200), test.ItemId.head(200)))]
    OnlineRecommender(settings, registry, sessions).process(clicks, [0.0] * len(clicks))
    ids = sorted({c.session_id for c in clicks})
    stored = {sid: sessions.get(sid).ranking for sid in ids}
    w, explorers = registry.ranker_weights(first)
    step = registry.publish_minor(first, w + 0.05 * explorers[0] if explorers.ndim > 1 else w + 0.05 * explorers,
                                  explorers)
    registry.promote(step, based_on=first)

    serving = ServingRecommender(settings)
    serving.refresh()
    assert serving.model_name == step
    answered = serving.recommend_many([(sid, 10) for sid in ids])
    if lag:  # W's ranking from one step back, named as such
        assert all(a.ranked_by == "stream" and a.model_version == first for a in answered)
        assert [[i for i, _ in a.items] for a in answered] == [[i for i, _ in stored[sid][:10]] for sid in ids]
    else:
        assert all(a.ranked_by == "serving" and a.model_version == step for a in answered)
