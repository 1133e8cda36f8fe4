"""A first look at the loop: send a few sessions' clicks, print the slates that come back.

``python -m simulator demo`` produces clicks with a plain confluent-kafka producer (delivery reports counted) and
prints each slate from ``recommendations``. With ``--sessions-from`` the clicks follow real click paths of a
GRU4Rec-format log (its last sessions), so a model's slates can be judged against the click that came next;
``--json`` keeps what was answered, which ``make demo`` (``infra/demo.py``) uses to set the popular fallback's
slates beside GRU4Rec's.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from confluent_kafka import Consumer, Producer
from rich.console import Console
from rich.table import Table

from stream.clients import client_config
from stream.settings import Settings
from stream.topics import CLICKS, RECOMMENDATIONS, ensure_topics

log = logging.getLogger(__name__)


@dataclass
class Answered:
    """One click of a demo path and the slate it got."""

    path: int
    step: int
    item: str
    next_item: str | None
    slate: list[str]
    model_version: str
    latency_ms: float

    @property
    def hit(self) -> bool:
        """Whether the path's next click is in the slate."""
        return self.next_item is not None and self.next_item in self.slate


def random_paths(clicks: int, seed: int) -> list[list[str]]:
    """``clicks`` clicks over ``clicks // 4`` sessions on items 0-49, popular ones more often (Pareto).

    >>> [len(p) for p in random_paths(8, 0)]
    [2, 6]
    """
    rng = random.Random(seed)
    paths: list[list[str]] = [[] for _ in range(max(1, clicks // 4))]
    for _ in range(clicks):
        rng.choice(paths).append(str(int(rng.paretovariate(1.2)) % 50))
    return [p for p in paths if p]


def log_paths(path: Path, sessions: int, min_clicks: int = 3, max_clicks: int = 6) -> list[list[str]]:
    """The click paths (first ``max_clicks`` clicks) of the last ``sessions`` sessions of a GRU4Rec TSV log that
    have at least ``min_clicks`` clicks."""
    df = pd.read_csv(path, sep="\t", dtype={"ItemId": str})
    df = df.sort_values(["SessionId", "Time"], kind="stable")
    groups = [list(g.ItemId)[:max_clicks] for _, g in df.groupby("SessionId", sort=False)]
    return [g for g in groups if len(g) >= min_clicks][-sessions:]


def run_demo(settings: Settings, paths: list[list[str]], rate: float, timeout: float = 60.0) -> list[Answered]:
    """Send every path's clicks (interleaved, at ``rate``/s) and collect each one's slate."""
    ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    consumer = Consumer(client_config(settings.kafka, {"group.id": f"demo-{run}", "auto.offset.reset": "latest",
                                                       "enable.auto.commit": False}))
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
    order = [(p, s) for s in range(max(map(len, paths))) for p in range(len(paths)) if s < len(paths[p])]
    for p, s in order:
        session = f"demo-{run}-{p}"
        value = json.dumps({"session_id": session, "item_id": paths[p][s], "ts": time.time(), "event_type": "click"})
        producer.produce(settings.topic(CLICKS), key=session, value=value,
                         on_delivery=lambda err, _msg: err and failures.append(str(err)))
        producer.poll(0)
        time.sleep(1.0 / rate if rate > 0 else 0)
    producer.flush(30)
    log.info("sent %d clicks to %s (%d failed deliveries)", len(order), settings.topic(CLICKS), len(failures))

    answered: list[Answered] = []
    steps = {p: 0 for p in range(len(paths))}
    deadline = time.monotonic() + timeout
    while len(answered) < len(order) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        slate = json.loads(msg.value())
        if not slate["session_id"].startswith(f"demo-{run}-"):
            continue
        p = int(slate["session_id"].rsplit("-", 1)[1])
        s, steps[p] = steps[p], steps[p] + 1  # a session's slates come in its clicks' order (one partition)
        answered.append(Answered(p, s, paths[p][s], paths[p][s + 1] if s + 1 < len(paths[p]) else None,
                                 slate["items"], slate["model_version"], slate["latency_ms"]))
    consumer.close()
    return answered


def print_slates(answered: list[Answered], sent: int, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="slates on recommendations")
    for col in ("session", "clicked", "top items", "model", "latency ms"):
        table.add_column(col)
    for a in answered:
        table.add_row(str(a.path), a.item, " ".join(a.slate[:5]), a.model_version, f"{a.latency_ms:.1f}")
    console.print(table)
    console.print(f"{len(answered)} of {sent} clicks answered with a slate")


def save(answered: list[Answered], path: Path) -> None:
    path.write_text(json.dumps([asdict(a) for a in answered]))


def load(path: Path) -> list[Answered]:
    return [Answered(**row) for row in json.loads(path.read_text())]
