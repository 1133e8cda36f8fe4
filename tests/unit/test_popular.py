from stream.popular import MostClicked


def test_top_is_by_count_then_item_id_and_updates_after_new_clicks():
    pop = MostClicked()
    pop.add_many(["b", "a", "c", "c"])
    assert pop.top(2) == [("c", 2), ("a", 1)]
    pop.add_many(["a", "a"])
    assert pop.top(2) == [("a", 3), ("c", 2)]
    assert pop.top(10) == [("a", 3), ("c", 2), ("b", 1)]


def test_load_restores_counts():
    pop = MostClicked()
    pop.load([("x", 5), ("y", 1)])
    pop.add_many(["y"])
    assert pop.top(1) == [("x", 5)]
    assert pop.counts["y"] == 2
