"""``python -m serving``: run the HTTP endpoint with uvicorn on STREAMREC_SERVING_HOST:PORT (127.0.0.1:8000)."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from serving.app import create_app
from stream.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--host", help="override STREAMREC_SERVING_HOST")
    parser.add_argument("--port", type=int, help="override STREAMREC_SERVING_PORT")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    host, port = args.host or settings.serving_host, args.port or settings.serving_port
    if settings.serving_workers == 1:
        uvicorn.run(create_app(settings, freeze_gc=True), host=host, port=port, log_level=args.log_level,
                    access_log=False)
    else:  # several processes on one socket, each with its own model cache (uvicorn builds each app)
        uvicorn.run("serving.app:create_service_app", factory=True, workers=settings.serving_workers, host=host,
                    port=port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
