"""The stream's ranking of one micro-batch, in process: ``OnlineRecommender.process`` on Diginetica batches.

    python -m bench.stream_batch [--sizes 4 32 256] [--clicks 8000] [--order interleaved|session]

No Kafka: a real Redis (infra/local.py) and the benchmark model over Diginetica's 43,097 items (IVF
recall, ``bench.common.diginetica_model``), one torch and one faiss thread.  For each batch size, the
first ``--clicks`` test clicks (sessions interleaved, as ``bench.stream_throughput`` sends them: ~1,700
sessions for 8,000 clicks, so most clicks continue a session) go through ``process`` batch after batch, and it reports the median wall and CPU ms per batch and the clicks/s that makes.
The first batch, timed apart (``first_batch_ms``), reads and loads the version as a starting worker does, with
the registry's paced reads (``--unpaced`` to compare).
This is the worker's cost without Kafka, the intake or another process on the cores: what a change to
the ranking path saves, measured in a few seconds.  Run it on two checkouts back to back to compare
(the VM's speed drifts by a third between runs minutes apart).

Prints one JSON object.  Figures, not assertions.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import redis
import torch

from bench.common import DATA, diginetica_model, interleaved
from infra import local
from models.__main__ import publish_first_version
from models.data import load_dataset
from models.registry import ModelRegistry
from models.sessions import SessionStore
from stream.online import OnlineRecommender
from stream.records import Click
from stream.settings import Settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 32, 256], help="batch sizes to measure")
    p.add_argument("--clicks", type=int, default=8000, help="clicks per batch size (after one warm-up batch)")
    p.add_argument("--order", choices=["interleaved", "session"], default="interleaved")
    p.add_argument("--unpaced", action="store_true",
                   help="read the registry's blobs unpaced (the worker paces them: Settings.registry_pacing)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    gru = diginetica_model(100)
    _, test = load_dataset("diginetica", DATA)
    events = test.head(args.clicks + max(args.sizes))  # the first test clicks, as bench.stream_throughput takes them
    events = interleaved(events) if args.order == "interleaved" else events
    clicks = [Click(session_id=str(s), item_id=str(i), ts=float(t))
              for s, i, t in zip(events.SessionId, events.ItemId, events.Time)]
    state = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    rds = local.start_redis(state)
    rows = []
    try:
        for n, size in enumerate(args.sizes):
            prefix = f"b{n}-"
            client = redis.Redis.from_url(rds.address)
            settings = Settings(redis=rds.address, topic_prefix=prefix, torch_threads=1)
            publish_first_version(ModelRegistry(client, prefix), gru)
            pacing = {} if args.unpaced else settings.registry_pacing()  # the worker reads paced
            store_args = dict(cache_size=settings.session_cache) \
                if "cache_size" in inspect.signature(SessionStore).parameters else {}  # earlier releases: none
            rec = OnlineRecommender(settings, ModelRegistry(client, prefix, **pacing),
                                    SessionStore(client, prefix, settings.session_ttl_s, settings.session_max_items,
                                                 **store_args), freeze_gc=True)
            t0 = time.perf_counter()
            rec.process(clicks[:size], [time.time()] * size)  # reads and loads the version (a worker's start)
            first_ms = (time.perf_counter() - t0) * 1000
            wall, cpu = [], []
            for start in range(size, size + args.clicks - size + 1, size):
                batch = clicks[start: start + size]
                t0, c0 = time.perf_counter(), time.process_time()
                rec.process(batch, [time.time()] * len(batch), [(0, start + j) for j in range(len(batch))])
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            median = float(np.median(wall)) * 1000
            rows.append({"batch": size, "batches": len(wall), "first_batch_ms": round(first_ms, 1),
                         "read_mb_s": pacing.get("read_mb_s"),
                         "ms_per_batch": round(median, 2),
                         "cpu_ms_per_batch": round(float(np.median(cpu)) * 1000, 2),
                         "clicks_per_s": round(size / median * 1000)})
            print(f"batch {size}: {median:.2f} ms ({size / median * 1000:,.0f} clicks/s)", file=sys.stderr)
    finally:
        local.stop_pid(rds.pid)
    print(json.dumps({"benchmark": "stream_batch", "catalog_items": gru.n_items, "order": args.order,
                      "command": f"python -m bench.stream_batch --sizes {' '.join(map(str, args.sizes))} "
                                 f"--clicks {args.clicks} --order {args.order}" + (" --unpaced" if args.unpaced else ""),
                      "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
