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

Nothing is lost or doubled (``stream/delivery.py`` says how each guarantee is kept):

* a batch's answers and its offsets reach the broker together, in one transaction
  (``exactly_once``), or the offsets are stored only after the answers are acknowledged
  (``at_least_once``); before partitions are revoked everything sent is on the broker;
* **no commit without applying**: when session state cannot be written (Redis down or slow), the
  batch is answered with fallback slates (``fallback: true``) and its clicks wait in a backlog; no
  offset is committed while the backlog holds anything; a :class:`~stream.breaker.Breaker` spaces the
  retries, so an outage costs each batch no Redis timeout; once Redis answers, the backlog is applied in
  order (state only, the clicks were answered) and the offsets commit.  Past ``max_backlog_clicks`` the
  worker stops reading until then.

The service runs inside the Faust worker (``@app.service``), on its event loop: between batches the
loop runs Faust's timers and agents (metrics, the controller).  Waiting for the first click of a
batch happens in a thread (``poll``), so an idle worker blocks nothing.
"""


from __future__ import annotations

import asyncio
import faulthandler
import logging
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from mode import Service

from stream.breaker import Breaker
from stream.clients import client_config
from stream.delivery import Aborted, AtLeastOnce, Delivery, Outgoing, Transactional, transactional_id
from stream.group_watch import GroupWatch
from stream.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ClickIntake", "Handled", "Outgoing", "clicks_group"]


def clicks_group(settings: Settings) -> str:
    """The consumer group of the clicks intake: its own, beside Faust's (``app_id``), whose assignor differs."""
    return f"{settings.app_id}-clicks"


@dataclass
class Handled:
    """What :meth:`ClickIntake.handle` made of a batch: the records to produce, the valid clicks whose session state
    was not applied (answered with fallbacks; they go to the backlog), and whether the state store failed."""

    out: list[Outgoing] = field(default_factory=list)
    held: list[Message] = field(default_factory=list)
    failed: bool = False


