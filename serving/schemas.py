"""Request and response bodies of the HTTP API (they make the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Slate(BaseModel):
    """A session's recommendations; ``fallback`` says they did not come from the model, ``reason`` why."""

    session_id: str
    impression_id: str = Field(description="send it back with a click on this slate (with the slot's position)")
    items: list[ScoredItem]
    model_version: str
    fallback: bool
    reason: Literal["unknown-session", "no-model", "redis-unavailable", "ranking-failed"] | None = None
    source: Literal["serving"] = "serving"


class EventResult(BaseModel):
    index: int = Field(description="the click's place in the request")
    event_id: str = Field(description="the click's event_id (the client's, or one given here)")
    status: Literal["accepted", "retry"] = Field(description="accepted: handed to Kafka; retry: send it again")


class EventsAccepted(BaseModel):
    accepted: int = Field(description="clicks handed to Kafka (delivered now or, if the broker is down, later)")
    results: list[EventResult] = Field(default_factory=list, description="each click's outcome, in request order")


class Health(BaseModel):
    status: Literal["ok", "not ready"]
    model_version: str | None = None
    redis: bool | None = None
    kafka_queue: int | None = None


class RollbackRequest(BaseModel):
    to: str | None = Field(None, description="the version to go back to; default: the current version's parent")


class RollbackDone(BaseModel):
    previous: str
    current: str


class RetrainRequested(BaseModel):
    request_id: str
    queued: int = Field(description="retrain requests waiting, including this one")
