"""The online-learning study: does the system learn online, and does it recover from a preference drift?

    python -m bench.online_study [--seeds 5] [--duration 800] [--rate 100] [--variants full frozen ...] [--out DIR]
    python -m bench.online_study --merge A.json B.json --out DIR     (seeds run in separate processes)

A closed loop in simulated time.  The simulator's users (:mod:`simulator`: world, population, true
click model) click; every half second of simulated time the clicks are answered as one micro-batch,
one slate per click, by the policy under study; each user examines their slate under the true click
model and either clicks a slot (the next click carries the slate's ``impression_id``) or browses on
their own.  Half way through, the ``drift`` scenario moves the users' preferences: one category comes
into fashion, the rest lose appeal (:class:`simulator.scenario.Scenario`).  Every policy sees the
same world, the same users and the same seed.

Variants (:mod:`bench.study_policies`): ``full`` (the stream's online loop: GRU4Rec session state in
Redis, DRN ranker, team-draft interleaving; every model decision by the worker's own controller,
:class:`stream.control.controller.Controller`, on the simulated clock: DBGD steps, major retrains on an
ADWIN-detected CTR drop and every N clicks, the promotion gate and the rollback guardrail), ``frozen`` (the same first model, no exploration, no updates), ``popular``
(recently most clicked), ``biasedmf`` (river's ``reco.BiasedMF`` learning online), ``dbgd-off``
(retrains only) and ``retrains-off`` (DBGD only).  The first model is the one ``make loop`` starts
from: GRU4Rec trained on an organic log of the same world (cached under ``~/.cache/streamrec``).

Not the production path, and why: clicks do not travel through Kafka (each policy is called
directly, so the study measures learning, not transport), and a major retrain runs inside the
simulated clock (in the worker it takes seconds of wall time while the old version keeps serving).

Every variant runs on ``--seeds`` seeds (world, users and first model change with the seed); the table
gives each figure's mean and 95% t-interval over seeds, and the paired differences full - frozen,
full - DBGD-off and full - retrains-off.  Output: a JSON summary on stdout (for ``make bench``),
``online_study_seeds.png`` (mean windowed CTR of every variant with its interval, the drift marked),
``online_study.png`` (the first seed's windowed and cumulative CTR) and ``online_study.md`` (the tables)
in ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.study_policies import BiasedMFPolicy, PopularPolicy, Request, SystemOptions, SystemPolicy
from infra import local
from models.gru4rec import GRU4Rec, GRU4RecParams
from simulator.clickmodel import ClickModel
from simulator.loop import Window  # the closed loop's own per-window counters and figures
from simulator.organic import organic_log
from simulator.population import Population, Session
from simulator.scenario import Scenario
from simulator.world import World, WorldConfig

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("online_study")
VARIANTS = ("full", "frozen", "popular", "biasedmf", "dbgd-off", "retrains-off")
BASE_TS = 1_700_000_000.0  # simulated time 0 as a unix time (event timestamps of the clicks)


@dataclass
class StudyConfig:
    items: int = 2000
    users: int = 1000
    categories: int = 20
    organic_sessions: int = 20_000   # the first model's training log
    rate: float = 100.0              # clicks per simulated second
    duration: float = 800.0          # simulated seconds
    drift_at: float | None = None    # default: half way
    batch_s: float = 0.5             # one micro-batch per this much simulated time
    window_s: float = 20.0           # reporting window
    time_scale: float = 1 / 120      # real-data think times scaled down, as the closed loop does
    seed: int = 0
    system: SystemOptions = field(default_factory=SystemOptions)

    @property
    def drift_time(self) -> float:
        return self.duration / 2 if self.drift_at is None else self.drift_at


def build_world(cfg: StudyConfig) -> tuple[World, ClickModel, Population]:
    scenario = Scenario.preset("drift", cfg.duration, cfg.seed)
    scenario.drift_at = cfg.drift_time
    world = World(WorldConfig(n_items=cfg.items, n_categories=cfg.categories, n_users=cfg.users, launched_later=0.0,
                              duration_s=cfg.duration, seed=cfg.seed))
    clicks = ClickModel(world, scenario)
    return world, clicks, Population(world, clicks, seed=cfg.seed)


def first_model(cfg: StudyConfig) -> Path:
    """GRU4Rec trained on organic sessions of the study's world (``make loop``'s settings), cached by config."""
    key = hashlib.sha1(json.dumps(["season", cfg.items, cfg.users, cfg.categories, cfg.organic_sessions, cfg.seed]).encode())
    path = local.cache_dir() / f"study-gru-{key.hexdigest()[:12]}.pt"
    if path.exists():
        return path
    world, clicks, _ = build_world(cfg)
    log_df = organic_log(Population(world, clicks, seed=cfg.seed + 1000), cfg.organic_sessions)
    params = GRU4RecParams(layers=[64], n_epochs=3, loss="cross-entropy", n_sample=512, batch_size=64,
                           learning_rate=0.05, seed=cfg.seed)
    log.info("training the first model on %d organic clicks", len(log_df))
    GRU4Rec(params, device="cpu").fit(log_df).save(path)
    return path


def simulate(cfg: StudyConfig, policy, progress=None) -> list[dict]:
    """Run the closed loop against one policy; the windows' figures, in time order."""
    world, click_model, population = build_world(cfg)
    due: list[tuple[float, int, str, int, str | None, int | None]] = []
    sessions: dict[str, Session] = {}
    seq = i = 0
    windows: list[dict] = []
    window, window_start = Window(), 0.0
    n_batches = int(round(cfg.duration / cfg.batch_s))
    for b in range(1, n_batches + 1):
        batch_end = b * cfg.batch_s
        requests, contexts = [], []
        while i < batch_end * cfg.rate:
            t = i / cfg.rate
            if due and due[0][0] <= t:
                _, _, sid, item, imp, pos = heapq.heappop(due)
                session = sessions[sid]
            else:
                session = population.new_session()
                sid, item, imp, pos = session.id, -1, None, None
                sessions[sid] = session
            if item < 0:
                item = population.organic_click(session, t)
            contexts.append((session.user, session.category, t))
            population.after_click(session, item)
            requests.append(Request(sid, f"u{session.user}", str(world.item_ids[item]), BASE_TS + t, imp, pos))
            i += 1
        if not requests:
            continue
        slates = policy.answer(requests, batch_end)
        for req, slate, (user, category, t) in zip(requests, slates, contexts):
            session = sessions[req.session_id]
            attraction = click_model.attraction(user, category, t)
            idx = np.array([world.item_index(x) for x in slate.items], dtype=np.int64)
            slate_attr = np.where(idx >= 0, attraction[np.maximum(idx, 0)], 0.0) if len(idx) else np.zeros(0)
            position = click_model.respond(session.rng, slate_attr) if len(idx) else None
            window.slates += 1
            window.slots += len(idx)
            window.slate_clicks += position is not None
            if len(idx):
                window.expected += click_model.p_click(slate_attr)
                window.oracle += click_model.oracle(attraction, len(idx))[1]
            if session.remaining <= 0:
                del sessions[req.session_id]
                continue
            gap = population.think_time(session) * cfg.time_scale
            if position is not None:
                heapq.heappush(due, (t + gap, seq, req.session_id, int(idx[position]), slate.impression_id, position))
            else:
                heapq.heappush(due, (t + gap, seq, req.session_id, -1, None, None))
            seq += 1
        window.clicks_sent += len(requests)
        if batch_end - window_start >= cfg.window_s - 1e-9:
            windows.append({**window.report(), "start_s": window_start, "end_s": batch_end,
                            "events": window.clicks_sent})
            window, window_start = Window(), batch_end
        if progress is not None:
            progress(len(requests))
    return windows


