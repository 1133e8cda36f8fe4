"""The live dashboard at ``/dashboard``: charts of the ``metrics`` topic, fed by server-sent events.

A background thread follows ``metrics`` (starting ``dashboard_history_s`` back, so a page opened
mid-run has a past to draw) and keeps the newest messages in a ring; ``/dashboard/events`` sends
the ring, then each new message, as SSE.  The page is one self-contained HTML file (plain canvas,
no external scripts: it works on a machine without internet) that draws CTR over time with
model-version markers, latency, throughput, and the DBGD teams' clicks with accepted updates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from stream.clients import client_config
from stream.settings import Settings
from stream.topics import METRICS, MODEL_UPDATES

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("dashboard.html")


class MetricsFeed:
    """The newest metrics and model-update messages, numbered, in memory."""

    def __init__(self, settings: Settings, history_s: float = 900.0, keep: int = 5000) -> None:
        self.settings, self.history_s = settings, history_s
        self.ring: deque[tuple[int, dict]] = deque(maxlen=keep)
        self.seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._follow, name="dashboard-feed", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self) -> None:
        topics = [self.settings.topic(METRICS), self.settings.topic(MODEL_UPDATES)]
        group = f"streamrec-dashboard-{uuid.uuid4().hex[:8]}"
        consumer = Consumer(client_config(self.settings.kafka, {"enable.auto.commit": False, "group.id": group}))
        try:
            since_ms = int((time.time() - self.history_s) * 1000)
            assign = []
            while not assign and not self._stop.is_set():  # the topics may not exist yet
                try:
                    for topic in topics:
                        meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
                        if meta is None or meta.error is not None:
                            continue
                        parts = [TopicPartition(topic, p, since_ms) for p in meta.partitions]
                        assign += consumer.offsets_for_times(parts, timeout=5)
                except Exception as err:  # noqa: BLE001 - Kafka down: keep trying, the page just waits
                    log.debug("dashboard feed waiting for Kafka: %s", err)
                if not assign:
                    self._stop.wait(2.0)
            if self._stop.is_set():
                return
            consumer.assign([TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -1)
                             for tp in assign])  # -1: the end, when nothing is that recent
            while not self._stop.is_set():
                for msg in consumer.consume(200, 0.5):
                    if msg.error():
                        continue
                    try:
                        value = json.loads(msg.value())
                    except ValueError:
                        continue
                    if not isinstance(value, dict):
                        continue
                    if msg.topic() == self.settings.topic(MODEL_UPDATES):
                        value = {"source": "model-update", **value}
                    with self._lock:
                        self.seq += 1
                        self.ring.append((self.seq, value))
        finally:
            consumer.close()

    def after(self, seq: int) -> list[tuple[int, dict]]:
        with self._lock:
            return [(n, v) for n, v in self.ring if n > seq]


def router(feed: MetricsFeed) -> APIRouter:
    r = APIRouter(tags=["dashboard"])

    @r.get("/dashboard", response_class=HTMLResponse)
    def dashboard() -> HTMLResponse:
        """The live dashboard (open it in a browser during a run)."""
        return HTMLResponse(PAGE.read_text())

    @r.get("/dashboard/events", include_in_schema=False)
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: every metrics / model-update message, the recent past first."""

        last = request.headers.get("last-event-id", "0")
        start = int(last) if last.isdigit() else 0  # a reconnecting browser continues where it stopped

        async def stream():
            seq = start
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                batch = feed.after(seq)
                for seq, value in batch:
                    yield f"id: {seq}\ndata: {json.dumps(value)}\n\n"
                if not batch:
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return r
