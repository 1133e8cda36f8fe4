"""Stream agents: clicks in, slates (or dead letters) out; outcomes and ticks to the model-lifecycle controller.

``AnswerClicks`` reads ``clicks`` in micro-batches (whatever librdkafka has fetched, ``stream/intake.py``),
validates each record (a malformed one, or one dated too far in the future, goes to ``dead-letters``
with its reason and the worker keeps running) and answers every valid click with one slate on
``recommendations``, ranked by :class:`stream.online.OnlineRecommender`; a click repeating an
``event_id`` its session already applied gets none.  If session state is unavailable (Redis down or
slow) the batch is answered with recently popular items marked ``fallback`` and its clicks are applied
later (:meth:`AnswerClicks.catch_up`).  A batch's slates, dead letters and DBGD feedback go out in one
transaction with its offsets (``stream/delivery.py``).

``control`` consumes the single-partition ``dbgd-feedback`` topic, so one worker (the leader) feeds
every interleaving outcome, and every worker's timer tick, to the model-lifecycle controller
(:class:`stream.control.controller.Controller`), which makes every model decision; the agent publishes
them on ``model-updates``.  Retrains run in their own process (:mod:`stream.trainer`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from confluent_kafka import Message

from models.registry import ModelRegistry
from stream.app import app, settings
from stream.intake import ClickIntake, Handled, Outgoing
from stream.control.controller import Controller
from stream.control.store import RedisControlStore
from stream.metrics import OnlineMetrics
from stream.prometheus import WorkerPrometheus
from stream.online import OnlineRecommender
from stream.logs import set_context
from stream.records import Click, InvalidRecord, dead_letter, decode_click
from stream.trainer import ProcessTrainer
from models.sessions import SessionStore
from stream.topics import CLICKS, DBGD_FEEDBACK, DEAD_LETTERS, METRICS, MODEL_UPDATES, RECOMMENDATIONS

log = logging.getLogger(__name__)

raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
RECOMMENDATIONS_TOPIC, DEAD_LETTERS_TOPIC = settings.topic(RECOMMENDATIONS), settings.topic(DEAD_LETTERS)
FEEDBACK_TOPIC = settings.topic(DBGD_FEEDBACK)
model_updates_topic = app.topic(settings.topic(MODEL_UPDATES), partitions=settings.model_updates_partitions, **raw)
feedback_topic = app.topic(FEEDBACK_TOPIC, partitions=1, value_serializer="json")

redis_client = redis.Redis.from_url(settings.redis, socket_timeout=2.0, socket_connect_timeout=2.0)
registry = ModelRegistry(redis_client, namespace=settings.topic_prefix, **settings.registry_pacing())
recommender = OnlineRecommender(
    settings, registry, SessionStore(redis_client, settings.topic_prefix, settings.session_ttl_s, settings.session_max_items,
                                     cache_size=settings.session_cache),
    background_refresh=True, freeze_gc=True,
)


set_context(service="worker", model_version=lambda: recommender.model.name if recommender.model else None)

metrics = OnlineMetrics(k=settings.slate_size)
prometheus = WorkerPrometheus()
metrics_topic = app.topic(settings.topic(METRICS), partitions=settings.metrics_partitions, **raw)
WORKER_ID = f"{socket.gethostname()}-{os.getpid()}"


@app.service
class AnswerClicks(ClickIntake):
    """Validate each click; answer the valid ones with a slate, dead-letter the rest (stream/intake.py reads them)."""

    topic = settings.topic(CLICKS)
    settings = settings

    async def on_start(self) -> None:
        """Load the registry's current model before the first click is read, not inside its batch (building the
        recall index of a 43k-item catalog takes a second or two, which the first clicks would wait for)."""
        try:
            await asyncio.to_thread(recommender.refresh_model)
        except Exception as err:  # noqa: BLE001 - Redis down or no model yet: the first batch tries again
            log.warning("no model loaded before the first click: %s", err)
        await super().on_start()

    def partitions_changed(self) -> None:
        """The sessions' states this worker kept may be stale now: read them from Redis again."""
        recommender.sessions.forget()

    def handle(self, messages: Sequence[Message], use_state: bool) -> Handled:
        done = Handled()
        valid = self._valid(messages, done.out)
        if not valid:
            return done
        started = time.perf_counter()
        clicks = [c for _, c in valid]
        produced = [m.timestamp()[1] / 1000.0 for m, _ in valid]
        slates, feedback = None, None
        if use_state:
            try:
                offsets = [(m.partition(), m.offset()) for m, _ in valid]
                slates, feedback = recommender.process(clicks, produced, offsets)
            except Exception:  # noqa: BLE001 - degrade, do not stop: answer with popular items, apply later
                log.exception("ranking a batch of %d clicks failed; answering with popular items", len(clicks))
                done.failed = True
        if slates is None:
            now = time.time()
            slates = [recommender.popular_slate(c, p, now, fallback=True) for c, p in zip(clicks, produced)]
            done.held = [m for m, _ in valid]
            prometheus.fallbacks.inc(len(slates))
        answered = [(m, s) for (m, _), s in zip(valid, slates) if s is not None]
        done.out.extend((RECOMMENDATIONS_TOPIC, m.key(), s.model_dump_json().encode()) for m, s in answered)
        done.out.extend((FEEDBACK_TOPIC, None, json.dumps(f).encode())
                        for f in (feedback.as_messages() if feedback else []))
        if len(answered) < len(valid):
            log.info("%d duplicate events (an event_id already applied) got no second slate", len(valid) - len(answered))
            prometheus.duplicates.inc(len(valid) - len(answered))
        _observe(clicks, produced, [s for _, s in answered])
        prometheus.batch_clicks.observe(len(clicks))
        prometheus.batch_seconds.observe(time.perf_counter() - started)
        return done

    def catch_up(self, messages: Sequence[Message]) -> list[Outgoing]:
        """Apply held clicks to session state, in order (they were answered with fallbacks); their DBGD credit."""
        valid = self._valid(messages, [])  # held clicks passed it once: no dead letters here
        if not valid:
            return []
        _, feedback = recommender.process([c for _, c in valid], [m.timestamp()[1] / 1000.0 for m, _ in valid],
                                          [(m.partition(), m.offset()) for m, _ in valid], answer=False)
        return [(FEEDBACK_TOPIC, None, json.dumps(f).encode()) for f in feedback.as_messages()]

    @staticmethod
    def _valid(messages: Sequence[Message], out: list[Outgoing]) -> list[tuple[Message, Click]]:
        """The messages that decode to valid clicks; a dead letter into ``out`` for each of the others."""
        valid: list[tuple[Message, Click]] = []
        latest = time.time() + settings.max_future_skew_s
        for m in messages:
            try:
                click = decode_click(m.value(), settings.max_event_bytes)
                if click.ts > latest:
                    raise InvalidRecord(f"ts {click.ts:.3f} is {click.ts - time.time():.0f} s in the future (more "
                                        f"than max_future_skew_s={settings.max_future_skew_s:g})")
                valid.append((m, click))
            except InvalidRecord as err:
                out.append((DEAD_LETTERS_TOPIC, m.key(), _dead_letter(m, str(err))))
        return valid


