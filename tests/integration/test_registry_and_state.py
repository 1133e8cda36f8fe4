"""The Redis model registry and the stream's session state, against a real Redis."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import redis
import torch

from models.__main__ import publish_first_version
from models.recommend import ModelCache
from models.registry import ModelRegistry
from stream.control.dbgd_rounds import DbgdRounds
from stream.online import OnlineRecommender
from stream.records import Click
from models.sessions import SessionState, SessionStore
from stream.settings import Settings
from tests.model_helpers import small_gru

pytestmark = pytest.mark.integration



@pytest.fixture
def registry(services, prefix) -> ModelRegistry:
    return ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix, keep=4)


def test_publish_load_minor_references_parent_and_rollback_is_exact(registry):
    gru = small_gru(1)
    v1 = publish_first_version(registry, gru)
    w, w_exp = registry.ranker_weights(v1)
    v2 = registry.publish_minor(v1, w * 1.5, w_exp * 1.5, {"accepted": True})
    assert registry.current_version() == v1
    assert registry.promote(v2, based_on=v1) == v1
    loaded = registry.load()
    assert loaded.version == v2 and loaded.meta["gru_version"] == v1 and loaded.meta["parent"] == v1
    assert not registry.r.exists(registry.key(v2, "gru:0"))  # minor versions reference, not copy
    np.testing.assert_array_equal(loaded.ranker, w * 1.5)
    items = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded.gru.forward_sequence(items)[1], gru.forward_sequence(items)[1])
    first = registry.load(v1)
    again = registry.load(v2, loaded=first)  # what a worker does on a minor step: the GRU it holds, not a reload
    assert again.gru is first.gru and registry.load(v2).gru is not first.gru
    np.testing.assert_array_equal(again.ranker, w * 1.5)
    assert registry.rollback(to=v1) == v1
    back = registry.load()
    assert back.version == v1
    np.testing.assert_array_equal(back.ranker, w)
    np.testing.assert_array_equal(back.explorers, np.atleast_2d(w_exp))
    with pytest.raises(LookupError, match="not in the registry"):
        registry.promote("v999", based_on=v1)


def test_a_service_model_cache_freezes_the_collector_once_after_its_first_model(registry):
    v1 = publish_first_version(registry, small_gru(1))
    gc.unfreeze()
    try:
        ModelCache(registry).refresh(force=True)  # a test or library user: the collector is left alone
        assert gc.get_freeze_count() == 0
        cache = ModelCache(registry, freeze_gc=True)
        assert cache.refresh(force=True).name == v1
        frozen = gc.get_freeze_count()
        assert frozen > 0
        w, w_exp = registry.ranker_weights(v1)
        registry.promote(registry.publish_minor(v1, w, w_exp, {}), based_on=v1)
        cache.refresh(force=True)  # later versions are not frozen: they may be dropped again
        assert cache.model.name != v1 and gc.get_freeze_count() <= frozen  # frozen objects freed since: fewer
    finally:
        gc.unfreeze()


def test_promotion_is_atomic_under_concurrent_readers(services, prefix):
    registry = ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix, keep=10)
    v1 = publish_first_version(registry, small_gru(1))
    w, _ = registry.ranker_weights(v1)
    versions = [v1] + [registry.publish_minor(v1, w + i, w + i, {}) for i in range(1, 6)]
    seen, errors, stop = [], [], threading.Event()

    def reader():
        r = ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix)
        while not stop.is_set():
            try:
                v = r.current_version()
                ranker, _ = r.ranker_weights(v)
                seen.append((v, float(ranker[0] - w[0])))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    current = v1
    for _ in range(30):
        for v in versions:
            registry.promote(v, based_on=current, check=False)
            current = v
    stop.set()
    for t in threads:
        t.join()
    assert not errors and len(seen) > 100
    for v, offset in seen:  # every read saw one whole version: its pointer and its own weights
        assert offset == pytest.approx(versions.index(v))


def test_old_versions_are_pruned_but_referenced_grus_kept(registry):
    v1 = publish_first_version(registry, small_gru(1))
    w, _ = registry.ranker_weights(v1)
    last, published = v1, []
    for i in range(6):
        published.append(registry.publish_minor(last, w, w, {}))
        registry.promote(published[-1], based_on=last)
        last = published[-1]
    kept = registry.versions()
    assert len(kept) == 5 and last in kept  # the newest 4, plus v1 whose GRU they all use
    assert registry.r.exists(registry.key(v1, "gru:0"))
    pruned = [v for v in published if v not in kept]
    assert pruned and all(not registry.r.exists(registry.key(v, "meta")) for v in pruned)
    assert registry.load().version == last


def test_new_gru_version_rebuilds_session_state_and_unknown_items_still_advance_it(services, prefix, registry):
    client = redis.Redis.from_url(services.redis)
    settings = Settings(topic_prefix=prefix, model_refresh_s=0.001)
    rec = OnlineRecommender(settings, registry, SessionStore(client, prefix))
    old, new = small_gru(1), small_gru(2)
    publish_first_version(registry, old)
    clicks = [Click(session_id="s", item_id=i, ts=float(t)) for t, i in enumerate(["1", "2", "never-seen"])]
    slates, _ = rec.process(clicks, [0.0] * 3, [(0, t) for t in range(3)])
    assert len(slates) == 3 and all(len(s.items) == settings.slate_size for s in slates)
    state = rec.sessions.get("s")
    assert state.items == ["1", "2", "never-seen"] and state.clicks == 3
    h2 = old.forward_sequence(old.item_indices(["1", "2"]).reshape(1, -1))[0][-1]
    assert not np.allclose(state.hidden, h2.reshape(-1).numpy())  # the unknown item moved the state

    v2 = publish_first_version(registry, new)
    slates, _ = rec.process([Click(session_id="s", item_id="3", ts=4.0)], [0.0], [(0, 3)])
    assert slates[0].model_version == v2
    state = rec.sessions.get("s")
    assert state.version == v2 and state.items == ["1", "2", "never-seen", "3"]
    hidden = new.init_hidden(1)
    for item in state.items:  # all of it with the new weights, none with the old
        hidden, _ = new.step(hidden, new.item_indices([item]))
    np.testing.assert_allclose(state.hidden, hidden.reshape(-1).numpy(), atol=1e-5)

    again, _ = rec.process([Click(session_id="s", item_id="3", ts=4.0)], [0.0], [(0, 3)])  # a redelivery
    assert rec.sessions.get("s").clicks == 4 and len(again[0].items) == settings.slate_size


def test_session_state_expires_after_inactivity(services, prefix):
    client = redis.Redis.from_url(services.redis)
    store = SessionStore(client, prefix, ttl_s=1)
    store.put_many({"idle": SessionState(items=["a"], clicks=1, first_ts=1.0, last_ts=1.0)})
    assert store.get("idle").items == ["a"] and 0 < client.ttl(store.key("idle")) <= 1
    time.sleep(2.1)
    assert store.get("idle") is None


def test_session_state_round_trips_every_field_through_one_redis_string(services, prefix):
    client = redis.Redis.from_url(services.redis)
    store = SessionStore(client, prefix, ttl_s=60, max_items=3)
    full = SessionState(items=["a", "b", "c", "d"], hidden=np.arange(6, dtype=np.float32) / 7, version="v1",
                        clicks=4, first_ts=10.0, last_ts=40.5, prev_ts=30.25, partition=2, offset=17,
                        ranking=[("x", 1.5), ("y", -0.25)], ranking_version="v1-minor-3")
    bare = SessionState(items=["z"], clicks=1, first_ts=5.0, last_ts=5.0)  # no hidden state, ranking or previous click
    client.hset(store.key("old"), mapping={"items": '["q"]', "n": 1})  # the hash layout of earlier releases
    store.put_many({"full": full, "bare": bare})
    got = store.get_many(["full", "bare", "old", "never"])
    assert got["full"].items == ["b", "c", "d"]  # the last max_items
    np.testing.assert_array_equal(got["full"].hidden, full.hidden)
    assert (got["full"].version, got["full"].clicks, got["full"].first_ts, got["full"].last_ts, got["full"].prev_ts,
            got["full"].partition, got["full"].offset, got["full"].ranking, got["full"].ranking_version) == \
        ("v1", 4, 10.0, 40.5, 30.25, 2, 17, [("x", 1.5), ("y", -0.25)], "v1-minor-3")
    assert got["bare"] == bare
    assert got["old"] is None and got["never"] is None  # an old hash reads as a new session; the next write replaces it
    assert client.type(store.key("full")) == b"string" and 0 < client.ttl(store.key("full")) <= 60


def test_the_owning_worker_reads_what_it_wrote_without_redis_until_it_forgets(services, prefix):
    """A store with a cache (the stream worker's) answers its own writes from memory, one decoded copy per read,
    expires them like the keys, and reads Redis again after forget() (partitions moved) or a failed write."""
    client = redis.Redis.from_url(services.redis)
    store = SessionStore(client, prefix, ttl_s=1, cache_size=2)
    store.put_many({"a": SessionState(items=["x"], clicks=1), "b": SessionState(items=["y"], clicks=1)})
    client.delete(store.key("a"), store.key("b"))  # behind the owner's back: only its memory still has them
    first = store.get_many(["a", "b", "c"])
    assert first["a"].items == ["x"] and first["b"].items == ["y"] and first["c"] is None
    first["a"].items.append("mutated")  # callers get their own objects
    assert store.get("a").items == ["x"]
    store.put_many({"c": SessionState(items=["z"], clicks=1)})  # over cache_size: the least recently written goes
    assert store.get("a") is None and store.get("b").items == ["y"]
    store.forget()
    assert store.get("b") is None and store.get("c").items == ["z"]  # c is still in Redis
    store.put_many({"d": SessionState(items=["w"], clicks=1)})
    client.delete(store.key("d"))
    time.sleep(1.1)  # the key's TTL has passed: the kept copy expires with it
    assert store.get("d") is None
    uncached = SessionStore(client, prefix, ttl_s=60)  # the serving endpoint's: always Redis
    uncached.put_many({"e": SessionState(items=["v"], clicks=1)})
    client.delete(uncached.key("e"))
    assert uncached.get("e") is None


def test_a_failed_state_write_leaves_redis_the_truth(services, prefix):
    good = redis.Redis.from_url(services.redis)
    store = SessionStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2), prefix, ttl_s=60,
                         cache_size=10)  # Redis unreachable for this write
    with pytest.raises(redis.ConnectionError):
        store.put_many({"s": SessionState(items=["new"], clicks=1)})
    good.set(store.key("s"), SessionStore(good, prefix)._encode(SessionState(items=["stored"], clicks=1)))
    store.r = good  # Redis is back
    assert store.get("s").items == ["stored"]  # the unwritten state was not kept


def test_states_and_their_count_are_written_by_one_script_or_not_at_all(services, prefix):
    """``put_many(..., count=...)`` (the stream's write): the states and the click count land together; when the
    count cannot be incremented the script fails before any state is written and the kept copies are dropped."""
    client = redis.Redis.from_url(services.redis)
    store = SessionStore(client, prefix, ttl_s=60, cache_size=10)
    count = f"{prefix}count-test"
    store.put_many({"a": SessionState(items=["x"], clicks=1), "b": SessionState(items=["y"], clicks=2)},
                   count=(count, 3))
    assert int(client.get(count)) == 3
    assert [store.get(s).items for s in ("a", "b")] == [["x"], ["y"]] and 0 < client.ttl(store.key("a")) <= 60
    client.set(count, "not a number")
    with pytest.raises(redis.ResponseError):
        store.put_many({"a": SessionState(items=["x", "z"], clicks=2), "c": SessionState(items=["w"], clicks=1)},
                       count=(count, 2))
    assert client.get(count) == b"not a number" and client.exists(store.key("c")) == 0
    assert store.get("a").items == ["x"]  # Redis's state, not the unwritten one


def test_redis_at_its_memory_bound_evicts_session_states_and_never_the_registry(tmp_path, tiny_gru):
    """A Redis started by the launchers is bounded and evicts only keys with a TTL (``infra/local.py``): flooding it
    with session states (as many sessions as anyone can start) leaves every model version loadable."""
    from infra import local

    own = local.start_redis(tmp_path, maxmemory="24mb")
    try:
        client = redis.Redis.from_url(own.address)
        registry = ModelRegistry(client, namespace="m-")
        v1 = publish_first_version(registry, tiny_gru)
        used_by_model = client.info("memory")["used_memory"]
        store = SessionStore(client, "m-", ttl_s=1800)
        hidden = np.zeros(tiny_gru.model.layers[-1], np.float32)
        for batch in range(60):  # 60,000 sessions of ~1.3 KB: more than three times the bound
            store.put_many({f"flood-{batch}-{n}": SessionState(items=[str(n)] * 20, hidden=hidden, clicks=20)
                            for n in range(1000)})
        assert client.dbsize() < 60_000, "no session state was evicted"
        assert client.info("memory")["used_memory"] <= 24 * 2**20 * 1.05
        assert registry.current_version() == v1 and registry.load(v1).version == v1
        assert store.get("flood-59-999") is not None  # the newest sessions are the ones kept
    finally:
        local.stop_pid(own.pid)


def test_unknown_items_reach_other_users_only_after_enough_sessions_and_stay_bounded(services, prefix, registry):
    """One client inventing item ids can neither grow the statistics without bound nor put its items in everyone's
    fresh and popular candidates; an item several sessions click does get in."""
    client = redis.Redis.from_url(services.redis)
    settings = Settings(topic_prefix=prefix, new_item_min_sessions=3, new_items_max=50, stats_snapshot_s=0)
    rec = OnlineRecommender(settings, registry, SessionStore(client, prefix))
    publish_first_version(registry, small_gru(1))
    flood = [Click(session_id="attacker", item_id=f"spam-{n}", ts=100.0 + n) for n in range(2000)]
    for i in range(0, len(flood), 200):
        rec.process(flood[i: i + 200], [0.0] * 200)
    assert not any(item.startswith("spam-") for item in rec.stats.fresh(2200.0, 100) + rec.stats.popular(2200.0, 100))
    assert len(rec.new_items.pending) <= settings.new_items_pending_max
    for n in range(3):  # three people click the new item
        rec.process([Click(session_id=f"fan-{n}", item_id="real-new", ts=3000.0 + n)], [0.0])
    assert "real-new" in rec.stats.fresh(3003.0, 5)
    for n in range(200):  # many admitted unknown items: the oldest leave the statistics
        rec.process([Click(session_id=f"u{n}-{k}", item_id=f"new-{n}", ts=4000.0 + n) for k in range(3)], [0.0] * 3)
    unknown = [item for item in rec.stats._names if item.startswith(("new-", "real-"))]
    assert len(unknown) <= settings.new_items_max * 1.1 + 1 and "new-199" in unknown and "real-new" not in unknown


@pytest.mark.parametrize("organic", [True, False])
def test_an_organic_click_credits_the_team_whose_slot_holds_its_item_only_when_asked(services, prefix, registry,
                                                                                    organic):
    client = redis.Redis.from_url(services.redis)
    settings = Settings(topic_prefix=prefix, model_refresh_s=0.001, dbgd_credit_organic=organic)
    rec = OnlineRecommender(settings, registry, SessionStore(client, prefix))
    version = publish_first_version(registry, small_gru(1))
    first, _ = rec.process([Click(session_id="s", item_id="1", ts=1.0)], [0.0], [(0, 0)])
    slate = first[0]
    slot = 3
    _, feedback = rec.process([Click(session_id="s", item_id=slate.items[slot], ts=2.0)], [0.0], [(0, 1)])
    counts = feedback.counts[version]
    credited = {team: counts.get(team, 0) for team in ("current", "explorer")}
    if organic:
        assert credited[slate.teams[slot]] == 1 and sum(credited.values()) == 1
    else:
        assert sum(credited.values()) == 0
    # a click on an item outside the session's last slate credits nobody
    last, _ = rec.process([Click(session_id="t", item_id="1", ts=3.0)], [0.0], [(0, 2)])
    outside = next(str(i) for i in range(1, 50) if str(i) not in last[0].items)
    _, feedback = rec.process([Click(session_id="t", item_id=outside, ts=4.0)], [0.0], [(0, 3)])
    assert sum(feedback.counts[version].get(team, 0) for team in ("current", "explorer")) == 0


def test_organic_credit_reaches_a_slate_made_earlier_in_the_same_batch(services, prefix, registry):
    """A replayed log sends a session's clicks together: its next click is credited against the slate its previous
    click got in the same batch."""
    client = redis.Redis.from_url(services.redis)
    settings = Settings(topic_prefix=prefix, model_refresh_s=0.001, dbgd_credit_organic=True)
    rec = OnlineRecommender(settings, registry, SessionStore(client, prefix))
    version = publish_first_version(registry, small_gru(1))
    probe, _ = rec.process([Click(session_id="probe", item_id="1", ts=1.0)], [0.0], [(0, 0)])
    likely = probe[0].items[0]  # the top of W's ranking after "1": in any slate interleaved from it
    slates, feedback = rec.process([Click(session_id="u", item_id="1", ts=2.0),
                                    Click(session_id="u", item_id=likely, ts=3.0)], [0.0, 0.0], [(0, 1), (0, 2)])
    assert likely in slates[0].items
    slot = slates[0].items.index(likely)
    counts = feedback.counts[version]
    assert counts[slates[0].teams[slot]] == 1 and counts["current"] + counts["explorer"] == 1


def test_multileaved_slates_credit_each_explorers_team_and_a_round_publishes_its_explorers(services, prefix, registry):
    """MGD end to end without Kafka: a version with three explorers multileaves four teams into every slate (each
    within one slot of its share), a click credits exactly its slot's team, and the controller's round publishes
    a minor version whose three explorers the stream loads and multileaves again."""
    client = redis.Redis.from_url(services.redis)
    settings = Settings(topic_prefix=prefix, model_refresh_s=0.001, dbgd_explorers=3, dbgd_window=5)
    rec = OnlineRecommender(settings, registry, SessionStore(client, prefix))
    version = publish_first_version(registry, small_gru(1), explorers=3)
    assert registry.load(version).explorers.shape[0] == 3
    teams = {"current", "explorer", "explorer2", "explorer3"}
    clicks = [Click(session_id=f"s{i}", item_id=str(i), ts=1.0) for i in range(6)]
    slates, feedback = rec.process(clicks, [0.0] * 6, [(0, i) for i in range(6)])
    for slate in slates:
        assert set(slate.teams) == teams
        shares = [slate.teams.count(t) for t in teams]
        assert max(shares) - min(shares) <= 1
    assert feedback.counts[version]["impressions"] == 6
    picked = [(s, s.teams.index(team)) for s, team in zip(slates, ["explorer3", "explorer3", "current", "explorer2"])]
    follow = [Click(session_id=s.session_id, item_id=s.items[pos], ts=2.0, impression_id=s.impression_id, position=pos)
              for s, pos in picked]
    _, feedback = rec.process(follow, [0.0] * 4, [(0, 10 + i) for i in range(4)])
    counts = feedback.counts[version]
    assert {t: counts.get(t, 0) for t in teams} == {"current": 1, "explorer": 0, "explorer2": 1, "explorer3": 2}
    rounds = DbgdRounds(settings.dbgd_alpha, settings.dbgd_eta, settings.dbgd_window, 1e9, explorers=3)
    w, explorers = registry.ranker_weights(version)
    step = rounds.observe(version, w, explorers, {"version": version, **counts, "impressions": 6}, now=0.0)
    assert step.summary["winners"] == [2]          # explorer3 beat the current ranker's one click; explorer2 tied
    np.testing.assert_allclose(step.weights, w + settings.dbgd_eta * (explorers[2] - w), rtol=1e-5, atol=1e-7)
    minor = registry.publish_minor(version, step.weights, step.explorers, step.summary)
    registry.promote(minor, based_on=version)
    slates, _ = rec.process([Click(session_id="later", item_id="3", ts=3.0)], [0.0], [(0, 20)])
    assert slates[0].model_version == minor and set(slates[0].teams) == teams
    assert rec.model.version.explorers.shape == (3, w.size)
