"""``python -m serving``: run the HTTP endpoint with uvicorn on STREAMREC_SERVING_HOST:PORT (127.0.0.1:8000)."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import uvicorn

from serving.app import create_app
from stream.logs import logging_config, setup_logging
from stream.settings import Settings

log = logging.getLogger("serving")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--host", help="override STREAMREC_SERVING_HOST")
    parser.add_argument("--port", type=int, help="override STREAMREC_SERVING_PORT")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    setup_logging("serving", args.log_level)
    settings = Settings()
    log_config = logging_config(args.log_level, service="serving")  # uvicorn applies it in each worker process
    host, port = args.host or settings.serving_host, args.port or settings.serving_port
    if settings.serving_workers == 1:
        uvicorn.run(create_app(settings, freeze_gc=True), host=host, port=port, log_level=args.log_level,
                    access_log=False, log_config=log_config)
    else:  # several processes on one socket, each with its own model cache (uvicorn builds each app)
        _multiprocess_metrics()
        uvicorn.run("serving.app:create_service_app", factory=True, workers=settings.serving_workers, host=host,
                    port=port, log_level=args.log_level, access_log=False, log_config=log_config)


def _multiprocess_metrics() -> None:
    """Point prometheus-client's multiprocess mode at an empty directory before the workers import it, so that
    ``/metrics`` adds up every worker's counts (serving/metrics.py). A directory given in PROMETHEUS_MULTIPROC_DIR is
    emptied of an earlier run's files; otherwise a fresh one is made."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    else:
        path = tempfile.mkdtemp(prefix="streamrec-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    log.info("Prometheus multiprocess mode: %s", path)


if __name__ == "__main__":
    main()
