"""``python -m bench`` (``make bench``): run every benchmark, each in its own process, and write a summary.

    python -m bench [--quick] [--only NAME ...]

Writes ``bench/results/summary.json`` and ``bench/results/summary.md`` (machine facts, commands,
figures).  ``--quick`` runs a short version of each (fewer epochs) to check the machinery.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

BENCHMARKS: dict[str, list[str]] = {
    "gru4rec-yoochoose": ["bench.gru4rec_quality", "--config", "yoochoose-xe"],
    "gru4rec-yoochoose-reference-params": ["bench.gru4rec_quality", "--config", "yoochoose-xe-reference-params"],
    "gru4rec-diginetica": ["bench.gru4rec_quality", "--config", "diginetica-bprmax"],
    "gru4rec-profile": ["bench.gru4rec_profile", "--config", "diginetica-bprmax"],
    "gru4rec-parity": ["bench.gru4rec_quality", "--config", "yoochoose-xe-reference-params", "--seeds", "3"],
    "recall-index": ["bench.recall_index"],
    "stream-batch": ["bench.stream_batch"],
    "stream-throughput": ["bench.stream_throughput"],
    "stream-throughput-2-workers": ["bench.stream_throughput", "--workers", "2"],
    "exactly-once-cost": ["bench.exactly_once_cost"],
    "serving-latency": ["bench.serving_latency"],
    "model-switch-stall": ["bench.model_switch_stall"],
    "retrain-time": ["bench.retrain_time"],
    "retrain-latency": ["bench.retrain_latency"],
    "registry-publish": ["bench.registry_publish"],
    "promotion-pause": ["bench.promotion_pause"],
    "warm-start": ["bench.warm_start"],
    "online-study": ["bench.online_study"],
    "replay-eval-yoochoose": ["bench.replay_eval", "--dataset", "yoochoose-100k",
                              "--out", "bench/results/replay-eval-yoochoose"],
    "replay-eval-diginetica": ["bench.replay_eval", "--dataset", "diginetica", "--gru-epochs", "1",
                               "--out", "bench/results/replay-eval-diginetica"],
}
# the parity check runs the reference GRU4Rec beside the project's: a checkout of
# hidasib/GRU4Rec_PyTorch_Official (and an interpreter with numpy<2, pandas<3 and joblib) named by these variables
REFERENCE_ENV = {"GRU4REC_REFERENCE": "--reference", "GRU4REC_REFERENCE_PYTHON": "--reference-python"}
NEEDS_REFERENCE = {"gru4rec-parity"}
QUICK = {"gru4rec-yoochoose": ["--epochs", "1"], "gru4rec-yoochoose-reference-params": ["--epochs", "1"],
         "gru4rec-diginetica": ["--epochs", "1"], "gru4rec-profile": ["--sessions", "3000"],
         "gru4rec-parity": ["--epochs", "1", "--seeds", "2"],
         "recall-index": ["--queries", "512"],
         "stream-batch": ["--clicks", "1024", "--sizes", "4", "256"],
         "stream-throughput": ["--clicks", "5000", "--latency-seconds", "5", "--rate", "200",
                               "--broker-warmup-seconds", "20"],
         "stream-throughput-2-workers": ["--clicks", "5000", "--latency-seconds", "5", "--rate", "200",
                                         "--broker-warmup-seconds", "20"],
         "exactly-once-cost": ["--pairs", "1", "--clicks", "3000", "--latency-seconds", "5", "--rate", "200",
                               "--broker-warmup-seconds", "10"],
         "serving-latency": ["--seconds", "5", "--rate", "200", "--clicks", "3000"],
         "model-switch-stall": ["--trials", "1"],
         "retrain-time": ["--epochs", "1"], "promotion-pause": [], "warm-start": [],
         "registry-publish": ["--items", "50000"],
         "retrain-latency": ["--prefill", "20000", "--epochs", "1", "--before-s", "5", "--after-s", "3"],
         "online-study": ["--duration", "120", "--seeds", "2", "--variants", "full", "frozen", "popular"],
         "replay-eval-yoochoose": ["--limit", "3000", "--gru-epochs", "1"],
         "replay-eval-diginetica": ["--limit", "3000"]}


def machine() -> dict:
    mem_kb = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}


def to_markdown(results: dict, facts: dict) -> str:
    lines = [f"# streamrec benchmarks — {facts['date']}", "",
             f"Machine: {facts['cpus']} CPUs ({facts['cpu']}), {facts['memory_gb']} GB, Python {facts['python']}.", "",
             "| benchmark | Recall@20 | MRR@20 | Recall@10 | MRR@10 | s/epoch | train events/s | peak RSS MB | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        if "recall@20" not in r and "error" not in r:
            continue
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | | | | |")
            continue
        lines.append(f"| {name} | {r['recall@20']:.4f} | {r['mrr@20']:.4f} | {r['recall@10']:.4f} | {r['mrr@10']:.4f} "
                     f"| {r['seconds_per_epoch_mean']:.1f} | {r['train_events_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} "
                     f"| `{r['command']}` |")
    for name, r in results.items():
        if r.get("benchmark") != "stream_throughput":
            continue
        lines += ["", f"Stream ({r['catalog_items']:,}-item catalog, {r['clicks']:,} clicks, `{r['command']}`): "
                  f"{r.get('workers', 1)} worker process(es) {r['worker_clicks_per_s']:,.0f} clicks/s with slates, pass-through ceiling "
                  f"{r['passthrough_clicks_per_s']:,.0f} clicks/s (ratio {r['worker_over_passthrough']:.2f}); "
                  f"click->slate latency at {r['latency_rate_target']:,.0f} clicks/s: p50 {r['latency_p50_ms']:,.0f} ms, "
                  f"p99 {r['latency_p99_ms']:,.0f} ms"
                  + (f" (pass-through at the same rate: p50 {r['passthrough_latency_p50_ms']:,.0f} ms, p99 "
                     f"{r['passthrough_latency_p99_ms']:,.0f} ms)." if "passthrough_latency_p50_ms" in r else ".")]
    for name, r in results.items():
        if r.get("benchmark") == "recall_index":
            lines += ["", f"GRU4Rec top-{r['n']} recall over {r['catalog_items']:,} items (`{r['command']}`, one core):", "",
                      "| index | build s | ms / 256 queries | ms / 32 queries | recall@n vs exact |",
                      "| --- | --- | --- | --- | --- |"]
            lines += [f"| {x['index']} | {x['build_s']} | {x['ms_per_256']} | {x['ms_per_32']} | {x['recall']} |"
                      for x in r["rows"]]
    for name, r in results.items():
        if r.get("benchmark") == "online_study" and Path(r.get("table", "")).exists():
            lines += ["", Path(r["table"]).read_text().strip(), "", f"Aims: {json.dumps(r.get('aims', {}))}; "
                      f"plot: `{Path(r['plot']).relative_to(ROOT) if Path(r['plot']).is_relative_to(ROOT) else r['plot']}`."]
    for name, r in results.items():
        if r.get("benchmark") == "gru4rec_quality_seeds":
            lines += _seeds_table(r)
        elif "not_run" in r:
            lines += ["", f"{name}: not run: {r['not_run']}."]
    for name, r in results.items():  # the rest: their scalar figures as reported
        if "error" in r or "not_run" in r or "recall@20" in r or r.get("benchmark") in (
                "stream_throughput", "online_study", "recall_index", "gru4rec_quality_seeds"):
            continue
        figures = ", ".join(f"{k} {v:,.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                            if isinstance(v, (int, float, bool)) and k not in ("benchmark",))
        lines += ["", f"{name} (`{r.get('command', '')}`): {figures}."]
    lines += _aims_table(collect_aims(results))
    return "\n".join(lines) + "\n"


def collect_aims(results: dict) -> list[dict]:
    """Every benchmark's ``aims`` as rows (benchmark, aim, figure, target, met), plus the one aim no single
    benchmark can judge: the stream worker against its in-process ranking ceiling (``stream-batch``'s largest
    batch), when both ran in this summary."""
    rows = []
    for name, r in results.items():
        for key, a in (r.get("aims") or {}).items():
            a = a if isinstance(a, dict) else {"met": a}
            rows.append({"benchmark": name, "aim": key, "value": a.get("value"), "target": a.get("aim", ""),
                         "met": a.get("met"), "note": a.get("note", "")})
    batch = results.get("stream-batch", {}).get("rows")
    for name in ("stream-throughput", "stream-throughput-2-workers"):
        r = results.get(name, {})
        if batch and "worker_clicks_per_s" in r:
            ceiling = max(batch, key=lambda row: row["batch"])
            ratio = r["worker_clicks_per_s"] / r.get("workers", 1) / ceiling["clicks_per_s"]
            rows.append({"benchmark": name, "aim": "worker_over_in_process_ceiling", "value": round(ratio, 3),
                         "target": ">= 0.85", "met": ratio >= 0.85,
                         "note": f"per worker, against stream-batch's batch of {ceiling['batch']}"})
    return rows


def _aims_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    met = {True: "yes", False: "**no**", None: "back to back"}
    lines = ["", "## Aims", "", "| benchmark | aim | figure | target | met |", "| --- | --- | --- | --- | --- |"]
    for a in rows:
        value = "-" if a["value"] is None else f"{a['value']:,.4g}" if isinstance(a["value"], float) else a["value"]
        note = f" ({a['note']})" if a["note"] else ""
        lines.append(f"| {a['benchmark']} | {a['aim']} | {value} | {a['target']}{note} | {met.get(a['met'], a['met'])} |")
    return lines


def _seeds_table(r: dict) -> list[str]:
    """Project against reference, mean ± sd per metric, with the parity check beside each."""
    lines = ["", f"GRU4Rec quality parity, {r['dataset']}, {r['seeds']} seeds of each (`{r['command']}`):", "",
             "| metric | project | reference | project mean ≥ reference mean − 1 sd |", "| --- | --- | --- | --- |"]
    for metric, row in r["metrics"].items():
        ref = f"{row['reference_mean']:.4f} ± {row['reference_sd']:.4f}" if "reference_mean" in row else "-"
        lines.append(f"| {metric} | {row['project_mean']:.4f} ± {row['project_sd']:.4f} | {ref} | {row.get('met', '-')} |")
    lines.append(f"\nSeconds per epoch: project {r['seconds_per_epoch']['project']}, "
                 f"reference {r['seconds_per_epoch']['reference']}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS))
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in args.only or BENCHMARKS:
        cmd = [sys.executable, "-m", *BENCHMARKS[name], *(QUICK.get(name, []) if args.quick else [])]
        if name in NEEDS_REFERENCE:
            if not os.environ.get("GRU4REC_REFERENCE"):
                results[name] = {"not_run": "set GRU4REC_REFERENCE to a checkout of the reference GRU4Rec "
                                            "(and GRU4REC_REFERENCE_PYTHON to its interpreter) to run it"}
                print(f"== {name}: not run ({results[name]['not_run']})", flush=True)
                continue
            cmd += [arg for env, flag in REFERENCE_ENV.items() if os.environ.get(env) for arg in (flag, os.environ[env])]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            results[name] = {"error": f"exit code {proc.returncode}"}
            continue
        results[name] = json.loads(proc.stdout)
        print(json.dumps({k: v for k, v in results[name].items() if k not in ("params", "machine")}, indent=2))
    facts = machine()
    (RESULTS / "summary.json").write_text(json.dumps({"machine": facts, "aims": collect_aims(results), "results": results}, indent=2))
    (RESULTS / "summary.md").write_text(to_markdown(results, facts))
    print((RESULTS / "summary.md").read_text())
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
