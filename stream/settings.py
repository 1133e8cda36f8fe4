"""One settings object for every service; each field can be set from the environment as ``STREAMREC_<FIELD>``.

Defaults run on one machine (``make up`` prints the two addresses to export).  Tests and benchmarks
isolate themselves with ``STREAMREC_TOPIC_PREFIX`` and ``STREAMREC_APP_ID`` rather than a new broker.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from models.recommend import CandidateParams


class Settings(BaseSettings):
    """Every knob of streamrec.  ``Settings()`` reads ``STREAMREC_*`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    # --- where the real components are
    kafka: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    redis: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")
    kafka_replication: int = Field(1, ge=1, description="replication factor of the topics streamrec creates; at 3 or "
                                   "more they get min.insync.replicas = replication - 1 (`make up BROKERS=3` prints 3)")

    # --- logs (every service)
    log_format: Literal["text", "json"] = Field("text", description="text lines, or one JSON object per line with "
                                                "service, worker, partition and model_version (stream/logs.py)")
    kafka_log_level: Literal["debug", "info", "warning", "error"] = Field(
        "warning", description="librdkafka's lines reach the `librdkafka` logger at this level and above")

    # --- topics: names are prefixed so that tests and runs can share one broker without interfering
    topic_prefix: str = Field("", description="prepended to every topic name")
    clicks_partitions: int = Field(4, ge=1, description="partitions of `clicks` (keyed by session_id)")
    recommendations_partitions: int = Field(4, ge=1, description="partitions of `recommendations` (keyed by "
                                            "session_id: a session's slates in order)")
    dead_letters_partitions: int = Field(1, ge=1, description="partitions of `dead-letters`")
    metrics_partitions: int = Field(1, ge=1, description="one partition keeps the metrics in time order")
    model_updates_partitions: int = Field(1, ge=1, description="one partition: a total order of versions")

    # --- the stream worker
    app_id: str = Field("streamrec", description="Faust app id: consumer group and changelog topic prefix")
    data_dir: Path = Field(Path(".run/faust"), description="Faust's local table state")
    worker_web_port: int = Field(6066, description="Faust's web server port (0 disables it)")
    batch_size: int = Field(256, ge=1, description="most clicks per micro-batch: a batch is what the consumer has "
                            "fetched, up to this many (stream/intake.py)")
    slate_size: int = Field(10, ge=1, le=200, description="items per slate")
    max_event_bytes: int = Field(16_384, ge=256, description="larger click records are dead-lettered")
    dead_letter_raw_bytes: int = Field(4096, ge=256, description="bytes of the raw record kept in a dead letter (the "
                                       "record itself stays in `clicks` for its retention)")
    dead_letters_retention_s: float = Field(30 * 24 * 3600, gt=0, description="dead letters are kept this long ...")
    dead_letters_retention_bytes: int = Field(1 << 30, ge=1 << 20, description="... and at most this many bytes per "
                                              "partition")
    auto_offset_reset: str = Field("earliest", pattern="^(earliest|latest)$", description="where a new consumer "
                                   "group starts reading `clicks`")
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once", description="exactly_once: a batch's slates, dead letters and DBGD feedback are committed in "
        "one Kafka transaction with its click offsets (readers use read_committed); at_least_once: offsets are "
        "committed after the answers are acknowledged, and a crash answers the clicks since the last commit again")
    transaction_timeout_ms: int = Field(10_000, ge=1000, description="a transaction a dead worker left open is "
                                        "aborted by the broker after this long (sooner if the worker restarts)")
    transaction_stuck_s: float = Field(3.0, gt=0, description="a transaction call that has not returned after this "
                                       "long is given up with its producer (librdkafka can block past its own "
                                       "timeouts when a coordinator goes away)")
    intake_stuck_s: float = Field(30.0, gt=0, description="the clicks consumer is replaced by a new one in its "
                                  "group when a poll has not returned, its group has not been steady with a "
                                  "broker up, or a rewind after an aborted transaction has not been answered, for "
                                  "this long; every thread's stack goes to stderr when the intake's loop has not "
                                  "come round for this long")
    max_future_skew_s: float = Field(300.0, ge=0, description="a click whose ts is further in the future than this "
                                     "is dead-lettered (it would freeze the popular-items clock)")
    state_retry_s: float = Field(0.5, gt=0, description="first wait before session state is tried again after Redis "
                                 "failed (doubling up to state_retry_max_s); clicks meanwhile get fallback slates and "
                                 "their offsets wait until their state is applied")
    state_retry_max_s: float = Field(8.0, gt=0, description="longest wait between session-state retries")
    max_backlog_clicks: int = Field(50_000, ge=1, description="clicks answered with fallbacks and not yet applied to "
                                    "session state; beyond this the worker stops reading until Redis is back")
    event_id_memory: int = Field(32, ge=0, description="event ids remembered per session: a click repeating one is a "
                                 "duplicate and gets no second slate")
    torch_threads: int = Field(1, ge=1, description="torch threads per worker: a second thread made a batch faster "
                               "but spun on the core Kafka needs (1.03 vs 0.74 CPU-ms per click, bench/stream_throughput)")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="the worker's event loop: uvloop (libuv, in C) or asyncio's own; Faust hands every "
        "record through several tasks, so the loop's speed is the pass-through's speed")
    fetch_max_wait_ms: int = Field(20, ge=1, le=1500, description="longest the broker holds a worker's fetch "
                                   "when there is nothing new, for the clicks intake and Faust's consumer (Faust's "
                                   "own 1,500 ms delayed clicks up to 1.5 s when they went through it)")
    model_refresh_s: float = Field(0.5, gt=0, description="how often workers check model:current in Redis")

    # --- online metrics
    metrics_window_s: float = Field(5.0, gt=0, description="each worker publishes a window of metrics this often")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus endpoint of a worker (0: off)")
    metrics_host: str = Field("127.0.0.1", description="interface of the worker's Prometheus endpoint")

    # --- session state (Redis; keys are prefixed with topic_prefix too)
    session_ttl_s: int = Field(1800, ge=1, description="a session's state expires after this much inactivity")
    session_max_items: int = Field(20, ge=1, description="recent items kept per session (state rebuilds)")
    session_cache: int = Field(20_000, ge=0, description="sessions a worker keeps the state it last wrote of, so their "
                               "next click reads no Redis (about 1.3 KB each; 0: always read Redis)")
    session_ranking_items: int = Field(20, ge=0, description="the top of W's ranking kept with each session's state "
                                       "for the serving endpoint to answer from (0: serving always ranks itself)")

    # --- candidates and ranking
    candidates_gru: int = Field(40, ge=1, description="top-N items by GRU4Rec score")
    candidates_popular: int = Field(5, ge=0, description="recently popular items added to the candidates")
    candidates_fresh: int = Field(5, ge=0, description="newly seen items added to the candidates")
    ann_min_items: int = Field(10_000, ge=0, description="catalogs this large get an inverted-file index for the GRU "
                               "top-N (faiss IVF, ~sqrt(n) lists of 4-bit fast-scan codes); smaller ones are scored "
                               "exactly")
    ann_probe: float = Field(0.065, gt=0, le=1, description="share of the index's lists scanned per query (at least "
                             "8): more finds more of the exact top-N, and costs proportionally more")
    exclude_seen: bool = Field(True, description="leave a session's own items out of its candidates")
    popular_half_life_s: float = Field(3600.0, gt=0, description="an item's click count halves in this much event "
                                       "time (the recently popular candidates and fallback)")
    fresh_window_s: float = Field(3600.0, gt=0, description="items first seen this recently are fresh candidates")
    new_item_min_sessions: int = Field(3, ge=1, description="an item outside the model's catalog enters the item "
                                       "statistics (and so the popular and fresh candidates) once this many distinct "
                                       "sessions clicked it")
    new_items_pending_max: int = Field(100_000, ge=1, description="unknown items awaiting enough sessions (least "
                                       "recently clicked forgotten first)")
    new_items_max: int = Field(10_000, ge=1, description="unknown items kept in the statistics (least recently "
                               "clicked dropped first)")
    stats_snapshot_s: float = Field(1.0, ge=0, description="how often a worker writes its item statistics to Redis")

    # --- dueling bandit / multileave gradient descent (DRN's minor update)
    dbgd_explorers: int = Field(1, ge=1, le=16, description="explorers per round: 1 is DRN's DBGD (interleaving); "
                                "more is multileave gradient descent (team-draft multileaving, W moves by the mean "
                                "of the winners' directions; models/mgd.py)")
    dbgd_alpha: float = Field(0.3, gt=0, description="explorer perturbation: dW = alpha * U(-1,1) * W")
    dbgd_eta: float = Field(0.5, gt=0, description="step towards a winning explorer: W += eta * dW")
    dbgd_window: int = Field(500, ge=1, description="interleaved impressions per DBGD decision")
    dbgd_window_s: float = Field(300.0, gt=0, description="or decide after this many seconds")
    dbgd_credit_organic: bool = Field(False, description="credit a click that carries no impression to the team "
                                      "whose slot in the session's last slate holds its item (for replayed logs, "
                                      "where nobody clicks slates; biased: docs/architecture.md)")
    interleaving: str = Field("team-draft", pattern="^(team-draft|probabilistic)$", description="how the current "
                              "and the explorer's rankings share a slate")
    explore: bool = Field(True, description="interleave the explorer's ranking into slates (DBGD); off: the "
                          "current ranking only, and W stays as it is until a major retrain")
    seed: int = Field(0, description="seed for interleaving coins and DBGD draws")

    @model_validator(mode="after")
    def _multileaving_is_team_draft(self) -> Settings:
        if self.dbgd_explorers > 1 and self.interleaving != "team-draft":
            raise ValueError(f"dbgd_explorers={self.dbgd_explorers} needs interleaving='team-draft' (multileaving); "
                             f"{self.interleaving!r} interleaves two rankers only")
        return self

    # --- major retrains (DRN's major update) and the drift trigger; decided by the controller (the leader)
    retrain_every_s: float = Field(0.0, ge=0, description="retrain on this schedule (0: off)")
    retrain_every_clicks: int = Field(0, ge=0, description="or after this many clicks (0: off)")
    retrain_window_s: float = Field(3600.0, gt=0, description="the retrain reads this much of the log back")
    retrain_epochs: int = Field(1, ge=1, description="epochs of a major retrain over its window")
    retrain_learning_rate: float | None = Field(None, gt=0, description="warm-start rate (default: the model's)")
    retrain_holdout: float = Field(0.1, gt=0, lt=1, description="newest share of the window's sessions held out for "
                                   "the offline comparison")
    retrain_margin: float = Field(0.0, ge=0, description="promote unless Recall@20 or MRR@20 drop more than this "
                                  "(above 0, retrains on a schedule let quality ratchet down: bench/online_study)")
    retrain_check_s: float = Field(5.0, gt=0, description="how often every worker ticks the controller, which then "
                                   "looks at a running retrain or starts a due one")
    retrain_timeout_s: float = Field(3600.0, gt=0, description="a retrain job with no outcome after this long is "
                                     "given up")
    retrain_nice: int = Field(10, ge=0, le=19, description="niceness of the retrain process, so the click path on "
                              "the same cores comes first")
    retrain_sched_idle: bool = Field(True, description="run the retrain process under Linux's SCHED_IDLE policy: "
                                     "it gets a core only when the click path does not want it")
    retrain_torch_threads: int = Field(1, ge=1, description="torch threads of the retrain process")
    prerank_window_s: float = Field(600.0, ge=0, description="before its promotion a retrained version ranks the "
                                    "sessions active this recently, and serving answers them from that until they "
                                    "click again (models/prerank.py; 0: off, serving ranks them itself)")
    prerank_max_sessions: int = Field(50_000, ge=0, description="the most recently active sessions pre-ranked at most")
    drift_retrain: bool = Field(True, description="a CTR drop found by ADWIN requests a retrain")
    drift_delta: float = Field(0.002, gt=0, lt=1, description="ADWIN's confidence parameter")
    drift_min_impressions: int = Field(1000, ge=0, description="no drift is declared before this many impressions")
    drift_retrain_after: int = Field(2000, ge=0, description="a drift retrain waits for this many impressions after "
                                     "the change and learns from them alone")

    # --- the rollback guardrail: after a major promotion, a sequential test of its online CTR
    guardrail: bool = Field(True, description="watch each promoted major version and roll back on a CTR drop")
    guardrail_alpha: float = Field(0.01, gt=0, lt=1, description="false-alarm rate: rolling back a version as good "
                                   "as the one before")
    guardrail_beta: float = Field(0.05, gt=0, lt=1, description="chance of missing a drop of guardrail_drop")
    guardrail_drop: float = Field(0.2, gt=0, lt=1, description="the relative CTR drop the test is sized to find")
    guardrail_min_baseline: int = Field(2000, ge=1, description="impressions of the previous version needed for a "
                                        "baseline; with fewer the new version is not watched")
    guardrail_baseline_impressions: int = Field(20_000, ge=1, description="the baseline is the previous version's "
                                                "CTR over about this many recent impressions")
    guardrail_max_impressions: int = Field(50_000, ge=1, description="no verdict after this many: the version is kept")
    guardrail_click_lag_s: float = Field(60.0, ge=0, description="impressions count in the test this long after they "
                                         "were shown, once their clicks (a user's think time later) are in")
    guardrail_delay_s: float = Field(300.0, ge=0, description="no verdict before this long after the version's first "
                                     "outcome, so an error in the click lag is a small share of what was counted")

    # --- the model registry (Redis)
    registry_keep: int = Field(10, ge=1, description="newest versions kept (besides current and the kept majors)")
    registry_keep_majors: int = Field(4, ge=2, description="promoted major versions kept: the current one's and "
                                      "at least 3 before it, for rollback")
    registry_read_mb_s: float = Field(40.0, ge=0, description="MiB/s at most at which a process reads a version's "
                                      "blobs (a new major version's GRU: 34 MB for Diginetica): Redis answers the "
                                      "click path and serving meanwhile; 0: no limit")
    registry_write_mb_s: float = Field(10.0, ge=0, description="MiB/s at most at which the retrain job publishes a "
                                       "version's blobs: each byte also goes to Redis' AOF; 0: no limit")

    # --- the serving endpoint (python -m serving)
    serving_host: str = Field("127.0.0.1", description="interface the HTTP server binds")
    serving_port: int = Field(8000, ge=0, le=65535, description="port the HTTP server binds")
    serving_workers: int = Field(1, ge=1, description="uvicorn worker processes (each loads the model)")
    serving_max_k: int = Field(100, ge=1, description="largest k a client may ask for")
    serving_max_body_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies get 413")
    serving_max_events: int = Field(1000, ge=1, description="clicks per POST /events")
    serving_stored_minor_lag: bool = Field(True, description="answer from a session's stored ranking made by an "
                                           "earlier minor version of the current GRU4Rec (W some DBGD steps behind; "
                                           "the answer names that version) instead of ranking the request again")
    serving_torch_threads: int = Field(1, ge=1, description="torch threads per serving process")
    serving_switch_interval_s: float = Field(0.0001, gt=0, le=0.1, description="Python's GIL switch interval in a serving process (sys.setswitchinterval; the default 0.005 made the event loop wait behind the thread loading a promoted version: bench.model_switch_stall)")
    serving_redis_timeout_s: float = Field(0.25, gt=0, description="Redis socket timeout for a request")
    serving_redis_retry_s: float = Field(1.0, ge=0, description="after a Redis failure, serve fallbacks this long")
    serving_publish_timeout_s: float = Field(600.0, gt=0, description="how long a slate may wait for Kafka")
    dashboard_history_s: float = Field(900.0, ge=0, description="how much past the dashboard shows when opened")
    admin_token: SecretStr | None = Field(None, description="bearer token of the admin routes; unset disables them")

    def candidate_params(self) -> CandidateParams:
        """The recall settings as the ranking code takes them (the stream, serving and pre-ranking share them)."""
        from models.recommend import CandidateParams  # here: importing the settings must not import torch

        return CandidateParams(self.candidates_gru, self.candidates_popular, self.candidates_fresh, self.exclude_seen)

    def registry_pacing(self) -> dict[str, float]:
        """``ModelRegistry``'s ``read_mb_s`` and ``write_mb_s``: every process that shares Redis with serving passes them."""
        return {"read_mb_s": self.registry_read_mb_s, "write_mb_s": self.registry_write_mb_s}

    def topic(self, name: str) -> str:
        """The full topic name for one of the wire contracts (``clicks``, ``recommendations``, ...)."""
        return f"{self.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
