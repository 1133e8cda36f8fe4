"""Creates the Faust app and nothing else (faust-streaming's multi-module layout).

Topics, tables and agents live in their own modules and register themselves on this app when
imported; ``stream.__main__`` imports them before starting a worker.
"""

from __future__ import annotations

import faust

from stream.settings import get_settings

settings = get_settings()

app = faust.App(
    settings.app_id,
    broker=[f"kafka://{host}" for host in settings.kafka.split(",")],
    datadir=str(settings.data_dir),
    store="memory://",  # tables are rebuilt from their changelog topics on start
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset=settings.auto_offset_reset,
    topic_replication_factor=1,
    topic_partitions=settings.clicks_partitions,
    web_enabled=settings.worker_web_port > 0,
    web_port=max(settings.worker_web_port, 1),
    web_bind="127.0.0.1",
    autodiscover=False,
    producer_linger=0.002,
    stream_buffer_maxsize=8192,
)