def make_policy(name: str, cfg: StudyConfig, client: redis.Redis, model_path: Path, run_id: str):
    s = cfg.system
    if name == "popular":
        return PopularPolicy(name, s.slate_size, s.popular_half_life_s)
    if name == "biasedmf":
        return BiasedMFPolicy(name, s.slate_size, cfg.seed)
    opts = {"full": {}, "frozen": {"explore": False, "dbgd": False, "retrains": False},
            "dbgd-off": {"explore": False, "dbgd": False}, "retrains-off": {"retrains": False}}[name]
    return SystemPolicy(name, client, str(model_path), SystemOptions(**{**asdict(s), **opts}),
                        f"study-{run_id}-{name}-")


def summarise(name: str, windows: list[dict], cfg: StudyConfig, events: list[dict], seconds: float) -> dict:
    """Pre-drift, post-drift (settled: the second half after the drift) and overall CTR; events to recover."""
    drift = cfg.drift_time
    settled_from = drift + (cfg.duration - drift) / 2

    def mean(key: str, lo: float, hi: float) -> float:
        ws = [w for w in windows if w["start_s"] >= lo and w["end_s"] <= hi + 1e-9]
        n = sum(w["slates"] for w in ws)
        return sum(w[key] * w["slates"] for w in ws) / n if n else float("nan")

    pre = mean("ctr", drift / 2, drift)
    recovered_after = None
    events_after = 0
    for j, w in enumerate(windows):
        if w["start_s"] < drift:
            continue
        events_after += w["events"]
        pair = windows[j: j + 2]  # two windows in a row, so one lucky window does not count
        if len(pair) == 2 and all(x["ctr"] >= 0.9 * pre for x in pair):
            recovered_after = events_after
            break
    return {
        "variant": name, "ctr_pre_drift": pre, "ctr_post_drift": mean("ctr", drift, cfg.duration),
        "ctr_post_drift_settled": mean("ctr", settled_from, cfg.duration),
        "expected_ctr_pre_drift": mean("expected_ctr", drift / 2, drift),
        "expected_ctr_post_drift_settled": mean("expected_ctr", settled_from, cfg.duration),
        "oracle_ctr_post_drift_settled": mean("oracle_ctr", settled_from, cfg.duration),
        "regret_post_drift_settled": mean("regret", settled_from, cfg.duration),
        "ctr_overall": mean("ctr", 0.0, cfg.duration),
        "events_to_90pct_of_pre_drift_ctr": recovered_after, "seconds": round(seconds, 1),
        "events": [e for e in events if e["event"] != "DBGD accepted"],
        "dbgd_accepted": sum(e["event"] == "DBGD accepted" for e in events),
    }


