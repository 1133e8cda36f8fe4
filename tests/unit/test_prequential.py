"""The prequential scorer on a scripted log whose answers are known."""

from __future__ import annotations

import pandas as pd

from models.prequential import Prequential, log_order, ordered, targets

# two sessions interleaved in time; item "z" never seen before it is clicked; "q" ends session 2
LOG = pd.DataFrame({"SessionId": [7, 8, 7, 8, 7, 8],
                    "ItemId": ["a", "b", "c", "z", "a", "q"],
                    "Time": [1396437460.0 + t for t in range(6)]})


def test_targets_pair_each_click_with_its_sessions_next_one_and_mark_unseen_items():
    got = [(t.index, t.session, t.item, t.next_item, t.unseen) for t in targets(LOG, known={"a", "b", "c", "q"})]
    # the last click of each session (indices 4 and 5) has no target
    assert got == [(0, "7", "a", "c", False), (1, "8", "b", "z", True), (2, "7", "c", "a", False),
                   (3, "8", "z", "q", False)]


def test_hits_ranks_missing_and_unseen_are_counted_as_scripted():
    score = Prequential(k=3)
    score.add(0, "c", False, ["c", "x", "y"])        # rank 1
    score.add(1, "z", True, ["z"])                   # unseen: not scored even though it is there
    score.add(2, "a", False, ["x", "y", "z", "a"])   # rank 4: beyond k, a miss
    score.add(3, "q", False, None)                   # no slate came: a miss, and missing
    s = score.summary()
    assert (s["scored"], s["unseen"], s["missing"]) == (3, 1, 1)
    assert s["hit_rate"] == 1 / 3 and s["mrr"] == 1 / 3
    assert score.windows(2) == [(2, 0.5)]


def test_an_order_key_replays_session_after_session():
    digi = pd.DataFrame({"SessionId": [2, 1, 1, 2], "ItemId": ["x", "a", "b", "y"], "Time": [0.0, 0.0, 1.0, 1.0]})
    assert log_order(digi) == "session" and log_order(LOG) == "time"
    assert ordered(digi).ItemId.tolist() == ["a", "b", "x", "y"]
    assert [(t.item, t.next_item) for t in targets(digi)] == [("a", "b"), ("x", "y")]