def _dead_letter(m: Message, reason: str) -> bytes:
    letter = dead_letter(m.topic(), m.partition(), m.offset(), reason, m.value(), settings.dead_letter_raw_bytes)
    log.warning("dead letter %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), reason,
                extra={"partition": m.partition()})
    prometheus.dead_letters.inc()
    return letter.model_dump_json().encode()


def _observe(clicks: list[Click], produced: list[float], slates: list) -> None:
    """Clicks are judged against each session's previous slate, then this batch's slates are recorded."""
    for click, at in zip(clicks, produced):
        metrics.observe_click(click.session_id, click.item_id, click.impression_id, click.position, at)
    prometheus.clicks.inc(len(clicks))
    for slate in slates:
        metrics.observe_slate(slate.session_id, slate.impression_id, slate.items, slate.teams, slate.model_version,
                              slate.latency_ms)
        prometheus.slates.labels(slate.model_version).inc()
        prometheus.latency.observe(slate.latency_ms / 1000)


@app.timer(interval=settings.metrics_window_s)
async def publish_metrics() -> None:
    """Every worker, every ``metrics_window_s``: one window of its online metrics on ``metrics``."""
    model = recommender.model
    metrics.catalog_size = model.catalog.n if model is not None else None
    report = metrics.window(window_s=settings.metrics_window_s)
    intake = AnswerClicks.running
    report["clicks_lag"] = await asyncio.to_thread(intake.lag) if intake is not None else None
    report.update(source="stream", kind="window", worker=WORKER_ID, ts=time.time(),
                  model_version=model.name if model is not None else None,
                  model_kind=model.version.meta.get("kind") if model is not None else None,
                  model_age_s=time.time() - model.version.meta["created"] if model is not None else None)
    try:
        control_state = RedisControlStore(redis_client, settings.topic_prefix).load()
        for part in ("dbgd", "drift", "guardrail", "retrain"):
            report[part] = control_state.get(part) or {}
    except redis.RedisError as err:
        log.warning("metrics without the controller's state, Redis unreachable: %s", err)
    prometheus.window(report)
    await metrics_topic.send(value=json.dumps(report).encode())


@app.task
async def serve_prometheus() -> None:
    if settings.metrics_port:
        prometheus.serve(settings.metrics_port, settings.metrics_host)


controller = Controller(settings, ModelRegistry(redis_client, namespace=settings.topic_prefix,
                                               keep=settings.registry_keep, keep_majors=settings.registry_keep_majors,
                                               **settings.registry_pacing()),
                        RedisControlStore(redis_client, settings.topic_prefix),
                        ProcessTrainer(settings, Path(settings.data_dir) / "retrain-logs"))


@app.agent(feedback_topic)
async def control(stream) -> None:
    """The controller's adapter: ``dbgd-feedback`` has one partition, so exactly one worker (its owner, the leader)
    feeds the controller every outcome and tick, and publishes its decisions on ``model-updates``.

    Messages come in batches (every worker batch sends one, hundreds a second in all); the controller runs in a
    thread so a registry load or a model check never holds the event loop."""
    async for messages in stream.take(settings.batch_size, within=0.05):
        try:
            updates = await asyncio.to_thread(controller.handle, [m for m in messages if isinstance(m, dict)])
        except Exception:  # noqa: BLE001 - Redis down, say: the next batch tries again
            log.exception("the controller could not handle a batch of %d messages", len(messages))
            continue
        for update in updates:
            await model_updates_topic.send(value=update.model_dump_json().encode())


@app.timer(interval=settings.retrain_check_s)
async def tick_controller() -> None:
    """Every worker ticks the controller through the same partition, so whoever leads gets ticks."""
    await feedback_topic.send(value={"tick": time.time(), "worker": WORKER_ID})
