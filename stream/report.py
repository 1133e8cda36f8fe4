"""``python -m stream report --since ... --out DIR``: a run's metrics read back from Kafka, as plots and markdown.

Reads ``metrics`` (the workers' windows and, when the simulator ran, its ground truth) and
``model-updates`` from ``--since``, and writes:

- ``ctr.png``: CTR per window across workers, the simulator's observed / expected / oracle CTR, and a
  marker at every model version change (minor DBGD steps thin grey, major retrains and rollbacks red,
  dotted when the retrain was not promoted);
- ``latency.png``: click->slate latency p50 and p99 per window;
- ``throughput.png``: clicks/s per window, all workers together;
- ``learning.png``: HitRate@K and MRR@K against the previous slate, and cumulative clicks per
  interleaving team with accepted DBGD updates;
- ``summary.md``: the run in figures.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stream.clicklog import read_window  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import METRICS, MODEL_UPDATES  # noqa: E402

log = logging.getLogger(__name__)


def _natural(version: str) -> tuple:
    """v2 before v10."""
    return (0, int(version[1:])) if version[1:].isdigit() else (1, version)


def _windows(records: list[dict]) -> list[dict]:
    """The workers' windows merged per time bucket (the window length), in time order."""
    stream = [r for r in records if r.get("source") == "stream" and r.get("ts")]
    if not stream:
        return []
    width = max(min(r.get("window_s", 5.0) for r in stream), 1e-3)
    buckets: dict[int, list[dict]] = defaultdict(list)
    for r in stream:
        buckets[int(r["ts"] // width)].append(r)
    merged = []
    for b in sorted(buckets):
        rs = buckets[b]
        impressions = sum(r.get("impressions", 0) for r in rs)
        slate_clicks = sum(r.get("slate_clicks", 0) for r in rs)

        def worst(key: str) -> float | None:
            values = [r[key] for r in rs if r.get(key) is not None]
            return max(values) if values else None

        def mean(key: str) -> float | None:
            values = [r[key] for r in rs if r.get(key) is not None]
            return sum(values) / len(values) if values else None

        teams: dict[str, int] = defaultdict(int)
        for r in rs:
            for t, n in (r.get("cumulative", {}).get("clicks_by_team") or {}).items():
                teams[t] += n
        merged.append({"ts": (b + 1) * width, "impressions": impressions, "slate_clicks": slate_clicks,
                       "ctr": slate_clicks / impressions if impressions else None,
                       "clicks_per_s": sum(r.get("clicks_per_s") or 0.0 for r in rs),
                       "latency_p50_ms": mean("latency_p50_ms"), "latency_p99_ms": worst("latency_p99_ms"),
                       "hit_rate": mean("hit_rate"), "mrr": mean("mrr"), "teams": dict(teams),
                       "accepted": max((r.get("dbgd") or {}).get("accepted_updates", 0) for r in rs),
                       "versions": sorted({r.get("model_version") for r in rs if r.get("model_version")},
                                          key=_natural)})
    return merged


def write_report(metrics: list[dict], updates: list[dict], out: Path) -> dict:
    """Plots and ``summary.md`` in ``out``; returns the summary figures."""
    out.mkdir(parents=True, exist_ok=True)
    windows = _windows(metrics)
    truth = sorted((r for r in metrics if r.get("source") == "simulator" and r.get("ts")), key=lambda r: r["ts"])
    if not windows:
        raise ValueError("no stream windows on the metrics topic in this range: was a worker running?")
    t0 = windows[0]["ts"] - 1
    x = [(w["ts"] - t0) for w in windows]

    def markers(ax) -> None:
        for u in updates:
            if u.get("ts") and t0 <= u["ts"] <= windows[-1]["ts"] + 1:
                bold = u.get("kind") in ("major", "rollback")
                rejected = u.get("action") == "rejected"  # a candidate the controller did not promote
                ax.axvline(u["ts"] - t0, color="tab:red" if bold else "tab:gray", lw=1.5 if bold else 0.5,
                           alpha=0.8 if bold else 0.4, ls=":" if rejected else "-")

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(x, [w["ctr"] for w in windows], label="stream: clicks on slates / slates", lw=1.5)
    if truth:
        tx = [r["ts"] - t0 for r in truth]
        ax.plot(tx, [r.get("ctr") for r in truth], label="simulator: observed CTR", lw=1, ls="--")
        ax.plot(tx, [r.get("expected_ctr") for r in truth], label="simulator: expected CTR", lw=1)
        ax.plot(tx, [r.get("oracle_ctr") for r in truth], label="simulator: oracle CTR", lw=1, ls=":")
    markers(ax)
    ax.set(xlabel="seconds", ylabel="CTR", title="CTR per window (grey: DBGD minor versions; red: major retrain/rollback, dotted: not promoted)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ctr.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(x, [w["latency_p50_ms"] for w in windows], label="p50")
    ax.plot(x, [w["latency_p99_ms"] for w in windows], label="p99")
    ax.set(xlabel="seconds", ylabel="ms", title="click -> slate latency", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(x, [w["clicks_per_s"] for w in windows])
    ax.set(xlabel="seconds", ylabel="clicks/s", title="throughput (all workers)")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.8))
    a1.plot(x, [w["hit_rate"] for w in windows], label="HitRate@K")
    a1.plot(x, [w["mrr"] for w in windows], label="MRR@K")
    a1.set(xlabel="seconds", title="next click vs the previous slate")
    a1.legend()
    for team in sorted({t for w in windows for t in w["teams"]}):
        a2.plot(x, [w["teams"].get(team, 0) for w in windows], label=f"clicks credited to {team}")
    a2.plot(x, [w["accepted"] for w in windows], label="accepted DBGD updates", ls="--")
    a2.set(xlabel="seconds", title="interleaving")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning.png", dpi=110)
    plt.close(fig)

    impressions = sum(w["impressions"] for w in windows)
    clicks = sum(w["slate_clicks"] for w in windows)
    half = len(windows) // 2
    first, second = windows[:half] or windows, windows[half:]

    def ctr(ws) -> float | None:
        n = sum(w["impressions"] for w in ws)
        return sum(w["slate_clicks"] for w in ws) / n if n else None

    p99 = [w["latency_p99_ms"] for w in windows if w["latency_p99_ms"] is not None]
    summary = {"duration_s": round(windows[-1]["ts"] - t0, 1), "windows": len(windows), "impressions": impressions,
               "slate_clicks": clicks, "ctr": clicks / impressions if impressions else None,
               "ctr_first_half": ctr(first), "ctr_second_half": ctr(second),
               "peak_clicks_per_s": max(w["clicks_per_s"] for w in windows),
               "worst_window_p99_ms": max(p99) if p99 else None,
               "model_versions_seen": len({v for w in windows for v in w["versions"]}),
               "first_version": windows[0]["versions"][0] if windows[0]["versions"] else None,
               "last_version": windows[-1]["versions"][-1] if windows[-1]["versions"] else None,
               "model_updates": {k: sum(1 for u in updates if u.get("kind") == k and u.get("action", "promoted") in
                                        ("promoted", "rolled_back")) for k in ("minor", "major", "rollback")},
               "major_promoted": sum(1 for u in updates if u.get("kind") == "major"
                                     and u.get("action", "promoted") == "promoted"),
               "major_rejected": sum(1 for u in updates if u.get("kind") == "major" and u.get("action") == "rejected"),
               "rollbacks": [f"{u.get('parent')} -> {u.get('version')}: {u.get('reason', '')}" for u in updates
                             if u.get("kind") == "rollback"],
               "accepted_dbgd_updates": max(w["accepted"] for w in windows)}
    if truth:
        n = sum(r.get("slates", 0) for r in truth) or 1
        summary["simulator"] = {"observed_ctr": sum(r.get("slate_clicks", 0) for r in truth) / n,
                                "mean_expected_ctr": sum(r.get("expected_ctr", 0) or 0 for r in truth) / len(truth),
                                "mean_oracle_ctr": sum(r.get("oracle_ctr", 0) or 0 for r in truth) / len(truth),
                                "mean_regret": sum(r.get("regret", 0) or 0 for r in truth) / len(truth)}

    def fmt(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["# streamrec run report", "", "| figure | value |", "| --- | --- |"]
    for k, v in summary.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                lines.append(f"| {k}.{k2} | {fmt(v2)} |")
        else:
            lines.append(f"| {k} | {fmt(v)} |")
    lines += ["", "![CTR](ctr.png)", "", "![latency](latency.png)", "", "![throughput](throughput.png)", "",
              "![learning](learning.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))
    return summary


def report(settings: Settings, since: float | None, out: Path) -> dict:
    metrics = read_window(settings.kafka, settings.topic(METRICS), since).records
    updates = read_window(settings.kafka, settings.topic(MODEL_UPDATES), since).records
    return write_report(metrics, updates, out)
