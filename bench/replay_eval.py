"""Prequential replay evaluation: a real log streamed through Kafka into the running workers, every slate scored.

    python -m bench.replay_eval --dataset yoochoose-100k            # or --train A.tsv --test B.tsv (GRU4Rec format)
    python -m bench.replay_eval --dataset diginetica --gru-epochs 1 --variants static full vsknn popular

The log's first part (``--train``) trains the first GRU4Rec offline; the rest (``--test``) is replayed into
``clicks`` through a real broker, and each system variant's worker(s) answer it as they would live traffic, one
slate of ``--k`` items per click. Every slate published after a session's click *t* is scored against that
session's click *t+1* (``models/prequential.py``: HitRate@k, MRR@k; next items never seen before counted apart).
Variants, on the same replay:

- ``static``: the first model as it is: no exploration, no retrains, no minor updates;
- ``full``: the system's defaults, with major retrains from the log on the controller's click schedule (after each
  third of the stream, the replay waits for the controller's decision: the hours a live log has between retrains
  are compressed here), and DBGD credited with organic clicks (``STREAMREC_DBGD_CREDIT_ORGANIC``: nobody clicks the
  slates of a replay, so a next click that lands on an item of the session's last slate credits that slot's team);
- ``popular``: the recently popular items (the system's own ``ItemStats`` and fallback), learned click by click;
- ``vsknn``: V-SKNN (``models/vsknn.py``), learned click by click, its parameters as flags.

The two baselines run in this process over the same clicks in the same order (test, then learn). Output: a table
on stderr, ``replay_eval.json`` and ``replay_eval.png`` (HitRate@k over the log, in windows) in ``--out``, and the
JSON on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import matplotlib
import pandas as pd
import redis

from bench.common import DATA, ROOT, LiveReader
from bench.stream_throughput import _start_group
from infra import local
from models.__main__ import publish_first_version
from models.data import load_dataset, load_tsv
from models.gru4rec import GRU4Rec, GRU4RecParams
from models.itemstats import ItemStats
from models.prequential import Prequential, Target, log_order, ordered, targets
from models.recommend import popular_items
from models.registry import ModelRegistry
from models.vsknn import SCORE_WEIGHTINGS, VSKNN, WEIGHTINGS
from simulator.replay import replay
from stream.keys import control_state
from stream.settings import Settings
from stream.topics import MODEL_UPDATES, RECOMMENDATIONS, ensure_topics

matplotlib.use("Agg")
log = logging.getLogger("bench.replay_eval")
SYSTEM = {
    "static": {"STREAMREC_EXPLORE": "false", "STREAMREC_RETRAIN_EVERY_CLICKS": "0", "STREAMREC_DRIFT_RETRAIN": "false",
               "STREAMREC_GUARDRAIL": "false"},
    "full": {"STREAMREC_GUARDRAIL": "false",  # no slate is ever clicked in a replay: no CTR to guard
             "STREAMREC_DBGD_CREDIT_ORGANIC": "true",  # DBGD learns from the next click landing in a team's slot
             "STREAMREC_RETRAIN_WINDOW_S": str(30 * 86400), "STREAMREC_RETRAIN_CHECK_S": "1"},
}
VARIANTS = ["static", "full", "popular", "vsknn"]


def first_model(train: pd.DataFrame, args) -> GRU4Rec:
    """GRU4Rec trained on the training part (cached by the data and the parameters)."""
    params = GRU4RecParams(layers=[args.gru_layers], n_epochs=args.gru_epochs, loss=args.gru_loss,
                           learning_rate=args.gru_learning_rate, n_sample=args.gru_n_sample,
                           batch_size=args.gru_batch_size, seed=args.seed)
    key = hashlib.sha256(pd.util.hash_pandas_object(train, index=False).values.tobytes()
                         + repr(params).encode()).hexdigest()[:16]
    path = local.cache_dir() / f"replay-eval-gru-{key}.pt"
    if path.exists():
        return GRU4Rec.load(path, device="cpu")
    started = time.monotonic()
    gru = GRU4Rec(params, device="cpu").fit(train)
    log.info("first model: %d items, %.0f s", gru.n_items, time.monotonic() - started)
    gru.save(path)
    return gru


def stream_events(stream: pd.DataFrame, order: str) -> pd.DataFrame:
    """The clicks to replay, in replay order, each with the event id its slate will carry back (``e<index>``)."""
    events = ordered(stream, order)
    return events.assign(EventId=[f"e{i}" for i in range(len(events))])


def _decisions(updates: LiveReader) -> list[dict]:
    """The controller's decisions on major versions (promoted or rejected) read so far from ``model-updates``."""
    records = [json.loads(value) for _, value in list(updates.got)]
    return [r for r in records if r.get("kind") == "major" and r.get("action") in ("promoted", "rejected")]


