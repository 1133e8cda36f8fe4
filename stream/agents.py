"""Stream agents: clicks in, slates (or dead letters) out; interleaving outcomes to the DBGD leader.

``AnswerClicks`` reads ``clicks`` in micro-batches (whatever librdkafka has fetched, ``stream/intake.py``),
validates each record (a malformed one goes to ``dead-letters`` with its reason and the worker keeps
running) and answers every valid click with one slate on ``recommendations``, ranked by
:class:`stream.online.OnlineRecommender`.  If ranking a batch fails (Redis unreachable, say), the batch
is still answered, with recently popular items.  A batch's slates, dead letters and DBGD feedback go
out together, and its clicks count as done once all of them are on the broker.

``decide_dbgd`` consumes the single-partition ``dbgd-feedback`` topic, so one worker decides for
all (:class:`stream.leader.DbgdLeader`) and announces new versions on ``model-updates``.  The same
outcomes feed the CTR drift detector (:class:`stream.drift.CtrDriftDetector`); a drop requests a
major retrain, which the leader's ``retrain_when_due`` timer runs (:class:`stream.retrainer.Retrainer`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Sequence

import redis
from confluent_kafka import Message

from models.registry import ModelRegistry
from stream.app import app, settings
from stream.intake import ClickIntake, Outgoing
from models.interleave import CURRENT, EXPLORER
from stream.drift import CtrDriftDetector
from stream.leader import DbgdLeader
from stream.metrics import OnlineMetrics
from stream.prometheus import WorkerPrometheus
from stream.online import OnlineRecommender
from stream.records import Click, InvalidRecord, dead_letter, decode_click
from stream.retrainer import Retrainer, request_retrain
from models.sessions import SessionStore
from stream.topics import CLICKS, DBGD_FEEDBACK, DEAD_LETTERS, METRICS, MODEL_UPDATES, RECOMMENDATIONS

log = logging.getLogger(__name__)

raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
RECOMMENDATIONS_TOPIC, DEAD_LETTERS_TOPIC = settings.topic(RECOMMENDATIONS), settings.topic(DEAD_LETTERS)
FEEDBACK_TOPIC = settings.topic(DBGD_FEEDBACK)
model_updates_topic = app.topic(settings.topic(MODEL_UPDATES), partitions=settings.model_updates_partitions, **raw)
feedback_topic = app.topic(FEEDBACK_TOPIC, partitions=1, value_serializer="json")

redis_client = redis.Redis.from_url(settings.redis, socket_timeout=2.0, socket_connect_timeout=2.0)
registry = ModelRegistry(redis_client, namespace=settings.topic_prefix)
recommender = OnlineRecommender(
    settings, registry, SessionStore(redis_client, settings.topic_prefix, settings.session_ttl_s, settings.session_max_items,
                                     cache_size=settings.session_cache),
    background_refresh=True, freeze_gc=True,
)


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

    def handle(self, messages: Sequence[Message]) -> list[Outgoing]:
        out: list[Outgoing] = []
        valid: list[tuple[Message, Click]] = []
        for m in messages:
            try:
                valid.append((m, decode_click(m.value(), settings.max_event_bytes)))
            except InvalidRecord as err:
                out.append((DEAD_LETTERS_TOPIC, m.key(), _dead_letter(m, str(err))))
        if not valid:
            return out
        started = time.perf_counter()
        clicks = [c for _, c in valid]
        produced = [m.timestamp()[1] / 1000.0 for m, _ in valid]
        try:
            offsets = [(m.partition(), m.offset()) for m, _ in valid]
            slates, feedback = recommender.process(clicks, produced, offsets)
        except Exception:  # noqa: BLE001 - degrade, do not stop: answer with popular items
            log.exception("ranking a batch of %d clicks failed; answering with popular items", len(clicks))
            now = time.time()
            slates, feedback = [recommender.popular_slate(c, p, now) for c, p in zip(clicks, produced)], None
        out.extend((RECOMMENDATIONS_TOPIC, m.key(), s.model_dump_json().encode()) for (m, _), s in zip(valid, slates))
        out.extend((FEEDBACK_TOPIC, None, json.dumps(f).encode()) for f in (feedback.as_messages() if feedback else []))
        _observe(clicks, produced, slates)
        prometheus.batch_clicks.observe(len(clicks))
        prometheus.batch_seconds.observe(time.perf_counter() - started)
        return out


def _dead_letter(m: Message, reason: str) -> bytes:
    letter = dead_letter(m.topic(), m.partition(), m.offset(), reason, m.value(), settings.dead_letter_raw_bytes)
    log.warning("dead letter %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), reason)
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
        raw_state = redis_client.mget(f"{settings.topic_prefix}dbgd", f"{settings.topic_prefix}drift")
        report["dbgd"], report["drift"] = (json.loads(x) if x else {} for x in raw_state)
    except redis.RedisError as err:
        log.warning("metrics without DBGD/drift state, Redis unreachable: %s", err)
    prometheus.window(report)
    await metrics_topic.send(value=json.dumps(report).encode())


@app.task
async def serve_prometheus() -> None:
    if settings.metrics_port:
        prometheus.serve(settings.metrics_port, settings.metrics_host)


drift = CtrDriftDetector(settings.drift_delta, settings.drift_min_impressions, settings.drift_retrain_after)
retrainer = Retrainer(settings, registry)


@app.agent(feedback_topic)
async def decide_dbgd(stream) -> None:
    """The DBGD decision-maker and the drift detector: one partition, so one worker sees every outcome.

    Every worker batch sends one message, hundreds a second in all, so they are taken in batches too: the
    registry is read and the DBGD/drift state written to Redis once per batch, not per message."""
    leader = DbgdLeader(settings, registry)
    async for messages in stream.take(settings.batch_size, within=0.05):
        try:
            for message in messages:
                impressions = int(message.get("impressions", 0))
                clicked = int(message.get(CURRENT, 0)) + int(message.get(EXPLORER, 0))
                if drift.update(impressions, clicked, time.time()):
                    before, after = drift.last_change
                    log.warning("CTR drift: ADWIN found a drop (CTR %.4f before, %.4f in the newest %d impressions)%s",
                                before, after, drift.state()["window"],
                                f"; a major retrain after {settings.drift_retrain_after} more impressions"
                                if settings.drift_retrain else "")
                due, cut_ts = drift.retrain_due()
                if due and settings.drift_retrain:
                    log.warning("requesting a major retrain on the traffic since the CTR drop")
                    request_retrain(redis_client, settings.topic_prefix, "drift", ctr=drift.ctr, since=cut_ts)
            updates = leader.observe_many(messages) if settings.explore else []  # no explorer: nothing to decide
            redis_client.mset({f"{settings.topic_prefix}dbgd": json.dumps(leader.state()),
                               f"{settings.topic_prefix}drift": json.dumps(drift.state())})
        except Exception:  # noqa: BLE001
            log.exception("DBGD decision failed")
            continue
        for update in updates:
            await model_updates_topic.send(value=update.model_dump_json().encode())


@app.timer(interval=settings.retrain_check_s, on_leader=True)
async def retrain_when_due() -> None:
    """Leader only: run a requested, scheduled or click-count major retrain (in a thread)."""
    try:
        await retrainer.check()
    except redis.RedisError as err:
        log.warning("retrain check skipped, Redis unreachable: %s", err)
