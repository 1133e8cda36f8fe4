"""The real components the fixtures start: versions, reachability, topic creation."""

from __future__ import annotations

import pytest
import redis
from confluent_kafka.admin import AdminClient

from stream.settings import Settings
from stream.topics import ensure_topics, topic_specs

pytestmark = pytest.mark.integration


def test_broker_is_apache_kafka_3_9(services):
    if services.how == "local":
        assert services.kafka_version.startswith("3.9."), services.kafka_version
        assert services.kafka_service.address.startswith("127.0.0.1:")
    md = AdminClient({"bootstrap.servers": services.kafka}).list_topics(timeout=10)
    assert len(md.brokers) == 1


def test_redis_is_version_7_or_newer(services):
    info = redis.Redis.from_url(services.redis).info("server")
    assert int(info["redis_version"].split(".")[0]) >= 7


def test_topics_are_created_with_their_partition_counts_idempotently(services, prefix):
    settings = Settings(kafka=services.kafka, topic_prefix=prefix, clicks_partitions=3)
    created = ensure_topics(settings)
    assert sorted(created) == sorted(s.name for s in topic_specs(settings))
    assert ensure_topics(settings) == []
    md = AdminClient({"bootstrap.servers": services.kafka}).list_topics(timeout=10)
    for spec in topic_specs(settings):
        assert len(md.topics[spec.name].partitions) == spec.partitions
    assert len(md.topics[f"{prefix}clicks"].partitions) == 3
