"""V-SKNN on a tiny log against neighbours and scores worked out by hand."""

from __future__ import annotations

import pytest

from models.vsknn import VSKNN

LOG = [("s1", "a"), ("s1", "b"), ("s1", "c"), ("s2", "b"), ("s2", "d"), ("s3", "a"), ("s3", "d"), ("s4", "e")]


def knn(**kwargs) -> VSKNN:
    model = VSKNN(**kwargs)
    for t, (session, item) in enumerate(LOG, 1):
        model.learn(session, item, float(t))
    return model


def test_scores_by_hand_with_the_two_nearest_neighbours():
    # current session [a, b]: weights a 1/2, b 1 (div); similarities s1 1.5, s2 1.0, s3 0.5; k=2 keeps s1 and s2;
    # both share b, the last item (step 1, decay 1): s1 votes 1.5 for a, b, c; s2 votes 1.0 for b, d
    assert knn(k=2).scores(["a", "b"]) == pytest.approx({"a": 1.5, "b": 2.5, "c": 1.5, "d": 1.0})
    assert knn(k=2).recommend(["a", "b"], 3, exclude_items={"a", "b"}) == [("c", 1.5), ("d", 1.0)]


def test_a_neighbour_sharing_only_an_older_item_votes_with_the_decay_of_its_step():
    # k=3 adds s3 (similarity 0.5): it shares a, two steps back (decay 1/2): 0.25 for a and d
    assert knn(k=3).scores(["a", "b"]) == pytest.approx({"a": 1.75, "b": 2.5, "c": 1.5, "d": 1.25})


def test_only_the_most_recent_sessions_are_sampled():
    # sample_size=2: the two most recent sessions holding a or b are s3 (t=7) and s2 (t=5); s1 is never a neighbour
    assert knn(k=10, sample_size=2).scores(["a", "b"]) == pytest.approx({"a": 0.25, "b": 1.0, "d": 1.25})


def test_linear_weighting_and_the_session_itself_left_out():
    model = knn(k=10, weighting="linear", weighting_score="same")
    # linear: a (position 1 of 2) 0.9, b 1.0; s1 0.9 + 1.0, s2 1.0, s3 0.9; no decay by step
    assert model.scores(["a", "b"]) == pytest.approx({"a": 1.9 + 0.9, "b": 1.9 + 1.0, "c": 1.9, "d": 1.0 + 0.9})
    assert "e" not in model.scores(["e"], exclude_session="s4")  # its only holder is itself


def test_learning_click_by_click_keeps_a_bounded_recent_list_per_item():
    model = VSKNN(k=5, sample_size=3)
    for t in range(10):
        model.learn(f"s{t}", "x", float(t))
    assert list(model.item_sessions["x"]) == ["s7", "s8", "s9"]
    model.learn("s7", "y", 10.0)  # s7 is active again: the most recent holder of x as well
    assert list(model.item_sessions["x"]) == ["s8", "s9", "s7"]
    with pytest.raises(ValueError):
        VSKNN(weighting="cubic")
