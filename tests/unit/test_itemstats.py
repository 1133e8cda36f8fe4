"""models.itemstats: the slot arrays behind the item statistics, their snapshot, and an earlier release's snapshot."""

from __future__ import annotations

import io
import json
import math

import numpy as np

from models.itemstats import ItemStats


def _traffic() -> ItemStats:
    stats = ItemStats(half_life_s=10.0, fresh_window_s=30.0)
    for n in range(3000):  # more items than the first allocation: the arrays grow
        stats.click(f"i{n % 1500}", n * 0.01, from_slate=n % 4 == 0)
        if n % 3 == 0:
            stats.shown([f"i{n % 1500}", f"shown-only-{n % 7}"])
    return stats


def test_a_snapshot_reads_back_the_same_figures_and_keeps_counting():
    stats, t = _traffic(), 31.0
    items = ["i0", "i1499", "shown-only-3", "never"]
    back = ItemStats.from_bytes(stats.to_bytes())
    np.testing.assert_array_equal(back.features_many(items, t), stats.features_many(items, t))
    assert back.popular(t, 5) == stats.popular(t, 5) and back.fresh(t, 5) == stats.fresh(t, 5)
    for s in (stats, back):
        s.click("late", 32.0)
        s.shown(["late", "shown-only-3"])
    np.testing.assert_array_equal(back.features_many(items + ["late"], 40.0), stats.features_many(items + ["late"], 40.0))
    assert back.fresh(40.0, 2) == ["late", "i1499"]


def test_a_snapshot_taken_before_more_traffic_does_not_change_with_it():
    stats = _traffic()
    snap = stats.snapshot()
    before = stats.to_bytes()
    stats.click("after", 40.0)
    stats.shown(["i0"] * 5)
    assert snap.to_bytes() == before


def test_shown_only_and_unknown_items_have_no_clicks_and_the_prior_ctr():
    stats = _traffic()
    got = stats.features_many(["shown-only-1", "never"], 31.0)
    shown_only = stats.ctr("shown-only-1")
    assert shown_only < 0.01 and stats.recent_clicks("shown-only-1", 31.0) == 0.0
    np.testing.assert_allclose(got, [[0.0, shown_only, 0.0], [0.0, 0.01, 0.0]], rtol=1e-6)
    assert "shown-only-1" not in stats.popular(31.0, 2000) and "shown-only-1" not in stats.fresh(31.0, 2000)


def test_popular_breaks_ties_by_first_click():
    stats = ItemStats(half_life_s=10.0)
    for item in ["c", "a", "b"]:
        stats.click(item, 5.0)
    stats.click("d", 5.0)
    stats.click("d", 5.0)
    assert stats.popular(5.0, 3) == ["d", "c", "a"]


def test_an_earlier_release_snapshot_reads_as_the_same_statistics():
    """Before the slot arrays, a snapshot held the clicked items in first-click order and shown counts by name."""
    decay = math.log(2) / 10.0
    buf = io.BytesIO()
    np.savez(buf, params=np.array([decay, 30.0, 1.0]), items=np.frombuffer(json.dumps(["a", "b"]).encode(), np.uint8),
             first=np.array([1.0, 2.0]), counts=np.array([[2.0, 3.0], [1.0, 2.0]]),
             slate_clicks=np.array([1, 0], dtype=np.int64),
             shown_items=np.frombuffer(json.dumps(["b", "c", "a"]).encode(), np.uint8),
             shown=np.array([4, 2, 6], dtype=np.int64))
    stats = ItemStats.from_bytes(buf.getvalue())
    assert math.isclose(stats.recent_clicks("a", 13.0), 2.0 * 0.5) and stats.ctr("a") == 1.2 / 26
    assert stats.ctr("c") == 0.2 / 22 and stats.recent_clicks("c", 13.0) == 0.0
    assert stats.fresh(3.0, 5) == ["b", "a"] and stats.popular(3.0, 2) == ["a", "b"]
