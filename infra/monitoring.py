"""A real Prometheus without Docker: Debian's ``prometheus`` package, run with the shipped configuration.

``streamrec up --prometheus`` (``make up PROMETHEUS=1``) starts it on 127.0.0.1 beside Kafka and Redis. The config is
``infra/prometheus/prometheus.yml`` (what docker-compose mounts) with its compose host names rewritten to loopback,
so both ways scrape the same jobs and load the same alerting rules (``infra/prometheus/alerts.yml``).
"""

from __future__ import annotations

import logging
import subprocess
import time
import urllib.request
from pathlib import Path

from infra.local import Service, _require, free_port, stop_pid

log = logging.getLogger("infra.monitoring")
CONFIG_DIR = Path(__file__).resolve().parent / "prometheus"
WORKER_PORT, SERVING_PORT = 9108, 8000  # the compose services' ports (STREAMREC_METRICS_PORT, serving)


def local_config(worker_ports: list[int], serving_port: int) -> str:
    """The shipped prometheus.yml with its targets on 127.0.0.1 and its rule files given by absolute path.

    >>> text = local_config([9108, 9109], 8001)
    >>> '"127.0.0.1:9108", "127.0.0.1:9109"' in text, '"127.0.0.1:8001"' in text, '"worker:' in text
    (True, True, False)
    """
    text = (CONFIG_DIR / "prometheus.yml").read_text()
    workers = ", ".join(f'"127.0.0.1:{p}"' for p in worker_ports)
    for old, new in ((f'"worker:{WORKER_PORT}"', workers), (f'"serving:{SERVING_PORT}"', f'"127.0.0.1:{serving_port}"'),
                     ("  - alerts.yml", f"  - {CONFIG_DIR / 'alerts.yml'}")):
        if old not in text:
            raise ValueError(f"{CONFIG_DIR / 'prometheus.yml'} no longer contains {old}")
        text = text.replace(old, new)
    return text


def prometheus_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return (out.stdout or out.stderr).split()[2]  # "prometheus, version 2.42.0+ds (branch: ...)"


def start_prometheus(state_dir: Path, port: int | None = None, worker_ports: list[int] | None = None,
                     serving_port: int = SERVING_PORT, timeout: float = 30.0) -> Service:
    """Start Prometheus on 127.0.0.1:``port`` scraping the workers and serving there; return when it is ready."""
    binary = _require("prometheus", "install Prometheus (Debian: apt-get install prometheus)")
    port = port or free_port()
    work = Path(state_dir).resolve() / f"prometheus-{port}"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(local_config(worker_ports or [WORKER_PORT], serving_port))
    logfile = work / "prometheus.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=2d"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {proc.returncode}; see {logfile}")
        try:
            with urllib.request.urlopen(f"{address}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:  # refused, or 503 while it replays its write-ahead log
            pass
        if time.monotonic() > deadline:
            stop_pid(proc.pid)
            raise TimeoutError(f"prometheus on port {port} was not ready in {timeout:.0f}s; see {logfile}")
        time.sleep(0.2)
    version = prometheus_version(binary)
    log.info("Prometheus %s up at %s, pid %d", version, address, proc.pid)
    return Service("prometheus", proc.pid, address, str(logfile), version, str(work))
