"""The FastAPI app: recommendations, click ingest, health, Prometheus metrics, admin, the live dashboard.

``create_app(settings)`` builds an independent app (its own Redis clients, Kafka producer and
metrics), so tests can run several.  Startup loads the current model and starts the background
refresher; shutdown flushes what Kafka can still take.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving import admin, dashboard
from serving.dashboard import MetricsFeed
from serving.metrics import ServingMetrics
from serving.publisher import Publisher
from serving.recommender import RequestBatcher, ServingRecommender
from serving.schemas import EventResult, EventsAccepted, Health, Slate
from stream.records import Click, InvalidRecord, decode_click, new_event_id, new_impression_id
from stream.settings import Settings, get_settings
from stream.topics import CLICKS, RECOMMENDATIONS

log = logging.getLogger(__name__)


class MetricsMiddleware:
    """Counts and times every request by its route template; rejects oversized bodies with 413 up front."""

    def __init__(self, app, metrics: ServingMetrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            response = JSONResponse({"detail": f"request body over the {self.max_body}-byte limit"}, status_code=413)
            await response(scope, receive, send_wrapper)
        else:
            await self.app(scope, receive, send_wrapper)
        route = scope.get("route")
        name = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(name, str(status[0])).inc()
        self.metrics.latency.labels(name).observe(time.perf_counter() - start)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes: a chunked body (no Content-Length) is cut off at the limit
    instead of being read whole first."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body over the {limit}-byte limit")
    return bytes(body)


def _parse_json(body: bytes):
    """JSON, or 400: not JSON, or nested so deep that parsing it would exhaust the stack."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"body is not JSON: {err}") from None
    except RecursionError:
        raise HTTPException(400, "body is JSON nested too deeply") from None


