"""The transactional delivery's recovery decisions, with a producer that records calls (the broker side of
transactions is covered by tests/integration/test_exactly_once.py and test_cluster.py)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.delivery import Aborted, Transactional


class _FencedProducer:
    """Begins transactions and produces; its commit fails as a fenced producer's does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, *args, **kwargs) -> None:
        self.calls.append("produce")

    def poll(self, timeout: float) -> int:
        return 0

    def commit_transaction(self, timeout: float) -> None:
        raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))

    def purge(self) -> None:
        self.calls.append("purge")


def _delivery(producers_started: list[_FencedProducer]) -> Transactional:
    delivery = Transactional.__new__(Transactional)
    delivery.config, delivery.consumer, delivery.timeout_s, delivery.retired = {}, None, 1.0, False
    delivery.producer = _FencedProducer()

    def new_producer() -> _FencedProducer:
        producers_started.append(_FencedProducer())
        return producers_started[-1]

    delivery._new_producer = new_producer
    return delivery


@pytest.mark.parametrize("retired", [False, True])
def test_a_fenced_transaction_starts_a_new_producer_unless_the_delivery_was_retired(retired):
    started: list[_FencedProducer] = []
    delivery = _delivery(started)
    old = delivery.producer
    if retired:
        delivery.retire()
    with pytest.raises(Aborted):
        delivery.send([("slates", b"s1", b"{}")], None)
    assert "purge" in old.calls
    # live: a new producer takes the transactional id over; retired: its successor already holds the id, and a
    # producer started here would fence that successor's transactions in turn
    assert len(started) == (0 if retired else 1)
