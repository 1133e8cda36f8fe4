"""Reading a topic's window back (the retrain job's data) from a real broker, transactions included."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer

from stream.clicklog import read_window
from stream.topics import RECOMMENDATIONS
from tests.kafka_helpers import produce

pytestmark = pytest.mark.integration


def _transactional(bootstrap: str, topic: str, batches: list[list[dict]], abort_last: bool = False) -> None:
    """Write each batch in its own transaction, as an exactly-once worker writes its slates."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"test-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    for n, batch in enumerate(batches):
        producer.begin_transaction()
        for record in batch:
            producer.produce(topic, key=str(record["i"] % 7).encode(), value=json.dumps(record).encode())
        if abort_last and n == len(batches) - 1:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)


def test_a_topic_written_in_transactions_is_read_to_its_end_without_waiting_for_the_timeout(services, topics):
    topic = f"{topics}{RECOMMENDATIONS}"
    committed = [[{"i": i} for i in range(b * 40, b * 40 + 40)] for b in range(3)]
    _transactional(services.kafka, topic, committed + [[{"i": 10_000 + i} for i in range(5)]], abort_last=True)
    started = time.monotonic()
    window = read_window(services.kafka, topic, timeout_s=60)
    took = time.monotonic() - started
    # every committed record once, nothing of the aborted transaction, and done at the commit markers
    assert sorted(r["i"] for r in window.records) == list(range(120))
    assert took < 20, f"the read waited {took:.0f} s: it did not see the partitions' ends past the markers"


def test_a_plain_topic_is_read_from_since_and_non_json_records_are_counted_not_returned(services, topics):
    topic = f"{topics}{RECOMMENDATIONS}"
    produce(services.kafka, topic, [(None, json.dumps({"i": i}).encode()) for i in range(10)])
    time.sleep(1.0)  # Kafka timestamps are milliseconds: the later records come clearly after `since`
    since = time.time()
    produce(services.kafka, topic, [(None, json.dumps({"i": 100 + i}).encode()) for i in range(6)]
            + [(None, b"not json"), (None, b"[1, 2]")])
    window = read_window(services.kafka, topic, since=since, timeout_s=30)
    assert sorted(r["i"] for r in window.records) == list(range(100, 106))
    assert window.skipped == 2
