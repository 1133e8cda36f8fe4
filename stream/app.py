"""Creates the Faust app and nothing else (faust-streaming's multi-module layout).

Agents, timers and services live in ``stream.agents`` and register themselves on this app when
imported; ``stream.__main__`` imports them before starting a worker.  The app keeps no tables: session
state lives in Redis (``models.sessions``), the controller's state in Redis too (``stream.control.store``).
"""

from __future__ import annotations

import logging

import faust

from stream.settings import get_settings

settings = get_settings()
log = logging.getLogger(__name__)

app = faust.App(
    settings.app_id,
    broker=[f"kafka://{host}" for host in settings.kafka.split(",")],
    datadir=str(settings.data_dir),
    store="memory://",  # no tables (see the module doc)
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset=settings.auto_offset_reset,
    topic_replication_factor=settings.kafka_replication,
    topic_partitions=settings.clicks_partitions,
    web_enabled=settings.worker_web_port > 0,
    web_port=max(settings.worker_web_port, 1),
    web_bind="127.0.0.1",
    autodiscover=False,
    producer_linger=0.002,
    stream_buffer_maxsize=8192,
    # Faust's default (60 s) held a restarted worker for a minute after a kill -9: its consumer group waits
    # for the dead member's session to expire, and the clicks intake starts only once the app is ready.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
)


def _fetch_wait(max_wait_ms: int) -> None:
    """Faust (0.11-0.15) hard-codes ``fetch_max_wait_ms=1500`` on its aiokafka consumer.

    Measured with it, when clicks still came through a Faust agent: at 1,000 clicks/s the worker sat
    idle between batches while clicks waited about 1.5 s to reach it (``bench/stream_throughput``, p50
    1.5 s below capacity); with 20 ms the median fell to 0.16 s.  The likely mechanism: aiokafka sends
    no new fetch to a broker while any of its partitions still holds unconsumed records, so fetch
    rounds set the pace.  Clicks now come through ``stream/intake.py`` (librdkafka, which gets the
    same setting); Faust's consumer still reads ``dbgd-feedback``, whose outcomes should reach the
    leader promptly too.

    The same consumer reads ``dbgd-feedback``, which workers write in transactions with their clicks'
    offsets (``stream/delivery.py``): it reads committed records only, so an aborted batch's outcomes
    never reach the controller.  (Faust chooses read_committed only for its own exactly-once mode,
    which would make every agent transactional.)
    """
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer

    def create_worker_consumer(self, transport):  # noqa: ANN001, ANN202 - Faust's signature
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by aiokafka when the consumer starts its fetcher
        consumer._isolation_level = "read_committed"  # likewise
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


_fetch_wait(settings.fetch_max_wait_ms)


def use_event_loop(name: str) -> None:
    """Make ``name`` the loop of the worker about to start (and of Faust's consumer thread, which makes its own).

    Faust hands each record through several tasks (``wait_first`` creates four per record), so a Faust
    pass-through is mostly event-loop work; on uvloop it did 9,100 clicks/s against 6,900-7,400 on
    asyncio's loop, its p50 / p99 at 1,000 clicks/s 10 / 24 ms against 12-14 / 43-480 ms, and the worker
    ~8% more clicks/s (``python -m bench.stream_throughput``, when clicks still went through a Faust
    agent).  Clicks now bypass that path (``stream/intake.py``); the feedback agent and timers still
    run on this loop.
    """
    if name != "uvloop":
        return
    import asyncio

    try:
        import uvloop
    except ImportError:  # not built for this platform: asyncio's loop works, only slower
        log.warning("uvloop is not installed; the worker runs on asyncio's event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@app.task
async def report_event_loop() -> None:
    """Log which loop the worker runs on (``STREAMREC_EVENT_LOOP``)."""
    import asyncio

    log.info("event loop: %s", type(asyncio.get_running_loop()).__module__)


@app.task
async def restore_log_level() -> None:
    """Undo Faust's start-up spinner setting: at ``--loglevel warn`` and above it sets the root logger to DEBUG
    (its handler filters), so every aiokafka debug call builds a log record: about 5% of a worker's time.
    Here, on the app, so the benchmark's pass-through ceiling gets the same fix as the worker."""
    root = logging.getLogger()
    if root.handlers and root.handlers[0].level > root.level:
        root.setLevel(root.handlers[0].level)
