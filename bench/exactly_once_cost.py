"""What exactly-once costs: the worker under each ``processing_guarantee``, back to back on one broker.

    python -m bench.exactly_once_cost [--pairs 2] [--clicks 20000] [--rate 1000] [--latency-seconds 20]
                                      [--warmup-seconds 5] [--broker-warmup-seconds 60]

Starts a real Kafka broker and Redis (infra/local.py), warms the broker up and publishes the Diginetica
model as ``bench/stream_throughput`` does (its helpers), then for each of ``--pairs`` pairs runs the
real worker (``python -m stream worker``) once with ``exactly_once`` and once with ``at_least_once``
(the order alternates between pairs, so neither always runs on the warmer broker), each on fresh topics:

1. throughput: ``--clicks`` Diginetica clicks sent as fast as possible; clicks/s of slates;
2. latency at ``--rate`` clicks/s: the slate's own click->slate figure (``latency_ms``: when it was
   produced) and the **visible** latency, when a ``read_committed`` reader (what every consumer of
   ``recommendations`` is by default) received it, minus the click's produce time.  Under
   exactly-once a slate is visible only once its transaction commits, so the visible figure is the
   one a user of the stream waits for.

Prints one JSON object (per guarantee: a list of per-pair figures, and their means) and a table on
stderr.  Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from bench.common import LiveReader, diginetica_model, interleaved
from bench.stream_throughput import DATA, ROOT, _drain, _rate, _start_group, _warm_broker
from infra import local
from models.__main__ import publish_first_version
from models.data import load_dataset
from models.registry import ModelRegistry
from simulator.replay import replay
from stream.settings import Settings
from stream.topics import ensure_topics

GUARANTEES = ("exactly_once", "at_least_once")


def _throughput(kafka, rds, gru, base, state, events, workers: int) -> float:
    prefix = f"tp-{uuid.uuid4().hex[:6]}-"
    settings = Settings(kafka=kafka.address, topic_prefix=prefix)
    ensure_topics(settings)
    publish_first_version(ModelRegistry(redis.Redis.from_url(rds.address), prefix), gru)
    procs, _ = _start_group(["stream", "worker", "--loglevel", "warn"], "throughput", prefix, base, state,
                            kafka.address, workers)
    try:
        sent = replay(settings, events, rate=0, has_time=False, progress=False)
        out = _drain(kafka.address, settings.topic("recommendations"), sent["delivered"], timeout=900, proc=procs[0])
        return _rate(out)
    finally:
        for p in procs:
            local.stop_pid(p.pid)


def _latency(kafka, rds, gru, base, state, paced_events, args) -> dict:
    prefix = f"lat-{uuid.uuid4().hex[:6]}-"
    settings = Settings(kafka=kafka.address, topic_prefix=prefix)
    ensure_topics(settings)
    publish_first_version(ModelRegistry(redis.Redis.from_url(rds.address), prefix), gru)
    procs, _ = _start_group(["stream", "worker", "--loglevel", "warn"], "latency", prefix, base, state,
                            kafka.address, args.workers)
    reader = LiveReader(kafka.address, settings.topic("recommendations"))
    try:
        warm = replay(settings, paced_events.head(200), rate=200, has_time=False, progress=False, linger_ms=5)
        while len(reader.got) < warm["delivered"]:
            time.sleep(0.1)
        n, warm_n = int(args.rate * args.latency_seconds), int(args.rate * args.warmup_seconds)
        measured_from = time.time() + args.warmup_seconds
        sent = replay(settings, paced_events.iloc[200: 200 + warm_n + n], rate=args.rate, has_time=False,
                      progress=False, linger_ms=5)
        deadline = time.monotonic() + 120
        while len(reader.got) < warm["delivered"] + sent["delivered"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        got = reader.stop()
        for p in procs:
            local.stop_pid(p.pid)
    own, visible = [], []
    for arrived, value in got:
        slate = json.loads(value)
        clicked = slate["ts"] - slate["latency_ms"] / 1000  # the click's produce time
        if clicked >= measured_from:
            own.append(slate["latency_ms"])
            visible.append((arrived - clicked) * 1000)
    own_a, vis_a = np.array(own), np.array(visible)
    return {"slates": len(own), "p50_ms": round(float(np.percentile(own_a, 50)), 1),
            "p99_ms": round(float(np.percentile(own_a, 99)), 1),
            "visible_p50_ms": round(float(np.percentile(vis_a, 50)), 1),
            "visible_p99_ms": round(float(np.percentile(vis_a, 99)), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--clicks", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--warmup-seconds", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--broker-warmup-seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    args.linger_ms, args.order = 5.0, "interleaved"  # what _warm_broker reads
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = Path(tempfile.mkdtemp(prefix="bench-eos-"))
    kafka, rds = local.start_kafka(state), local.start_redis(state)
    try:
        _, test = load_dataset("diginetica", DATA)
        events = interleaved(test.head(args.clicks))
        paced_events = interleaved(test)
        gru = diginetica_model(100)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        env.update(STREAMREC_KAFKA=kafka.address, STREAMREC_REDIS=rds.address, STREAMREC_WORKER_WEB_PORT="0",
                   PYTHONPATH=str(ROOT))
        result: dict = {"benchmark": "exactly_once_cost", "command": "python -m bench.exactly_once_cost "
                        + " ".join(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else
                                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                   if k not in ("linger_ms", "order")),
                        "kafka": kafka.version}
        if args.broker_warmup_seconds > 0:
            result["broker_warmup"] = _warm_broker(kafka, env, state, events, paced_events, args)
        runs: dict[str, list[dict]] = {g: [] for g in GUARANTEES}
        for pair in range(args.pairs):
            for g in GUARANTEES if pair % 2 == 0 else GUARANTEES[::-1]:
                base = dict(env, STREAMREC_PROCESSING_GUARANTEE=g)
                run = {"clicks_per_s": round(_throughput(kafka, rds, gru, base, state, events, args.workers), 1)}
                run.update(_latency(kafka, rds, gru, base, state, paced_events, args))
                runs[g].append(run)
                print(f"pair {pair + 1} {g}: {run}", file=sys.stderr)
        result["runs"] = runs
        means = {g: {k: round(float(np.mean([r[k] for r in rs])), 1) for k in rs[0]} for g, rs in runs.items()}
        result["means"] = means
        result["exactly_once_over_at_least_once_clicks_per_s"] = round(
            means["exactly_once"]["clicks_per_s"] / means["at_least_once"]["clicks_per_s"], 3)
        print(json.dumps(result, indent=2))
        return 0
    finally:
        local.stop_pid(rds.pid)
        local.stop_pid(kafka.pid)


if __name__ == "__main__":
    sys.exit(main())
