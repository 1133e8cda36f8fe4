"""The shipped Prometheus configuration and alerting rules, checked by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from infra.monitoring import CONFIG_DIR, local_config

PROMTOOL = shutil.which("promtool")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    if PROMTOOL is None:
        pytest.fail("promtool is missing: `make setup` installs Debian's prometheus package")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_the_shipped_config_and_rules_pass_promtool_check():
    config = _promtool("check", "config", str(CONFIG_DIR / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    rules = _promtool("check", "rules", str(CONFIG_DIR / "alerts.yml"))
    assert rules.returncode == 0 and "7 rules found" in rules.stdout, rules.stdout + rules.stderr


def test_the_config_the_local_launcher_writes_passes_promtool_check(tmp_path):
    path = tmp_path / "prometheus.yml"
    path.write_text(local_config([9108, 9109], 8001))
    done = _promtool("check", "config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_on_its_symptom_and_not_on_healthy_series():
    done = _promtool("test", "rules", str(CONFIG_DIR / "alerts.test.yml"))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
