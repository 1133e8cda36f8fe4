"""Seconds per warm-start major-retrain epoch over Diginetica's training clicks, on this machine.

    python -m bench.retrain_time [--epochs 1]

Starts from ``bench.common.diginetica_model`` (one epoch over the first 60,000 training sessions)
and runs what ``models.retrain`` runs on a window of the log: ``GRU4Rec.fit(..., warm_start=True)``
over all 0.9M training clicks, then the held-out evaluation that decides the promotion (Recall@20
and MRR@20 on Diginetica's test split).  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from bench.common import DATA, diginetica_model
from models.data import load_dataset
from models.evaluate import evaluate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train, test = load_dataset("diginetica", DATA)
    gru = diginetica_model()
    before = evaluate(gru, test, cutoffs=(20,))
    gru.params.n_epochs = args.epochs
    epochs: list[float] = []
    t0 = time.perf_counter()
    gru.fit(train, warm_start=True, progress=lambda e, stats: epochs.append(stats["seconds"]))
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    after = evaluate(gru, test, cutoffs=(20,))
    result = {"benchmark": "retrain_time", "train_clicks": len(train), "items": gru.n_items,
              "threads": args.threads, "epoch_seconds": epochs, "fit_seconds": round(fit_s, 1),
              "events_per_s": round(len(train) / (sum(epochs) / len(epochs)), 0),
              "evaluation_seconds": round(time.perf_counter() - t1, 1), "before": before, "after": after,
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "command": f"python -m bench.retrain_time --epochs {args.epochs}"}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
