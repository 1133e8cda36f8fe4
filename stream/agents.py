"""Stream agents: clicks in, slates (or dead letters) out.

``answer_clicks`` reads ``clicks`` in micro-batches, validates each record, sends a malformed one
to ``dead-letters`` with its reason (the worker keeps running), and answers every valid click with
one slate on ``recommendations``.  For now the slate is the most clicked items so far; the ranking
is the part later work replaces, the plumbing stays.
"""

from __future__ import annotations

import logging
import time

from stream.app import app, settings
from stream.popular import MostClicked
from stream.records import Click, InvalidRecord, Recommendation, dead_letter, decode_click, new_impression_id
from stream.tables import item_clicks
from stream.topics import CLICKS, DEAD_LETTERS, RECOMMENDATIONS

log = logging.getLogger(__name__)

clicks_topic = app.topic(
    settings.topic(CLICKS), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    partitions=settings.clicks_partitions,
)
recommendations_topic = app.topic(
    settings.topic(RECOMMENDATIONS), key_type=bytes, value_type=bytes, key_serializer="raw",
    value_serializer="raw", partitions=settings.recommendations_partitions,
)
dead_letters_topic = app.topic(
    settings.topic(DEAD_LETTERS), value_type=bytes, value_serializer="raw", partitions=settings.dead_letters_partitions,
)

PLACEHOLDER_VERSION = "most-clicked"
popular = MostClicked()


async def send_dead_letter(event, reason: str) -> None:
    msg = event.message
    letter = dead_letter(msg.topic, msg.partition, msg.offset, reason, event.value, settings.dead_letter_raw_bytes)
    log.warning("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
    await dead_letters_topic.send(value=letter.model_dump_json().encode())


def slate_for(click: Click, produced_at: float) -> Recommendation:
    top = popular.top(settings.slate_size)
    now = time.time()
    return Recommendation(
        session_id=click.session_id, impression_id=new_impression_id(),
        items=[item for item, _ in top], scores=[float(n) for _, n in top],
        model_version=PLACEHOLDER_VERSION, source="stream", ts=now,
        latency_ms=max(0.0, (now - produced_at) * 1000.0),
    )


@app.agent(clicks_topic)
async def answer_clicks(stream) -> None:
    """Validate each click; answer the valid ones with a slate, dead-letter the rest."""
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        if not popular.counts and len(item_clicks):
            popular.load(item_clicks.items())  # the table was restored from its changelog
        valid: list[tuple[object, Click]] = []
        for event in events:
            try:
                valid.append((event, decode_click(event.value, settings.max_event_bytes)))
            except InvalidRecord as err:
                await send_dead_letter(event, str(err))
        popular.add_many(click.item_id for _, click in valid)
        for event, click in valid:
            try:
                item_clicks[click.item_id] += 1
                slate = slate_for(click, event.message.timestamp)
                await recommendations_topic.send(
                    key=click.session_id.encode(), value=slate.model_dump_json().encode()
                )
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the worker
                log.exception("failed to answer click")
                await send_dead_letter(event, f"processing error: {type(exc).__name__}: {exc}")
