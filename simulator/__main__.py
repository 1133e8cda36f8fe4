"""``python -m simulator``: traffic for streamrec.

    python -m simulator run --users 2000 --items 5000 --rate 200 --duration 120 --seed 0 --scenario drift
    python -m simulator replay --dataset yoochoose-100k --rate 1000 [--split test] [--limit N]
    python -m simulator calibrate [--requests 50000] [--slate-size 3]
    python -m simulator demo --clicks 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from simulator.scenario import PRESETS
from stream.logs import setup_logging
from stream.settings import get_settings

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--categories", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=120.0, help="seconds")
    p.add_argument("--scenario", default="none", choices=PRESETS,
                   help="drift: the season turns half way; trend: a category comes into fashion (simulator/scenario.py)")
    p.add_argument("--drift-at", type=float, default=None, help="seconds; overrides the preset's drift time")


def _build(args):
    from simulator.clickmodel import ClickModel
    from simulator.population import Population
    from simulator.scenario import Scenario
    from simulator.world import World, WorldConfig

    scenario = Scenario.preset(args.scenario, args.duration, args.seed)
    if args.drift_at is not None:
        scenario.drift_at = args.drift_at
    world = World(WorldConfig(n_items=args.items, n_categories=args.categories, n_users=args.users,
                              launched_later=0.1 if scenario.launches else 0.0, duration_s=args.duration,
                              seed=args.seed))
    clicks = ClickModel(world, scenario)
    return world, clicks, Population(world, clicks, seed=args.seed)


def _print_summary(title: str, summary: dict) -> None:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="streamrec traffic")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="closed-loop click simulation on Kafka")
    _world_args(run)
    run.add_argument("--rate", type=float, default=200.0, help="clicks per second")
    run.add_argument("--slate-timeout", type=float, default=2.0)
    run.add_argument("--window", type=float, default=10.0, help="ground-truth window, seconds")
    run.add_argument("--out", type=Path, help="write the summary and windows as JSON here")
    rep = sub.add_parser("replay", help="publish a real dataset into clicks")
    rep.add_argument("--dataset", default="yoochoose-100k", choices=["yoochoose-100k", "diginetica"])
    rep.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    rep.add_argument("--split", default="all", choices=["all", "train", "test"])
    rep.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    rep.add_argument("--limit", type=int, default=None)
    rep.add_argument("--linger-ms", type=float, default=5.0,
                     help="the producer's linger.ms: batching delay added to every click (0 for the lowest latency)")
    cal = sub.add_parser("calibrate", help="CTR of random and oracle slates under the click model")
    _world_args(cal)
    cal.add_argument("--requests", type=int, default=50_000)
    cal.add_argument("--slate-size", type=int, default=3)
    org = sub.add_parser("log", help="an offline log of organic sessions (GRU4Rec TSV), to train a first model")
    _world_args(org)
    org.add_argument("--sessions", type=int, default=20_000)
    org.add_argument("--out", type=Path, required=True)
    demo = sub.add_parser("demo", help="send a few clicks and print the slates that come back")
    demo.add_argument("--clicks", type=int, default=20)
    demo.add_argument("--rate", type=float, default=20.0, help="clicks per second")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--sessions-from", type=Path, help="replay the click paths of this GRU4Rec TSV log's last "
                      "sessions instead of random clicks")
    demo.add_argument("--sessions", type=int, default=8, help="how many sessions of --sessions-from")
    demo.add_argument("--json", type=Path, help="also write the answered clicks and slates here")
    args = parser.parse_args(argv)
    setup_logging("simulator")
    settings = get_settings()

    if args.command == "demo":
        from simulator import demo as demo_run

        paths = demo_run.log_paths(args.sessions_from, args.sessions) if args.sessions_from \
            else demo_run.random_paths(args.clicks, args.seed)
        answered = demo_run.run_demo(settings, paths, args.rate)
        sent = sum(map(len, paths))
        demo_run.print_slates(answered, sent)
        if args.json:
            demo_run.save(answered, args.json)
        return 0 if len(answered) == sent else 1
    if args.command == "replay":
        from simulator.replay import replay, replay_events

        events = replay_events(args.dataset, args.data_dir, args.split, args.limit)
        summary = replay(settings, events, args.rate, has_time=args.dataset != "diginetica", linger_ms=args.linger_ms)
        _print_summary(f"replay of {args.dataset}", summary)
        print(json.dumps(summary))
        return 0 if summary["failed"] == 0 else 1
    world, clicks, population = _build(args)
    if args.command == "log":
        from simulator.organic import organic_log

        log_df = organic_log(population, args.sessions)
        log_df.to_csv(args.out, sep="\t", index=False)
        print(json.dumps({"sessions": args.sessions, "clicks": len(log_df), "items": int(log_df.ItemId.nunique()),
                          "out": str(args.out)}))
        return 0
    if args.command == "calibrate":
        from simulator.population import calibrate

        summary = calibrate(world, clicks, args.requests, args.slate_size, args.seed)
        _print_summary("click model calibration (CTR = clicks per shown item)", summary)
        print(json.dumps(summary))
        return 0
    from simulator.loop import ClosedLoop

    loop = ClosedLoop(settings, population, clicks, args.rate, args.duration, args.slate_timeout,
                      window_s=args.window)
    summary = loop.run()
    _print_summary("closed-loop run", summary)
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "windows": loop.windows}, indent=2))
    print(json.dumps(summary))
    return 0 if summary["failed_deliveries"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
