"""The pause a major promotion causes in the stream: batch times before, during and after the switch.

    python -m bench.promotion_pause

In-process (no Kafka): ``stream.online.OnlineRecommender`` as the worker runs it (``background_refresh``:
a thread loads and indexes a new version while batches go on) answers Diginetica clicks in batches of
256 with the 43,097-item model of ``bench.common``; a new major version is promoted between two
batches.  Prints the mean batch time before, the first batch after the promotion, the slowest batch
until the new version is in use, how many batches that took, and the mean after.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

import redis
import torch

from bench.common import DATA, diginetica_model
from infra import local
from models.__main__ import publish_first_version
from models.data import load_dataset
from models.gru4rec import GRU4Rec
from models.registry import ModelRegistry
from models.sessions import SessionStore
from stream.online import OnlineRecommender
from stream.records import Click
from stream.settings import Settings


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="bench-pause-"))
    rds = local.start_redis(state)
    try:
        _, test = load_dataset("diginetica", DATA)
        gru = diginetica_model()
        settings = Settings(redis=rds.address, topic_prefix="b-", model_refresh_s=0.05)
        client = redis.Redis.from_url(rds.address)
        registry = ModelRegistry(client, "b-")
        v1 = publish_first_version(registry, gru)
        rec = OnlineRecommender(settings, registry, SessionStore(client, "b-"), background_refresh=True)
        clicks = [Click(session_id=str(a), item_id=str(b), ts=1e6 + n)
                  for n, (a, b) in enumerate(zip(test.SessionId.head(40_000), test.ItemId.head(40_000)))]
        batches = iter(range(0, len(clicks) - 256, 256))

        def one() -> float:
            i = next(batches)
            t = time.perf_counter()
            rec.process(clicks[i: i + 256], [time.time()] * 256)
            return (time.perf_counter() - t) * 1000

        before = [one() for _ in range(8)][1:]
        second = GRU4Rec.load(io.BytesIO(registry.gru_blob(v1)), device="cpu")
        with torch.no_grad():  # same shape, different weights: loaded and indexed anew
            second.model.Wy.weight.mul_(1.01)
        v2 = publish_first_version(registry, second)
        during = []
        while rec.model.name != v2 and len(during) < 120:
            during.append(one())
        after = [one() for _ in range(8)]
        print(json.dumps({"benchmark": "promotion_pause", "catalog_items": gru.n_items, "new_version_in_use":
                          rec.model.name == v2, "batch_ms_before": round(sum(before) / len(before), 1),
                          "first_batch_after_promotion_ms": round(during[0], 1) if during else None,
                          "slowest_batch_during_switch_ms": round(max(during), 1) if during else None,
                          "batches_until_switch": len(during), "batch_ms_after": round(sum(after) / len(after), 1),
                          "command": "python -m bench.promotion_pause"}, indent=2))
        return 0
    finally:
        local.stop_pid(rds.pid)


if __name__ == "__main__":
    sys.exit(main())