def plot(results: dict[str, dict], cfg: StudyConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for name, r in results.items():
        ws = r["windows"]
        x = [w["end_s"] for w in ws]
        style = {"linewidth": 2.4} if name == "full" else {"linewidth": 1.3, "alpha": 0.85}
        axes[0].plot(x, [w["ctr"] for w in ws], label=name, **style)
        clicks = np.cumsum([w["ctr"] * w["slates"] for w in ws])
        slates = np.cumsum([w["slates"] for w in ws])
        axes[1].plot(x, clicks / np.maximum(slates, 1), label=name, **style)
        for e in r["summary"]["events"]:
            if name == "full" and e["event"].startswith("retrain"):
                axes[0].axvline(e["t"], color="tab:blue", linestyle=":", linewidth=0.8)
    oracle = [w["oracle_ctr"] for w in results[next(iter(results))]["windows"]]
    axes[0].plot([w["end_s"] for w in results[next(iter(results))]["windows"]], oracle, color="grey", linestyle="--",
                 linewidth=1, label="oracle (expected)")
    for ax in axes:
        ax.axvline(cfg.drift_time, color="red", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"CTR per slate ({cfg.window_s:.0f} s windows)")
    axes[0].set_title(f"online-learning study: {cfg.items} items, {cfg.rate:.0f} clicks/s simulated, drift at "
                      f"{cfg.drift_time:.0f} s (red); full system's retrains dotted")
    axes[0].legend(ncol=4, fontsize=8)
    axes[1].set_ylabel("cumulative CTR per slate")
    axes[1].set_xlabel("simulated seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_markdown(results: dict[str, dict], cfg: StudyConfig, command: str) -> str:
    lines = [f"Online-learning study (`{command}`): {cfg.items} items, {cfg.users} users, {cfg.rate:.0f} clicks per "
             f"simulated second for {cfg.duration:.0f} s, drift at {cfg.drift_time:.0f} s; CTR = clicks per slate of "
             f"{cfg.system.slate_size}; 'settled' = the second half after the drift.", "",
             "| variant | CTR before drift | CTR after drift | CTR after, settled | x frozen (settled) | "
             "expected CTR after, settled | regret after, settled | events to 90% of pre-drift CTR | overall CTR |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    frozen = results.get("frozen", {}).get("summary", {}).get("ctr_post_drift_settled")
    for name, r in results.items():
        s = r["summary"]
        ratio = f"{s['ctr_post_drift_settled'] / frozen:.2f}" if frozen else "-"
        rec = f"{s['events_to_90pct_of_pre_drift_ctr']:,}" if s["events_to_90pct_of_pre_drift_ctr"] else "not within the run"
        lines.append(f"| {name} | {s['ctr_pre_drift']:.4f} | {s['ctr_post_drift']:.4f} | {s['ctr_post_drift_settled']:.4f} "
                     f"| {ratio} | {s['expected_ctr_post_drift_settled']:.4f} | {s['regret_post_drift_settled']:.4f} "
                     f"| {rec} | {s['ctr_overall']:.4f} |")
    return "\n".join(lines) + "\n"


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval(values: list[float]) -> dict:
    """Mean and the 95% t-interval of the mean (Student's t quantile for n - 1 degrees of freedom).

    >>> interval([1.0, 2.0, 3.0])["half_width"]
    2.484
    """
    xs = [v for v in values if v is not None and np.isfinite(v)]
    n = len(xs)
    mean = float(np.mean(xs)) if xs else float("nan")
    half = T975.get(n - 1, 1.96) * float(np.std(xs, ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    return {"mean": round(mean, 5), "half_width": round(half, 5), "low": round(mean - half, 5),
            "high": round(mean + half, 5), "n": n, "values": [round(v, 5) for v in xs]}


SEED_METRICS = ("ctr_pre_drift", "ctr_post_drift_settled", "ctr_overall", "regret_post_drift_settled")
DIFFERENCES = (("full", "frozen"), ("full", "dbgd-off"), ("full", "retrains-off"))


def across_seeds(per_seed: list[dict[str, dict]]) -> dict:
    """Each variant's figures over the seeds, and the paired differences full - frozen, full - DBGD-off, ..."""
    variants = list(per_seed[0])
    table = {v: {m: interval([s[v][m] for s in per_seed]) for m in SEED_METRICS} for v in variants}
    for v in variants:
        recovered = [s[v]["events_to_90pct_of_pre_drift_ctr"] for s in per_seed]
        table[v]["events_to_90pct_of_pre_drift_ctr"] = interval([r for r in recovered if r is not None])
        table[v]["events_to_90pct_of_pre_drift_ctr"]["recovered_in"] = sum(r is not None for r in recovered)
    diffs = {f"{a} - {b}": {m: interval([s[a][m] - s[b][m] for s in per_seed])
                            for m in ("ctr_post_drift_settled", "ctr_overall")}
             for a, b in DIFFERENCES if a in variants and b in variants}
    return {"variants": table, "differences": diffs}


def seeds_markdown(agg: dict, cfg: StudyConfig, seeds: list[int], command: str) -> str:
    def cell(x: dict, fmt: str = ".4f") -> str:
        if not x["n"]:
            return "-"
        return f"{x['mean']:{fmt}} ± {x['half_width']:{fmt}}" if x["n"] > 1 else f"{x['mean']:{fmt}}"

    lines = [f"Online-learning study over {len(seeds)} seeds ({seeds}; `{command}`): {cfg.items} items, {cfg.users} "
             f"users, {cfg.rate:.0f} clicks per simulated second for {cfg.duration:.0f} s, drift at "
             f"{cfg.drift_time:.0f} s; CTR = clicks per slate of {cfg.system.slate_size}; mean ± half-width of the 95% "
             "t-interval over seeds; 'settled' = the second half after the drift.", "",
             "| variant | CTR before drift | CTR after drift, settled | overall CTR | regret after, settled | "
             "events to 90% of pre-drift CTR (seeds that got there) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, t in agg["variants"].items():
        rec = t["events_to_90pct_of_pre_drift_ctr"]
        lines.append(f"| {name} | {cell(t['ctr_pre_drift'])} | {cell(t['ctr_post_drift_settled'])} | "
                     f"{cell(t['ctr_overall'])} | {cell(t['regret_post_drift_settled'])} | "
                     f"{cell(rec, ',.0f')} ({rec['recovered_in']} of {len(seeds)}) |")
    lines += ["", "| paired difference | CTR after drift, settled | overall CTR | 95% interval above 0 |",
              "| --- | --- | --- | --- |"]
    for name, d in agg["differences"].items():
        above = d["ctr_post_drift_settled"]["low"] > 0
        lines.append(f"| {name} | {cell(d['ctr_post_drift_settled'])} | {cell(d['ctr_overall'])} | "
                     f"{'yes' if above else 'no'} (settled) |")
    return "\n".join(lines) + "\n"


def plot_seeds(per_seed_windows: list[dict[str, list[dict]]], cfg: StudyConfig, path: Path) -> None:
    """Windowed CTR of every variant: the mean over seeds, with the seeds' 95% interval shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name in per_seed_windows[0]:
        runs = [[w["ctr"] for w in s[name]] for s in per_seed_windows]
        n = min(len(r) for r in runs)
        arr = np.array([r[:n] for r in runs])
        x = [w["end_s"] for w in per_seed_windows[0][name][:n]]
        mean = arr.mean(0)
        half = T975.get(len(runs) - 1, 1.96) * arr.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else 0 * mean
        line, = ax.plot(x, mean, label=name, linewidth=2.4 if name == "full" else 1.3)
        ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.15)
    ax.axvline(cfg.drift_time, color="red", linewidth=1)
    ax.set(xlabel="simulated seconds", ylabel=f"CTR per slate ({cfg.window_s:.0f} s windows)",
           title=f"online-learning study, mean of {len(per_seed_windows)} seeds with 95% intervals; drift at "
                 f"{cfg.drift_time:.0f} s (red)")
    ax.grid(alpha=0.3)
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_seed(cfg: StudyConfig, variants: list[str], client: redis.Redis, run_id: str, bar) -> dict[str, dict]:
    """Every variant on one seed's world; their windows and summaries."""
    model_path = first_model(cfg)
    results: dict[str, dict] = {}
    total = int(cfg.duration * cfg.rate)
    for name in variants:
        task = bar.add_task(f"seed {cfg.seed} {name:>12}", total=total, rate="")
        policy = make_policy(name, cfg, client, model_path, f"{run_id}-{cfg.seed}")
        started = time.perf_counter()

        def advance(n: int, task=task, started=started) -> None:
            done = bar.tasks[task].completed + n
            bar.update(task, advance=n, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f} clicks/s")

        try:
            windows = simulate(cfg, policy, advance)
        finally:
            policy.close()
        seconds = time.perf_counter() - started
        results[name] = {"windows": windows, "summary": summarise(name, windows, cfg, policy.events, seconds)}
        s = results[name]["summary"]
        log.info("seed %d %s: CTR %.4f before the drift, %.4f after (settled), %s events to 90%%; %.0f s", cfg.seed,
                 name, s["ctr_pre_drift"], s["ctr_post_drift_settled"], s["events_to_90pct_of_pre_drift_ctr"], seconds)
    return results


def merge(paths: list[Path], out: Path) -> int:
    """One table and plot from several runs' JSON: seeds split across processes, or variants run separately on
    the same seeds (a seed's variants from every run are joined, so the paired differences pair them)."""
    runs = [json.loads(p.read_text()) for p in paths]
    cfg_dict = runs[0]["config"]
    system = SystemOptions(**cfg_dict.pop("system"))
    cfg = StudyConfig(**{**cfg_dict, "system": system})
    summaries: dict[int, dict] = {}
    windows: dict[int, dict] = {}
    for r in runs:
        for seed, summary, window in zip(r["seeds"], r["per_seed"], r["per_seed_windows"]):
            clash = set(summaries.get(seed, {})) & set(summary)
            if clash:
                raise SystemExit(f"--merge: seed {seed} has variant(s) {sorted(clash)} in more than one run")
            summaries.setdefault(seed, {}).update(summary)
            windows.setdefault(seed, {}).update(window)
    seeds = sorted(summaries)
    per_seed = [summaries[seed] for seed in seeds]
    agg = across_seeds(per_seed)
    command = " + ".join(r["command"] for r in runs)
    out.mkdir(parents=True, exist_ok=True)
    plot_seeds([windows[seed] for seed in seeds], cfg, out / "online_study_seeds.png")
    table = seeds_markdown(agg, cfg, seeds, command)
    (out / "online_study.md").write_text(table)
    print(json.dumps({"benchmark": "online_study", "command": command, "seeds": seeds, "across_seeds": agg,
                      "plot": str(out / "online_study_seeds.png"), "table": str(out / "online_study.md")}, indent=2))
    sys.stderr.write(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=StudyConfig.duration, help="simulated seconds")
    p.add_argument("--rate", type=float, default=100.0, help="clicks per simulated second")
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="the first seed")
    p.add_argument("--seeds", type=int, default=5, help="run every variant on this many seeds (seed, seed + 1, ...) "
                   "and report means with 95%% intervals")
    p.add_argument("--organic-sessions", type=int, default=StudyConfig.organic_sessions,
                   help="sessions in the organic log the first model learns from")
    p.add_argument("--drift-at", type=float, default=None, help="simulated seconds (default: half way)")
    p.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override a field of the system's options (bench/study_policies.py: SystemOptions)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                   help="no run: aggregate the per-seed results of earlier runs' JSON outputs (e.g. seeds split "
                        "across two processes) into one table")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the Redis it started
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("models").setLevel(logging.WARNING)
    logging.getLogger("stream").setLevel(logging.WARNING)
    system = SystemOptions()
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in SystemOptions.__dataclass_fields__:
            p.error(f"--set {item}: SystemOptions has no field {name!r}")
        setattr(system, name, type(getattr(system, name))(value))
    cfg = StudyConfig(items=args.items, users=args.users, rate=args.rate, duration=args.duration, seed=args.seed,
                      organic_sessions=args.organic_sessions, drift_at=args.drift_at, system=system)
    command = " ".join(["python -m bench.online_study", *(argv if argv is not None else sys.argv[1:])])
    state = Path(tempfile.mkdtemp(prefix="bench-study-"))
    rds = local.start_redis(state)
    client = redis.Redis.from_url(rds.address)
    run_id = str(int(time.time()))
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed: list[dict[str, dict]] = []
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=Console(stderr=True)) as bar:
            for seed in seeds:
                per_seed.append(run_seed(replace(cfg, seed=seed), args.variants, client, run_id, bar))
    finally:
        local.stop_pid(rds.pid)
    args.out.mkdir(parents=True, exist_ok=True)
    results = per_seed[0]
    plot(results, replace(cfg, seed=seeds[0]), args.out / "online_study.png")
    plot_seeds([{n: r["windows"] for n, r in s.items()} for s in per_seed], cfg, args.out / "online_study_seeds.png")
    agg = across_seeds([{n: r["summary"] for n, r in s.items()} for s in per_seed])
    table = seeds_markdown(agg, cfg, seeds, command) + "\n" + to_markdown(results, replace(cfg, seed=seeds[0]),
                                                                          command + f" (seed {seeds[0]} alone)")
    (args.out / "online_study.md").write_text(table)
    summaries = {name: r["summary"] for name, r in results.items()}
    diffs = agg["differences"]
    aims = {}
    if "full - frozen" in diffs:
        aims["full_minus_frozen_settled_interval_above_0"] = diffs["full - frozen"]["ctr_post_drift_settled"]["low"] > 0
    if "full - dbgd-off" in diffs:
        aims["full_minus_dbgd_off_settled_interval_above_0"] = \
            diffs["full - dbgd-off"]["ctr_post_drift_settled"]["low"] > 0
    print(json.dumps({"benchmark": "online_study", "command": command, "config": asdict(cfg), "seeds": seeds,
                      "aims": aims, "across_seeds": agg, "variants": summaries,
                      "per_seed": [{n: r["summary"] for n, r in s.items()} for s in per_seed],
                      "per_seed_windows": [{n: r["windows"] for n, r in s.items()} for s in per_seed],
                      "windows": {name: [[w["end_s"], round(w["ctr"], 4), round(w["expected_ctr"], 4),
                                          round(w["oracle_ctr"], 4)] for w in r["windows"]]
                                  for name, r in results.items()}, "plot": str(args.out / "online_study_seeds.png"),
                      "table": str(args.out / "online_study.md")}, indent=2, default=str))
    sys.stderr.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
