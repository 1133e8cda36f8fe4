"""How a batch's answers and its click offsets reach the broker: in one transaction, or acknowledged then committed.

:class:`Transactional` (``processing_guarantee=exactly_once``, the default) produces a batch's slates,
dead letters and DBGD feedback and sends its consumer offsets inside one Kafka transaction
(``send_offsets_to_transaction`` with the consumer's group metadata, so a worker of an older group
generation is fenced).  A reader with ``isolation.level=read_committed`` (librdkafka's default; the
worker's Faust consumer of ``dbgd-feedback`` is switched to it in ``stream/app.py``) sees either all of a
batch's answers with its clicks marked done, or none of them: after a crash the clicks are read again
and answered once.  A transaction a dead worker left open would hold every read_committed reader of its
partitions back until ``transaction_timeout_ms``; a worker restarted on the same host takes the same
transactional id (:func:`transactional_id`) and aborts it at once.

:class:`AtLeastOnce` stores a batch's offsets once every record it produced is acknowledged, in batch
order; librdkafka commits them every quarter second.  A crash answers the clicks since the last commit
again (the session store still applies each click once, by its offset).

Session state in Redis is written before the transaction commits; a replayed click is recognised by the
(partition, offset) stored with its session (``models/sessions.py``) and does not step it twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import IO, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

log = logging.getLogger(__name__)

#: (topic, key, value): one record a batch produces
Outgoing = tuple[str, bytes | None, bytes]


class Aborted(Exception):
    """The batch's transaction was aborted: its answers are not visible and its offsets not committed."""


class Delivery(Protocol):
    #: whether :meth:`send` waits for the broker (a transaction's commit): the intake then runs it in its own thread,
    #: beside the next batch's ranking
    blocking: bool

    def send(self, out: list[Outgoing], offsets: list[TopicPartition] | None) -> None:
        """Produce ``out``; mark ``offsets`` (next offset to read, per partition) done once it is on the broker."""

    def settle(self) -> None:
        """Serve delivery reports (between batches)."""

    def drain(self, timeout: float) -> None:
        """Everything sent so far on the broker, its offsets committed (before a rebalance or stopping)."""


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes, on_delivery=None) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.05)


# --------------------------------------------------------------------------- at least once


