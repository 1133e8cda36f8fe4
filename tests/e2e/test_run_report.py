"""A short real run: worker + closed-loop simulator on the real broker; then the monitor and the report read it."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import httpx
import pytest
from rich.console import Console

from infra.local import free_port
from simulator.clickmodel import ClickModel
from simulator.loop import ClosedLoop
from simulator.population import Population
from simulator.scenario import Scenario
from simulator.world import World, WorldConfig
from stream.monitor import run as monitor
from stream.settings import Settings
from tests.kafka_helpers import ROOT, ServiceProcess

pytestmark = pytest.mark.e2e


def test_monitor_and_report_from_a_short_real_run(services, topics, stream_env, tmp_path):
    port = free_port()
    env = dict(stream_env, STREAMREC_METRICS_WINDOW_S="1", STREAMREC_METRICS_PORT=str(port))
    worker = ServiceProcess(["stream", "worker"], env, tmp_path / "worker.log").start()
    try:
        settings = Settings(kafka=services.kafka, topic_prefix=topics)
        world = World(WorldConfig(n_items=300, n_users=100, seed=2, launched_later=0.0))
        clicks = ClickModel(world, Scenario(launches=False))
        summary = ClosedLoop(settings, Population(world, clicks, seed=2), clicks, rate=80, duration=10.0,
                             slate_timeout=5.0, window_s=2.0).run()
        assert summary["slates"] > 0
        out = io.StringIO()
        state = monitor(settings, duration_s=4.0, from_beginning=True,
                        console=Console(file=out, record=True, width=220, force_terminal=False))
        assert worker.alive(), worker.log()[-2000:]
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text  # what Prometheus scrapes in compose
    finally:
        worker.stop()
    assert state.workers and state.simulator is not None, state.messages
    window = next(iter(state.workers.values()))
    assert window["source"] == "stream" and window["cumulative"]["impressions"] > 0
    text = out.getvalue()
    assert "stream workers (last window)" in text and next(iter(state.workers)) in text
    assert "simulator: observed CTR" in text
    answered = float(re.search(r"^streamrec_stream_clicks_total (\S+)$", scraped, re.M).group(1))
    assert answered >= summary["slates"] and "streamrec_stream_click_to_slate_seconds_bucket" in scraped
    lag = float(re.search(r"^streamrec_stream_clicks_lag (\S+)$", scraped, re.M).group(1))
    assert 0 <= lag < summary["clicks_sent"]  # the intake's consumer lag, set from a metrics window
    assert isinstance(window["clicks_lag"], int) and window["clicks_lag"] >= 0

    report_dir = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "stream", "report", "--since", "10m", "--out", str(report_dir)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["impressions"] > 0 and figures["simulator"]["mean_oracle_ctr"] > 0
    for name in ("ctr.png", "latency.png", "throughput.png", "learning.png"):
        assert (report_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert f"| impressions | {figures['impressions']} |" in (report_dir / "summary.md").read_text()
