import numpy as np
import pandas as pd
import pytest
import torch

from models.data import restrict_to_items
from models.evaluate import metrics_from_ranks, rank_of_targets


def test_ranks_with_ties_in_every_mode():
    scores = torch.tensor([[3.0, 1.0, 3.0, 3.0, 0.0],    # target 2: one tie group of three at the top
                           [0.1, 0.2, 0.3, 0.4, 0.5]])   # target 4: strictly best
    targets = torch.tensor([2, 4])
    assert rank_of_targets(scores, targets, "conservative").tolist() == [3.0, 1.0]
    assert rank_of_targets(scores, targets, "standard").tolist() == [1.0, 1.0]
    assert rank_of_targets(scores, targets, "median").tolist() == [2.0, 1.0]
    with pytest.raises(ValueError):
        rank_of_targets(scores, targets, "optimistic")


def test_a_model_scoring_everything_equal_gets_nothing_under_conservative_ties():
    scores = torch.zeros(4, 100)
    ranks = rank_of_targets(scores, torch.tensor([0, 1, 2, 3]), "conservative").numpy()
    assert metrics_from_ranks(ranks)["recall@20"] == 0.0


def test_recall_and_mrr_by_hand():
    ranks = np.array([1.0, 2.0, 4.0, 30.0])
    m = metrics_from_ranks(ranks, cutoffs=(2, 5))
    assert m["recall@2"] == pytest.approx(2 / 4)
    assert m["mrr@2"] == pytest.approx((1 + 1 / 2) / 4)
    assert m["recall@5"] == pytest.approx(3 / 4)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 4)


def test_unseen_test_items_are_dropped_then_short_sessions():
    test = pd.DataFrame({"SessionId": [1, 1, 1, 2, 2, 3, 3], "ItemId": ["a", "x", "b", "a", "y", "b", "a"],
                         "Time": range(7)})
    kept = restrict_to_items(test, pd.Index(["a", "b"]))
    assert kept["SessionId"].tolist() == [1, 1, 3, 3]
    assert kept["ItemId"].tolist() == ["a", "b", "b", "a"]
