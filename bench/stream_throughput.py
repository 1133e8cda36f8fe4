"""Stream throughput and click->slate latency on the Diginetica catalog, against its pass-through ceiling.

    python -m bench.stream_throughput [--clicks 50000] [--rate 1000] [--latency-seconds 30]

Starts a real Kafka broker and Redis (infra/local.py), publishes a GRU4Rec model over Diginetica's
43,097 items (100 hidden units, one quick epoch, ``bench.common.diginetica_model``: the HNSW recall
index needs weights with structure),
then measures, each on its own topics:

1. the pass-through ceiling: ``--clicks`` Diginetica clicks already in ``clicks``, a Faust agent
   copying them to another topic; rate = clicks / (last copy - first copy);
2. the full worker on the same backlog: clicks/s with a slate published for every click;
3. latency: the real clicks replayed at ``--rate`` clicks/s into a running worker; p50/p99 of the
   slates' click->slate latency (Kafka produce time to slate publication).

Prints one JSON object.  Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis
from confluent_kafka import Consumer

from bench.common import diginetica_model
from infra import local
from models.__main__ import publish_first_version
from models.data import load_dataset
from models.registry import ModelRegistry
from simulator.replay import replay
from stream.settings import Settings
from stream.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def _drain(bootstrap: str, topic: str, expected: int, timeout: float, proc: subprocess.Popen | None = None) -> list:
    """Read ``expected`` records of ``topic`` from the beginning: (Kafka append time in s, raw value)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process under test exited with code {proc.returncode}")
        for msg in c.consume(2000, 0.5):
            if not msg.error():
                out.append((msg.timestamp()[1] / 1000.0, msg.value()))
    c.close()
    return out


def _worker(module: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *module], env=env, cwd=ROOT, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _rate(records: list) -> float:
    times = sorted(t for t, _ in records)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clicks", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--latency-seconds", type=float, default=30.0)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--torch-threads", type=int, default=2, help="STREAMREC_TORCH_THREADS of the worker")
    args = p.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    kafka, rds = local.start_kafka(state), local.start_redis(state)
    procs: list[subprocess.Popen] = []
    try:
        _, test = load_dataset("diginetica", DATA)
        events = test.head(args.clicks)  # 76,821 test clicks, in session order
        gru = diginetica_model(args.hidden)
        base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        base.update(STREAMREC_KAFKA=kafka.address, STREAMREC_REDIS=rds.address, STREAMREC_WORKER_WEB_PORT="0",
                    PYTHONPATH=str(ROOT), STREAMREC_TORCH_THREADS=str(args.torch_threads))
        result: dict = {"benchmark": "stream_throughput", "catalog_items": gru.n_items, "hidden": args.hidden,
                        "clicks": len(events), "kafka": kafka.version, "command":
                        f"python -m bench.stream_throughput --clicks {args.clicks} --rate {args.rate:g} "
                        f"--latency-seconds {args.latency_seconds:g} --torch-threads {args.torch_threads}"}
        for name, module, out_topic in (("passthrough", ["bench.passthrough_app"], "passthrough"),
                                        ("worker", ["stream", "worker", "--loglevel", "warn"], "recommendations")):
            prefix = f"{name}-{uuid.uuid4().hex[:6]}-"
            settings = Settings(kafka=kafka.address, topic_prefix=prefix)
            ensure_topics(settings)
            if name == "worker":
                publish_first_version(ModelRegistry(redis.Redis.from_url(rds.address), prefix), gru)
            sent = replay(settings, events, rate=0, has_time=False, progress=False)
            env = dict(base, STREAMREC_TOPIC_PREFIX=prefix, STREAMREC_APP_ID=f"{prefix}app",
                       STREAMREC_DATA_DIR=str(state / prefix))
            proc = _worker(module, env, state / f"{name}.log")
            procs.append(proc)
            out = _drain(kafka.address, settings.topic(out_topic), sent["delivered"], timeout=900, proc=proc)
            local.stop_pid(proc.pid)
            result[f"{name}_clicks_per_s"] = _rate(out)
            result[f"{name}_answered"] = len(out)
            print(f"{name}: {result[f'{name}_clicks_per_s']:,.0f} clicks/s ({len(out)} of {sent['delivered']})",
                  file=sys.stderr)
        result["worker_over_passthrough"] = result["worker_clicks_per_s"] / result["passthrough_clicks_per_s"]

        prefix = f"latency-{uuid.uuid4().hex[:6]}-"
        settings = Settings(kafka=kafka.address, topic_prefix=prefix)
        ensure_topics(settings)
        publish_first_version(ModelRegistry(redis.Redis.from_url(rds.address), prefix), gru)
        env = dict(base, STREAMREC_TOPIC_PREFIX=prefix, STREAMREC_APP_ID=f"{prefix}app",
                   STREAMREC_DATA_DIR=str(state / prefix))
        proc = _worker(["stream", "worker", "--loglevel", "warn"], env, state / "latency.log")
        procs.append(proc)
        warm = replay(settings, events.head(200), rate=200, has_time=False, progress=False)  # worker up and warm
        _drain(kafka.address, settings.topic("recommendations"), warm["delivered"], timeout=120, proc=proc)
        n = int(args.rate * args.latency_seconds)
        paced = replay(settings, events.iloc[200: 200 + n], rate=args.rate, has_time=False, progress=False)
        out = _drain(kafka.address, settings.topic("recommendations"), warm["delivered"] + paced["delivered"], 300)
        local.stop_pid(proc.pid)
        lat = np.array([json.loads(v)["latency_ms"] for _, v in out[warm["delivered"]:]])
        result.update(latency_rate_target=args.rate, latency_rate_sent=paced["rate_achieved"],
                      latency_slates=len(lat), latency_p50_ms=float(np.percentile(lat, 50)),
                      latency_p99_ms=float(np.percentile(lat, 99)), latency_max_ms=float(lat.max()))
        print(json.dumps(result, indent=2))
        return 0
    finally:
        for proc in procs:
            local.stop_pid(proc.pid)
        local.stop_pid(rds.pid)
        local.stop_pid(kafka.pid)


if __name__ == "__main__":
    sys.exit(main())
