"""Clicks in whole fetches: a librdkafka consumer and producer beside Faust, for the one hot topic.

Why not a Faust agent?  Faust hands every record to an agent through its own path (the fetcher
thread, a per-partition queue, the stream's channel, ``wait_first`` with four tasks per record,
the stream processors, then acks).  On these 2 cores that path alone capped a pass-through at
7,300-9,500 clicks/s, took about 40% of a worker's time, and held a click 15-30 ms before its
batch started (p99 16-28 ms for a pass-through at 1,000 clicks/s; README, "Stream throughput").
The worker ranks a whole micro-batch at once anyway, so here the batch is simply what librdkafka
has already fetched: :class:`ClickIntake` takes everything queued (up to ``batch_size``) in one
``consume`` call, hands it to :meth:`ClickIntake.handle`, and produces what that returns.
librdkafka fetches, parses and sends in its own C threads, outside the GIL the ranking needs.

Nothing is lost, and a click counts as done only once its answers are on the broker
(at-least-once, as Faust's ``at_least_once`` guarantee gave):

* offsets are *stored* only after every record a batch produced (slates, dead letters, DBGD
  feedback) is acknowledged by the broker, and in batch order, so a later batch's acknowledgement
  never commits past an earlier batch still in flight; librdkafka commits stored offsets every
  quarter second, on a rebalance and on close;
* before partitions are revoked (a worker joins or leaves), the producer is flushed and the
  offsets committed, so the next owner starts exactly after the last answered click;
* a record the producer gives up on is produced again (idempotent producer, so the broker keeps
  order and drops duplicates of its own retries); after a crash the clicks since the last commit
  are read again and the session store recognises them (``OnlineRecommender`` offsets).

The service runs inside the Faust worker (``@app.service``), on its event loop: between batches the
loop runs Faust's timers and agents (metrics, the controller).  Waiting for the first click of a
batch happens in a thread (``poll``), so an idle worker blocks nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from mode import Service

from stream.settings import Settings

log = logging.getLogger(__name__)

#: (topic, key, value): one record a batch produces
Outgoing = tuple[str, bytes | None, bytes]


def clicks_group(settings: Settings) -> str:
    """The consumer group of the clicks intake: its own, beside Faust's (``app_id``), whose assignor differs."""
    return f"{settings.app_id}-clicks"


