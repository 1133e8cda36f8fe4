"""The live dashboard in a real headless browser (Debian's chromium driven by selenium), fed from a real topic."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from infra.local import free_port
from serving.app import create_app
from stream.settings import Settings
from tests.kafka_helpers import produce

pytestmark = pytest.mark.integration


def _window(n: int, version: str) -> bytes:
    return json.dumps({"source": "stream", "kind": "window", "worker": "w1", "ts": time.time(), "window_s": 1.0,
                       "impressions": 100, "slate_clicks": 3 + n % 4, "clicks": 120, "clicks_per_s": 120.0,
                       "ctr": (3 + n % 4) / 100, "latency_p50_ms": 4.0, "latency_p99_ms": 12.0,
                       "hit_rate": 0.2, "mrr": 0.1, "model_version": version, "model_kind": "minor",
                       "model_age_s": 3.0, "cumulative": {"clicks_by_team": {"current": n, "explorer": 2 * n}},
                       "dbgd": {"rounds": 1, "accepted_updates": 1}, "drift": {"ctr": 0.04, "drops": 0}}).encode()


def test_the_dashboard_draws_metrics_as_they_arrive(services, topics):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("chromium and chromium-driver are needed (infra/setup.sh installs them with apt-get)")
    settings = Settings(kafka=services.kafka, redis=services.redis, topic_prefix=topics, serving_port=free_port())
    produce(services.kafka, f"{topics}metrics", [(None, _window(n, "v1")) for n in range(5)])  # the past
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.serving_port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        browser.get(f"http://127.0.0.1:{settings.serving_port}/dashboard")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: int(b.find_element(By.ID, "messages").text) >= 5)  # the recent past, replayed
        produce(services.kafka, f"{topics}metrics", [(None, _window(n, "v2")) for n in range(5, 8)])
        produce(services.kafka, f"{topics}model-updates",
                [(None, json.dumps({"version": "v2", "kind": "major", "ts": time.time()}).encode())])
        wait.until(lambda b: int(b.find_element(By.ID, "messages").text) >= 9)  # live: new ones arrive
        wait.until(lambda b: b.find_element(By.ID, "model").text == "v2")
        assert "live" in browser.find_element(By.ID, "status").text
        drawn = browser.execute_script(  # the CTR canvas has ink on it: count non-blank pixels
            "const c = document.getElementById('ctr'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;")
        assert drawn > 500, drawn
        now = browser.find_element(By.ID, "now").text
        assert "DBGD round" in now and "v2 (minor" in now
    finally:
        browser.quit()
        server.should_exit = True
        thread.join(timeout=10)
