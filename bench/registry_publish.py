"""Do session reads stall while a large model is published?  Chunked blobs against one value per blob.

    python -m bench.registry_publish [--items 200000] [--hidden 512] [--chunk-mb 1] [--write-mb-s 10] [--read-mb-s 40]

A synthetic GRU4Rec (random weights) of ``--items`` x ``--hidden`` is published to a real Redis (AOF on, as
the project runs it) by :meth:`models.registry.ModelRegistry.publish_major`, once with blobs in chunks of
``--chunk-mb`` and once with one value per blob (what the registry did before).  Meanwhile another client
reads 64 session-sized keys with one MGET in a loop, as a worker does per batch; the figures are that
read's latency before and during each publish, and while the version is read back (``ModelRegistry.load``).
The chunked publish and read run twice: as fast as Redis takes them, and paced as every process sharing Redis
with serving paces them (``--write-mb-s`` / ``--read-mb-s``, the settings ``registry_write_mb_s`` /
``registry_read_mb_s``).  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from infra import local
from models.__main__ import publish_first_version
from models.gru4rec import GRU4Rec, GRU4RecModel, GRU4RecParams
from models.registry import CHUNK_BYTES, ModelRegistry
from stream.settings import Settings

log = logging.getLogger("registry_publish")


def synthetic_gru(items: int, hidden: int) -> GRU4Rec:
    gru = GRU4Rec(GRU4RecParams(layers=[hidden]), device="cpu")
    gru.item_ids = pd.Index([f"i{k}" for k in range(items)], dtype=str)
    p = gru.params
    gru.model = GRU4RecModel(items, p.layers, p.dropout_p_embed, p.dropout_p_hidden, p.embedding,
                             p.constrained_embedding)
    gru.model.eval()
    gru.loss_history, gru.accumulators = [], {}
    return gru


def _reads(client: redis.Redis, keys: list[str], stop: threading.Event, out: list[tuple[float, float]]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        client.mget(keys)
        out.append((time.monotonic(), (time.perf_counter() - t) * 1000))
        time.sleep(0.001)


def _stats(samples: list[float]) -> dict:
    a = np.array(samples) if samples else np.zeros(1)
    return {"reads": len(samples), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 1)}


def measure(address: str, prefix: str, gru: GRU4Rec, chunk_bytes: int, read_mb_s: float = 0.0,
            write_mb_s: float = 0.0) -> dict:
    client = redis.Redis.from_url(address)
    registry = ModelRegistry(client, namespace=prefix, chunk_bytes=chunk_bytes, read_mb_s=read_mb_s,
                             write_mb_s=write_mb_s)
    keys = [f"{prefix}session:{k}" for k in range(64)]
    client.mset({k: b"x" * 1300 for k in keys})
    stop, samples = threading.Event(), []
    reader = threading.Thread(target=_reads, args=(redis.Redis.from_url(address), keys, stop, samples))
    reader.start()
    time.sleep(2.0)
    began = time.monotonic()
    version = publish_first_version(registry, gru, promote=False)
    ended = time.monotonic()
    time.sleep(1.0)
    read_began = time.monotonic()
    registry.load(version)
    read_ended = time.monotonic()
    time.sleep(0.5)
    stop.set()
    reader.join()
    meta = registry.meta(version)
    return {"chunk_bytes": chunk_bytes, "read_mb_s": read_mb_s, "write_mb_s": write_mb_s, "chunks": meta["chunks"],
            "publish_seconds": round(ended - began, 1), "load_seconds": round(read_ended - read_began, 1),
            "before": _stats([ms for t, ms in samples if t < began]),
            "during": _stats([ms for t, ms in samples if began <= t <= ended]),
            "during_load": _stats([ms for t, ms in samples if read_began <= t <= read_ended])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=200_000, help="(one value per blob must stay under Redis' 512 MB)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--chunk-mb", type=float, default=CHUNK_BYTES / 2**20, help="(default: the registry's)")
    p.add_argument("--write-mb-s", type=float, default=Settings().registry_write_mb_s, help="the paced run's writes")
    p.add_argument("--read-mb-s", type=float, default=Settings().registry_read_mb_s, help="the paced run's reads")
    p.add_argument("--skip-whole", action="store_true", help="leave out the one-value-per-blob publish")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    command = " ".join(["python -m bench.registry_publish", *(argv if argv is not None else sys.argv[1:])])
    gru = synthetic_gru(args.items, args.hidden)
    state = Path(tempfile.mkdtemp(prefix="bench-registry-publish-"))
    rds = local.start_redis(state)
    try:
        chunked = measure(rds.address, "chunked-", gru, int(args.chunk_mb * 2**20))
        redis.Redis.from_url(rds.address).flushall()
        paced = measure(rds.address, "paced-", gru, int(args.chunk_mb * 2**20), args.read_mb_s, args.write_mb_s)
        redis.Redis.from_url(rds.address).flushall()
        whole = None if args.skip_whole else measure(rds.address, "whole-", gru, 2**31 - 1)
    finally:
        local.stop_pid(rds.pid)
    print(json.dumps({"benchmark": "registry_publish", "command": command, "items": args.items,
                      "hidden": args.hidden, "embeddings_mb": round(args.items * args.hidden * 4 / 2**20),
                      "chunked": chunked, "chunked_and_paced": paced, "one_value_per_blob": whole}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
