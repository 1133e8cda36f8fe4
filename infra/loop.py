"""``make loop``: the whole system, end to end, on one machine, in one command.

1. real Kafka and Redis (``infra/local.py``; a running pair is reused when ``STREAMREC_KAFKA`` is set);
2. a first model: an offline log of organic sessions from the simulator's world
   (``python -m simulator log``), GRU4Rec trained on it (``python -m models train``) and published;
3. a stream worker (DBGD, ADWIN drift trigger and major retrains on) and the serving endpoint
   (``http://127.0.0.1:8000``, live dashboard at ``/dashboard``);
4. the closed-loop simulator with a preference drift half way (``--scenario drift``), while the
   terminal shows ``python -m stream monitor``;
5. at the end, ``python -m stream report`` writes plots and a summary to ``runs/<time>/``.

    python -m infra.loop [--duration 300] [--rate 100] [--items 2000] [--seed 0]

Everything it starts it stops, by PID; logs are in ``.run/loop/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from infra import local
from stream.logs import setup_logging

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("loop")


def _py(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, check=True, **kw)


def _spawn(args: list[str], env: dict, logfile: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=ROOT, stdout=open(logfile, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait(what: str, ok, proc: subprocess.Popen, logfile: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start; see {logfile}:\n{logfile.read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds of simulated traffic")
    p.add_argument("--rate", type=float, default=100.0, help="clicks per second")
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--sessions", type=int, default=2_000,
                   help="organic sessions the first model learns from (a small log: the run shows it learning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=8000, help="the serving endpoint's port")
    args = p.parse_args(argv)
    setup_logging("loop")
    state = ROOT / ".run" / "loop"
    state.mkdir(parents=True, exist_ok=True)
    out = ROOT / "runs" / time.strftime("%Y%m%d-%H%M%S")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started: list[local.Service] = []
    procs: list[subprocess.Popen] = []
    world = ["--items", str(args.items), "--users", str(args.users), "--seed", str(args.seed)]
    try:
        if not env.get("STREAMREC_KAFKA"):
            started = [local.start_kafka(state), local.start_redis(state)]
            env.update(STREAMREC_KAFKA=started[0].address, STREAMREC_REDIS=started[1].address)
        env.setdefault("STREAMREC_TOPIC_PREFIX", f"loop{int(time.time())}-")
        env.update({k: v for k, v in {
            "STREAMREC_APP_ID": env["STREAMREC_TOPIC_PREFIX"] + "app", "STREAMREC_DATA_DIR": str(state / "faust"),
            "STREAMREC_WORKER_WEB_PORT": "0", "STREAMREC_SERVING_PORT": str(args.port),
            # simulated time runs fast: popularity and freshness on the scale of the run
            "STREAMREC_POPULAR_HALF_LIFE_S": "60", "STREAMREC_FRESH_WINDOW_S": "300",
            "STREAMREC_METRICS_WINDOW_S": "5", "STREAMREC_DBGD_WINDOW": "500", "STREAMREC_DBGD_WINDOW_S": "60",
            # DBGD steps of the online-learning study: the 0.1 / 0.05 moved CTR by nothing measurable
            "STREAMREC_DBGD_ALPHA": "0.3", "STREAMREC_DBGD_ETA": "0.5",
            # the settings of the online-learning study (python -m bench.online_study), same scale: a drift
            # retrain learns from the 4,000 impressions after the change; then one every 5,000 clicks
            "STREAMREC_DRIFT_MIN_IMPRESSIONS": "2000", "STREAMREC_DRIFT_RETRAIN_AFTER": "4000",
            "STREAMREC_RETRAIN_EVERY_CLICKS": "5000", "STREAMREC_RETRAIN_WINDOW_S": "200",
            "STREAMREC_RETRAIN_EPOCHS": "5", "STREAMREC_RETRAIN_LEARNING_RATE": "0.05",
            "STREAMREC_RETRAIN_MARGIN": "0.0",
            # the simulator's think times are scaled 1/120: its users click about a second after a slate
            "STREAMREC_GUARDRAIL_CLICK_LAG_S": "1", "STREAMREC_GUARDRAIL_DELAY_S": "15",
        }.items() if k not in os.environ})
        log.info("Kafka %s, Redis %s, prefix %s", env["STREAMREC_KAFKA"], env["STREAMREC_REDIS"],
                 env["STREAMREC_TOPIC_PREFIX"])

        log.info("a first model: %d organic sessions, GRU4Rec trained on them, published", args.sessions)
        _py(["simulator", "log", *world, "--scenario", "drift", "--duration", str(args.duration),
             "--sessions", str(args.sessions), "--out", str(state / "organic.tsv")], env)
        _py(["models", "train", "--train", str(state / "organic.tsv"), "--layers", "64", "--n-epochs", "3",
             "--loss", "cross-entropy", "--n-sample", "512", "--batch-size", "64", "--learning-rate", "0.05",
             "--out", str(state / "gru.pt")], env)
        _py(["stream", "topics"], env, stdout=subprocess.DEVNULL)
        _py(["models", "publish", "--model", str(state / "gru.pt")], env)

        worker_log, serving_log = state / "worker.log", state / "serving.log"
        procs.append(_spawn(["stream", "worker", "--loglevel", "info"], env, worker_log))
        _wait("the worker", lambda: "Ready" in worker_log.read_text(errors="replace"), procs[-1], worker_log)
        procs.append(_spawn(["serving", "--log-level", "warning"], env, serving_log))
        base = f"http://127.0.0.1:{args.port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait("the serving endpoint", ready, procs[-1], serving_log)
        log.info("serving on %s (dashboard: %s/dashboard); simulator: %.0f s at %.0f clicks/s, drift half way",
                 base, base, args.duration, args.rate)
        t0 = time.time()
        sim = _spawn(["simulator", "run", *world, "--scenario", "drift", "--duration", str(args.duration),
                      "--rate", str(args.rate), "--window", "10"], env, state / "simulator.log")
        procs.append(sim)
        subprocess.run([sys.executable, "-m", "stream", "monitor", "--duration", str(args.duration + 15)], env=env,
                       cwd=ROOT)
        sim.wait(timeout=120)
        log.info("writing the report to %s", out)
        _py(["stream", "report", "--since", str(t0 - 5), "--out", str(out)], env)
        print(f"\nreport: {out / 'summary.md'} (plots beside it); logs: {state}")
        return 0
    finally:
        for proc in reversed(procs):
            local.stop_pid(proc.pid)
        for service in reversed(started):
            local.stop_pid(service.pid)


if __name__ == "__main__":
    sys.exit(main())
