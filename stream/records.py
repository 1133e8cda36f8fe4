"""The wire contracts: JSON records on Kafka, validated with pydantic.

Every record is plain JSON so any client (kcat, Kafka's console tools, a browser through the API)
can read it.  Item ids are strings on the wire; models map them to contiguous indices.  Unknown
items are valid input (cold start), not errors.

Click records are validated strictly: a wrong type is an error to report in ``dead-letters``,
not something to coerce silently.

Examples
--------
>>> click = decode_click(b'{"session_id": "s1", "item_id": "42", "ts": 1.5, "event_type": "click"}')
>>> click.item_id
'42'
>>> try:
...     decode_click(b'{"session_id": "s1", "item_id": 42, "ts": 1.5}')
... except InvalidRecord as err:
...     print(err)
item_id: Input should be a valid string
"""

from __future__ import annotations

import random
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Id = Annotated[str, Field(min_length=1, max_length=256)]


class InvalidRecord(ValueError):
    """A record that breaks its wire contract; the message is the reason sent to ``dead-letters``."""


class Click(BaseModel):
    """``clicks``, key = session_id.  ``impression_id``/``position`` say which slate (and slot) was clicked."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    session_id: Id
    item_id: Id
    ts: float = Field(ge=0, allow_inf_nan=False, description="event time, unix seconds")
    event_type: Literal["view", "click", "purchase"] = "click"
    user_id: Id | None = None
    impression_id: Id | None = None
    position: int | None = Field(None, ge=0, le=10_000)
    event_id: Id | None = Field(None, description="the sender's id for this event: a click repeating the id of one "
                                "already applied to its session (a producer's or client's retry) gets no second slate")


class Recommendation(BaseModel):
    """``recommendations``, key = session_id: one slate, with the team of each slot when interleaved."""

    session_id: str
    impression_id: str
    items: list[str]
    scores: list[float]
    teams: list[str] | None = None
    model_version: str
    source: Literal["stream", "serving"]
    ts: float
    latency_ms: float
    event_id: str | None = Field(None, description="the answered click's event_id")
    fallback: bool = Field(False, description="answered without the session's state (Redis unavailable): recently "
                           "popular items; the click is applied to the state once Redis is back")


class DeadLetter(BaseModel):
    """``dead-letters``: an input we could not process, where it came from and why.

    The original record stays in its topic at (partition, offset); ``raw`` keeps up to a
    configured number of its bytes (``raw_truncated`` says when that is not all of it).
    """

    topic: str
    partition: int
    offset: int
    error: str
    raw: str
    raw_size: int
    raw_truncated: bool = False
    ts: float = Field(default_factory=time.time)


class ModelUpdate(BaseModel):
    """``model-updates``: a model decision and its reason.

    ``kind`` is what the version is (a ``major`` retrain, a ``minor`` DBGD step) or ``rollback``;
    ``action`` what happened to it: ``promoted`` (now current), ``rejected`` (not promoted: the gate, a
    broken model, or a stale base), ``rolled_back`` (``version`` is current again, replacing ``parent``),
    ``kept`` (the guardrail found no CTR drop).  ``parent`` is the version the decision was based on."""

    version: str
    kind: Literal["major", "minor", "rollback"]
    parent: str | None = None
    action: Literal["promoted", "rejected", "rolled_back", "kept"] = "promoted"
    reason: str = ""
    ts: float = Field(default_factory=time.time)
    summary: dict = Field(default_factory=dict)


_ids = random.Random()  # seeded from os.urandom once per process


def new_impression_id() -> str:
    """128 random bits as 32 hex digits, like ``uuid4().hex``: one per slate, so a fifth of the cost matters
    (uuid4 reads os.urandom on every call; in the worker that showed as 3% of the agent's time)."""
    return f"{_ids.getrandbits(128):032x}"


#: an ``event_id`` for a click a sender is about to produce (the same 128 random bits); a retry sends it again
new_event_id = new_impression_id


def _reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) or "record"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def decode_click(raw: bytes | None, max_bytes: int = 16_384) -> Click:
    """Parse and validate one ``clicks`` record, or raise :class:`InvalidRecord` with the reason."""
    if raw is None:
        raise InvalidRecord("empty record (null value)")
    if len(raw) > max_bytes:
        raise InvalidRecord(f"record of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        return Click.model_validate_json(raw)
    except ValidationError as err:
        raise InvalidRecord(_reason(err)) from None


def dead_letter(topic: str, partition: int, offset: int, error: str, raw: bytes | None, keep: int) -> DeadLetter:
    """Build the dead letter for a record, keeping at most ``keep`` bytes of it (as text)."""
    raw = raw or b""
    return DeadLetter(
        topic=topic, partition=partition, offset=offset, error=error,
        raw=raw[:keep].decode("utf-8", errors="backslashreplace"),
        raw_size=len(raw), raw_truncated=len(raw) > keep,
    )
