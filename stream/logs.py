"""Logging for every service: plain text for a terminal, or one JSON object per line for a log pipeline.

``STREAMREC_LOG_FORMAT=json`` switches every service (worker, serving, simulator, trainer, launchers) to JSON lines
that carry, besides time, level, logger and message, the fields an operator filters a Kafka service's logs by:
``service``, ``worker`` (host:pid), ``partition`` (on lines about one partition, else null) and ``model_version``
(the version the process serves, once it has one). The fields come from a filter on the handler, so any logger's
records get them, librdkafka's and Faust's included.

>>> import io, json
>>> out = io.StringIO()
>>> log = logging.getLogger("doctest.logs")
>>> log.addHandler(handler_for("json", stream=out)); log.propagate = False
>>> set_context(service="demo", model_version=lambda: "v7")
>>> log.warning("dead letter", extra={"partition": 3})
>>> line = json.loads(out.getvalue())
>>> line["message"], line["level"], line["service"], line["partition"], line["model_version"]
('dead letter', 'WARNING', 'demo', 3, 'v7')
"""

from __future__ import annotations

import logging
import logging.config
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from stream.settings import get_settings

QUIET = ("uvicorn.access", "httpx", "faiss.loader")  # a line per request, or per CPU feature faiss probes at import
TEXT_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ("asctime", "levelname", "name", "message", "service", "worker", "partition", "model_version")
HOST = socket.gethostname()
_context: dict[str, Any] = {"service": None, "worker": lambda: f"{HOST}:{os.getpid()}",  # the pid after a fork
                            "partition": None, "model_version": None}


def set_context(**fields: Any) -> None:
    """Fields put on every record from now on; a callable is called for each record (e.g. the loaded version)."""
    _context.update(fields)


class ContextFilter(logging.Filter):
    """Puts the context fields on a record that does not carry them already (``extra=`` wins). ``service`` names the
    process when nothing set it (a uvicorn worker process builds its logging from the dictConfig alone)."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        if service and not _context["service"]:
            _context["service"] = service

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.items():
            if key not in record.__dict__:
                if callable(value):
                    try:
                        value = value()
                    except Exception:  # noqa: BLE001 - a log line must not fail on its context
                        value = None
                setattr(record, key, value)
        return True


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(" ".join(f"%({f})s" for f in JSON_FIELDS),
                             rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def handler_for(fmt: str, stream: TextIO | None = None, service: str | None = None) -> logging.Handler:
    """A stream handler in ``fmt`` (``text`` or ``json``) with the context filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_formatter(fmt))
    handler.addFilter(ContextFilter(service))
    return handler


def logging_config(level: str | int = "INFO", fmt: str | None = None, service: str | None = None) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary (what Faust and uvicorn take) for ``fmt``."""
    fmt = fmt or get_settings().log_format
    level = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    return {
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"default": {"()": handler_for, "fmt": fmt, "service": service}},
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")}
        | {name: {"handlers": [], "propagate": True, "level": "WARNING"} for name in QUIET},
    }


def setup_logging(service: str, level: str | int = "INFO", fmt: str | None = None,
                  **context: Callable[[], Any] | Any) -> None:
    """Configure the root logger for ``service`` (text, or JSON with ``STREAMREC_LOG_FORMAT=json``)."""
    set_context(service=service, **context)
    logging.config.dictConfig(logging_config(level, fmt, service))
    for name in QUIET:  # kept when Faust replaces the handlers with its own (text format)
        logging.getLogger(name).setLevel(logging.WARNING)
