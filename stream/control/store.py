"""Where the controller keeps what must survive a leader change, behind a small interface.

The controller's state is one JSON document, read at the start of every batch of messages and written at
the end, so whichever worker owns the control partition next resumes from it.  Besides the state: the
queue of retrain requests, the clicks answered so far (the retrain-by-clicks rule), and the outcomes
that retrain job processes leave behind.  :class:`RedisControlStore` is the production store (Redis with
AOF, so a Redis restart keeps it); :class:`MemoryControlStore` serves unit tests.
"""

from __future__ import annotations

import json
import time
from typing import Protocol

import redis

from stream import keys


class ControlStore(Protocol):
    def load(self) -> dict: ...
    def save(self, state: dict) -> None: ...
    def pop_request(self) -> dict | None: ...
    def push_request(self, request: dict) -> int: ...
    def clicks_total(self) -> int: ...
    def job_result(self, job_id: str) -> dict | None: ...
    def put_job_result(self, job_id: str, result: dict) -> None: ...


class RedisControlStore:
    def __init__(self, client: redis.Redis, prefix: str = "", result_ttl_s: int = 7 * 24 * 3600) -> None:
        self.r, self.prefix, self.result_ttl_s = client, prefix, result_ttl_s

    def load(self) -> dict:
        raw = self.r.get(keys.control_state(self.prefix))
        return json.loads(raw) if raw else {}

    def save(self, state: dict) -> None:
        self.r.set(keys.control_state(self.prefix), json.dumps(state))

    def pop_request(self) -> dict | None:
        raw = self.r.lpop(keys.retrain_requests(self.prefix))
        if raw is None:
            return None
        try:
            request = json.loads(raw)
        except ValueError:
            return {"by": "request", "invalid": True}
        return request if isinstance(request, dict) else {"by": "request"}

    def push_request(self, request: dict) -> int:
        return int(self.r.rpush(keys.retrain_requests(self.prefix), json.dumps({"ts": time.time(), **request})))

    def clicks_total(self) -> int:
        return int(self.r.get(keys.clicks_count(self.prefix)) or 0)

    def job_result(self, job_id: str) -> dict | None:
        raw = self.r.get(keys.job_result(self.prefix, job_id))
        return json.loads(raw) if raw else None

    def put_job_result(self, job_id: str, result: dict) -> None:
        self.r.set(keys.job_result(self.prefix, job_id), json.dumps(result, default=str), ex=self.result_ttl_s)


class MemoryControlStore:
    """The same interface in a process's memory (tests)."""

    def __init__(self) -> None:
        self.state: dict = {}
        self.requests: list[dict] = []
        self.clicks = 0
        self.results: dict[str, dict] = {}

    def load(self) -> dict:
        return json.loads(json.dumps(self.state))

    def save(self, state: dict) -> None:
        self.state = json.loads(json.dumps(state))

    def pop_request(self) -> dict | None:
        return self.requests.pop(0) if self.requests else None

    def push_request(self, request: dict) -> int:
        self.requests.append(request)
        return len(self.requests)

    def clicks_total(self) -> int:
        return self.clicks

    def job_result(self, job_id: str) -> dict | None:
        return self.results.get(job_id)

    def put_job_result(self, job_id: str, result: dict) -> None:
        self.results[job_id] = json.loads(json.dumps(result, default=str))
