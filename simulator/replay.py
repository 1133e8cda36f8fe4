"""Replay a real click log from ``../shared/data`` into ``clicks``.

Events go out in time order (Diginetica, which has no timestamps, in session then position order),
keyed by session id so Kafka keeps each session's clicks in order; ``ts`` is the logged time where
there is one.  Pacing at ``rate`` events/s is exact over the run (``rate <= 0``: as fast as
possible).  Every delivery is confirmed by its report; failures are counted and reported.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import KafkaException, Producer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from models.data import load_dataset
from stream.clients import client_config
from stream.records import new_event_id
from stream.settings import Settings
from stream.topics import CLICKS, ensure_topics

log = logging.getLogger(__name__)


def replay_events(name: str, data_dir: Path, split: str = "all", limit: int | None = None) -> pd.DataFrame:
    """The events to replay, in send order: columns SessionId, ItemId, Time (unix s, or position)."""
    train, test = load_dataset(name, data_dir)
    if split == "train":
        df = train
    elif split == "test":
        df = test
    else:
        df = pd.concat([train, test], ignore_index=True)
    if name == "diginetica":  # no timestamps: sessions in id order (train sessions are date-sorted), clicks by Pos
        df = df.sort_values(["SessionId", "Time"], kind="mergesort")
    else:
        df = df.sort_values(["Time", "SessionId"], kind="mergesort")
    return df.head(limit) if limit else df.reset_index(drop=True)


def replay(settings: Settings, events: pd.DataFrame, rate: float, has_time: bool, progress: bool = True,
           session_prefix: str = "", linger_ms: float = 5.0) -> dict:
    """Send ``events`` to ``clicks`` (each click's ``event_id`` from an ``EventId`` column if there is one, else a new
    one); ``linger_ms`` is how long the producer gathers records into one request
    (more throughput, and that much more latency for each click)."""
    ensure_topics(settings)
    producer = Producer(client_config(settings.kafka, {
        "enable.idempotence": True, "linger.ms": linger_ms, "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000}))
    # Connect before the clock starts, so a paced replay does not count the connection as the stream's latency.
    # (On a broker that has never handed out a producer id, the first idempotent producer still waits ~0.5 s for
    # one; the benchmarks warm the broker first, and `make demo` sends a warm-up click.)
    producer.list_topics(timeout=30)
    failed: list[str] = []
    delivered = 0

    def on_delivery(err, _msg) -> None:
        nonlocal delivered
        if err is not None:
            failed.append(str(err))
        else:
            delivered += 1

    sessions = events["SessionId"].to_numpy()
    items = events["ItemId"].astype(str).to_numpy()
    times = events["Time"].to_numpy(dtype=np.float64)
    event_ids = events["EventId"].astype(str).to_numpy() if "EventId" in events else None
    topic = settings.topic(CLICKS)
    n = len(events)
    start = time.monotonic()
    with Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[rate]}"), disable=not progress) as bar:
        task = bar.add_task("replay", total=n, rate="")
        for i in range(n):
            if rate > 0:
                wait = start + i / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            sid = f"{session_prefix}{sessions[i]}"
            value = json.dumps({"session_id": sid, "item_id": items[i],
                                "ts": float(times[i]) if has_time else time.time(), "event_type": "click",
                                "event_id": event_ids[i] if event_ids is not None else new_event_id()})
            while True:
                try:
                    producer.produce(topic, key=sid, value=value, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry this event
                    producer.poll(0.05)
                except KafkaException as exc:
                    failed.append(str(exc))
                    break
            if i % 2000 == 0:
                producer.poll(0)
                elapsed = time.monotonic() - start
                bar.update(task, completed=i, rate=f"{i / elapsed:,.0f} events/s" if elapsed > 0 else "")
        remaining = producer.flush(60)
        elapsed = time.monotonic() - start
        bar.update(task, completed=n, rate=f"{n / elapsed:,.0f} events/s")
    summary = {"events": n, "delivered": delivered, "failed": len(failed) + remaining, "seconds": elapsed,
               "rate_target": rate, "rate_achieved": n / elapsed if elapsed else 0.0,
               "first_errors": failed[:3]}
    log.info("replayed %d events in %.1fs (%.0f/s), %d failed", n, elapsed, summary["rate_achieved"], summary["failed"])
    return summary
