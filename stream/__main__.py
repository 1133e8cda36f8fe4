"""``python -m stream``: the stream service's command line.

    python -m stream worker [--loglevel info]   run a Faust worker (creates the topics first)
    python -m stream topics                     create the wire topics and exit
    python -m stream settings [--write FILE]    the settings reference (docs/operations.md)
    python -m stream monitor [--duration S]     live terminal view of the metrics topic
    python -m stream report [--since 10m] --out DIR   plots and a markdown summary of a run
    python -m stream retrain                    ask the controller for a major retrain now
    python -m stream retrain-job '<job JSON>'   (the controller's) one retrain job, in its own process
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from stream.logs import logging_config, setup_logging
from stream.settings import get_settings
from stream.topics import ensure_topics


def parse_since(value: str | None) -> float | None:
    """A unix time, or an age: ``90s``, ``30m``, ``2h``.

    >>> parse_since("1700000000")
    1700000000.0
    >>> round(time.time() - parse_since("2m"))
    120
    """
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units:
        return time.time() - float(value[:-1]) * units[value[-1]]
    return float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream", description="streamrec stream service")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a Faust stream worker")
    worker.add_argument("--loglevel", default="info")
    sub.add_parser("topics", help="create the wire topics (idempotent)")
    ref = sub.add_parser("settings", help="print the settings reference (markdown), or write it into a doc")
    ref.add_argument("--write", type=Path, help="replace the reference between its markers in this file")
    mon = sub.add_parser("monitor", help="live view of the online metrics")
    mon.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    mon.add_argument("--from-beginning", action="store_true", help="replay the topic first")
    rep = sub.add_parser("report", help="plots and a summary of a run, read back from Kafka")
    rep.add_argument("--since", default=None, help="unix time, or an age like 30m / 2h / 90s (default: all)")
    rep.add_argument("--out", type=Path, required=True)
    sub.add_parser("retrain", help="queue a request for a major retrain (the controller decides and promotes)")
    job = sub.add_parser("retrain-job", help="run one retrain job the controller launched (its own process)")
    job.add_argument("job", help="the job as JSON: id, trigger, since, until, based_on")
    args = parser.parse_args(argv)

    settings = get_settings()
    setup_logging("worker" if args.command == "worker" else f"stream-{args.command}")
    if args.command == "settings":
        from stream import settings_doc

        if args.write:
            print(f"{args.write}: {'updated' if settings_doc.write(args.write) else 'already current'}")
        else:
            print(settings_doc.reference(), end="")
        return 0
    if args.command == "topics":
        for name in ensure_topics(settings):
            print(name)
        return 0
    if args.command == "monitor":
        from stream.monitor import run

        run(settings, args.duration, args.from_beginning)
        return 0
    if args.command == "retrain":
        import redis

        from stream.control.store import RedisControlStore

        queued = RedisControlStore(redis.Redis.from_url(settings.redis), settings.topic_prefix).push_request(
            {"by": "cli"})
        print(f"retrain requested ({queued} waiting); the leader's controller takes it on its next tick")
        return 0
    if args.command == "retrain-job":
        from stream.trainer import run_job

        outcome = run_job(settings, json.loads(args.job))
        print(json.dumps(outcome, default=str))
        return 0 if outcome.get("version") else 1
    if args.command == "report":
        from stream.report import report

        summary = report(settings, parse_since(args.since), args.out)
        print(json.dumps(summary, indent=2))
        print(f"wrote {args.out}/summary.md and its plots", file=sys.stderr)
        return 0

    ensure_topics(settings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: every thread's stack to stderr
    from stream import agents  # noqa: F401 - registers the agents on the app
    from stream.app import app, use_event_loop

    use_event_loop(settings.event_loop)
    if settings.log_format == "json":  # Faust configures logging when the worker starts: hand it the JSON handler
        app.conf.logging_config = logging_config(args.loglevel, service="worker")

    sys.argv = ["python -m stream", "worker", "--loglevel", args.loglevel, "--without-web"] if settings.worker_web_port <= 0 \
        else ["python -m stream", "worker", "--loglevel", args.loglevel, "--web-port", str(settings.worker_web_port),
              "--web-bind", "127.0.0.1"]
    _exit_when_done(app.main)
    return 0


def _exit_when_done(run_worker) -> NoReturn:
    """Run the Faust worker, then end the process at once with its exit status, 1 if it crashed.

    A thread the intake gave up on can stay blocked inside librdkafka (a transaction call, a poll); Python's
    normal exit waits for such threads forever, and a worker that crashed would stay alive answering nothing,
    where a supervisor (systemd, Kubernetes) should see it die and start it again (same transactional id,
    ``stream/delivery.py``)."""
    code = 1
    try:
        run_worker()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever ended the worker, the process ends with it
        logging.getLogger("stream").exception("the worker ended with an error")
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):  # faust may proxy the first two
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
