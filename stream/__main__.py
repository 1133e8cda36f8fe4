"""``python -m stream``: the stream service's command line.

    python -m stream worker [--loglevel info]   run a Faust worker (creates the topics first)
    python -m stream topics                     create the wire topics and exit
"""

from __future__ import annotations

import argparse
import logging
import sys

from stream.settings import get_settings
from stream.topics import ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream", description="streamrec stream service")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a Faust stream worker")
    worker.add_argument("--loglevel", default="info")
    sub.add_parser("topics", help="create the wire topics (idempotent)")
    args = parser.parse_args(argv)

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    if args.command == "topics":
        for name in ensure_topics(settings):
            print(name)
        return 0

    ensure_topics(settings)
    from stream import agents  # noqa: F401 - registers the agents on the app
    from stream.app import app

    sys.argv = ["python -m stream", "worker", "--loglevel", args.loglevel, "--without-web"] if settings.worker_web_port <= 0 \
        else ["python -m stream", "worker", "--loglevel", args.loglevel, "--web-port", str(settings.worker_web_port),
              "--web-bind", "127.0.0.1"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
