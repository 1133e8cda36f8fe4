"""GRU4Rec offline quality and speed on the real data in ``../shared/data``.

    python -m bench.gru4rec_quality --config yoochoose-xe        # ~1.5 min on 2 cores
    python -m bench.gru4rec_quality --config diginetica-bprmax  # the long one

Prints one JSON object: Recall@20, MRR@20, Recall@10, MRR@10 (conservative ties), seconds per
epoch, training events/s, peak RSS, and the command and parameters used.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from models.data import load_dataset
from models.evaluate import evaluate
from models.gru4rec import GRU4Rec, GRU4RecParams

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

CONFIGS: dict[str, tuple[str, GRU4RecParams]] = {
    # the yoochoose settings
    "yoochoose-xe": ("yoochoose-100k", GRU4RecParams(
        layers=[100], loss="cross-entropy", batch_size=32, learning_rate=0.1, momentum=0.0, n_sample=2048,
        sample_alpha=0.75, logq=1.0, dropout_p_embed=0.1, dropout_p_hidden=0.0, constrained_embedding=True,
        n_epochs=10)),
    # the reference's own rsc15 parameter file (rsc15_xe_shared_100_best), for the figures in shared/data/README.md
    "yoochoose-xe-reference-params": ("yoochoose-100k", GRU4RecParams(
        layers=[100], loss="cross-entropy", batch_size=32, learning_rate=0.2, momentum=0.2, n_sample=2048,
        sample_alpha=0.5, logq=1.0, dropout_p_embed=0.0, dropout_p_hidden=0.4, constrained_embedding=True,
        n_epochs=10)),
    "diginetica-bprmax": ("diginetica", GRU4RecParams(
        layers=[512], loss="bpr-max", batch_size=128, learning_rate=0.05, momentum=0.15, n_sample=2048,
        sample_alpha=0.3, bpreg=0.9, elu_param=1.0, dropout_p_embed=0.5, dropout_p_hidden=0.3,
        constrained_embedding=True, n_epochs=10)),
}


def run(config: str, epochs: int | None = None, device: str = "cpu") -> dict:
    dataset, params = CONFIGS[config]
    if epochs is not None:
        params.n_epochs = epochs
    if not DATA.is_dir():
        raise SystemExit(f"real data folder {DATA} is missing (it sits beside the project as ../shared/data)")
    train, test = load_dataset(dataset, DATA)
    epoch_stats: list[dict] = []
    t0 = time.perf_counter()
    gru = GRU4Rec(params, device=device).fit(train, progress=lambda e, s: (epoch_stats.append(s), print(
        f"  epoch {e + 1}/{params.n_epochs}: loss {s['loss']:.4f}, {s['seconds']:.1f} s, "
        f"{s['events_per_s']:,.0f} events/s", file=sys.stderr, flush=True)))
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = evaluate(gru, test, mode="conservative")
    eval_s = time.perf_counter() - t1
    seconds = [s["seconds"] for s in epoch_stats]
    return {
        "benchmark": "gru4rec_quality", "config": config, "dataset": dataset,
        "command": f"python -m bench.gru4rec_quality --config {config}" + (f" --epochs {epochs}" if epochs else ""),
        "recall@20": metrics["recall@20"], "mrr@20": metrics["mrr@20"],
        "recall@10": metrics["recall@10"], "mrr@10": metrics["mrr@10"],
        "recall@5": metrics["recall@5"], "mrr@5": metrics["mrr@5"], "test_events": metrics["events"],
        "seconds_per_epoch_mean": sum(seconds) / len(seconds), "seconds_per_epoch_min": min(seconds),
        "seconds_per_epoch_max": max(seconds),
        "train_events_per_s": sum(s["events"] for s in epoch_stats) / sum(seconds),
        "train_seconds": train_s, "eval_seconds": eval_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": gru.loss_history[-1], "params": asdict(params),
        "machine": {"cpu_threads": torch.get_num_threads(), "device": device, "torch": torch.__version__,
                    "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="yoochoose-xe")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args.config, args.epochs, args.device), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
