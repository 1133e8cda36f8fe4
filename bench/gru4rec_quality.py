"""GRU4Rec offline quality and speed on the real data in ``../shared/data``.

    python -m bench.gru4rec_quality --config yoochoose-xe        # ~1.5 min on 2 cores
    python -m bench.gru4rec_quality --config diginetica-bprmax  # the long one
    python -m bench.gru4rec_quality --config yoochoose-xe-reference-params --seeds 3 --reference PATH

With ``--seeds N`` it trains N models (seeds ``--seed`` ...) and, given a checkout of the reference
GRU4Rec (``--reference``, run unchanged by ``bench.gru4rec_reference``), N reference models on the same
files with the same parameters, ``--jobs`` at a time, and prints mean ± sd per metric and whether the
project's mean is at least the reference's mean - 1 sd (the quality-parity check).

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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import torch

from models.data import load_dataset
from models.evaluate import evaluate
from bench.common import aim
from bench.gru4rec_reference import run_reference
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


def run(config: str, epochs: int | None = None, device: str = "cpu", seed: int | None = None,
        threads: int | None = None) -> dict:
    dataset, params = CONFIGS[config]
    params = replace(params, **({"n_epochs": epochs} if epochs is not None else {}),
                     **({"seed": seed} if seed is not None else {}))
    if threads is not None:
        torch.set_num_threads(threads)
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


METRICS = ("recall@20", "mrr@20", "recall@10", "mrr@10")


def _reference_run(checkout: str, config: str, device: str, threads: int, epochs: int | None, python: str) -> dict:
    torch.set_num_threads(threads)
    dataset, params = CONFIGS[config]
    params = replace(params, n_epochs=epochs) if epochs is not None else params
    train, test = load_dataset(dataset, DATA)
    return run_reference(Path(checkout), train, test, params, device, python, threads)


def _spread(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, sd


def _epoch_aim(epoch_s: dict) -> dict:
    """Epoch time against the reference's, from runs of the same invocation (the issue's aim: at most half)."""
    if not epoch_s["reference"] or not epoch_s["project"]:
        return {}
    ratio = _spread(epoch_s["project"])[0] / _spread(epoch_s["reference"])[0]
    return {"epoch_time_vs_reference": aim(ratio, "<= 0.5", ratio <= 0.5, "same machine, same run")}


def seeds_table(config: str, seeds: int, first_seed: int, reference: str | None, jobs: int, device: str,
                epochs: int | None = None, reference_python: str = sys.executable) -> dict:
    """N project runs (and N reference runs), ``jobs`` processes at a time; mean ± sd per metric."""
    threads = max(1, (torch.get_num_threads() or 1) // jobs)
    with ProcessPoolExecutor(jobs) as pool:
        mine = [pool.submit(run, config, epochs, device, first_seed + n, threads) for n in range(seeds)]
        theirs = [pool.submit(_reference_run, reference, config, device, threads, epochs, reference_python)
                  for _ in range(seeds)] \
            if reference else []
        for n, f in enumerate(mine + theirs, 1):
            f.result()
            print(f"  {n}/{len(mine) + len(theirs)} runs done", file=sys.stderr, flush=True)
        project, ref = [f.result() for f in mine], [f.result() for f in theirs]
    table = {}
    for m in METRICS:
        p_mean, p_sd = _spread([r[m] for r in project])
        row = {"project": [round(r[m], 6) for r in project], "project_mean": p_mean, "project_sd": p_sd}
        if ref:
            r_mean, r_sd = _spread([r[m] for r in ref])
            row.update(reference=[round(r[m], 6) for r in ref], reference_mean=r_mean, reference_sd=r_sd,
                       aim="project mean >= reference mean - 1 sd", met=p_mean >= r_mean - r_sd)
        table[m] = row
    epoch_s = {"project": [round(r["seconds_per_epoch_mean"], 1) for r in project],
               "reference": [round(r.get("seconds_per_epoch_mean", float("nan")), 1) for r in ref]}
    params = {**asdict(CONFIGS[config][1]), **({"n_epochs": epochs} if epochs else {}),  # as run: the project's seeds
              "seed": [first_seed + n for n in range(seeds)]}
    return {"benchmark": "gru4rec_quality_seeds", "config": config, "dataset": CONFIGS[config][0], "seeds": seeds,
            "first_seed": first_seed, "parallel_jobs": jobs, "torch_threads_per_job": threads,
            "metrics": table, "seconds_per_epoch": epoch_s, "params": params,
            "aims": {**{m: aim(row["project_mean"], row.get("aim", "-"), row.get("met")) for m, row in table.items()},
                     **_epoch_aim(epoch_s)},
            "command": f"python -m bench.gru4rec_quality --config {config} --seeds {seeds} --seed {first_seed} "
                       f"--jobs {jobs}" + (f" --epochs {epochs}" if epochs else "")
                       + (" --reference PATH" if reference else "")}


def _print_table(result: dict) -> None:
    print(f"{'metric':<10} {'project mean ± sd':>22} {'reference mean ± sd':>22}  met", file=sys.stderr)
    for m, row in result["metrics"].items():
        ref = (f"{row['reference_mean']:.4f} ± {row['reference_sd']:.4f}" if "reference_mean" in row else "-")
        print(f"{m:<10} {row['project_mean']:>13.4f} ± {row['project_sd']:.4f} {ref:>22}  {row.get('met', '-')}",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="yoochoose-xe")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=0, help="N seeded runs and a mean ± sd table (0: one run)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed of --seeds")
    parser.add_argument("--reference", help="a checkout of hidasib/GRU4Rec_PyTorch_Official to run beside (--seeds)")
    parser.add_argument("--reference-python", default=sys.executable, help="the interpreter that runs the reference "
                        "(it needs joblib besides torch and pandas, and numpy < 2: under numpy 2's type promotion "
                        "its initialisation makes float64 matrices that torch 2.15 refuses to set into "
                        "float32 weights)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time with --seeds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.seeds:
        result = seeds_table(args.config, args.seeds, args.seed, args.reference, args.jobs, args.device, args.epochs,
                             args.reference_python)
        _print_table(result)
        print(json.dumps(result, indent=2))
        return 0
    print(json.dumps(run(args.config, args.epochs, args.device), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
