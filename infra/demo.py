"""``make demo``: the loop in a minute, GRU4Rec at work beside the popular fallback.

1. real Kafka and Redis on 127.0.0.1 (when ``STREAMREC_KAFKA`` is set, the running ones, left running);
2. a tiny GRU4Rec (64 units, seconds on a CPU) trained on real clicks: yoochoose-100k from ``../shared/data``
   when it is there, else a simulated shop's organic log;
3. a stream worker; before any model is published, some of the log's sessions (the shop's recent traffic),
   then a few held-out sessions' clicks: the slates are the recently popular items (the fallback);
4. the model is published; the same click paths again: the slates are GRU4Rec's, ranked by the Q-network;
5. both side by side, with how often the session's next click was in each slate. Everything started is stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from infra import local
from simulator import demo
from stream.logs import setup_logging

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("demo")
YOOCHOOSE = ROOT.parent / "shared" / "data" / "yoochoose-100k"
WORLD = ["--items", "300", "--users", "300", "--seed", "0"]
HELD_OUT = 40  # sessions the demo replays; the model never saw them
SHOWN = 16  # rows of the side-by-side table


def _py(args: list[str], env: dict[str, str], **kwargs) -> None:
    subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, check=True, **kwargs)


def demo_log(state: Path, env: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Training clicks, the sessions the demo replays (never trained on), and where they come from."""
    if (YOOCHOOSE / "yoochoose-clicks-100k_train_full.txt").exists():
        train = pd.read_csv(YOOCHOOSE / "yoochoose-clicks-100k_train_full.txt", sep="\t")
        test = pd.read_csv(YOOCHOOSE / "yoochoose-clicks-100k_test.txt", sep="\t")
        return train, test[test.SessionId.isin(test.SessionId.unique()[:HELD_OUT])], "yoochoose-100k"
    organic = state / "organic.tsv"
    _py(["simulator", "log", *WORLD, "--sessions", str(2000 + HELD_OUT), "--out", str(organic)], env,
        stdout=subprocess.DEVNULL)
    df = pd.read_csv(organic, sep="\t")
    held = df.SessionId.isin(sorted(df.SessionId.unique())[-HELD_OUT:])
    return df[~held], df[held], "a simulated shop's organic log"


def first_model(state: Path, env: dict[str, str]) -> Path:
    """A tiny GRU4Rec on the demo log's training clicks; the held-out sessions written for the replays."""
    train, held, source = demo_log(state, env)
    train.to_csv(state / "train.tsv", sep="\t", index=False)
    held.to_csv(state / "demo.tsv", sep="\t", index=False)
    t0 = time.monotonic()
    _py(["models", "train", "--train", str(state / "train.tsv"), "--layers", "64", "--n-epochs", "2",
         "--loss", "cross-entropy", "--n-sample", "512", "--batch-size", "64", "--learning-rate", "0.05",
         "--out", str(state / "gru.pt")], env)
    log.info("GRU4Rec trained on %d clicks of %s in %.1f s", len(train), source, time.monotonic() - t0)
    return state / "gru.pt"


def replay(state: Path, env: dict[str, str], name: str) -> list[demo.Answered]:
    out = state / f"{name}.json"
    _py(["simulator", "demo", "--sessions-from", str(state / "demo.tsv"), "--sessions", str(HELD_OUT),
         "--rate", "50", "--json", str(out)], env, stdout=subprocess.DEVNULL)
    return demo.load(out)


def wait_for_model(worker_log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while "now using model" not in worker_log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker did not load the published model (see {worker_log})")
        time.sleep(0.2)


def side_by_side(before: list[demo.Answered], after: list[demo.Answered]) -> Table:
    table = Table(title="the same clicks, before and after a model (✓: the session's next click is in its slate)",
                  caption=f"the first {SHOWN} clicks of {HELD_OUT} sessions the model was not trained on")
    for col in ("session", "clicked", "next", "popular fallback (top 5)", "GRU4Rec + Q-network (top 5)"):
        table.add_column(col)
    gru = {(a.path, a.step): a for a in after}
    for a in sorted(before, key=lambda a: (a.path, a.step)):
        b = gru.get((a.path, a.step))
        if a.next_item is None or b is None:
            continue
        if table.row_count == SHOWN:
            break
        table.add_row(str(a.path), a.item, a.next_item, _mark(a), _mark(b))
    return table


def _mark(a: demo.Answered) -> str:
    return " ".join(a.slate[:5]) + (" ✓" if a.hit else "")


def hits(answered: list[demo.Answered]) -> dict:
    """How many of the clicks that have a next click had it in their slate, and which versions answered."""
    scored = [a for a in answered if a.next_item is not None]
    return {"hits": sum(a.hit for a in scored), "scored": len(scored),
            "versions": sorted({a.model_version for a in answered})}


def summary(answered: list[demo.Answered]) -> str:
    h = hits(answered)
    return f"{h['hits']} of {h['scored']} next clicks in the slate ({', '.join(h['versions'])})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".run" / "demo",
                        help="logs, the trained model and summary.json")
    state = parser.parse_args(argv).state_dir.resolve()
    setup_logging("demo")
    console = Console()
    state.mkdir(parents=True, exist_ok=True)
    started: list[local.Service] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not env.get("STREAMREC_KAFKA"):
        started = [local.start_kafka(state), local.start_redis(state)]
        env.update(STREAMREC_KAFKA=started[0].address, STREAMREC_REDIS=started[1].address)
    env.setdefault("STREAMREC_TOPIC_PREFIX", f"demo{int(time.time())}-")  # a fresh registry and topics each run
    env.setdefault("STREAMREC_APP_ID", env["STREAMREC_TOPIC_PREFIX"] + "app")
    env.setdefault("STREAMREC_WORKER_WEB_PORT", "0")
    env.setdefault("STREAMREC_DATA_DIR", str(state / "faust"))
    worker, worker_log = None, state / "worker.log"
    try:
        model = first_model(state, env)
        _py(["stream", "topics"], env, stdout=subprocess.DEVNULL)
        with open(worker_log, "wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env, cwd=ROOT,
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while "Ready" not in worker_log.read_text(errors="replace"):  # Faust logs "[^Worker]: Ready"
            if worker.poll() is not None or time.monotonic() > deadline:
                print(worker_log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.2)
        log.info("worker ready; no model yet: the shop's recent traffic (200 sessions), then %d held-out sessions",
                 HELD_OUT)
        _py(["simulator", "demo", "--sessions-from", str(state / "train.tsv"), "--sessions", "200", "--rate", "0"],
            env, stdout=subprocess.DEVNULL)  # what the popular list is made of
        before = replay(state, env, "popular")
        _py(["models", "publish", "--model", str(model)], env, stdout=subprocess.DEVNULL)
        wait_for_model(worker_log)
        log.info("model published and loaded; the same clicks again")
        after = replay(state, env, "gru4rec")
        console.print(side_by_side(before, after))
        console.print(f"popular fallback: {summary(before)}\nGRU4Rec:          {summary(after)}")
        console.print(f"\nread the slates with any Kafka client, e.g.:\n  kcat -b {env['STREAMREC_KAFKA']} -t "
                      f"{env['STREAMREC_TOPIC_PREFIX']}recommendations -C -e -q | tail -3\n(worker log: {worker_log})")
        (state / "summary.json").write_text(json.dumps({"popular": hits(before), "gru4rec": hits(after)}))
        return 0 if before and after else 1
    finally:
        if worker is not None:
            local.stop_pid(worker.pid)
        for service in reversed(started):
            local.stop_pid(service.pid)


if __name__ == "__main__":
    sys.exit(main())
