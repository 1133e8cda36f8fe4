"""GroupWatch: when the clicks consumer counts as stuck, from librdkafka's statistics and a poll's wait."""

import json

from stream.group_watch import GroupWatch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stats(state: str, join_state: str, brokers: dict[str, tuple[int, str]]) -> str:
    return json.dumps({"cgrp": {"state": state, "join_state": join_state},
                       "brokers": {name: {"nodeid": node, "state": up} for name, (node, up) in brokers.items()}})


UP = {"localhost:9092/1": (1, "UP"), "localhost:9092/bootstrap": (-1, "INIT")}
DOWN = {"localhost:9092/1": (1, "DOWN"), "localhost:9092/bootstrap": (-1, "UP")}


def test_a_steady_group_is_never_stuck():
    clock = Clock()
    watch = GroupWatch(30.0, clock)
    for t in range(0, 300, 5):
        clock.now = float(t)
        watch.stats(stats("up", "steady", UP))
    assert watch.stuck() is None


def test_a_group_that_does_not_settle_with_a_broker_up_is_stuck_after_stuck_s():
    clock = Clock()
    watch = GroupWatch(30.0, clock)
    watch.stats(stats("up", "steady", UP))
    clock.now = 100.0
    watch.stats(stats("wait-coord", "init", UP))  # unsteady since 100
    clock.now = 129.0
    watch.stats(stats("up", "wait-join", UP))  # still unsteady: the clock does not restart
    assert watch.stuck() is None
    clock.now = 131.0
    assert watch.stuck() == "the consumer group has been up/wait-join for 31 s with a broker up"


def test_settling_in_time_clears_it():
    clock = Clock()
    watch = GroupWatch(30.0, clock)
    watch.stats(stats("wait-coord", "init", UP))
    clock.now = 20.0
    watch.stats(stats("up", "steady", UP))
    clock.now = 60.0
    assert watch.stuck() is None


def test_with_every_broker_down_there_is_nothing_to_rejoin():
    """The bootstrap placeholder (node id -1) being 'up' does not count as a broker."""
    clock = Clock()
    watch = GroupWatch(30.0, clock)
    watch.stats(stats("query-coord", "init", DOWN))
    clock.now = 600.0
    watch.stats(stats("query-coord", "init", DOWN))
    assert watch.stuck() is None
    watch.stats(stats("query-coord", "init", UP))  # the broker is back and the group still not up: 600 s
    assert watch.stuck().startswith("the consumer group has been query-coord/init for 600 s")


def test_unreadable_statistics_change_nothing_and_reset_forgets():
    clock = Clock()
    watch = GroupWatch(30.0, clock)
    watch.stats(stats("wait-coord", "init", UP))
    watch.stats("{not json")
    clock.now = 40.0
    assert watch.stuck() is not None
    watch.reset()
    assert watch.stuck() is None


def test_a_poll_is_overdue_only_after_stuck_s():
    watch = GroupWatch(30.0, Clock())
    assert watch.poll_overdue(29.9) is None
    assert watch.poll_overdue(30.0) == "a poll has not returned in 30 s"
