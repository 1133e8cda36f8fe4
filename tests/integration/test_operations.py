"""What an operator runs: the `streamrec` command from any directory, JSON logs, Prometheus over several serving
processes, and a real Prometheus (Debian's package, started by the launcher) scraping a worker and serving."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from infra.local import free_port, stop_pid
from infra.monitoring import start_prometheus
from models.__main__ import publish_first_version
from models.registry import ModelRegistry
from tests.kafka_helpers import ROOT, ServiceProcess

pytestmark = pytest.mark.integration
STREAMREC = Path(sys.executable).parent / "streamrec"  # the console script `make setup` installs


def _wait(what: str, ready, proc: ServiceProcess | subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        alive = proc.alive() if isinstance(proc, ServiceProcess) else proc.poll() is None
        if not alive or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def test_the_streamrec_command_runs_worker_serving_and_simulator_from_another_directory(services, tmp_path):
    """A fresh place with no .run directory and only the two addresses set: nothing needs the Makefile."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)),
           "STREAMREC_KAFKA": services.kafka, "STREAMREC_REDIS": services.redis}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = subprocess.run([sys.executable, "-c", "import streamrec, stream; print(stream.__file__)"], env=env,
                           cwd=elsewhere, capture_output=True, text=True)
    assert found.returncode == 0 and Path(found.stdout.strip()).is_relative_to(ROOT), \
        f"the virtualenv's editable install is not this checkout (run `make setup`): {found.stdout}{found.stderr}"
    logs = {name: elsewhere / f"{name}.log" for name in ("worker", "serving")}
    procs = {name: subprocess.Popen([str(STREAMREC), name if name == "worker" else "serve"], env=env,
                                    cwd=elsewhere, stdout=open(logs[name], "wb"), stderr=subprocess.STDOUT,
                                    start_new_session=True) for name in logs}
    try:
        _wait("the worker", lambda: "Ready" in logs["worker"].read_text(errors="replace"), procs["worker"],
              logs["worker"])
        _wait("serving", lambda: _answers("http://127.0.0.1:8000/healthz"), procs["serving"], logs["serving"])
        sim = subprocess.run([str(STREAMREC), "simulate", "--duration", "6", "--rate", "20", "--items", "200",
                              "--users", "50"], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=120)
        assert sim.returncode == 0, sim.stdout[-2000:] + sim.stderr[-3000:]
        summary = json.loads(sim.stdout.strip().splitlines()[-1])
        assert summary["slates"] > 0 and summary["failed_deliveries"] == 0
        assert (elsewhere / ".run" / "faust").is_dir()  # the worker made its data directory where it runs
        assert "Connection refused" not in logs["worker"].read_text(errors="replace")
    finally:
        for proc in procs.values():
            stop_pid(proc.pid, timeout=20)


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


def test_json_logs_multiprocess_serving_metrics_and_a_real_prometheus(services, prefix, topics, stream_env,
                                                                      tmp_path, tiny_gru):
    version = publish_first_version(ModelRegistry(redis.Redis.from_url(services.redis), namespace=prefix), tiny_gru)
    worker_port, serving_port = free_port(), free_port()
    multiproc = tmp_path / "prometheus-multiproc"
    env = dict(stream_env, STREAMREC_LOG_FORMAT="json", STREAMREC_METRICS_PORT=str(worker_port),
               STREAMREC_SERVING_PORT=str(serving_port), STREAMREC_SERVING_WORKERS="2",
               PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    worker = ServiceProcess(["stream", "worker"], env, tmp_path / "worker.log").start()
    serving = ServiceProcess(["serving"], env, tmp_path / "serving.log").start()
    prometheus = None
    try:
        base = f"http://127.0.0.1:{serving_port}"
        _wait("the worker", lambda: _answers(f"http://127.0.0.1:{worker_port}/metrics"), worker, worker.log_path)
        _wait("serving", lambda: _answers(f"{base}/healthz"), serving, serving.log_path)
        prometheus = start_prometheus(tmp_path, worker_ports=[worker_port], serving_port=serving_port)

        sent = 300
        # a new connection per request, so that both processes take some (one keep-alive connection stays on one)
        with httpx.Client(base_url=base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for i in range(sent):
                assert client.get(f"/recommendations/s{i % 37}").status_code == 200
            counted = 0.0
            for _ in range(4):  # several scrapes, answered by either process: each sees every process's counts
                text = client.get("/metrics").text
                counted = sum(float(v) for v in re.findall(
                    r'^streamrec_serving_requests_total\{route="/recommendations/\{session_id\}",status="200"\} (\S+)$',
                    text, re.M))
                assert counted == sent, text[:3000]
        per_process = [_recommendations_counted(path) for path in multiproc.glob("counter_*.db")]
        assert len([n for n in per_process if n > 0]) == 2 and sum(per_process) == sent, per_process
        pids = {line.get("worker") for line in _json_lines(serving.log_path)}
        assert len(pids) >= 2, pids  # two serving processes logged, each with its own pid

        series = _query_until(prometheus.address, lambda r: {s["metric"]["job"] for s in r} >= {"stream-worker", "serving"},
                              '{__name__=~"streamrec_.+"}')
        assert any(s["metric"]["__name__"] == "streamrec_serving_requests_total" for s in series)
        up = _query_until(prometheus.address, lambda r: len(r) == 2 and all(s["value"][1] == "1" for s in r), "up")
        assert {s["metric"]["job"] for s in up} == {"stream-worker", "serving"}
        rules = httpx.get(f"{prometheus.address}/api/v1/rules").json()["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == 7
    finally:
        if prometheus is not None:
            stop_pid(prometheus.pid)
        serving.stop()
        worker.stop()

    for log, service in ((worker.log_path, "worker"), (serving.log_path, "serving")):
        lines = _json_lines(log)
        assert len(lines) >= 3, log.read_text(errors="replace")[-2000:]
        for line in lines:
            assert {"time", "level", "logger", "message", "service", "worker", "partition", "model_version"} <= set(line)
        assert {line["service"] for line in lines} == {service}
        text = log.read_text(errors="replace")
        assert not re.search(r"^\[?\d{4}-\d\d-\d\d[ T][\d:,.]+\]? ?(INFO|WARNING|ERROR)", text, re.M), text[-2000:]
    worker_lines = _json_lines(worker.log_path)
    assert any(line["model_version"] == version for line in worker_lines), worker_lines[-5:]
    assert any(isinstance(line["partition"], list) and line["partition"] for line in worker_lines)


def _recommendations_counted(path: Path) -> float:
    """The /recommendations requests one serving process counted (its own file in the multiprocess directory)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return sum(sample.value for metric in MultiProcessCollector.merge([str(path)], accumulate=True)
               for sample in metric.samples if sample.name == "streamrec_serving_requests_total"
               and sample.labels.get("route") == "/recommendations/{session_id}")


def _query_until(address: str, done, query: str, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = httpx.get(f"{address}/api/v1/query", params={"query": query}).json()["data"]["result"]
        if done(result) or time.monotonic() > deadline:
            assert done(result), result
            return result
        time.sleep(1.0)
