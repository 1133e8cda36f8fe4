"""The clicks intake in-process on the real broker: a consumer given up (a hung poll, or the watch's say-so) is
replaced, and the clicks are answered after it as before."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, Message, Producer

from infra import local
from stream.intake import ClickIntake, Handled
from stream.settings import Settings
from stream.topics import CLICKS, RECOMMENDATIONS


def echo_intake(settings: Settings, hang_s: float) -> ClickIntake:
    """An intake that answers each click with its own value; its first assignment's callback hangs ``hang_s``
    inside the poll thread, as a librdkafka call that does not return would."""

    class Echo(ClickIntake):
        topic = settings.topic(CLICKS)
        hung = False
        hang_over = False

        def handle(self, messages: Sequence[Message], use_state: bool) -> Handled:
            return Handled(out=[(settings.topic(RECOMMENDATIONS), m.key(), m.value()) for m in messages])

        def catch_up(self, messages: Sequence[Message]) -> list:
            return []

        def partitions_changed(self) -> None:
            if not self.hung and threading.current_thread().name.startswith("clicks-poll"):
                type(self).hung = True
                time.sleep(hang_s)
                type(self).hang_over = True

    Echo.settings = settings
    return Echo()


def produce(settings: Settings, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka})
    for v in values:
        producer.produce(settings.topic(CLICKS), key=v, value=v)
    assert producer.flush(30) == 0


def answered(settings: Settings, want: set[bytes], deadline_s: float) -> set[bytes]:
    consumer = Consumer({"bootstrap.servers": settings.kafka, "group.id": f"{settings.app_id}-reader",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic(RECOMMENDATIONS)])
    got: set[bytes] = set()
    deadline = time.monotonic() + deadline_s
    try:
        while not want <= got and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.add(m.value())
    finally:
        consumer.close()
    return got


def test_a_hung_poll_and_a_replaced_consumer_lose_no_click(services, topics, prefix, tmp_path, caplog):
    settings = Settings(kafka=services.kafka, topic_prefix=prefix, app_id=f"{prefix}app", data_dir=str(tmp_path),
                        processing_guarantee="at_least_once", intake_stuck_s=2.0)
    caplog.set_level(logging.INFO, logger="stream.intake")

    async def run() -> tuple[set[bytes], set[bytes], set[bytes], set[bytes]]:
        intake = echo_intake(settings, hang_s=20.0)
        await intake.start()
        try:
            first = {f"a{i}".encode() for i in range(200)}
            await asyncio.to_thread(produce, settings, sorted(first))
            # within 15 s, less than the 20 s hang: only a replaced consumer answers them in time
            got_first = await asyncio.to_thread(answered, settings, first, 15.0)
            await intake._replace_consumer("a test's say-so")  # the watch's path: old one closed
            second = {f"b{i}".encode() for i in range(200)}
            await asyncio.to_thread(produce, settings, sorted(second))
            got_second = await asyncio.to_thread(answered, settings, second, 60.0)
            while not intake.hang_over:  # then stopping closes the consumer given up inside its poll too
                await asyncio.sleep(0.2)
            return first, got_first, second, got_second
        finally:
            await intake.stop()

    first, got_first, second, got_second = asyncio.run(run())
    replaced = [r.getMessage() for r in caplog.records if "replacing the clicks consumer" in r.getMessage()]
    assert any("a poll has not returned" in m for m in replaced), replaced
    assert any("a test's say-so" in m for m in replaced), replaced
    assert first - got_first == set(), f"{len(first - got_first)} clicks unanswered after the hung poll"
    assert second - got_second == set(), f"{len(second - got_second)} clicks unanswered after the replacement"


@pytest.fixture
def pausable_kafka(services, tmp_path):
    """A broker whose PID this session holds: the session's own, or (when it runs elsewhere: the environment's,
    testcontainers') one started for this test."""
    if services.kafka_service is not None:
        yield services.kafka_service
        return
    broker = local.start_kafka(tmp_path / "kafka")
    try:
        yield broker
    finally:
        local.stop_pid(broker.pid)


def test_a_rewind_the_broker_cannot_answer_gets_a_new_consumer_that_reads_from_the_commits(pausable_kafka, prefix,
                                                                                        tmp_path, caplog):
    """After an aborted transaction the intake rewinds to the committed offsets, often while a broker is away (the
    abort's cause).  A rewind the broker does not answer (here: the broker stopped with SIGSTOP) once raised out of
    the clicks loop and ended it, while the worker looked alive (CI, the 3-broker kill test); now a new consumer
    takes over and reads the uncommitted clicks again."""
    settings = Settings(kafka=pausable_kafka.address, topic_prefix=prefix, app_id=f"{prefix}app", data_dir=str(tmp_path),
                        processing_guarantee="exactly_once", intake_stuck_s=2.0)
    caplog.set_level(logging.INFO, logger="stream.intake")
    values = {f"r{i}".encode() for i in range(100)}
    produce(settings, sorted(values))

    async def run() -> tuple[set[bytes], set[bytes], bool]:
        intake = echo_intake(settings, hang_s=0.0)
        intake._subscribe()
        first = _read(intake.consumer, values, deadline_s=30.0)  # read, never committed
        old = intake.consumer
        os.kill(pausable_kafka.pid, signal.SIGSTOP)
        try:
            intake._rewind()
        finally:
            os.kill(pausable_kafka.pid, signal.SIGCONT)
        again = _read(intake.consumer, values, deadline_s=60.0)
        replaced = intake.consumer is not old
        intake.consumer.close()
        return first, again, replaced

    first, again, replaced = asyncio.run(run())
    assert first == values, f"{len(values - first)} clicks never read before the rewind"
    assert replaced, "the rewind kept a consumer the broker did not answer"
    assert any("could not rewind" in r.getMessage() for r in caplog.records)
    assert again == values, f"{len(values - again)} uncommitted clicks not read again by the new consumer"


def _read(consumer: Consumer, want: set[bytes], deadline_s: float) -> set[bytes]:
    got: set[bytes] = set()
    deadline = time.monotonic() + deadline_s
    while not want <= got and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.add(m.value())
    return got
