"""librdkafka clients' common configuration: their logs go through Python logging.

Without a ``logger`` librdkafka writes its own lines to stderr (``%3|...|FAIL|...: Connect to ... failed``) in a
format no handler, level or JSON formatter sees. Every Kafka client in the project takes its configuration through
:func:`client_config`, so those lines reach the ``librdkafka`` logger, at WARNING and above unless
``STREAMREC_KAFKA_LOG_LEVEL`` says otherwise, and share the service's format.

>>> cfg = client_config("127.0.0.1:9092", {"linger.ms": 5})
>>> cfg["bootstrap.servers"], cfg["linger.ms"], cfg["logger"].name, cfg["log_level"]
('127.0.0.1:9092', 5, 'librdkafka', 4)
"""

from __future__ import annotations

import logging
from typing import Any

from stream.settings import get_settings

LOGGER_NAME = "librdkafka"


def kafka_logger() -> logging.Logger:
    """The logger librdkafka's lines go to (its level: ``STREAMREC_KAFKA_LOG_LEVEL``, WARNING by default)."""
    logger = logging.getLogger(LOGGER_NAME)
    if logger.level == logging.NOTSET:
        logger.setLevel(get_settings().kafka_log_level.upper())
    return logger


SYSLOG_LEVELS = {"debug": 7, "info": 6, "warning": 4, "error": 3}


def client_config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Producer / Consumer / AdminClient configuration for ``bootstrap`` whose logs go to :func:`kafka_logger`.

    librdkafka also gets the level itself (``log_level``, syslog numbers): a line it never makes cannot be printed
    raw at a client's destruction, when queued log events can no longer reach the logger."""
    level = SYSLOG_LEVELS[get_settings().kafka_log_level]
    return {"bootstrap.servers": bootstrap, "logger": kafka_logger(), "log_level": level, **(extra or {})}
