"""Serving latency at a fixed request rate, the highest sustainable rate, and the pause a promotion causes.

    python -m bench.serving_latency [--rate 500] [--seconds 20] [--connections 8] [--clicks 20000]

Starts a real Kafka broker and Redis (infra/local.py) and publishes a GRU4Rec over Diginetica's
43,097 items (100 hidden units, one quick epoch: ``bench.common.diginetica_model``).  The
stream's own code (``stream.online.OnlineRecommender``) answers ``--clicks`` Diginetica test clicks,
which writes real session states and item statistics to Redis.  Then ``python -m serving`` runs in
its own process and a second process loads it, always asking for sessions that exist:

The stream keeps W's ranking with each session (``STREAMREC_SESSION_RANKING_ITEMS``), so until a new
version is promoted serving answers from it.  A major promotion goes as the retrain job does it: the
candidate is published, pre-ranks the recently active sessions (``stream.trainer.prerank_candidate``,
the job's own function) and is then promoted; serving answers from the pre-rankings.  Measured:

0. **highest rate, stored rankings**: wrk with ``--connections`` keep-alive connections for ``--seconds``;
1. **fixed rate**: an asyncio client (plain HTTP/1.1 on asyncio streams) sends ``--rate`` requests/s on a fixed schedule (open
   loop: latency counts from the scheduled send time, so a stall is not hidden); half way through a
   new major version is published, pre-ranks, and is promoted; the latency around the switch is reported;
2. **highest rate after the promotion**: wrk again, ``--after-s`` seconds after the promotion; then a DBGD step
   (a minor version: W moves) is promoted and wrk runs again;
3. **highest rate, ranked by serving**: a third major version promoted without pre-ranking, so that serving
   ranks (and re-encodes) every request itself: the path a session takes that the pre-ranking missed.

Prints one JSON object, with the issue's aims (``aims``) beside the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import redis
import torch

from bench.common import DATA, ROOT, aim, diginetica_model
from infra import local
from models.__main__ import publish_first_version
from models.data import load_dataset
from models.gru4rec import GRU4Rec
from models.registry import ModelRegistry
from models.sessions import SessionStore
from stream.online import OnlineRecommender
from stream.records import Click
from stream.settings import Settings
from stream.topics import ensure_topics
from stream.priority import lowered
from stream.trainer import prerank_candidate


def _fill(settings: Settings, client: redis.Redis, events) -> list[str]:
    """Run the stream's code over real clicks: session states and item statistics land in Redis."""
    rec = OnlineRecommender(settings, ModelRegistry(client, settings.topic_prefix),
                            SessionStore(client, settings.topic_prefix, settings.session_ttl_s,
                                         settings.session_max_items))
    clicks = [Click(session_id=str(s), item_id=str(i), ts=1_000_000.0 + n)
              for n, (s, i) in enumerate(zip(events["SessionId"], events["ItemId"]))]
    for start in range(0, len(clicks), 256):
        rec.process(clicks[start: start + 256], [time.time()] * len(clicks[start: start + 256]))
    rec.snapshot_stats(clicks[-1].ts, force=True)
    return sorted({c.session_id for c in clicks})


