"""A worker's metrics in Prometheus format (``STREAMREC_METRICS_PORT``; scraped by docker-compose's Prometheus)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class WorkerPrometheus:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.clicks = Counter("streamrec_stream_clicks", "valid clicks answered", registry=r)
        self.slates = Counter("streamrec_stream_slates", "slates published, by model version", ["model_version"],
                              registry=r)
        self.slate_clicks = Counter("streamrec_stream_slate_clicks", "clicks on slates, by interleaving team",
                                    ["team"], registry=r)
        self.dead_letters = Counter("streamrec_stream_dead_letters", "malformed clicks sent to dead-letters",
                                    registry=r)
        self.fallbacks = Counter("streamrec_stream_fallback_slates", "slates answered without session state (Redis "
                                 "unavailable); their clicks are applied once it is back", registry=r)
        self.duplicates = Counter("streamrec_stream_duplicate_events", "clicks repeating an applied event_id, not "
                                  "answered again", registry=r)
        self.latency = Histogram("streamrec_stream_click_to_slate_seconds", "click (Kafka produce) to slate",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_clicks = Histogram("streamrec_stream_batch_clicks", "clicks per micro-batch (small batches pay "
                                      "the fixed per-batch cost more often)", buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("streamrec_stream_batch_seconds", "time to rank and publish one micro-batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.ctr = Gauge("streamrec_stream_window_ctr", "clicks on slates per slate, last window", registry=r)
        self.hit_rate = Gauge("streamrec_stream_window_hit_rate", "next click in the previous slate, last window",
                              registry=r)
        self.mrr = Gauge("streamrec_stream_window_mrr", "MRR of the next click in the previous slate", registry=r)
        self.coverage = Gauge("streamrec_stream_window_coverage", "distinct items shown / catalog", registry=r)
        self.behind = Gauge("streamrec_stream_behind_log_seconds", "age of the newest processed click", registry=r)
        self.lag = Gauge("streamrec_stream_clicks_lag", "clicks on this worker's partitions not yet read (consumer lag)",
                         registry=r)
        self.model_age = Gauge("streamrec_stream_model_age_seconds", "age of the model in use", registry=r)
        self.model = Gauge("streamrec_stream_model", "1 for the model version in use", ["version"], registry=r)
        self.dbgd_accepted = Gauge("streamrec_stream_dbgd_accepted_updates", "DBGD updates accepted", registry=r)
        self.drift_drops = Gauge("streamrec_stream_drift_drops", "CTR drops found by ADWIN", registry=r)
        self._version: str | None = None

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)

    def window(self, report: dict) -> None:
        for gauge, key in ((self.ctr, "ctr"), (self.hit_rate, "hit_rate"), (self.mrr, "mrr"),
                           (self.coverage, "coverage"), (self.behind, "behind_log_s"), (self.lag, "clicks_lag"),
                           (self.model_age, "model_age_s")):
            if report.get(key) is not None:
                gauge.set(report[key])
        version = report.get("model_version")
        if version != self._version:
            if self._version is not None:
                self.model.remove(self._version)
            if version is not None:
                self.model.labels(version).set(1)
            self._version = version
        if report.get("dbgd", {}).get("accepted_updates") is not None:
            self.dbgd_accepted.set(report["dbgd"]["accepted_updates"])
        if report.get("drift", {}).get("drops") is not None:
            self.drift_drops.set(report["drift"]["drops"])
