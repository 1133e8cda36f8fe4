"""Reading a time window of a JSON topic back from Kafka: the training data of a major retrain.

The click log in Kafka is the system's source of truth, so a retrain job reads it rather than a copy:
for every partition, from the first offset at or after ``since`` (``offsets_for_times``) to the end
offset seen when the read began (so a busy topic does not keep the read going forever).  Records
that are not JSON objects are counted and skipped: the stream has already dead-lettered them.

A partition is done at its last record before that end offset or when the consumer reports the end of
the partition (``enable.partition.eof``), whichever comes first: a topic written in transactions (the
slates of an exactly-once worker) ends with a commit marker, an offset no record is ever read at, and
the read would otherwise wait for its timeout.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from stream.clients import client_config

log = logging.getLogger(__name__)


@dataclass
class Window:
    records: list[dict] = field(default_factory=list)   # parsed values, each with "_partition", "_offset"
    skipped: int = 0
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> [first, end)


def read_window(bootstrap: str, topic: str, since: float | None = None, timeout_s: float = 120.0,
                progress: Callable[[int, int], None] | None = None, until: float | None = None) -> Window:
    """All records of ``topic`` appended at or after ``since`` (unix seconds; None: from the beginning) and,
    given ``until``, with a timestamp no later than that (later ones are left out, not counted as skipped)."""
    consumer = Consumer(client_config(bootstrap, {"group.id": f"streamrec-retrain-{uuid.uuid4().hex[:8]}",
                                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                                  "enable.partition.eof": True}))
    window = Window()
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise LookupError(f"topic {topic} does not exist")
        parts = sorted(meta.topics[topic].partitions)
        starts = [TopicPartition(topic, p, int(since * 1000)) for p in parts] if since and since > 0 else None
        if starts:
            starts = consumer.offsets_for_times(starts, timeout=10)
        assign, total = [], 0
        for i, p in enumerate(parts):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            first = low if starts is None or starts[i].offset < 0 else max(starts[i].offset, low)
            if starts is not None and starts[i].offset < 0:
                first = high  # nothing at or after `since` in this partition
            window.offsets[p] = (first, high)
            if first < high:
                assign.append(TopicPartition(topic, p, first))
                total += high - first
        if not assign:
            return window
        consumer.assign(assign)
        remaining = {tp.partition for tp in assign}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(5000, 0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                    continue
                p, off = msg.partition(), msg.offset()
                end = window.offsets[p][1]
                if off >= end:
                    remaining.discard(p)
                    continue
                if until is not None and msg.timestamp()[1] > until * 1000:
                    if off >= end - 1:
                        remaining.discard(p)
                    continue
                try:
                    value = json.loads(msg.value())
                    if not isinstance(value, dict):
                        raise ValueError("not an object")
                    value["_partition"], value["_offset"] = p, off
                    window.records.append(value)
                except (ValueError, TypeError):
                    window.skipped += 1
                if off >= end - 1:
                    remaining.discard(p)
            if progress is not None:
                progress(len(window.records) + window.skipped, total)
        if remaining:
            log.warning("read of %s stopped after %.0f s with partitions %s unfinished", topic, timeout_s, remaining)
    finally:
        consumer.close()
    return window