async def _fixed_rate(port: int, sessions: list[str], rate: float, seconds: float, on_half,
                      connections: int = 32) -> dict:
    """Open-loop load: request i is due at start + i/rate and its latency counts from then.

    A lean keep-alive HTTP/1.1 client on asyncio streams (httpx spends more CPU per request than the
    server does, which on 2 shared cores would measure the client).  Request i goes out on
    connection i mod ``connections`` as soon as it is due and that connection is free.  ``on_half`` runs
    (in a thread) after ``seconds / 2``; the load goes on for ``seconds`` in all, and at least 5 s after
    ``on_half`` returns (publishing and pre-ranking take a while; the 5 s after the switch are reported).
    ``on_half`` may return the promotion's wall-clock time; the 5 s after the promotion count from it.
    """
    n = int(rate * (seconds + 600))
    until = [seconds + 600]  # no request is sent when due after this (set when on_half returns)
    lat = np.full(n, np.nan)
    sent_at = np.arange(n) / rate
    done_at = np.zeros(n)
    errors: dict[str, int] = {}
    fallbacks = 0
    start = time.perf_counter() + 0.5
    wall0 = time.time() + 0.5  # start, as a wall-clock time (to line events of other processes up with it)

    async def connection(c: int) -> None:
        nonlocal fallbacks
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(c, n, connections):
                if sent_at[i] >= until[0]:
                    break
                await asyncio.sleep(max(start + sent_at[i] - time.perf_counter(), 0))
                writer.write(f"GET /recommendations/{sessions[i % len(sessions)]}?k=10 HTTP/1.1\r\n"
                             f"Host: 127.0.0.1\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                now = time.perf_counter()
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    continue
                fallbacks += b'"fallback": true' in body or b'"fallback":true' in body
                lat[i] = (now - start - sent_at[i]) * 1000
                done_at[i] = now - start
        except (OSError, asyncio.IncompleteReadError) as err:
            errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection(c)) for c in range(connections)]
    await asyncio.sleep(0.5 + seconds / 2)
    began = time.perf_counter() - start  # the candidate is published and pre-ranks from here
    promoted_unix = await asyncio.get_running_loop().run_in_executor(None, on_half)
    returned_at = time.perf_counter() - start
    # the promotion's own time (the child names it): its exit comes later, and serving switches in between
    promoted_at = promoted_unix - wall0 if promoted_unix is not None else returned_at
    until[0] = max(seconds, returned_at + 5.0, promoted_at + 5.0)
    await asyncio.gather(*tasks)
    n = int(np.searchsorted(sent_at, until[0]))
    lat, sent_at, done_at = lat[:n], sent_at[:n], done_at[:n]
    ok = lat[~np.isnan(lat)]
    around = lat[(sent_at >= promoted_at) & (sent_at < promoted_at + 5.0)]
    around = around[~np.isnan(around)]
    before = lat[sent_at < promoted_at]
    before = before[~np.isnan(before)]
    return {"before_promotion_p50_ms": float(np.percentile(before, 50)),
            "before_promotion_p99_ms": float(np.percentile(before, 99)), "rate_target": rate, "requests": n, "ok": int(ok.size), "errors": errors, "fallbacks": int(fallbacks),
            "achieved_rps": ok.size / max(float(done_at.max()), until[0]), "p50_ms": float(np.percentile(ok, 50)),
            "p99_ms": float(np.percentile(ok, 99)), "max_ms": float(ok.max()),
            "publish_and_prerank_from_s": round(began, 2), "promotion_at_s": round(promoted_at, 2),
            "promotion_returned_at_s": round(returned_at, 2),
            "after_promotion_5s_p99_ms": float(np.percentile(around, 99)),
            "after_promotion_5s_max_ms": float(around.max()),
            "slowest_request_due_unix": round(wall0 + float(sent_at[np.nanargmax(lat)]), 3),
            "p99_ms_by_second": [round(float(np.percentile(w, 99)), 1) if (w := lat[(sent_at >= t) & (sent_at < t + 1)
                                                                                   & ~np.isnan(lat)]).size else None
                                 for t in range(int(until[0]) + 1)]}


def _wrk(base: str, sessions: list[str], connections: int, seconds: float, state: Path) -> dict:
    script = state / "sessions.lua"
    ids = ",".join(json.dumps(s) for s in sessions[:5000])
    script.write_text("local ids = {" + ids + "}\nlocal n = 0\nrequest = function()\n  n = n + 1\n"
                      "  return wrk.format(nil, '/recommendations/' .. ids[(n % #ids) + 1] .. '?k=10')\nend\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script),
                          base], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"connections": connections, "seconds": seconds,
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": ms("50%"), "p99_ms": ms("99%"), "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