def create_app(settings: Settings | None = None, freeze_gc: bool = False) -> FastAPI:
    """The app.  ``freeze_gc`` (the service's own processes, not tests) freezes the collector's long-lived
    objects once the first model is in (see ``models.recommend.ModelCache``) and shortens the GIL's switch
    interval (``serving_switch_interval_s``)."""
    settings = settings or get_settings()
    if freeze_gc:
        # The refresh thread loads a promoted version (about a second of work, in stretches that hold the GIL);
        # each time the event loop gives the GIL up (a socket, Redis) it waited up to the switch interval for
        # it back, a convoy that queued every request behind it (bench.model_switch_stall: p99 97-140 ms at 5 ms,
        # 3-21 ms at 0.1 ms).  Otherwise the other threads mostly sleep, so a short interval costs little.
        sys.setswitchinterval(settings.serving_switch_interval_s)
    metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.publisher.start()
        app.state.recommender.start()
        app.state.feed.start()
        yield
        app.state.feed.stop()
        app.state.recommender.stop()
        left = app.state.publisher.close()
        if left:
            log.warning("%d records were still waiting for Kafka at shutdown", left)
        metrics.process_exit()

    app = FastAPI(title="streamrec serving", version="0.1.0", lifespan=lifespan,
                  description="Session recommendations from the newest promoted model, click ingest, health, "
                              "metrics. Slates served here are published to `recommendations` (source: serving).")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.recommender = ServingRecommender(settings, freeze_gc=freeze_gc)
    app.state.batcher = RequestBatcher(app.state.recommender)
    app.state.publisher = Publisher(settings.kafka, metrics, settings.serving_publish_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics, max_body=settings.serving_max_body_bytes)
    app.include_router(admin.router)
    app.state.feed = MetricsFeed(settings, settings.dashboard_history_s)
    app.include_router(dashboard.router(app.state.feed))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/recommendations/{session_id}", response_model=Slate, tags=["recommendations"])
    async def recommendations(
        session_id: str = Path(min_length=1, max_length=256, description="the session's id, as in its clicks"),
        k: int = Query(10, ge=1, le=settings.serving_max_k, description="how many items"),
    ) -> JSONResponse:
        """The session's next items from the current model, or a flagged fallback (never a 5xx).

        Runs on the event loop itself, with the requests waiting at the same moment ranked as one batch
        (``serving.recommender.RequestBatcher``); a thread pool would only add hand-offs and GIL contention."""
        start = time.time()
        served = await app.state.batcher.recommend(session_id, k)
        impression = new_impression_id()
        if served.fallback:
            metrics.fallbacks.labels(served.reason).inc()
        else:
            metrics.ranked_by.labels(served.ranked_by).inc()
        metrics.slates.labels(served.model_version).inc()
        now = time.time()
        items, scores = [i for i, _ in served.items], [s for _, s in served.items]
        record = {"session_id": session_id, "impression_id": impression, "items": items, "scores": scores,
                  "model_version": served.model_version, "source": "serving", "ts": now,
                  "latency_ms": (now - start) * 1000}
        app.state.publisher.send(settings.topic(RECOMMENDATIONS), session_id.encode(), json.dumps(record).encode())
        # built by hand (the shape of `Slate`, which documents it): validating our own output costs more than ranking
        return JSONResponse({"session_id": session_id, "impression_id": impression,
                             "items": [{"item_id": i, "score": s} for i, s in served.items],
                             "model_version": served.model_version, "fallback": served.fallback,
                             "reason": served.reason, "source": "serving"})

    @app.post("/events", response_model=EventsAccepted, status_code=202, tags=["events"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "oneOf": [Click.model_json_schema(), {"type": "array", "items": Click.model_json_schema(),
                                                        "maxItems": settings.serving_max_events}]}}}}})
    async def events(request: Request) -> Response:
        """Ingest one click (a JSON object) or several (an array); each is validated like the stream does, given an
        ``event_id`` if it has none, then produced to `clicks` keyed by session.  Validation is all or nothing: one
        bad click rejects the request (422, with each problem and its index).  The answer lists each click's
        ``event_id`` and whether it was accepted; if Kafka's local queue fills, the answer is 503 and says which
        to send again (sending all again is safe too: the stream answers an ``event_id`` once)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HTTPException(415, f"Content-Type must be application/json, not {content_type or 'missing'!r}")
        parsed = _parse_json(await _read_body(request, settings.serving_max_body_bytes))
        many = isinstance(parsed, list)
        items = parsed if many else [parsed]
        if not items:
            raise HTTPException(422, "no clicks: send a click object or a non-empty array of them")
        if len(items) > settings.serving_max_events:
            raise HTTPException(413, f"{len(items)} clicks in one request; at most {settings.serving_max_events}")
        clicks, problems = [], []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise InvalidRecord(f"a click must be a JSON object, not {type(item).__name__}")
                click = decode_click(json.dumps(item).encode(), settings.max_event_bytes)
                if click.ts > time.time() + settings.max_future_skew_s:
                    raise InvalidRecord(f"ts is more than max_future_skew_s={settings.max_future_skew_s:g} s in the "
                                        "future")
                clicks.append(click if click.event_id else click.model_copy(update={"event_id": new_event_id()}))
            except InvalidRecord as err:
                problems.append({"index": i, "error": str(err)} if many else {"error": str(err)})
        if problems:
            metrics.events.labels("rejected").inc(len(items))
            raise HTTPException(422, problems)
        results = []
        for i, click in enumerate(clicks):
            ok = app.state.publisher.send(settings.topic(CLICKS), click.session_id.encode(),
                                          click.model_dump_json(exclude_none=True).encode())
            results.append(EventResult(index=i, event_id=click.event_id, status="accepted" if ok else "retry"))
        accepted = sum(r.status == "accepted" for r in results)
        metrics.events.labels("accepted").inc(accepted)
        answer = EventsAccepted(accepted=accepted, results=results)
        if accepted < len(clicks):
            metrics.events.labels("dropped").inc(len(clicks) - accepted)
            return JSONResponse({"detail": f"Kafka's local queue is full: {len(clicks) - accepted} of {len(clicks)} "
                                           "clicks were not accepted; send those marked retry again",
                                 **answer.model_dump()}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse(answer.model_dump(), status_code=202)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """Alive: the process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    def readyz() -> Response:
        """Ready: a model is loaded and Redis answers."""
        rec = app.state.recommender
        try:
            redis_ok = bool(rec.fast.ping())
        except Exception:  # noqa: BLE001 - any failure means not reachable
            redis_ok = False
        ok = redis_ok and rec.model is not None
        body = Health(status="ok" if ok else "not ready", model_version=rec.model_name, redis=redis_ok,
                      kafka_queue=app.state.publisher.pending())
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus text format: requests, latency histogram, fallbacks, model version and age, Kafka outcomes."""
        rec = app.state.recommender
        model = rec.model
        metrics.set_model(rec.model_name, model.version.meta.get("created") if model else None)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def create_service_app() -> FastAPI:
    """What ``python -m serving`` runs in each uvicorn worker process when there are several."""
    return create_app(freeze_gc=True)
