"""The registry's guarantees against a real Redis: ids never reused, compare-and-set, nothing broken promoted,
chunked blobs, rollback to earlier major versions."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import redis
import torch

from models.__main__ import publish_first_version
from models.gru4rec import GRU4Rec
from models.recall import CatalogIndex
from models.recommend import LoadedModel, ModelCache
from models.registry import InvalidModel, ModelRegistry, StaleBase, version_number

from tests.model_helpers import small_gru

pytestmark = pytest.mark.integration



@pytest.fixture
def registry(services, prefix) -> ModelRegistry:
    return ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix, keep=4)


def test_version_ids_grow_with_time_and_are_not_reused_when_the_counter_is_lost(registry):
    v1 = publish_first_version(registry, small_gru(1))
    w, e = registry.ranker_weights(v1)
    v2 = registry.publish_minor(v1, w, e)
    registry.r.delete(f"{registry.ns}model:seq")  # what a Redis that lost its last writes would have
    v3 = registry.publish_minor(v1, w, e)
    assert version_number(v1) < version_number(v2) < version_number(v3)
    assert version_number(v1) > 1_600_000_000_000  # milliseconds of Redis' clock, so they sort by time


def test_a_promotion_based_on_a_version_no_longer_current_is_refused(registry):
    v1 = publish_first_version(registry, small_gru(1))
    w, e = registry.ranker_weights(v1)
    step, major = registry.publish_minor(v1, w * 1.1, e), registry.publish_major(small_gru(2), w, e, parent=v1)
    registry.promote(major, based_on=v1)
    with pytest.raises(StaleBase) as err:
        registry.promote(step, based_on=v1)  # a DBGD step decided on v1 must not overwrite the major version
    assert err.value.current == major and registry.current_version() == major


def test_of_two_promotions_racing_on_the_same_base_exactly_one_wins(services, prefix):
    # keep all 9 versions: the winner's promotion prunes, and a pruned candidate could not even be looked up
    registry = ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix, keep=20)
    v1 = publish_first_version(registry, small_gru(1))
    w, e = registry.ranker_weights(v1)
    candidates = [registry.publish_minor(v1, w + i, e + i) for i in range(1, 9)]
    won, lost, barrier = [], [], threading.Barrier(len(candidates))

    def promote(v: str) -> None:
        barrier.wait()
        try:
            registry.promote(v, based_on=v1, check=False)
            won.append(v)
        except StaleBase:
            lost.append(v)

    threads = [threading.Thread(target=promote, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == len(candidates) - 1 and registry.current_version() == won[0]


def test_non_finite_or_misfitting_weights_are_not_published(registry):
    gru = small_gru(1)
    v1 = publish_first_version(registry, gru)
    w, e = registry.ranker_weights(v1)
    before = registry.versions()
    bad = w.copy()
    bad[3] = np.nan
    with pytest.raises(InvalidModel, match="not finite"):
        registry.publish_minor(v1, bad, e)
    with pytest.raises(InvalidModel, match="values"):
        registry.publish_major(gru, w[:-1], e[:-1])
    broken = GRU4Rec.load(io.BytesIO(registry.gru_blob(v1)))
    with torch.no_grad():
        broken.model.Wy.weight[0, 0] = float("inf")
    with pytest.raises(InvalidModel, match="Wy"):
        registry.publish_major(broken, w, e)
    assert registry.versions() == before and registry.current_version() == v1


def test_a_version_whose_gru_blob_does_not_load_is_not_promoted_and_serving_keeps_the_running_model(registry):
    v1 = publish_first_version(registry, small_gru(1))
    w, e = registry.ranker_weights(v1)
    cache = ModelCache(registry)
    assert cache.refresh(force=True).name == v1
    v2 = registry.publish_major(small_gru(2), w, e, parent=v1)
    registry.r.set(registry.key(v2, "gru:0"), b"not a torch file")  # corrupted after publishing
    with pytest.raises(InvalidModel, match="does not load"):
        registry.promote(v2, based_on=v1)
    assert registry.current_version() == v1 and cache.refresh(force=True).name == v1
    # even if something swapped the pointer without the check, a reader keeps the model it has
    registry.promote(v2, based_on=v1, check=False)
    assert cache.refresh(force=True).name == v1 and cache._failed[0] == v2


def test_a_minor_version_is_checked_without_reading_its_checked_gru_again_and_bad_weights_still_fail(registry,
                                                                                                      monkeypatch):
    v1 = publish_first_version(registry, small_gru(1))
    w, e = registry.ranker_weights(v1)
    v2 = registry.publish_major(small_gru(2), w, e, parent=v1)
    registry.promote(v2, based_on=v1)  # reads and checks v2's GRU once
    monkeypatch.setattr(registry, "_load_gru", lambda *a, **k: pytest.fail("a checked GRU was read again"))
    v3 = registry.publish_minor(v2, w + 0.01, e)
    assert registry.promote(v3, based_on=v2) == v2 and registry.current_version() == v3
    v4 = registry.publish_minor(v3, w, e)
    registry.r.set(registry.key(v4, "ranker"), np.full(w.size, np.nan, dtype=np.float32).tobytes())  # after publishing
    with pytest.raises(InvalidModel, match="not finite"):
        registry.promote(v4, based_on=v3)
    v5 = registry.publish_minor(v3, w, e)
    registry.r.set(registry.key(v5, "explorer"), b"\x00" * 6)  # not even a whole float32
    with pytest.raises(InvalidModel, match="does not load"):
        registry.promote(v5, based_on=v3)
    assert registry.current_version() == v3


def test_large_blobs_are_stored_in_chunks_no_larger_than_the_limit_and_load_back_equal(services, prefix):
    registry = ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix, chunk_bytes=4096)
    gru = small_gru(1, items=300)
    v1 = publish_first_version(registry, gru)
    chunks = registry.meta(v1)["chunks"]
    assert chunks["gru"] > 3 and chunks["emb"] > 3
    blobs = [k for k in registry.r.scan_iter(f"{prefix}model:{v1}:*") if k.decode().split(":")[-2] in
             ("gru", "optim", "emb", "items")]  # the rest (meta, W, W~) have a size set by the hidden units
    assert len(blobs) == sum(chunks.values()) and max(registry.r.strlen(k) for k in blobs) <= 4096
    loaded = registry.load(v1)
    items = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded.gru.forward_sequence(items)[1], gru.forward_sequence(items)[1])
    np.testing.assert_array_equal(registry.embeddings(v1), gru.item_embeddings()[0])


def test_the_optimiser_state_is_a_blob_of_its_own_read_only_for_a_warm_start(registry):
    """Scoring processes read the GRU without its accumulators (half the bytes); a retrain gets them back."""
    gru = small_gru(1, items=300)
    assert gru.accumulators
    v1 = publish_first_version(registry, gru)
    assert registry.meta(v1)["chunks"]["optim"] >= 1
    served = registry.load(v1).gru
    assert served.accumulators == {}
    training = registry.training_gru(v1)
    assert training.accumulators.keys() == gru.accumulators.keys()
    for name, acc in gru.accumulators.items():
        torch.testing.assert_close(training.accumulators[name], acc, rtol=0, atol=0)
    items = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(served.forward_sequence(items)[1], training.forward_sequence(items)[1])


def test_paced_blobs_are_written_and_read_no_faster_than_the_limit_and_load_back_equal(services, prefix):
    """A process sharing Redis with serving spreads a version's blobs over time instead of hogging Redis (and its
    AOF); what it stores and reads back is the same as unpaced."""
    client = redis.Redis.from_url(services.redis)
    gru = small_gru(1, items=300)
    fast = ModelRegistry(client, namespace=prefix + "fast-", chunk_bytes=4096)
    paced = ModelRegistry(client, namespace=prefix, chunk_bytes=4096, read_mb_s=0.25, write_mb_s=0.25)
    t0 = time.monotonic()
    v_fast = publish_first_version(fast, gru)
    t1 = time.monotonic()
    v = publish_first_version(paced, gru)
    t2 = time.monotonic()
    gru_bytes = sum(client.strlen(k) for k in client.scan_iter(f"{prefix}model:{v}:gru:*"))
    limit = 0.25 * 2**20
    assert t2 - t1 >= (gru_bytes - 4096) / limit and t2 - t1 > 3 * (t1 - t0), (t2 - t1, t1 - t0, gru_bytes)
    t3 = time.monotonic()
    blob = paced.gru_blob(v)
    assert time.monotonic() - t3 >= (gru_bytes - 4096) / limit
    assert blob == fast.gru_blob(v_fast) and len(blob) == gru_bytes
    np.testing.assert_array_equal(paced.embeddings(v), fast.embeddings(v_fast))


def test_a_major_version_carries_its_recall_index_and_a_switch_reads_it_instead_of_building_it(services, prefix):
    """The lists and codes are trained once, at publication; a process switching to the version (and to its DBGD
    steps) ranks with the very index it would have built, and pruning removes them with the version."""
    registry = ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix, chunk_bytes=4096,
                             index_min_items=0, keep=1, keep_majors=1)
    gru = small_gru(1, items=300)
    v1 = publish_first_version(registry, gru)
    assert registry.meta(v1)["chunks"]["index"] >= 1
    w, e = registry.ranker_weights(v1)
    step = registry.publish_minor(v1, w * 1.1, e)
    major = registry.load(v1)
    minor = registry.load(step, loaded=major)
    assert major.index is not None and minor.index == major.index
    stored = LoadedModel.from_version(major, seed=0, ann_min_items=0)
    built = CatalogIndex(*map(torch.from_numpy, gru.item_embeddings()[:2]), min_items=0)
    h = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    for got, want in zip(stored.catalog.top(h, 20), built.top(h, 20)):
        assert torch.equal(got, want)
    assert LoadedModel.from_version(minor, seed=0, previous=stored, ann_min_items=0).catalog is stored.catalog
    v2 = publish_first_version(registry, small_gru(2, items=300))  # promoted: v1 and its step are pruned
    assert v2 != v1 and not list(registry.r.scan_iter(f"{prefix}model:{v1}:index:*"))


def test_rollback_reaches_the_previous_three_major_versions_after_many_dbgd_steps(registry):
    majors = [publish_first_version(registry, small_gru(1))]
    w, e = registry.ranker_weights(majors[0])
    current = majors[0]
    for m in range(1, 5):
        for _ in range(6):  # more DBGD steps than the registry keeps versions
            step = registry.publish_minor(current, w, e)
            registry.promote(step, based_on=current)
            current = step
        majors.append(registry.publish_major(small_gru(m + 1), w, e, parent=current))
        registry.promote(majors[-1], based_on=current)
        current = majors[-1]
    assert registry.majors()[-4:] == majors[-4:]
    for expected in reversed(majors[-4:-1]):  # the previous major each time, three times
        assert registry.rollback() == expected
    assert registry.current_version() == majors[-4]
