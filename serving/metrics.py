"""Prometheus metrics of one serving app, in their own registry (so several apps can live in one test process).

With several uvicorn workers (``STREAMREC_SERVING_WORKERS`` > 1) each process counts for itself, and whichever
answers a scrape would report only its own share. ``python -m serving`` then sets ``PROMETHEUS_MULTIPROC_DIR``
before the workers start: prometheus-client keeps every process's values in files there, and ``/metrics`` adds
them up (counters and histograms summed; gauges as their mode below says, over live processes).
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("streamrec_serving_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("streamrec_serving_request_seconds", "request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter("streamrec_serving_fallbacks", "slates served by a fallback, by reason", ["reason"],
                                 registry=r)
        self.slates = Counter("streamrec_serving_slates", "slates served, by model version", ["model_version"],
                              registry=r)
        self.ranked_by = Counter("streamrec_serving_ranked_by", "model slates by who ranked them: the stream "
                                 "(stored with the session), the version before its promotion (prerank) or the "
                                 "serving endpoint itself", ["by"], registry=r)
        self.model = Gauge("streamrec_serving_model", "1 for the model version in use (by any worker process)",
                           ["version"], registry=r, multiprocess_mode="livemax")
        self.model_age = Gauge("streamrec_serving_model_age_seconds", "seconds since the model in use was created "
                               "(the oldest any worker process uses)", registry=r, multiprocess_mode="livemax")
        self.published = Counter("streamrec_serving_published", "records given to Kafka, by topic and outcome",
                                 ["topic", "outcome"], registry=r)
        self.publish_queue = Gauge("streamrec_serving_publish_queue", "records waiting for Kafka", registry=r,
                                   multiprocess_mode="livesum")
        self.events = Counter("streamrec_serving_events", "clicks ingested by POST /events, by outcome", ["outcome"],
                              registry=r)
        self._version: str | None = None

    def set_model(self, version: str | None, created: float | None) -> None:
        if version != self._version:
            if self._version is not None:
                if multiprocess_dir():  # a sample in a file cannot be removed: zero it
                    self.model.labels(self._version).set(0)
                else:
                    self.model.remove(self._version)
            if version is not None:
                self.model.labels(version).set(1)
            self._version = version
        if created is not None:
            self.model_age.set(max(time.time() - created, 0.0))

    def exposition(self) -> bytes:
        """The text a scrape gets (``CONTENT_TYPE_LATEST``): every worker process's values in multiprocess mode."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    @staticmethod
    def process_exit() -> None:
        """Drop this process's live gauges from the shared files (a worker stopping)."""
        if multiprocess_dir():
            multiprocess.mark_process_dead(os.getpid())


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when this process runs in that mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
