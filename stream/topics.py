"""Topic names and partition counts of the wire contracts, and their creation on the broker.

Topics are created explicitly (with the configured partition counts) before any worker or
producer uses them, so a broker's ``auto.create.topics.enable`` never decides their shape.
This module is plain confluent-kafka so the simulator and serving can use it without Faust.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream.clients import client_config
from stream.settings import Settings

log = logging.getLogger(__name__)

CLICKS = "clicks"
RECOMMENDATIONS = "recommendations"
METRICS = "metrics"
MODEL_UPDATES = "model-updates"
DEAD_LETTERS = "dead-letters"
#: internal: interleaving outcomes from every worker to the one DBGD decision-maker (one partition)
DBGD_FEEDBACK = "dbgd-feedback"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The five wire topics and the internal feedback topic, with full (prefixed) names and partition counts."""
    week_ms = str(7 * 24 * 3600 * 1000)
    return [
        TopicSpec(settings.topic(CLICKS), settings.clicks_partitions, {"retention.ms": week_ms}),
        TopicSpec(settings.topic(RECOMMENDATIONS), settings.recommendations_partitions, {"retention.ms": week_ms}),
        TopicSpec(settings.topic(METRICS), settings.metrics_partitions, {"retention.ms": week_ms}),
        TopicSpec(settings.topic(MODEL_UPDATES), settings.model_updates_partitions, {"retention.ms": "-1"}),
        # bounded: anyone who can produce a malformed click writes here (raw bytes kept per record are bounded too)
        TopicSpec(settings.topic(DEAD_LETTERS), settings.dead_letters_partitions,
                  {"retention.ms": str(int(settings.dead_letters_retention_s * 1000)),
                   "retention.bytes": str(settings.dead_letters_retention_bytes)}),
        TopicSpec(settings.topic(DBGD_FEEDBACK), 1, {"retention.ms": week_ms}),
    ]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the wire topics that do not exist yet; return the names created.  Idempotent."""
    return create_missing(settings.kafka, topic_specs(settings), timeout, settings.kafka_replication)


def create_missing(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0, replication: int = 1) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet on the broker; return the names created.

    With ``replication`` of 3 or more a topic also gets ``min.insync.replicas = replication - 1``: with acks=all
    (the idempotent and transactional producers) a write is acknowledged once on two of three brokers, and one
    broker may be down without stopping writes."""
    admin = AdminClient(client_config(bootstrap))
    created: list[str] = []
    for attempt in range(3):  # a cluster's metadata may still be changing (a broker joining): ask again
        existing = set(admin.list_topics(timeout=timeout).topics)
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            break
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication,
                      config={**s.config, **({"min.insync.replicas": str(replication - 1)} if replication >= 3 else {})})
             for s in missing],
            operation_timeout=timeout,
        )
        retry = False
        for name, fut in futures.items():
            try:
                fut.result(timeout)
                created.append(name)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator won: fine
                    continue
                if attempt == 2 or not (error.retriable() or error.code() == KafkaError._DESTROY_BROKER):
                    raise
                log.info("creating %s failed (%s); trying again", name, error)
                retry = True
        if not retry:
            break
        time.sleep(1.0)
    if created:
        log.info("created topics %s", ", ".join(created))
    return created
