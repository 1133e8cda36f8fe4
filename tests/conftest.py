"""Session-scoped real Kafka and Redis for the integration and e2e tests.

Chosen in this order: addresses from ``STREAMREC_KAFKA`` / ``STREAMREC_REDIS``; testcontainers
when a Docker engine answers; otherwise the local launchers of ``infra/local.py`` on free ports.
A missing prerequisite (java, mvn, redis-server) fails with what to install; nothing is skipped.
Every test gets its own topic prefix and app id, so tests share one broker without interfering.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import local

log = logging.getLogger("tests")
ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@dataclass
class Endpoints:
    kafka: str
    redis: str
    kafka_version: str
    how: str
    kafka_service: local.Service | None = None
    redis_service: local.Service | None = None


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    env_kafka, env_redis = os.environ.get("STREAMREC_KAFKA"), os.environ.get("STREAMREC_REDIS")
    if env_kafka and env_redis:
        log.info("using Kafka at %s and Redis at %s from the environment", env_kafka, env_redis)
        yield Endpoints(env_kafka, env_redis, "external", "environment")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as kafka, RedisContainer("redis:7").with_command(
                "redis-server --appendonly yes --appendfsync everysec --maxmemory 2gb --maxmemory-policy volatile-ttl") as redis:
            host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
            yield Endpoints(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0", "3.9.1", "testcontainers")
        return
    state = tmp_path_factory.mktemp("services")
    kafka = local.start_kafka(state)
    try:
        redis = local.start_redis(state)
    except BaseException:
        local.stop_pid(kafka.pid)
        raise
    log.info("real Apache Kafka %s at %s, Redis %s at %s", kafka.version, kafka.address, redis.version, redis.address)
    print(f"\n[services] Apache Kafka {kafka.version} (KRaft) at {kafka.address}; Redis {redis.version} at {redis.address}")
    try:
        yield Endpoints(kafka.address, redis.address, kafka.version, "local", kafka, redis)
    finally:
        local.stop_pid(redis.pid)
        local.stop_pid(kafka.pid)


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix (and app id) for one test."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def stream_env(services: Endpoints, prefix: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a service process of this test: real endpoints, its own topics and app id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(
        STREAMREC_KAFKA=services.kafka, STREAMREC_REDIS=services.redis, STREAMREC_TOPIC_PREFIX=prefix,
        STREAMREC_APP_ID=f"{prefix}app", STREAMREC_DATA_DIR=str(tmp_path / "faust"),
        STREAMREC_WORKER_WEB_PORT="0", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def topics(services: Endpoints, prefix: str) -> str:
    """Create this test's wire topics before anything produces (no broker auto-creation); return the prefix."""
    from stream.settings import Settings
    from stream.topics import ensure_topics

    ensure_topics(Settings(kafka=services.kafka, topic_prefix=prefix))
    return prefix


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; a missing folder fails with a clear message rather than skipping."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder {SHARED_DATA} is missing (it sits beside the project as ../shared/data)")
    return SHARED_DATA
