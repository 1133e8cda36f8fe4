"""A first look at the loop: send a few clicks, print the slates that come back.

``python -m simulator demo --clicks 20`` produces clicks for a handful of sessions with a plain
confluent-kafka producer (delivery reports counted) and prints each slate from ``recommendations``
as it arrives.  The full closed-loop simulator grows out of this.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid

from confluent_kafka import Consumer, Producer
from rich.console import Console
from rich.table import Table

from stream.clients import client_config
from stream.settings import Settings
from stream.topics import CLICKS, RECOMMENDATIONS, ensure_topics

log = logging.getLogger(__name__)


def run_demo(settings: Settings, clicks: int, rate: float, seed: int, timeout: float = 60.0) -> int:
    """Send ``clicks`` clicks at ``rate``/s and print the slates; return the number of slates seen."""
    ensure_topics(settings)
    console = Console()
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    sessions = [f"demo-{run}-{i}" for i in range(max(1, clicks // 4))]
    consumer = Consumer(client_config(settings.kafka, {"group.id": f"demo-{run}",
                                                       "auto.offset.reset": "latest", "enable.auto.commit": False}))
    consumer.subscribe([settings.topic(RECOMMENDATIONS)])
    while not consumer.assignment():  # join the group before producing, so no slate is missed
        consumer.poll(0.1)
    producer = Producer(client_config(settings.kafka, {"enable.idempotence": True}))
    # One click of a session the table leaves out, delivered before the clock starts: on a fresh broker the first
    # idempotent producer waits ~0.5 s for its producer id, which the first slates' latency_ms would otherwise show.
    producer.produce(settings.topic(CLICKS), key=f"warmup-{run}", value=json.dumps(
        {"session_id": f"warmup-{run}", "item_id": "0", "ts": time.time(), "event_type": "click"}))
    producer.flush(30)
    failures: list[str] = []
    for i in range(clicks):
        session = rng.choice(sessions)
        item = str(int(rng.paretovariate(1.2)) % 50)
        value = json.dumps({"session_id": session, "item_id": item, "ts": time.time(), "event_type": "click"})
        producer.produce(settings.topic(CLICKS), key=session, value=value,
                         on_delivery=lambda err, _msg: err and failures.append(str(err)))
        producer.poll(0)
        time.sleep(1.0 / rate if rate > 0 else 0)
    producer.flush(30)
    console.print(f"sent {clicks} clicks to [bold]{settings.topic(CLICKS)}[/] ({len(failures)} failed deliveries)")

    table = Table(title=f"slates on {settings.topic(RECOMMENDATIONS)}")
    for col in ("session", "top items", "model", "latency ms"):
        table.add_column(col)
    seen, deadline = 0, time.monotonic() + timeout
    while seen < clicks and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        slate = json.loads(msg.value())
        if not slate["session_id"].startswith(f"demo-{run}"):
            continue
        seen += 1
        table.add_row(slate["session_id"], " ".join(slate["items"][:5]), slate["model_version"],
                      f"{slate['latency_ms']:.1f}")
    consumer.close()
    console.print(table)
    console.print(f"{seen} of {clicks} clicks answered with a slate")
    return seen
