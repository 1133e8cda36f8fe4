"""One settings object for every service; each field can be set from the environment as ``STREAMREC_<FIELD>``.

Defaults run on one machine (``make up`` prints the two addresses to export).  Tests and benchmarks
isolate themselves with ``STREAMREC_TOPIC_PREFIX`` and ``STREAMREC_APP_ID`` rather than a new broker.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of streamrec.  ``Settings()`` reads ``STREAMREC_*`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    # --- where the real components are
    kafka: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    redis: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")

    # --- topics: names are prefixed so that tests and runs can share one broker without interfering
    topic_prefix: str = Field("", description="prepended to every topic name")
    clicks_partitions: int = Field(4, ge=1, description="partitions of `clicks` (keyed by session_id)")
    recommendations_partitions: int = Field(4, ge=1)
    dead_letters_partitions: int = Field(1, ge=1)
    metrics_partitions: int = Field(1, ge=1, description="one partition keeps the metrics in time order")
    model_updates_partitions: int = Field(1, ge=1, description="one partition: a total order of versions")

    # --- the stream worker
    app_id: str = Field("streamrec", description="Faust app id: consumer group and changelog topic prefix")
    data_dir: Path = Field(Path(".run/faust"), description="Faust's local table state")
    worker_web_port: int = Field(6066, description="Faust's web server port (0 disables it)")
    batch_size: int = Field(256, ge=1, description="clicks per micro-batch")
    batch_within_s: float = Field(0.02, gt=0, description="longest wait to fill a micro-batch")
    slate_size: int = Field(10, ge=1, le=200, description="items per slate")
    max_event_bytes: int = Field(16_384, ge=256, description="larger click records are dead-lettered")
    dead_letter_raw_bytes: int = Field(65_536, ge=256, description="bytes of the raw record kept in a dead letter")
    auto_offset_reset: str = Field("earliest", pattern="^(earliest|latest)$")

    def topic(self, name: str) -> str:
        """The full topic name for one of the wire contracts (``clicks``, ``recommendations``, ...)."""
        return f"{self.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
