"""Served slates and ingested clicks to Kafka, without ever making a request wait for the broker.

confluent-kafka's producer keeps records in its own queue and retries delivery until
``serving_publish_timeout_s`` passes, so a broker that is down for a while loses nothing: what
can be published is published later.  Each record's fate is counted from its delivery report
(delivered / failed), and a record that does not even fit the local queue is counted as dropped.
A background thread serves the delivery reports.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaException, Producer

from serving.metrics import ServingMetrics
from stream.clients import client_config

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, bootstrap: str, metrics: ServingMetrics, timeout_s: float = 600.0) -> None:
        self.metrics = metrics
        self.config = client_config(bootstrap, {
            "linger.ms": 5, "enable.idempotence": True,
            "message.timeout.ms": int(timeout_s * 1000), "queue.buffering.max.messages": 200_000,
            "client.id": "streamrec-serving",
        })
        self.producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Create the producer and its delivery-report thread (idempotent)."""
        if self.producer is not None:
            return
        self.producer = Producer(self.config)
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, args=(self.producer,), name="kafka-delivery-reports",
                                        daemon=True)
        self._thread.start()

    def _poll(self, producer: Producer) -> None:
        while not self._stop.is_set():
            producer.poll(0.1)
            self.metrics.publish_queue.set(len(producer))

    def send(self, topic: str, key: bytes | None, value: bytes) -> bool:
        """Queue one record; False (and counted as dropped) if the local queue is full."""
        def report(err, _msg) -> None:
            outcome = "delivered" if err is None else "failed"
            if err is not None:
                log.warning("could not deliver to %s: %s", topic, err)
            self.metrics.published.labels(topic, outcome).inc()

        if self.producer is None:
            self.metrics.published.labels(topic, "dropped").inc()
            return False
        try:
            self.producer.produce(topic, key=key, value=value, on_delivery=report)
            return True
        except (BufferError, KafkaException) as err:
            log.warning("dropped a record for %s: %s", topic, err)
            self.metrics.published.labels(topic, "dropped").inc()
            return False

    def pending(self) -> int:
        return len(self.producer) if self.producer is not None else 0

    def close(self, timeout_s: float = 5.0) -> int:
        """Flush what can be flushed in ``timeout_s``; return how many records were still waiting."""
        if self.producer is None:
            return 0
        self._stop.set()
        self._thread.join(timeout=1.0)
        left = self.producer.flush(timeout_s)
        self.producer = None  # destroys the client: no reconnecting to a broker that is gone
        return left
