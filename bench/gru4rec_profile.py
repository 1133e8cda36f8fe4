"""Where a GRU4Rec training step spends its time: one epoch on a slice of a config's data, under torch.profiler.

    python -m bench.gru4rec_profile --config diginetica-bprmax --sessions 15000

It trains the project's own :class:`models.gru4rec.GRU4Rec` (one epoch over the first ``--sessions`` training
sessions) and groups the operators' self CPU time per step into matrix products, sparse item-table work
(embedding lookups and gradients, coalescing, the optimiser's indexed updates), element-wise and reduction
work, and the rest.  The matrix products are the floor no rewrite of the same arithmetic in float32 goes
under, so ``epoch_floor_s`` (their time per step times the full epoch's steps) says how far an epoch can
shrink on this machine.  The same slice is first trained once without the profiler, whose per-operator cost
inflates small operators: ``ms_per_step`` and ``full_epoch_s_at_this_rate`` come from that run.  To compare two
versions of the model code, run this file against each (``PYTHONPATH`` at the other checkout) back to back.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from bench.gru4rec_quality import CONFIGS, DATA
from models.data import load_dataset
from models.gru4rec import GRU4Rec
from models.onednn_matmul import onednn_keeps_float32
from models.session_batches import SessionParallelBatches, session_offsets

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_addmm_activation"}
SPARSE = ("embedding", "coalesce", "index_add", "index_copy", "index_select", "index", "sparse", "_indices",
          "_values", "sort", "unique", "scatter", "gather", "searchsorted")


def _group(name: str) -> str:
    if name in MATMUL:
        return "matmul"
    lowered = name.lower()
    if any(key in lowered for key in SPARSE):
        return "sparse_items"
    return "elementwise_and_other"


def _first_sessions(train, sessions: int):
    keep = train["SessionId"].drop_duplicates().iloc[:sessions]
    return train[train["SessionId"].isin(keep)]


def _plain_epoch(params, part, onednn: bool) -> float:
    """Seconds of one unprofiled epoch over ``part`` (the profiler's per-operator cost inflates small operators)."""
    t0 = time.perf_counter()
    GRU4Rec(replace(params, n_epochs=1), device="cpu", onednn_matmul=onednn).fit(part)
    return time.perf_counter() - t0


def matmul_ab(params, part, steps: int, pairs: int) -> dict:
    """ms per step with training's products on oneDNN and on MKL, alternating (A/B back to back)."""
    runs: dict[str, list[float]] = {"onednn": [], "mkl": []}
    for _ in range(pairs):
        for name in runs:
            runs[name].append(round(_plain_epoch(params, part, name == "onednn") * 1e3 / steps, 2))
    ratios = [a / b for a, b in zip(runs["onednn"], runs["mkl"])]
    return {"ms_per_step": runs, "onednn_over_mkl": [round(r, 3) for r in ratios],
            "onednn_keeps_float32": onednn_keeps_float32()}


def run(config: str, sessions: int, threads: int | None, matmul: str = "onednn", pairs: int = 3) -> dict:
    dataset, params = CONFIGS[config]
    if threads:
        torch.set_num_threads(threads)
    train, _ = load_dataset(dataset, DATA)
    full_steps = _steps(train, params.batch_size)
    part = _first_sessions(train, sessions)
    steps = _steps(part, params.batch_size)
    gru = GRU4Rec(replace(params, n_epochs=1), device="cpu")
    gru.fit(part.head(2000))  # warm-up: first-call allocations and compilation stay outside the timings
    onednn = matmul != "mkl"
    ab = matmul_ab(params, part, steps, pairs) if matmul == "both" else None
    plain = _plain_epoch(params, part, onednn)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        gru = GRU4Rec(replace(params, n_epochs=1), device="cpu", onednn_matmul=onednn).fit(part)
    wall = time.perf_counter() - t0
    groups: dict[str, float] = defaultdict(float)
    top = []
    for event in prof.key_averages():
        groups[_group(event.key)] += event.self_cpu_time_total / 1e3
        top.append((event.self_cpu_time_total / 1e3, event.key, event.count))
    total_ms = sum(groups.values())
    per_step = {g: round(ms / steps, 3) for g, ms in sorted(groups.items())}
    matmul_ms = groups["matmul"] / steps
    return {
        "benchmark": "gru4rec_profile", "config": config, "dataset": dataset, "sessions": sessions,
        "steps": steps, "full_epoch_steps": full_steps, "torch_threads": torch.get_num_threads(),
        "wall_s": round(plain, 2), "ms_per_step": round(plain * 1e3 / steps, 3),
        "full_epoch_s_at_this_rate": round(plain / steps * full_steps, 1),
        "wall_s_profiled": round(wall, 2), "ms_per_step_profiled": round(wall * 1e3 / steps, 3),
        "self_cpu_ms_per_step": per_step,
        "share": {g: round(ms / total_ms, 3) for g, ms in sorted(groups.items())},
        "epoch_floor_s": round(matmul_ms * full_steps / 1e3, 1),
        "top_ops": [{"op": k, "ms_per_step": round(ms / steps, 3), "calls_per_step": round(c / steps, 2),
                     "group": _group(k)} for ms, k, c in sorted(top, reverse=True)[:20]],
        "matmul": "onednn" if onednn and onednn_keeps_float32() else "mkl",
        **({"matmul_ab": ab} if ab else {}),
        "command": f"python -m bench.gru4rec_profile --config {config} --sessions {sessions} --matmul {matmul}",
    }


def _steps(clicks, batch_size: int) -> int:
    """Mini-batch steps of an epoch, counted with the trainer's own session-parallel iterator."""
    offsets = session_offsets(clicks["SessionId"].to_numpy())
    return sum(1 for _ in SessionParallelBatches(clicks["ItemId"].factorize()[0], offsets, batch_size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="diginetica-bprmax")
    parser.add_argument("--sessions", type=int, default=15000, help="training sessions in the profiled epoch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--matmul", choices=("onednn", "mkl", "both"), default="onednn",
                        help="training's float32 products on oneDNN (where it stays float32) or MKL; both: "
                             "--pairs alternating unprofiled epochs of each first (models/onednn_matmul.py)")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args.config, args.sessions, args.threads, args.matmul, args.pairs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