class ClickIntake(Service):
    """Consume ``topic`` in fetch-sized batches, answer each with :meth:`handle`, produce the answers.

    Subclass it and set ``topic``, ``settings``, :meth:`handle` and :meth:`catch_up`; register the subclass with
    ``@app.service`` so it starts and stops with the Faust worker.
    """

    topic: str
    settings: Settings
    running: ClickIntake | None = None
    poll_s: float = 0.1  # an idle wait is cut into slices this long, so stopping is prompt

    def handle(self, messages: Sequence[Message], use_state: bool) -> Handled:
        """Answer a batch (messages without errors, in partition order).  With ``use_state`` False (the breaker is
        open, or older clicks wait in the backlog) answer without touching session state and hold every valid click."""
        raise NotImplementedError

    def catch_up(self, messages: Sequence[Message]) -> list[Outgoing]:
        """Apply held clicks to session state, in order, without answering them (they were); raise if it fails.
        Returns the records applying them made (DBGD credit for clicks on earlier slates), sent with the next batch."""
        raise NotImplementedError

    def partitions_changed(self) -> None:
        """Called when this worker's partitions are assigned, revoked or lost (between batches): drop whatever
        was kept about the partitions' keys, since another worker may own them or have written meanwhile."""

    def __post_init__(self) -> None:
        s = self.settings
        exactly_once = s.processing_guarantee == "exactly_once"
        self._watch = GroupWatch(s.intake_stuck_s)
        self._consumer_config = client_config(s.kafka, {
            "group.id": clicks_group(s), "client.id": f"{s.app_id}-clicks",
            "auto.offset.reset": s.auto_offset_reset,
            "isolation.level": "read_committed",
            "enable.auto.commit": not exactly_once, "auto.commit.interval.ms": 250,  # a crash redelivers ~0.25 s
            "enable.auto.offset.store": False,  # stored by the delivery, after the answers are acknowledged
            "fetch.wait.max.ms": s.fetch_max_wait_ms,
            # a dead worker's clicks move on in ~10 s; a heartbeat each second keeps the session through a group
            # coordinator's move (a killed broker: up to ~7 s, docs/reliability.md)
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000,
            # a consumer given up inside a hung poll leaves the group when this runs out, so its successor gets the
            # partitions (librdkafka wants it at least the session timeout)
            "max.poll.interval.ms": max(10_000, int(2_000 * s.intake_stuck_s)),
            "queued.max.messages.kbytes": 16_384,  # prefetch at most 16 MiB per worker
            "statistics.interval.ms": 5_000, "stats_cb": self._watch.stats,  # the group's state, for the watch
        })
        self.consumer = Consumer(self._consumer_config)
        producer = client_config(s.kafka, {
            "client.id": f"{s.app_id}-slates",
            "enable.idempotence": True,  # acks=all, ordered retries without duplicates
            "linger.ms": 2,
            "partitioner": "murmur2_random",  # the Java client's partitioner: a session's slates on one partition
        })
        if exactly_once:
            producer.update({"transactional.id": transactional_id(s.app_id, Path(s.data_dir) / "transactional-ids"),
                             "transaction.timeout.ms": s.transaction_timeout_ms,
                             # a transaction's first produce often meets the previous one's markers still being
                             # written (CONCURRENT_TRANSACTIONS): retry after 10 ms, not librdkafka's 100
                             "retry.backoff.ms": 10, "retry.backoff.max.ms": 100})
        self._producer_config = producer
        self.delivery: Delivery | None = None
        self._exactly_once = exactly_once
        self.breaker = Breaker(s.state_retry_s, s.state_retry_max_s)
        self._backlog: list[Message] = []
        self._caught: list[Outgoing] = []  # what applying the backlog made, for the next transaction
        self._done: dict[int, int] = {}  # partition -> next offset, answered and not yet committed
        self._paused = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="clicks-poll")
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="clicks-commit")  # a transaction's commit ...
        self._inflight: Future | None = None  # ... runs while the next batch is read and ranked
        self._stopped = asyncio.Event()
        self._looping = False  # _run started (it does not when the worker stops during start-up)
        self._abandoned: list[tuple[Consumer, asyncio.Future]] = []  # replaced inside a poll: closed at stop
        self._armed_at = float("-inf")  # when the stack dump for a silent loop was last pushed back
        type(self).running = self  # the metrics timer asks the running intake for its lag

    # ------------------------------------------------------------------ the loop

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._exactly_once:  # init_transactions waits for the broker: not on the event loop
            self.delivery = await loop.run_in_executor(self._thread, Transactional, self._producer_config,
                                                       self.consumer)
        else:
            self.delivery = AtLeastOnce(Producer(self._producer_config), self.consumer)
        self._subscribe()
        log.info("consuming %s in group %s (%s)", self.topic, clicks_group(self.settings),
                 self.settings.processing_guarantee)

    def _subscribe(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    @Service.task
    async def _run(self) -> None:
        size = self.settings.batch_size
        self._looping = True
        try:
            while not self.should_stop:
                self._push_back_stack_dump()
                messages = self.consumer.consume(size, 0)  # whatever is fetched already, without waiting
                if not messages:
                    await self._idle()
                    first = await self._poll()
                    if first is None:
                        continue
                    messages = [first, *self.consumer.consume(size - 1, 0)]
                await self._answer(messages)
                await asyncio.sleep(0)  # Faust's timers and agents get the loop between batches
        finally:
            faulthandler.cancel_dump_traceback_later()
            self._stopped.set()

    async def _poll(self) -> Message | None:
        """Wait (in the poll thread) for the first click of a batch; a poll that never returns, or a group that
        never settles, gets the consumer replaced (:class:`~stream.group_watch.GroupWatch` says why)."""
        started = time.monotonic()
        polling = asyncio.wrap_future(self._thread.submit(self.consumer.poll, self.poll_s))
        try:
            first = await asyncio.wait_for(asyncio.shield(polling), self.settings.intake_stuck_s)
        except asyncio.TimeoutError:
            polling.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._abandoned.append((self.consumer, polling))
            await self._replace_consumer(self._watch.poll_overdue(time.monotonic() - started))
            return None
        stuck = self._watch.stuck()
        if stuck is not None:
            await self._replace_consumer(stuck)
        return first

    def _push_back_stack_dump(self) -> None:
        """If the loop stops coming round (a call blocked inside librdkafka, on the loop or in a callback), every
        thread's stack goes to stderr after ``intake_stuck_s``: re-armed at most once a second, since each arming
        starts faulthandler's watchdog thread anew.  The stacks go to the process's own stderr (file descriptor 2):
        faust replaces ``sys.stderr`` with a logging proxy that has no file descriptor."""
        now = time.monotonic()
        if now - self._armed_at >= 1.0:
            faulthandler.dump_traceback_later(self.settings.intake_stuck_s, exit=False, file=sys.__stderr__)
            self._armed_at = now

    async def _replace_consumer(self, why: str | None) -> None:
        """Give up the consumer for a new one in the same group, which starts from the committed offsets (answered,
        uncommitted clicks are answered again, as after a rebalance).  The old one is closed in a daemon thread, so
        a close that hangs too holds nothing up; one still inside a poll is left alone (closing it under the poll
        is not safe), leaves the group when its poll interval runs out, and is closed at stop if its poll has
        returned by then."""
        log.error("replacing the clicks consumer: %s (stacks follow on stderr)", why)
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        await self._settled(rewind=False)  # the new consumer starts from the commits: no rewind of the old one
        self._new_consumer("replacing the consumer")

    def _new_consumer(self, why: str) -> None:
        """Swap in a new consumer in the same group, subscribed, that starts from the committed offsets.  The old
        one is closed in a daemon thread, unless it was given up inside a poll (then it is closed at stop)."""
        old, self.consumer = self.consumer, Consumer(self._consumer_config)
        if self.delivery is not None:
            self.delivery.consumer = self.consumer
        self._thread.shutdown(wait=False)  # if its thread is blocked, a new one polls the new consumer
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="clicks-poll")
        if not any(given_up is old for given_up, _ in self._abandoned):
            threading.Thread(target=_close_quietly, args=(old,), name="clicks-old-consumer", daemon=True).start()
        self._watch.reset()
        self._paused = False  # a pause was the old consumer's
        self._forget_uncommitted(why)
        self._subscribe()

    async def _answer(self, messages: list[Message]) -> None:
        good = []
        for m in messages:
            err = m.error()
            if err is not None:
                log.warning("consumer error on %s: %s", self.topic, err, extra={"partition": m.partition()})
                continue
            good.append(m)
            self._done[m.partition()] = m.offset() + 1
        if not good:
            return
        self._catch_up_if_due()
        use_state = not self._backlog and self.breaker.allow()
        handled = self.handle(good, use_state)
        if use_state:
            self.breaker.failure() if handled.failed else self.breaker.success()
        if handled.held:
            self._hold(handled.held)
        await self._send(handled.out)

    async def _idle(self) -> None:
        """Between batches when nothing new came: the running commit, deliveries, a due catch-up, the offsets it
        freed."""
        await self._settled()
        self.delivery.settle()
        if self._backlog and self._catch_up_if_due() and (self._done or self._caught):
            await self._send([])

    async def _send(self, out: list[Outgoing]) -> None:
        """Produce a batch's answers, with the offsets answered so far unless the backlog holds clicks back.

        A blocking delivery (a transaction) commits in its own thread while the loop reads and ranks the next
        batch, whose answers wait for that commit before their own transaction begins: commits overlap ranking
        instead of adding to it, and transactions stay in batch order."""
        if not await self._settled():
            return  # the previous batch's transaction was aborted: this batch is read again too
        offsets = None if self._backlog else self._take_done()
        if self._caught:  # kept through a rewind: the clicks they credit are replays then, not credited again
            out, self._caught = self._caught + out, []
        if not self.delivery.blocking:
            self.delivery.send(out, offsets)
            return
        self._inflight = self._committer.submit(self.delivery.send, out, offsets)

    async def _settled(self, rewind: bool = True) -> bool:
        """Wait for the running commit; False (after rewinding, unless not ``rewind``) if it was aborted or never
        came back.

        librdkafka's ``send_offsets_to_transaction`` can block past its timeout when the group coordinator
        goes away (confluentinc/librdkafka#5456, seen here when the broker restarts); after
        ``transaction_stuck_s`` the producer is given up and a new one with the same transactional id fences
        it and aborts its transaction.  (If this wait is cancelled, the worker stopping, the commit stays in
        ``_inflight`` for :meth:`_close` to wait for.)"""
        inflight = self._inflight
        if inflight is None:
            return True
        waiting = asyncio.wrap_future(inflight)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), self.settings.transaction_stuck_s)
            return True
        except Aborted:
            if rewind:
                self._rewind()
            return False
        except asyncio.TimeoutError:
            log.error("a transaction has not completed in %.0f s; replacing the producer",
                      self.settings.transaction_stuck_s)
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # if it returns: already handled
            self.delivery.retire()  # when its call returns, fenced, it must not fence the new producer in turn
            self._committer.shutdown(wait=False)  # its thread stays blocked in librdkafka; a new one takes over
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="clicks-commit")
            self._inflight = None
            self.delivery = await asyncio.get_running_loop().run_in_executor(
                self._committer, Transactional, self._producer_config, self.consumer)
            if rewind:
                self._rewind()
            return False
        finally:
            if inflight.done():
                self._inflight = None

    def _settled_blocking(self) -> None:
        """The same from a rebalance callback or at close (not on the loop): the commit must finish before the
        partitions go."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            try:
                inflight.result(timeout=self.settings.transaction_stuck_s)
            except Aborted:
                log.warning("the last transaction before a rebalance was aborted; its clicks will be read again")
            except TimeoutError:
                log.error("the last transaction did not complete; its clicks will be read again")

    def _hold(self, held: list[Message]) -> None:
        self._backlog.extend(held)
        if len(self._backlog) >= self.settings.max_backlog_clicks and not self._paused:
            log.error("%d clicks wait for session state; reading stops until Redis is back", len(self._backlog))
            self.consumer.pause(self.consumer.assignment())
            self._paused = True

    def _catch_up_if_due(self) -> bool:
        """Apply the backlog if the breaker allows a try; True when the backlog is empty afterwards."""
        if not self._backlog:
            return True
        if not self.breaker.allow():
            return False
        try:
            self._caught.extend(self.catch_up(self._backlog))
        except Exception as err:  # noqa: BLE001 - still down: wait longer
            self.breaker.failure()
            log.warning("%d held clicks still wait for session state: %s", len(self._backlog), err)
            return False
        self.breaker.success()
        log.info("applied %d held clicks to session state", len(self._backlog))
        self._backlog = []
        if self._paused:
            self.consumer.resume(self.consumer.assignment())
            self._paused = False
        return True

    def _rewind(self) -> None:
        """After an aborted transaction: read again from the committed offsets, as a restarted worker would.

        The broker is often away just then (the abort's cause).  If it cannot say where the commits are within
        ``intake_stuck_s`` (a timeout, a connection to a killed node destroyed under the call), the consumer is
        replaced instead: a new one starts from the commits too.  An exception here would end the clicks loop
        while the worker looked alive."""
        wait = self.settings.intake_stuck_s
        try:
            parts = self.consumer.assignment()
            for tp in self.consumer.committed(parts, timeout=wait) if parts else []:
                if tp.offset >= 0:
                    self.consumer.seek(tp)
                else:  # nothing committed yet: from where auto.offset.reset starts
                    low, high = self.consumer.get_watermark_offsets(tp, timeout=wait)
                    self.consumer.seek(TopicPartition(tp.topic, tp.partition,
                                                      low if self.settings.auto_offset_reset == "earliest" else high))
        except (KafkaException, RuntimeError) as err:  # RuntimeError: the consumer was closed under the call
            log.warning("could not rewind to the committed offsets (%s); replacing the clicks consumer", err)
            self._new_consumer("an aborted transaction, with a new consumer")
            return
        self._forget_uncommitted("an aborted transaction")

    def _forget_uncommitted(self, why: str) -> None:
        if self._backlog:
            log.warning("%d held clicks dropped after %s: they will be read and answered again", len(self._backlog),
                        why)
        self._backlog, self._done = [], {}
        if self._paused:
            self.consumer.resume(self.consumer.assignment())
            self._paused = False
        self.partitions_changed()

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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer:
            return  # a replaced consumer's last callbacks: its partitions are no longer this worker's business
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing",
                 extra={"partition": [p.partition for p in partitions]})
        self.partitions_changed()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Called inside poll/consume before the partitions go to another worker: answers out, offsets in.  Clicks
        still held for session state cannot be committed; the next owner reads them again."""
        if consumer is not self.consumer:
            return
        log.info("revoking %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing",
                 extra={"partition": [p.partition for p in partitions]})
        self._settled_blocking()
        if self.delivery is not None:
            if not self._backlog and (self._done or self._caught):
                self._commit_done()
            self.delivery.drain(30.0)
        self._forget_uncommitted("a rebalance")

    def _take_done(self) -> list[TopicPartition] | None:
        """The offsets answered since the last send (None if none), handed over to be committed."""
        offsets = [TopicPartition(self.topic, p, o) for p, o in self._done.items()] or None
        self._done = {}
        return offsets

    def _commit_done(self) -> None:
        caught, self._caught = self._caught, []
        try:
            self.delivery.send(caught, self._take_done())
        except Aborted:
            log.warning("the offsets of answered clicks were not committed; they will be answered again")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer:
            return
        log.warning("lost %s (session timed out): their clicks since the last commit will be answered again",
                    ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        self._forget_uncommitted("losing the partitions")

    async def on_stop(self) -> None:
        """Let the running batch finish, then deliver its answers, commit, and leave the group."""
        try:
            if self._looping:
                await asyncio.wait_for(self._stopped.wait(), timeout=30.0)
        except asyncio.TimeoutError:
            log.error("the clicks loop did not stop within 30 s")
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)
        self._committer.shutdown(wait=False)

    def _close(self) -> None:
        self._settled_blocking()
        if self.delivery is not None:
            if self._backlog:
                self._catch_up_if_due()
            if not self._backlog and (self._done or self._caught):
                self._commit_done()
            self.delivery.drain(30.0)
        self.consumer.close()
        for consumer, polling in self._abandoned:
            if polling.done():
                _close_quietly(consumer)


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as err:
        log.warning("closing a replaced clicks consumer: %s", err)