class _Batch:
    """One batch's offsets to store once all ``pending`` records it produced are acknowledged."""

    __slots__ = ("offsets", "pending", "retry")

    def __init__(self, offsets: list[TopicPartition] | None, retry: list) -> None:
        self.offsets, self.pending, self.retry = offsets, 0, retry

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report (called from ``producer.poll``/``flush`` in the caller's thread)."""
        if err is None:
            self.pending -= 1
        else:  # librdkafka gave up (message.timeout.ms): produce it again, the batch stays pending
            self.retry.append((msg.topic(), msg.key(), msg.value(), self, str(err)))


class AtLeastOnce:
    """Offsets stored after the answers are acknowledged, in batch order, so a later batch's acknowledgement never
    commits past an earlier batch still in flight; a record the producer gives up on is produced again."""

    blocking = False

    def __init__(self, producer: Producer, consumer: Consumer) -> None:
        self.producer, self.consumer = producer, consumer
        self._pending: deque[_Batch] = deque()
        self._retry: list = []

    def send(self, out: list[Outgoing], offsets: list[TopicPartition] | None) -> None:
        batch = _Batch(offsets, self._retry)
        self._pending.append(batch)
        for topic, key, value in out:
            _produce(self.producer, topic, key, value, batch.delivered)
            batch.pending += 1
        self.settle()

    def settle(self) -> None:
        self.producer.poll(0)
        while self._retry:
            retry, self._retry[:] = list(self._retry), []
            for topic, key, value, batch, why in retry:
                log.error("%s was not delivered (%s); producing it again", topic, why)
                _produce(self.producer, topic, key, value, batch.delivered)
        while self._pending and self._pending[0].pending == 0:
            batch = self._pending.popleft()
            if not batch.offsets:
                continue
            try:
                self.consumer.store_offsets(offsets=batch.offsets)
            except KafkaException as err:  # its partitions were revoked meanwhile: the next owner reads them again
                log.info("offsets of a finished batch not stored: %s", err)

    def drain(self, timeout: float) -> None:
        left = self.producer.flush(timeout)
        self.settle()
        if left:
            log.error("%d answers still unacknowledged after %.0f s; their clicks will be read again", left, timeout)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as err:
            if err.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("committing offsets failed: %s", err)


# --------------------------------------------------------------------------- exactly once


class Transactional:
    """Each batch is one transaction: its answers and its offsets commit together or not at all.

    Every call to the broker is bounded.  A transaction that cannot commit (the broker away longer than
    ``timeout_s``, the coordinator moved, the transaction timed out on the broker) is aborted, and if even that
    fails the producer is replaced by a new one with the same transactional id, whose ``init_transactions`` fences
    the old one and aborts whatever it left open; either way :class:`Aborted` tells the intake to read the batch
    again.  (No other live process has the id, :func:`transactional_id` sees to that, so being fenced means the
    broker gave up on our transaction: a new producer is the way on.)"""

    blocking = True

    def __init__(self, config: dict, consumer: Consumer, timeout_s: float = 10.0) -> None:
        self.config, self.consumer, self.timeout_s = config, consumer, timeout_s
        self.retired = False
        self.producer = self._new_producer()

    def retire(self) -> None:
        """Given up while a call hangs (a new instance with the same id has taken over): when that call comes back,
        fenced, this one must not start a producer of its own, which would fence its successor in turn."""
        self.retired = True

    def _new_producer(self) -> Producer:
        """A producer with our transactional id, initialised; waits (logging) while no broker answers."""
        while True:
            producer = Producer(self.config)
            try:
                producer.init_transactions(self.timeout_s)  # fences an earlier producer with this id
                return producer
            except KafkaException as err:
                if err.args[0].fatal():
                    raise
                log.warning("no transactions yet (%s); trying again", err.args[0])
                producer.purge()

    def send(self, out: list[Outgoing], offsets: list[TopicPartition] | None) -> None:
        if not out and not offsets:
            return
        try:
            self.producer.begin_transaction()
            for topic, key, value in out:
                _produce(self.producer, topic, key, value)
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(),
                                                          self.timeout_s)
            self._commit()
        except KafkaException as err:
            error = err.args[0]
            log.warning("transaction aborted (%s); its clicks will be read again", error)
            self._abort(fatal=error.fatal())
            raise Aborted(str(error)) from err

    def _commit(self) -> None:
        deadline = time.monotonic() + 3 * self.timeout_s
        while True:
            try:
                self.producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as err:
                if not err.args[0].retriable() or time.monotonic() > deadline:
                    raise
                log.info("committing the transaction again: %s", err.args[0])

    def _abort(self, fatal: bool) -> None:
        if self.retired:
            self.producer.purge()
            return
        if not fatal:
            try:
                self.producer.abort_transaction(self.timeout_s)
                return
            except KafkaException as err:
                log.error("aborting the transaction failed (%s); starting a new producer", err.args[0])
        self.producer.purge()
        self.producer = self._new_producer()

    def settle(self) -> None:
        self.producer.poll(0)

    def drain(self, timeout: float) -> None:
        """Nothing to do: every batch's transaction is committed (or aborted) before the next one begins."""


# --------------------------------------------------------------------------- a stable transactional id


_slot_files: list[IO] = []  # kept open: the lock lasts as long as the process


def transactional_id(app_id: str, lock_dir: Path, slots: int = 64) -> str:
    """``{app_id}-clicks-{host}-{n}`` with the lowest ``n`` no live process on this host holds.

    A worker killed and started again on the same host gets the same id, so its ``init_transactions``
    aborts the transaction the dead one left open at once (otherwise read_committed readers of those
    partitions wait out the transaction timeout).  Each slot is an ``flock``ed file in ``lock_dir``,
    released by the kernel when its process dies."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for n in range(slots):
        f = open(lock_dir / f"{app_id}-{n}.lock", "a+")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        f.seek(0), f.truncate(), f.write(str(os.getpid())), f.flush()
        _slot_files.append(f)
        return f"{app_id}-clicks-{host}-{n}"
    raise RuntimeError(f"all {slots} transactional-id slots in {lock_dir} are held by live workers")
