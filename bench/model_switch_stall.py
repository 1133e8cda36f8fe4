"""How long serving's event loop stalls while its refresh thread loads a new major version.

    python -m bench.model_switch_stall [--trials 3] [--rate 500] [--threads 1] [--switch-interval S]

Serving loads a promoted version in a background thread of its own process (``models.recommend.ModelCache``,
driven by ``serving.recommender.ServingRecommender``'s refresher).  Loading holds Python's GIL in stretches,
and every time the event loop gives the GIL up (a socket read, a Redis round trip, ``select``) it waits for
the loader to hand it back (Python's switch interval, 5 ms by default): a convoy that delays every request
queued behind it.  This benchmark isolates that: a real Redis (infra/local.py), the Diginetica GRU4Rec
(``bench.common.diginetica_model``), and in the main thread an asyncio loop that, at ``--rate`` per second on
a fixed schedule (latency counts from the due time), does one Redis GET and one small torch product, the shape
of a request.  One second in, another thread calls ``ModelCache.refresh`` for a newly promoted version, as
serving's refresher does.  Prints one JSON object: per trial the load's seconds (wall, and the loading thread's
CPU), p50/p99/max latency, and the
p99 against the serving aim (≤ 10 ms through a promotion).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis
import torch

from bench.common import aim, diginetica_model
from infra import local
from models.__main__ import publish_first_version
from models.recommend import ModelCache
from models.registry import ModelRegistry
from stream.settings import Settings

log = logging.getLogger(__name__)


async def _requests(client: redis.Redis, emb: torch.Tensor, seconds: float, rate: float) -> np.ndarray:
    """Open-loop load in this thread's event loop; latency (ms) of each request from its due time."""
    h, lat, start = torch.randn(1, emb.shape[1]), [], time.perf_counter()
    for i in range(int(seconds * rate)):
        await asyncio.sleep(max(start + i / rate - time.perf_counter(), 0))
        client.get("bench:payload")
        (h @ emb[:5000].T).topk(10)
        lat.append((time.perf_counter() - start - i / rate) * 1000)
    return np.array(lat)


def _trial(registry: ModelRegistry, cache: ModelCache, client: redis.Redis, gru, factor: float,
           rate: float) -> dict:
    with torch.no_grad():
        gru.model.Wy.weight.mul_(factor)  # a different GRU of the same shape: a new major version
    version = publish_first_version(registry, gru, promote=True)
    took: dict[str, float] = {}

    def switch() -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        cache.refresh(force=True)
        took["load_s"], took["load_cpu_s"] = time.perf_counter() - t0, time.thread_time() - c0

    async def run() -> np.ndarray:
        load = asyncio.create_task(_requests(client, cache.model.emb, 3.0, rate))
        await asyncio.sleep(1.0)
        loader.start()
        return await load

    loader = threading.Thread(target=switch, name="model-refresh")
    lat = asyncio.run(run())
    loader.join()
    if cache.model.name != version:
        raise RuntimeError(f"the cache did not switch to {version}")
    return {"load_s": round(took["load_s"], 3), "load_cpu_s": round(took["load_cpu_s"], 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "max_ms": round(float(lat.max()), 1)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (serving's default is 1)")
    p.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval, seconds")
    p.add_argument("--hidden", type=int, default=100)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    state = Path(tempfile.mkdtemp(prefix="bench-switch-"))
    rds = local.start_redis(state)
    try:
        client = redis.Redis.from_url(rds.address)
        client.set("bench:payload", b"x" * 2000)  # about a session state
        registry = ModelRegistry(client, "bench-", **Settings().registry_pacing())  # paced reads, as serving's registry
        gru = diginetica_model(args.hidden)
        publish_first_version(registry, gru)
        cache = ModelCache(registry, freeze_gc=True)
        cache.refresh(force=True)
        trials = [_trial(registry, cache, client, gru, 1.0 + 0.01 * (n + 1), args.rate) for n in range(args.trials)]
        worst = max(t["p99_ms"] for t in trials)
        print(json.dumps({"benchmark": "model_switch_stall", "rate": args.rate, "torch_threads": args.threads,
                          "switch_interval_s": sys.getswitchinterval(), "trials": trials,
                          "aims": {"p99_ms_while_serving_loads_a_version": aim(worst, "<= 10", worst <= 10,
                                                                               "worst trial")},
                          "command": "python -m bench.model_switch_stall " + " ".join(argv or sys.argv[1:])},
                         indent=2))
        return 0
    finally:
        local.stop_pid(rds.pid)


if __name__ == "__main__":
    sys.exit(main())