def _promote_major(env: dict, gru_path: Path, prerank: bool) -> dict:
    """Publish the GRU at ``gru_path`` as a major version, pre-rank unless told not to, promote it: in a process of
    its own, at the retrain job's priority (``stream.priority.lowered``), as the job runs."""
    settings = Settings()
    command = [sys.executable, "-m", "bench.serving_latency", "--promote", str(gru_path)] + ([] if prerank else
                                                                                            ["--no-prerank"])
    out = subprocess.run(lowered(command, settings.retrain_nice, settings.retrain_sched_idle), env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True, start_new_session=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _promote_here(gru_path: Path, prerank: bool) -> int:
    """The child of :func:`_promote_major` (settings from the environment)."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis)
    registry = ModelRegistry(client, settings.topic_prefix, **settings.registry_pacing())  # as the retrain job's
    version = publish_first_version(registry, GRU4Rec.load(gru_path, device="cpu"), promote=False)
    started = time.perf_counter()
    pre = prerank_candidate(settings, client, registry, version) if prerank else {"sessions": 0, "skipped": "off"}
    registry.promote(version, based_on=registry.current_version())
    print(json.dumps({"version": version, "prerank": pre, "prerank_to_promote_s": time.perf_counter() - started,
                      "promoted_at_unix": time.time()}))
    return 0


def _perturbed(registry: ModelRegistry, version: str, factor: float, path: Path) -> Path:
    """A different GRU of the same shape (a promotion loads and indexes it anew, and re-encodes every session), with
    its optimiser's state, as a retrain's candidate has it (the job publishes that too)."""
    gru = registry.training_gru(version)
    with torch.no_grad():
        gru.model.Wy.weight.mul_(factor)
    gru.save(path)
    return path


def _aims(stored: dict, fixed: dict, after: dict) -> dict:
    """The issue's aims for a promotion, each with its figure."""
    ratio = after["requests_per_s"] / stored["requests_per_s"]
    p99 = max(fixed["p99_ms"], fixed["after_promotion_5s_p99_ms"])
    return {"after_promotion_rps_vs_before": aim(ratio, ">= 0.8", ratio >= 0.8),
            "after_promotion_rps": aim(after["requests_per_s"], ">= 1500", after["requests_per_s"] >= 1500),
            "p99_ms_at_rate_through_promotion": aim(p99, "<= 10", p99 <= 10)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--clicks", type=int, default=20_000)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--workers", type=int, default=1, help="STREAMREC_SERVING_WORKERS")
    p.add_argument("--after-s", type=float, default=30.0, help="wrk starts this long after the promotion")
    p.add_argument("--promote", type=Path, help=argparse.SUPPRESS)  # the child of _promote_major
    p.add_argument("--no-prerank", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.promote is not None:
        return _promote_here(args.promote, not args.no_prerank)
    state = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    kafka, rds = local.start_kafka(state), local.start_redis(state)
    server: subprocess.Popen | None = None
    try:
        _, test = load_dataset("diginetica", DATA)
        gru = diginetica_model(args.hidden)
        settings = Settings(kafka=kafka.address, redis=rds.address, topic_prefix="bench-", stats_snapshot_s=0)
        ensure_topics(settings)
        client = redis.Redis.from_url(rds.address)
        registry = ModelRegistry(client, settings.topic_prefix)
        first = publish_first_version(registry, gru)
        sessions = _fill(settings, client, test.head(args.clicks))
        port = local.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        env.update(STREAMREC_KAFKA=kafka.address, STREAMREC_REDIS=rds.address, STREAMREC_TOPIC_PREFIX="bench-",
                   STREAMREC_SERVING_PORT=str(port), PYTHONPATH=str(ROOT),
                   STREAMREC_SERVING_WORKERS=str(args.workers))
        server = subprocess.Popen([sys.executable, "-m", "serving", "--log-level", "info"], env=env, cwd=ROOT,
                                  stdout=open(state / "serving.log", "wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, state)
        for s in sessions[:200]:  # warm up
            httpx.get(f"{base}/recommendations/{s}")
        second, third = (_perturbed(registry, first, f, state / f"gru-{n}.pt") for n, f in ((2, 1.01), (3, 1.02)))
        promoted: dict = {}

        def promote() -> float:
            promoted.update(_promote_major(env, second, prerank=True), at=time.monotonic())
            return promoted["promoted_at_unix"]

        # while the sessions' stored rankings are from the current version: one Redis read per request
        highest_stored = _wrk(base, sessions, args.connections, args.seconds, state)
        fixed = asyncio.run(_fixed_rate(port, sessions, args.rate, args.seconds, promote))
        served_version = _wait_switch(base, promoted["version"])
        time.sleep(max(promoted["at"] + args.after_s - time.monotonic(), 0))
        highest_after = _wrk(base, sessions, args.connections, args.seconds, state)
        ranked_by_after = _ranked_by(base)
        w, explorers = registry.ranker_weights(promoted["version"])  # a DBGD step: W moves, the GRU stays
        step = registry.publish_minor(promoted["version"], w + 0.1 * (np.atleast_2d(explorers)[0] - w), explorers)
        registry.promote(step, based_on=promoted["version"])
        _wait_switch(base, step)
        highest_minor = _wrk(base, sessions, args.connections, args.seconds, state)
        unranked = _promote_major(env, third, prerank=False)  # every request now ranked by serving itself
        _wait_switch(base, unranked["version"])
        highest_serving = _wrk(base, sessions, args.connections, args.seconds, state)
        result = {"benchmark": "serving_latency", "catalog_items": gru.n_items, "hidden": args.hidden,
                  "sessions": len(sessions), "first_version": first, "version_after_promotion": served_version,
                  "prerank": promoted["prerank"], "fixed_rate": fixed, "highest_rate_stored_rankings": highest_stored,
                  "highest_rate_after_promotion": {**highest_after, "starts_s_after_promotion": args.after_s},
                  "ranked_by_after_promotion": ranked_by_after, "highest_rate_after_a_dbgd_step": highest_minor,
                  "highest_rate_ranked_by_serving": highest_serving, "ranked_by": _ranked_by(base),
                  "aims": _aims(highest_stored, fixed, highest_after),
                  "command": f"python -m bench.serving_latency --rate {args.rate:g} --seconds {args.seconds:g} "
                             f"--connections {args.connections} --clicks {args.clicks} --workers {args.workers}"}
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if server is not None:
            local.stop_pid(server.pid)
        local.stop_pid(rds.pid)
        local.stop_pid(kafka.pid)


def _wait_ready(base: str, state: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"serving did not become ready; see {state / 'serving.log'}")


def _wait_switch(base: str, version: str) -> str:
    """Wait until serving uses ``version`` (loading and indexing 43k items takes a few seconds)."""
    deadline = time.monotonic() + 120
    while httpx.get(f"{base}/readyz").json()["model_version"] != version and time.monotonic() < deadline:
        time.sleep(0.2)
    return httpx.get(f"{base}/readyz").json()["model_version"]


def _ranked_by(base: str) -> dict[str, float]:
    """Serving's counters of who ranked the slates so far."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'streamrec_serving_ranked_by_total\{by="(\w+)"\} ([\d.e+]+)', httpx.get(f"{base}/metrics").text)}


if __name__ == "__main__":
    sys.exit(main())
