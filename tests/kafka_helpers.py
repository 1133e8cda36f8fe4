"""Plain confluent-kafka clients and service processes for the integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer

from infra.local import stop_pid

ROOT = Path(__file__).resolve().parent.parent


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Produce (key, value) records in order; return each one's (partition, offset) from its delivery report."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    placed: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def report(i: int):
        def cb(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                placed[i] = (msg.partition(), msg.offset())
        return cb

    for i, (key, value) in enumerate(records):
        producer.produce(topic, key=key, value=value, on_delivery=report(i))
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, f"{remaining} undelivered, errors: {errors[:3]}"
    return [p for p in placed if p is not None]


def consume(bootstrap: str, topics: list[str], until: Callable[[dict[str, list]], bool], timeout: float = 60.0,
            settle: float = 0.0) -> dict[str, list]:
    """Read ``topics`` from the beginning with a fresh group until ``until(received)`` holds or time runs out.

    ``received`` maps topic -> list of (key, parsed JSON value, partition, offset).  After the
    condition holds, keep reading ``settle`` more seconds so that extra (duplicate) records show.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "isolation.level": "read_committed",  # what the workers' readers see
    })
    consumer.subscribe(topics)
    received: dict[str, list] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            if settle_until is None and until(received):
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            received[msg.topic()].append((msg.key(), json.loads(msg.value()), msg.partition(), msg.offset()))
    finally:
        consumer.close()
    return received


class ServiceProcess:
    """``python -m <package> ...`` in a subprocess with its own log file; stopped by PID."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServiceProcess":
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", *self.args], env=self.env, cwd=ROOT,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            stop_pid(self.proc.pid, timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, marker: str, timeout: float = 60.0) -> "ServiceProcess":
        """Block until ``marker`` appears in the log (e.g. the intake's ``assigned <topic>``); fail if the process
        exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while marker not in self.log():
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} never appeared in {self.args}'s log:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return self


def produce_paced(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]], per_second: float,
                  chunk: int = 20) -> None:
    """Produce ``records`` in order at about ``per_second``, ``chunk`` at a time, with one idempotent producer (load
    for fault tests: it keeps retrying through a broker's outage, up to two minutes)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": 120_000})
    errors: list[str] = []
    started = time.monotonic()
    for i in range(0, len(records), chunk):
        for key, value in records[i: i + chunk]:
            producer.produce(topic, key=key, value=value,
                             on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
        producer.poll(0)
        wait = started + (i + chunk) / per_second - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    remaining = producer.flush(120)
    assert remaining == 0 and not errors, f"{remaining} undelivered, errors: {errors[:3]}"
