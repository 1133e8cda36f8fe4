"""One produce batch per partition for a micro-batch's slates, on the Faust app's own Kafka producer.

Faust's ``topic.send`` handles one record at a time: a ``FutureMessage``, the produce-message
signal, aiokafka's per-record partitioning and accumulator append, about 30 µs of Python per slate
(``bench/stream_throughput --profile``: 12% of the worker's main thread).  A micro-batch already
holds all its slates, so :class:`BatchPublisher` partitions them the way aiokafka's default
partitioner would (murmur2 of the key, the same as Java clients: a session's slates stay on one
partition), fills one ``BatchBuilder`` per partition and hands each to ``send_batch``.

Nothing is lost by skipping Faust's path: the batches enter the same producer's accumulator, and
Faust flushes that producer before it commits the clicks' offsets, so a slate is on the broker
before its click counts as done (at-least-once, as with ``topic.send``).  A batch the broker
refuses after aiokafka's retries is logged with its size and partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger(__name__)


class BatchPublisher:
    """Publishes lists of (key, value) records to one Faust topic through a started aiokafka producer."""

    def __init__(self, topic) -> None:  # noqa: ANN001 - a faust.Topic
        self._faust_topic = topic
        self.topic: str = topic.get_topic_name()
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] | None = None

    async def send(self, producer, records: list[tuple[bytes, bytes]]) -> list[asyncio.Future]:  # noqa: ANN001
        """Queue ``records`` (keys not None) and return the delivery futures, one per produce batch.

        ``producer`` is an ``aiokafka.AIOKafkaProducer`` (Faust's: ``app.producer._ensure_producer()``).
        Awaiting the futures waits for the broker's acknowledgement; the caller need not, since a
        producer flush (Faust does one before every offset commit) waits for them too.
        """
        if not records:
            return []
        await self.prepare(producer)
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        parts = self._partitions
        for key, value in records:
            by_partition[self._partitioner(key, parts, parts)].append((key, value))
        futures = []
        for partition, recs in by_partition.items():
            batch = producer.create_batch()
            for key, value in recs:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                    futures.append(await self._send(producer, batch, partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a record of {len(value)} bytes does not fit in one produce batch")
            futures.append(await self._send(producer, batch, partition))
        return futures

    async def prepare(self, producer) -> None:  # noqa: ANN001
        """Declare the topic (created if missing, as ``topic.send`` would) and learn its partitions, once.

        An agent calls this before its first batch, so no click waits for the metadata round trips."""
        if self._partitions is None:
            await self._faust_topic.maybe_declare()
            self._partitions = sorted(await producer.partitions_for(self.topic))

    async def _send(self, producer, batch, partition: int) -> asyncio.Future:  # noqa: ANN001
        n = batch.record_count()
        future = await producer.send_batch(batch, self.topic, partition=partition)
        future.add_done_callback(lambda f: self._log_failure(f, partition, n))
        return future

    def _log_failure(self, future: asyncio.Future, partition: int, n: int) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("%d records to %s[%d] were not delivered: %s", n, self.topic, partition, future.exception())
