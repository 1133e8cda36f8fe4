"""Topic names and partition counts of the wire contracts, and their creation on the broker.

Topics are created explicitly (with the configured partition counts) before any worker or
producer uses them, so a broker's ``auto.create.topics.enable`` never decides their shape.
This module is plain confluent-kafka so the simulator and serving can use it without Faust.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

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
        TopicSpec(settings.topic(DEAD_LETTERS), settings.dead_letters_partitions, {"retention.ms": "-1"}),
        TopicSpec(settings.topic(DBGD_FEEDBACK), 1, {"retention.ms": week_ms}),
    ]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the wire topics that do not exist yet; return the names created.  Idempotent."""
    return create_missing(settings.kafka, topic_specs(settings), timeout)


def create_missing(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet on the broker; return the names created."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config) for s in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except Exception as exc:  # noqa: BLE001
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a concurrent creator won: fine
                raise
    log.info("created topics %s", ", ".join(created) or "(none: created concurrently)")
    return created