def _wait_for_slates(slates: LiveReader, n: int, idle_timeout: float, since: float) -> float:
    """Wait until ``n`` slates are in or none came for ``idle_timeout`` s (counted from ``since`` at the earliest);
    return when the last one came (unix time)."""
    def last() -> float:
        return max(slates.got[-1][0] if slates.got else since, since)

    while len(slates.got) < n and time.time() - last() < idle_timeout:
        time.sleep(0.05)
    return last()


def _by_event(records: list[tuple[float, bytes]], k: int) -> tuple[dict[str, list[str]], int]:
    """Each event's slate (its first ``k`` items) and how many slates repeated an event."""
    slates: dict[str, list[str]] = {}
    for _, value in records:
        slate = json.loads(value)
        slates.setdefault(slate.get("event_id"), slate["items"][:k])
    return slates, len(records) - len(slates)


def run_system(variant: str, model: GRU4Rec, events: pd.DataFrame, kafka: str, rds: str, state: Path, args) -> dict:
    """Replay ``events`` into fresh topics answered by ``args.workers`` workers with the variant's settings."""
    prefix = f"replay-{variant}-{uuid.uuid4().hex[:6]}-"
    registry = ModelRegistry(redis.Redis.from_url(rds), namespace=prefix)
    settings = Settings(kafka=kafka, topic_prefix=prefix)
    ensure_topics(settings)
    overrides = dict(SYSTEM[variant]) | dict(kv.split("=", 1) for kv in args.system_env)
    publish_first_version(registry, model, float(overrides.get("STREAMREC_DBGD_ALPHA", settings.dbgd_alpha)),
                          args.seed, explorers=int(overrides.get("STREAMREC_DBGD_EXPLORERS", settings.dbgd_explorers)))
    if variant == "full":
        overrides["STREAMREC_RETRAIN_EVERY_CLICKS"] = str(max(-(-len(events) // 3), 500))  # two retrains, waited for
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | {
        "STREAMREC_KAFKA": kafka, "STREAMREC_REDIS": rds, "STREAMREC_SLATE_SIZE": str(args.k),
        "STREAMREC_WORKER_WEB_PORT": "0", "STREAMREC_SEED": str(args.seed), "PYTHONPATH": str(ROOT), **overrides}
    procs, _ = _start_group(["stream", "worker"], variant, prefix, env, state, kafka, args.workers)
    slates = LiveReader(kafka, settings.topic(RECOMMENDATIONS))
    updates = LiveReader(kafka, settings.topic(MODEL_UPDATES))  # the controller's decisions
    every = int(overrides.get("STREAMREC_RETRAIN_EVERY_CLICKS", "0")) or len(events)
    seconds, failed = 0.0, 0
    try:
        if every < len(events):  # the click schedule counts from the controller's first tick: let it tick first
            _wait_for_key(registry.r, control_state(prefix), args.idle_timeout)
        for start in range(0, len(events), every):  # with retrains: a chunk, then the controller's decision
            chunk = events.iloc[start: start + every]
            started = time.time()
            failed += replay(settings, chunk, args.rate, has_time=log_order(events) == "time", progress=False)["failed"]
            seconds += _wait_for_slates(slates, start + len(chunk), args.idle_timeout, started) - started
            if start + every < len(events):  # the log's time between retrains, which a replay compresses
                _wait_for_decision(updates, start // every + 1, args.retrain_timeout)
    finally:
        for proc in procs:
            local.stop_pid(proc.pid)
        _stop_retrain_jobs(prefix)
        by_event, repeats = _by_event(slates.stop(), args.k)
        decisions = _decisions(updates)
        updates.stop()
    return {"slates": by_event, "repeats": repeats, "seconds": seconds, "failed_sends": failed,
            "retrain_decisions": [(d["version"], d["action"], d.get("reason")) for d in decisions],
            "retrains_promoted": len(registry.majors()) - 1,
            "versions_published": len(registry.versions())}


def _stop_retrain_jobs(prefix: str) -> None:
    """A retrain job outlives the worker that started it (by design): stop this run's, found by their environment."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"retrain-job" in (proc / "cmdline").read_bytes() and \
                    f"STREAMREC_TOPIC_PREFIX={prefix}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                local.stop_pid(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue


def _wait_for_key(client: redis.Redis, key: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not client.exists(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} never appeared: the controller did not tick")
        time.sleep(0.2)


def _wait_for_decision(updates: LiveReader, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(decisions := _decisions(updates)) < n:
        if time.monotonic() > deadline:
            log.warning("no decision on retrain %d after %.0f s; streaming on", n, timeout)
            return
        time.sleep(0.5)
    log.info("retrain %d: %s (%s)", n, decisions[-1]["action"], decisions[-1].get("reason"))


def run_baseline(variant: str, train: pd.DataFrame, events: pd.DataFrame, args) -> dict:
    """Popular or V-SKNN over the training part, then test-then-learn over ``events`` in order."""
    order = log_order(events)
    warm = ordered(train, order)
    knn = VSKNN(args.knn_k, args.knn_sample_size, args.knn_weighting, args.knn_weighting_score)
    stats = ItemStats(args.popular_half_life)
    history: dict[str, list[str]] = {}
    clock = 0.0

    def learn(session: str, item: str, t: float) -> None:
        if variant == "vsknn":
            knn.learn(session, item, t)
            history.setdefault(session, []).append(item)
        else:
            stats.click(item, t)

    for session, item, t in zip(warm.SessionId, warm.ItemId, warm.Time):
        clock = float(t) if order == "time" else clock + 1.0  # an order key: one click per second
        learn(f"train-{session}", item, clock)
    slates, started = {}, time.monotonic()
    for session, item, t, event in zip(events.SessionId, events.ItemId, events.Time, events.EventId):
        clock = float(t) if order == "time" else clock + 1.0
        learn(session, item, clock)
        if variant == "vsknn":
            slates[event] = [i for i, _ in knn.recommend(history[session], args.k, exclude_session=session)]
        else:
            slates[event] = [i for i, _ in popular_items(stats, clock, args.k)]
    return {"slates": slates, "repeats": 0, "seconds": time.monotonic() - started, "failed_sends": 0}


def score(run: dict, goals: list[Target], events: pd.DataFrame, k: int, window: int) -> dict:
    scorer = Prequential(k)
    event_of = events.EventId.tolist()
    for target in goals:
        scorer.add(target.index, target.next_item, target.unseen, run["slates"].get(event_of[target.index]))
    out = scorer.summary() | {"clicks": len(events), "slates": len(run["slates"]), "repeated_slates": run["repeats"],
                              "seconds": round(run["seconds"], 1),
                              "clicks_per_s": round(len(events) / run["seconds"], 1) if run["seconds"] > 0 else None}
    out["windows"] = scorer.windows(window)
    return out


def plot(results: dict, k: int, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, r in results.items():
        if r["windows"]:
            ax.plot([i for i, _ in r["windows"]], [h for _, h in r["windows"]], label=name, marker=".")
    ax.set_xlabel("click of the streamed log")
    ax.set_ylabel(f"HitRate@{k} (window)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict, k: int) -> str:
    rows = [f"| variant | scored clicks | HitRate@{k} | MRR@{k} | unseen next items | missing slates | clicks/s |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        rate = f"{r['clicks_per_s']:,.0f}" if r["clicks_per_s"] else "-"
        rows.append(f"| {name} | {r['scored']:,} | {r['hit_rate']:.4f} | {r['mrr']:.4f} | {r['unseen']:,} | "
                    f"{r['missing']:,} | {rate} |")
    return "\n".join(rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.replay_eval", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="yoochoose-100k", choices=["yoochoose-100k", "diginetica"])
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--train", type=Path, help="GRU4Rec TSV: the part the first model is trained on")
    p.add_argument("--test", type=Path, help="GRU4Rec TSV: the part that streams")
    p.add_argument("--limit", type=int, default=None, help="stream only the first N clicks of the test part")
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--k", type=int, default=20, help="slate size, and the cut-off of HitRate and MRR")
    p.add_argument("--rate", type=float, default=0.0, help="clicks/s sent (0: as fast as the producer goes)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--window", type=int, default=1000, help="scored clicks per point of the plot")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="give up waiting for slates after this long "
                   "without one")
    p.add_argument("--retrain-timeout", type=float, default=600.0, help="how long the full variant waits for the "
                   "controller's decision on each retrain before streaming on")
    p.add_argument("--system-env", nargs="*", default=[], metavar="STREAMREC_X=V",
                   help="settings for the system variants' workers, e.g. STREAMREC_EXCLUDE_SEEN=false")
    p.add_argument("--gru-layers", type=int, default=100)
    p.add_argument("--gru-epochs", type=int, default=3)
    p.add_argument("--gru-loss", default="cross-entropy")
    p.add_argument("--gru-learning-rate", type=float, default=0.05)
    p.add_argument("--gru-n-sample", type=int, default=2048)
    p.add_argument("--gru-batch-size", type=int, default=64)
    p.add_argument("--knn-k", type=int, default=100, help="V-SKNN: neighbours")
    p.add_argument("--knn-sample-size", type=int, default=1000, help="V-SKNN: most recent sessions sampled")
    p.add_argument("--knn-weighting", default="div", choices=sorted(WEIGHTINGS))
    p.add_argument("--knn-weighting-score", default="div", choices=sorted(SCORE_WEIGHTINGS))
    p.add_argument("--popular-half-life", type=float, default=3600.0, help="seconds (or clicks, for an order key)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replay-eval")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out = args.out.resolve()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the finally blocks stop what was started
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.train or args.test:
        if not (args.train and args.test):
            raise SystemExit("--train and --test go together")
        train, test, source = load_tsv(args.train), load_tsv(args.test), f"{args.train} -> {args.test}"
    else:
        (train, test), source = load_dataset(args.dataset, args.data_dir), args.dataset
    order = log_order(test)
    events = stream_events(test, order).head(args.limit) if args.limit else stream_events(test, order)
    goals = targets(events, known=set(train.ItemId.astype(str)), order=order)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    state = args.out / "state"
    state.mkdir(exist_ok=True)
    services: list[local.Service] = []
    try:
        if any(v in SYSTEM for v in args.variants):
            model = first_model(train, args)
            kafka, rds = os.environ.get("STREAMREC_KAFKA"), os.environ.get("STREAMREC_REDIS")
            if not kafka:  # one at a time, so that what started is stopped if the next one fails
                services.append(local.start_kafka(state))
                services.append(local.start_redis(state))
                kafka, rds = services[0].address, services[1].address
        for variant in args.variants:
            log.info("%s: %d clicks, %d targets", variant, len(events), len(goals))
            run = run_system(variant, model, events, kafka, rds, state, args) if variant in SYSTEM \
                else run_baseline(variant, train, events, args)
            results[variant] = score(run, goals, events, args.k, args.window) | {
                k: v for k, v in run.items() if k not in ("slates", "repeats", "seconds")}
    finally:
        for service in reversed(services):
            local.stop_pid(service.pid)
    summary = {"source": source, "order": order, "train_clicks": len(train), "stream_clicks": len(events),
               "targets": len(goals), "k": args.k, "params": {k: str(v) for k, v in vars(args).items()},
               "results": results}
    (args.out / "replay_eval.json").write_text(json.dumps(summary, indent=2))
    plot(results, args.k, args.out / "replay_eval.png")
    print(table(results, args.k), file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if k != "params"} | {
        "results": {n: {k: v for k, v in r.items() if k != "windows"} for n, r in results.items()}}))
    return 0 if all(r["missing"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
