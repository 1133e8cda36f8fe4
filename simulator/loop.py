"""The closed loop on Kafka: simulated users click, read their slates from ``recommendations``, click again.

Pacing: click number ``i`` is sent at ``start + i / rate`` (so the rate is exact over a run); it
comes from the session whose next click is due soonest, or from a new session when none is due.
After each click a session waits for its slate (up to ``slate_timeout`` seconds); the user then
examines it (:class:`simulator.clickmodel.ClickModel`) and either clicks a slot (the next click
carries the slate's ``impression_id`` and ``position``) or browses on their own (an organic click).
The think time before the next click is the real-data gap scaled by ``time_scale``.

Ground truth per window (published on ``metrics`` with ``source: simulator`` and logged): observed
CTR, the expected CTR of the slates shown under the true click model, the oracle's expected CTR for
the same requests, and the regret between them.  Scenario time is the nominal clock ``i / rate``.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Consumer, Producer

from simulator.clickmodel import ClickModel
from simulator.population import Population, Session
from stream.clients import client_config
from stream.records import new_event_id
from stream.settings import Settings
from stream.topics import CLICKS, METRICS, RECOMMENDATIONS, ensure_topics

log = logging.getLogger(__name__)


@dataclass
class Window:
    """Counters of one reporting window (and, summed, of the whole run)."""

    clicks_sent: int = 0
    organic: int = 0
    slates: int = 0
    slots: int = 0
    slate_clicks: int = 0
    expected: float = 0.0
    oracle: float = 0.0
    unanswered: int = 0
    latency_ms: list[float] = field(default_factory=list)

    def add(self, other: "Window") -> None:
        for name in ("clicks_sent", "organic", "slates", "slots", "slate_clicks", "expected", "oracle", "unanswered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_ms.extend(other.latency_ms)

    def report(self) -> dict:
        n = max(self.slates, 1)
        lat = np.array(self.latency_ms)
        return {
            "clicks_sent": self.clicks_sent, "organic_clicks": self.organic, "slates": self.slates,
            "slate_clicks": self.slate_clicks, "unanswered": self.unanswered,
            "ctr": self.slate_clicks / n, "ctr_per_item": self.slate_clicks / max(self.slots, 1),
            "expected_ctr": self.expected / n, "oracle_ctr": self.oracle / n,
            "regret": (self.oracle - self.expected) / n,
            # None, not NaN, for a window without slates: the report must stay valid JSON
            "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        }


class ClosedLoop:
    def __init__(self, settings: Settings, population: Population, clicks: ClickModel, rate: float,
                 duration: float, slate_timeout: float = 2.0, time_scale: float = 1 / 120, window_s: float = 10.0):
        self.settings, self.population, self.clicks = settings, population, clicks
        self.rate, self.duration, self.slate_timeout = rate, duration, slate_timeout
        self.time_scale, self.window_s = time_scale, window_s
        self.world = population.world
        self.failed_deliveries = 0
        self.windows: list[dict] = []
        self.total = Window()

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self.failed_deliveries += 1
            log.error("click delivery failed: %s", err)

    def run(self) -> dict:
        s = self.settings
        ensure_topics(s)
        producer = Producer(client_config(s.kafka, {"enable.idempotence": True, "linger.ms": 2}))
        consumer = Consumer(client_config(s.kafka, {"group.id": f"simulator-{time.time_ns()}",
                                                    "auto.offset.reset": "latest", "enable.auto.commit": False}))
        consumer.subscribe([s.topic(RECOMMENDATIONS)])
        while not consumer.assignment():  # be in the group before the first click, or its slate is missed
            consumer.poll(0.1)

        sessions: dict[str, Session] = {}
        context: dict[str, tuple[int, int, float]] = {}  # session -> (user, category, t) of its pending click
        waiting: dict[str, float] = {}                  # session -> when its pending click was sent
        sent_order: deque[tuple[float, str]] = deque()
        stale: dict[str, int] = {}                       # slates still due for clicks we stopped waiting for
        due: list[tuple[float, int, str, int, str | None, int | None]] = []  # (when, seq, session, item, imp, pos)
        seq = 0
        window, window_start = Window(), 0.0
        start = time.monotonic()
        i = 0
        while True:
            now = time.monotonic() - start
            if now >= self.duration:
                break
            for msg in consumer.consume(num_messages=1000, timeout=0):
                if msg.error():
                    continue
                slate = json.loads(msg.value())
                sid = slate.get("session_id")
                if stale.get(sid):
                    stale[sid] -= 1
                    continue
                if sid not in waiting:
                    continue
                del waiting[sid]
                session = sessions[sid]
                user, category, t = context[sid]
                attraction = self.clicks.attraction(user, category, t)
                idx = np.array([self.world.item_index(x) for x in slate["items"]], dtype=np.int64)
                slate_attr = np.where(idx >= 0, attraction[np.maximum(idx, 0)], 0.0)
                position = self.clicks.respond(session.rng, slate_attr) if len(idx) else None
                window.slates += 1
                window.slots += len(idx)
                if isinstance(slate.get("latency_ms"), (int, float)):
                    window.latency_ms.append(float(slate["latency_ms"]))
                if len(idx):
                    window.expected += self.clicks.p_click(slate_attr)
                    window.oracle += self.clicks.oracle(attraction, len(idx))[1]
                if session.remaining <= 0:
                    del sessions[sid], context[sid]
                    window.slate_clicks += position is not None
                    continue
                gap = self.population.think_time(session) * self.time_scale
                if position is not None:
                    window.slate_clicks += 1
                    item, imp, pos = int(idx[position]), slate["impression_id"], position
                else:
                    item, imp, pos = -1, None, None
                heapq.heappush(due, (now + gap, seq, sid, item, imp, pos))
                seq += 1
            # sessions whose slate did not come in time browse on their own
            while sent_order and now - sent_order[0][0] > self.slate_timeout:
                sent_at, sid = sent_order.popleft()
                if waiting.get(sid) == sent_at:
                    del waiting[sid]
                    stale[sid] = stale.get(sid, 0) + 1
                    window.unanswered += 1
                    if sessions[sid].remaining > 0:
                        heapq.heappush(due, (now, seq, sid, -1, None, None))
                        seq += 1
                    else:
                        del sessions[sid], context[sid]
            # send the clicks the pacing calls for
            while i < now * self.rate:
                t_nominal = i / self.rate
                if due and due[0][0] <= now:
                    _, _, sid, item, imp, pos = heapq.heappop(due)
                    session = sessions[sid]
                else:
                    session = self.population.new_session()
                    sid, item, imp, pos = session.id, -1, None, None
                    sessions[sid] = session
                if item < 0:
                    item = self.population.organic_click(session, t_nominal)
                    window.organic += 1
                context[sid] = (session.user, session.category, t_nominal)
                self.population.after_click(session, item)
                click = {"session_id": sid, "user_id": f"u{session.user}", "item_id": str(self.world.item_ids[item]),
                         "ts": time.time(), "event_type": "click", "event_id": new_event_id()}
                if imp is not None:
                    click.update(impression_id=imp, position=pos)
                producer.produce(s.topic(CLICKS), key=sid, value=json.dumps(click), on_delivery=self._on_delivery)
                sent_at = time.monotonic() - start
                waiting[sid] = sent_at
                sent_order.append((sent_at, sid))
                window.clicks_sent += 1
                i += 1
            producer.poll(0)
            if now - window_start >= self.window_s:
                self._close_window(window, window_start, now, i, producer)
                window, window_start = Window(), now
            time.sleep(min(max((i + 1) / self.rate - (time.monotonic() - start), 0.0), 0.005))
        end = time.monotonic() - start
        self._close_window(window, window_start, end, i, producer)
        remaining = producer.flush(30)
        consumer.close()
        summary = self.total.report()
        summary.update(duration_s=end, rate_target=self.rate, rate_achieved=self.total.clicks_sent / end,
                       failed_deliveries=self.failed_deliveries + remaining, sessions_started=self.population.started)
        return summary

    def _close_window(self, window: Window, start: float, end: float, sent: int, producer: Producer) -> None:
        self.total.add(window)
        report = window.report()
        report.update(source="simulator", kind="ground-truth", window_start_s=start, window_end_s=end,
                      scenario_time_s=sent / self.rate, ts=time.time())
        self.windows.append(report)
        producer.produce(self.settings.topic(METRICS), value=json.dumps(report), on_delivery=self._on_delivery)
        log.info("window %.0f-%.0fs: %d clicks, %d slates, CTR %.3f (expected %.3f, oracle %.3f, regret %.3f), "
                 "%d unanswered", start, end, report["clicks_sent"], report["slates"], report["ctr"],
                 report["expected_ctr"], report["oracle_ctr"], report["regret"], report["unanswered"])