class _Batch:
    """One batch's offsets to store once all ``pending`` records it produced are acknowledged."""

    __slots__ = ("offsets", "pending", "retry")

    def __init__(self, offsets: list[TopicPartition], retry: list) -> None:
        self.offsets, self.pending, self.retry = offsets, 0, retry

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report (called from ``producer.poll``/``flush`` in the caller's thread)."""
        if err is None:
            self.pending -= 1
        else:  # librdkafka gave up (message.timeout.ms): produce it again, the batch stays pending
            self.retry.append((msg.topic(), msg.key(), msg.value(), self, str(err)))


class ClickIntake(Service):
    """Consume ``topic`` in fetch-sized batches, answer each with :meth:`handle`, produce the answers.

    Subclass it and set ``topic``, ``settings`` and :meth:`handle`; register the subclass with
    ``@app.service`` so it starts and stops with the Faust worker.
    """

    topic: str
    settings: Settings
    running: ClickIntake | None = None
    poll_s: float = 0.1  # an idle wait is cut into slices this long, so stopping is prompt

    def handle(self, messages: Sequence[Message]) -> list[Outgoing]:
        """Answer a batch (messages without errors, in partition order): the records to produce for it."""
        raise NotImplementedError

    def partitions_changed(self) -> None:
        """Called when this worker's partitions are assigned, revoked or lost (between batches): drop whatever
        was kept about the partitions' keys, since another worker may own them or have written meanwhile."""

    def __post_init__(self) -> None:
        s = self.settings
        self.consumer = Consumer({
            "bootstrap.servers": s.kafka, "group.id": clicks_group(s), "client.id": f"{s.app_id}-clicks",
            "auto.offset.reset": s.auto_offset_reset,
            "enable.auto.commit": True, "auto.commit.interval.ms": 250,  # a crash redelivers ~0.25 s
            "enable.auto.offset.store": False,  # stored by _settle, after the answers are acknowledged
            "fetch.wait.max.ms": s.fetch_max_wait_ms,
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000,  # a dead worker's clicks move on in ~10 s
            "queued.max.messages.kbytes": 16_384,  # prefetch at most 16 MiB per worker
        })
        self.producer = Producer({
            "bootstrap.servers": s.kafka, "client.id": f"{s.app_id}-slates",
            "enable.idempotence": True,  # acks=all, ordered retries without duplicates
            "linger.ms": 2,
            "partitioner": "murmur2_random",  # the Java client's partitioner: a session's slates on one partition
        })
        self._pending: deque[_Batch] = deque()
        self._retry: list = []
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="clicks-poll")
        self._done = asyncio.Event()
        self._looping = False  # _run started (it does not when the worker stops during start-up)
        type(self).running = self  # the metrics timer asks the running intake for its lag

    # ------------------------------------------------------------------ the loop

    async def on_start(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("consuming %s in group %s", self.topic, clicks_group(self.settings))

    @Service.task
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        size = self.settings.batch_size
        self._looping = True
        try:
            while not self.should_stop:
                messages = self.consumer.consume(size, 0)  # whatever is fetched already, without waiting
                if not messages:
                    self._settle()
                    first = await loop.run_in_executor(self._thread, self.consumer.poll, self.poll_s)
                    if first is None:
                        continue
                    messages = [first, *self.consumer.consume(size - 1, 0)]
                self._answer(messages)
                await asyncio.sleep(0)  # Faust's timers and agents get the loop between batches
        finally:
            self._done.set()

    def _answer(self, messages: list[Message]) -> None:
        good, last = [], {}
        for m in messages:
            err = m.error()
            if err is not None:
                log.warning("consumer error on %s: %s", self.topic, err)
                continue
            good.append(m)
            last[m.partition()] = m.offset()
        if not good:
            return
        batch = _Batch([TopicPartition(self.topic, p, o + 1) for p, o in last.items()], self._retry)
        out = self.handle(good)
        self._pending.append(batch)
        for topic, key, value in out:
            self._produce(topic, key, value, batch)
        self._settle()

    def _produce(self, topic: str, key: bytes | None, value: bytes, batch: _Batch) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=batch.delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)
        batch.pending += 1

    def _settle(self) -> None:
        """Serve delivery reports, re-send what failed, and store the offsets of finished batches, in order."""
        self.producer.poll(0)
        while self._retry:
            retry, self._retry[:] = list(self._retry), []
            for topic, key, value, batch, why in retry:
                log.error("%s was not delivered (%s); producing it again", topic, why)
                batch.pending -= 1
                self._produce(topic, key, value, batch)
        while self._pending and self._pending[0].pending == 0:
            batch = self._pending.popleft()
            try:
                self.consumer.store_offsets(offsets=batch.offsets)
            except KafkaException as err:  # its partitions were revoked meanwhile: the next owner reads them again
                log.info("offsets of a finished batch not stored: %s", err)

    def lag(self, timeout: float = 2.0) -> int | None:
        """Clicks on this worker's partitions not yet handed to :meth:`handle`: each partition's high watermark
        (asked of the broker) minus this consumer's position, or its committed offset before its first click.
        Blocking (a round trip per partition): call it from a thread.  None without partitions, or on error."""
        try:
            parts = self.consumer.assignment()
            if not parts:
                return None
            positions = self.consumer.position(parts)
            unread = [tp for tp in positions if tp.offset < 0]
            start = {(tp.topic, tp.partition): tp.offset for tp in positions if tp.offset >= 0}
            for tp in self.consumer.committed(unread, timeout=timeout) if unread else []:
                start[(tp.topic, tp.partition)] = tp.offset
            total = 0
            for tp in positions:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
                at = start.get((tp.topic, tp.partition), -1)
                total += max(high - (at if at >= 0 else low), 0)
            return total
        except (KafkaException, RuntimeError) as err:  # closed, between assignments, or the broker is away
            log.debug("no lag: %s", err)
            return None

    # ------------------------------------------------------------------ rebalances and stopping

    def _drain(self, timeout: float) -> None:
        """Wait until every answer produced so far is acknowledged, and commit up to it."""
        left = self.producer.flush(timeout)
        self._settle()
        if left:
            log.error("%d answers still unacknowledged after %.0f s; their clicks will be read again", left, timeout)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as err:
            if err.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("committing offsets failed: %s", err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing")
        self.partitions_changed()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Called inside poll/consume before the partitions go to another worker: answers out, offsets in."""
        log.info("revoking %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing")
        self._drain(30.0)
        self.partitions_changed()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (session timed out): their clicks since the last commit will be answered again",
                    ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        self.partitions_changed()

    async def on_stop(self) -> None:
        """Let the running batch finish, then deliver its answers, commit, and leave the group."""
        try:
            if self._looping:
                await asyncio.wait_for(self._done.wait(), timeout=30.0)
        except asyncio.TimeoutError:
            log.error("the clicks loop did not stop within 30 s")
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    def _close(self) -> None:
        self._drain(30.0)
        self.consumer.close()
