"""``python -m models``: train and evaluate GRU4Rec offline.

    python -m models train --dataset yoochoose-100k --out gru.pt [--loss cross-entropy --layers 100 ...]
    python -m models evaluate --model gru.pt --dataset yoochoose-100k [--mode conservative]
    python -m models publish --model gru.pt [--redis URL] [--namespace PREFIX]   first version, promoted
    python -m models retrain --clicks w.jsonl --slates s.jsonl   a candidate from a log window, unpromoted

``--data-dir`` defaults to ``../shared/data``; ``--train``/``--test`` take GRU4Rec TSV files instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.data import load_dataset, load_tsv
from models.evaluate import NaNModelError, evaluate
from models.gru4rec import GRU4Rec, GRU4RecParams

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _load(args) -> tuple:
    if args.train or args.test:
        return (load_tsv(args.train) if args.train else None), (load_tsv(args.test) if args.test else None)
    return load_dataset(args.dataset, args.data_dir)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="yoochoose-100k", choices=["yoochoose-100k", "diginetica"])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--train", type=Path, help="GRU4Rec TSV training file (instead of --dataset)")
    p.add_argument("--test", type=Path, help="GRU4Rec TSV test file (instead of --dataset)")


def _add_param_args(p: argparse.ArgumentParser) -> None:
    defaults = GRU4RecParams()
    for f in fields(GRU4RecParams):
        value = getattr(defaults, f.name)
        if f.name == "layers":
            p.add_argument("--layers", type=lambda s: [int(x) for x in s.split("/")], default=value,
                           help="hidden sizes, e.g. 100 or 100/100")
        elif isinstance(value, bool):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"),
                           default=value)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value)


def params_from_args(args) -> GRU4RecParams:
    return GRU4RecParams(**{f.name: getattr(args, f.name) for f in fields(GRU4RecParams)})


def train_with_progress(gru: GRU4Rec, train, console: Console) -> GRU4Rec:
    """Fit with a progress bar per epoch showing loss and events/s."""
    with Progress(TextColumn("[bold]epochs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as bar:
        task = bar.add_task("train", total=gru.params.n_epochs, info="")

        def report(epoch: int, stats: dict) -> None:
            bar.update(task, advance=1, info=f"loss {stats['loss']:.4f} · {stats['events_per_s']:,.0f} events/s "
                                              f"· {stats['seconds']:.1f} s/epoch")

        return gru.fit(train, progress=report)


PUBLISH_ALPHA = 0.3  # the settings' dbgd_alpha default (models cannot import stream; a unit test keeps them equal)


def publish_first_version(registry, gru: GRU4Rec, alpha: float = PUBLISH_ALPHA, seed: int = 0, promote: bool = True,
                          explorers: int = 1) -> str:
    """A major version from a trained GRU4Rec and a fresh ranker (W) with its first explorers (W + dW_j)."""
    from models.mgd import MultileaveGD
    from models.ranker import DuelingQNetwork

    w = DuelingQNetwork(gru.model.layers[-1], seed=seed).get_weights()
    explorer = MultileaveGD(w, explorers, alpha=alpha, seed=seed).explorer_weights
    version = registry.publish_major(gru, w, explorer, summary={"source": "publish"})
    if promote:  # an operator's promotion: based on whatever is current as it is read (compare-and-set still)
        registry.promote(version, based_on=registry.current_version())
    return version


def publish(args, console: Console) -> int:
    import os

    import redis

    from models.registry import ModelRegistry

    url = args.redis or os.environ.get("STREAMREC_REDIS", "redis://127.0.0.1:6379/0")
    namespace = args.namespace if args.namespace is not None else os.environ.get("STREAMREC_TOPIC_PREFIX", "")
    registry = ModelRegistry(redis.Redis.from_url(url), namespace=namespace)
    version = publish_first_version(registry, GRU4Rec.load(args.model, device="cpu"), args.alpha, args.seed,
                                    explorers=args.explorers)
    console.print(f"published and promoted {version} in {url} (namespace {namespace!r})")
    return 0


def retrain_cmd(args, console: Console) -> int:
    """Train a candidate from a log window given as files (JSON lines of click and slate records) and publish
    it unpromoted.  The stream's controller runs this in a job process with the window it read from Kafka;
    promoting is the controller's decision (or an operator's, with ``publish``-like care)."""
    import os

    import redis

    from models.registry import ModelRegistry
    from models.retrain import RetrainConfig, train_candidate

    url = args.redis or os.environ.get("STREAMREC_REDIS", "redis://127.0.0.1:6379/0")
    namespace = args.namespace if args.namespace is not None else os.environ.get("STREAMREC_TOPIC_PREFIX", "")
    registry = ModelRegistry(redis.Redis.from_url(url), namespace=namespace)
    clicks = [json.loads(line) for line in args.clicks.read_text().splitlines() if line.strip()]
    slates = [json.loads(line) for line in args.slates.read_text().splitlines() if line.strip()] if args.slates else []
    config = RetrainConfig(epochs=args.epochs, learning_rate=args.learning_rate, holdout=args.holdout, seed=args.seed)
    with Progress(TextColumn("[bold]retrain epochs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as bar:
        task = bar.add_task("retrain", total=args.epochs, info="")

        def report(epoch: int, stats: dict) -> None:
            bar.update(task, advance=1, info=f"loss {stats['loss']:.4f} · {stats['events_per_s']:,.0f} events/s")

        candidate = train_candidate(registry, clicks, slates, config, trigger="manual", progress=report,
                                    based_on=args.based_on)
    print(json.dumps({"version": candidate.version, "reason": candidate.reason, "summary": candidate.summary},
                     indent=2, default=str))
    return 0 if candidate.version is not None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description="GRU4Rec offline training and evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train GRU4Rec and save it")
    _add_data_args(train)
    _add_param_args(train)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    train.add_argument("--evaluate", action="store_true", help="evaluate on the test split afterwards")
    ev = sub.add_parser("evaluate", help="next-click Recall@K / MRR@K of a saved model")
    _add_data_args(ev)
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--mode", default="conservative", choices=["conservative", "standard", "median"])
    ev.add_argument("--device", default=None)
    pub = sub.add_parser("publish", help="publish a trained GRU4Rec with a fresh ranker as a new major version")
    pub.add_argument("--model", type=Path, required=True)
    pub.add_argument("--redis", default=None, help="Redis URL (default: STREAMREC_REDIS)")
    pub.add_argument("--namespace", default=None, help="key prefix (default: STREAMREC_TOPIC_PREFIX)")
    # the first round explores as the workers' later rounds will: their settings, read from the same variables
    pub.add_argument("--alpha", type=float, default=float(os.environ.get("STREAMREC_DBGD_ALPHA", PUBLISH_ALPHA)),
                     help="DBGD exploration factor of the first explorer (default: STREAMREC_DBGD_ALPHA)")
    pub.add_argument("--seed", type=int, default=0)
    pub.add_argument("--explorers", type=int, default=int(os.environ.get("STREAMREC_DBGD_EXPLORERS", 1)),
                     help="explorers of the first round (1: DBGD; more: multileave gradient descent; default: "
                     "STREAMREC_DBGD_EXPLORERS)")
    ret = sub.add_parser("retrain", help="train a candidate on a log window given as JSON-lines files; publish it "
                         "unpromoted (the stream's controller decides promotions)")
    ret.add_argument("--clicks", type=Path, required=True, help="click records, one JSON object per line")
    ret.add_argument("--slates", type=Path, default=None, help="slate records (recommendations), one per line")
    ret.add_argument("--redis", default=None, help="Redis URL (default: STREAMREC_REDIS)")
    ret.add_argument("--namespace", default=None, help="key prefix (default: STREAMREC_TOPIC_PREFIX)")
    ret.add_argument("--based-on", default=None, help="warm-start from this version (default: the current one)")
    ret.add_argument("--epochs", type=int, default=1)
    ret.add_argument("--learning-rate", type=float, default=None, help="default: the current version's")
    ret.add_argument("--holdout", type=float, default=0.1, help="newest share of sessions held out")
    ret.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    if args.command == "publish":
        return publish(args, console)
    if args.command == "retrain":
        return retrain_cmd(args, console)

    train_df, test_df = _load(args)
    if args.command == "train":
        if train_df is None:
            parser.error("no training data")
        gru = train_with_progress(GRU4Rec(params_from_args(args), device=args.device), train_df, console)
        gru.save(args.out)
        console.print(f"saved {args.out} ({gru.n_items} items)")
        if not args.evaluate:
            return 0
    else:
        gru = GRU4Rec.load(args.model, device=args.device)
    if test_df is None:
        parser.error("no test data")
    try:
        result = evaluate(gru, test_df, mode=getattr(args, "mode", "conservative"))
    except NaNModelError as err:
        console.print(f"[red]{err}[/]")
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
