"""Real Apache Kafka (KRaft, single node) and Redis 7 on this machine, without Docker.

Used by ``make up`` / ``make down``, by the test fixtures and by CI (Prometheus: ``infra/monitoring.py``).  The
servers listen on 127.0.0.1 only, on ports chosen here (free ports unless given), write their logs to files in a
state directory, and are stopped by the PID we started them with.

The Kafka jars are resolved from Maven Central by ``mvn dependency:copy-dependencies`` (see
``infra/kafka/pom.xml``) into a cache outside the work tree, so a second run starts at once.

Command line::

    python -m infra.local up   [--state-dir .run] [--kafka-port N] [--redis-port N] [--brokers 3] [--prometheus]
    python -m infra.local down [--state-dir .run]
    python -m infra.local status [--state-dir .run]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from stream.logs import setup_logging

log = logging.getLogger("infra.local")

KAFKA_VERSION = "3.9.1"
HERE = Path(__file__).resolve().parent


class MissingPrerequisite(RuntimeError):
    """A program the local launchers need is not installed; the message says what to install."""


@dataclass
class Service:
    """A server process we started and therefore must stop."""

    name: str
    pid: int
    address: str
    log: str
    version: str
    data_dir: str


def cache_dir() -> Path:
    """Downloads (Kafka jars) live here, outside any clone, so repeated runs reuse them."""
    return Path(os.environ.get("STREAMREC_CACHE", Path.home() / ".cache" / "streamrec"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(program: str, install_hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise MissingPrerequisite(f"'{program}' was not found on PATH: {install_hint}")
    return path


# --------------------------------------------------------------------------- Kafka


def kafka_libs() -> Path:
    """Return the folder of Kafka broker jars, resolving them from Maven Central the first time."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    mvn = _require("mvn", "install Maven (Debian: apt-get install maven) to resolve the Kafka jars")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    log.info("resolving Apache Kafka %s jars from Maven Central into %s", KAFKA_VERSION, libs)
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(HERE / "kafka" / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}"],
        check=True,
    )
    if libs.exists():  # a concurrent run finished first
        shutil.rmtree(staging)
    else:
        staging.rename(libs)
    return libs


def _java() -> str:
    return _require("java", "install a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)")


def _kafka_cmd(libs: Path, main_class: str, *args: str) -> list[str]:
    heap = os.environ.get("STREAMREC_KAFKA_HEAP", "-Xms256m -Xmx768m").split()
    return [
        _java(), *heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{HERE / 'kafka' / 'log4j.properties'}",
        "-cp", f"{libs}/*", main_class, *args,
    ]


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _wait_for_ports(addresses: str, deadline: float, proc: subprocess.Popen | None = None) -> None:
    """Block until every ``host:port`` of the comma-separated ``addresses`` accepts a TCP connection."""
    for address in addresses.split(","):
        host, port = address.rsplit(":", 1)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the process exited with code {proc.returncode} while starting")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listens on {address}: {exc}") from exc
                time.sleep(0.2)


def wait_for_kafka(bootstrap: str, timeout: float = 60.0, proc: subprocess.Popen | None = None,
                   brokers: int = 1) -> None:
    """Block until a metadata request to ``bootstrap`` succeeds and lists at least ``brokers`` brokers (a cluster's
    clients see a broker change right after start otherwise, which fails requests in flight)."""
    from confluent_kafka.admin import AdminClient

    from stream.clients import client_config

    deadline = time.monotonic() + timeout
    _wait_for_ports(bootstrap, deadline, proc)  # no client before a port listens: librdkafka logs every refusal
    admin = AdminClient(client_config(bootstrap, {"socket.connection.setup.timeout.ms": 2000}))
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Kafka exited with code {proc.returncode} while starting")
        try:
            md = admin.list_topics(timeout=2)
            if len(md.brokers) >= brokers:
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer a metadata request in {timeout:.0f}s: {last}")


def start_kafka(state_dir: Path, port: int | None = None, timeout: float = 90.0) -> Service:
    """Format KRaft storage and start one broker+controller on 127.0.0.1; return when it answers."""
    port = port or free_port()
    node = _Node(1, port, free_port(), Path(state_dir).resolve() / f"kafka-{port}")
    return _start_nodes([node], _cluster_id(), timeout)[0]


def start_kafka_cluster(state_dir: Path, brokers: int = 3, timeout: float = 120.0) -> list[Service]:
    """``brokers`` KRaft nodes (each broker and controller) on loopback, formatted as one cluster: topics are
    replicated to all of them with ``min.insync.replicas`` one less (2 of 3), so one node may die without losing an
    acknowledged write or stopping producers.  Bootstrap with :func:`bootstrap` of the returned services."""
    state_dir = Path(state_dir).resolve()
    nodes = [_Node(n + 1, free_port(), free_port(), state_dir / f"kafka-node{n + 1}") for n in range(brokers)]
    return _start_nodes(nodes, _cluster_id(), timeout)


def restart_kafka_node(service: Service, timeout: float = 90.0) -> Service:
    """Start a stopped node again on its own ports and data (its ``work`` folder holds the rendered config)."""
    work = Path(service.data_dir).parent
    proc = _launch(work)
    wait_for_kafka(service.address, timeout=timeout, proc=proc)
    return Service("kafka", proc.pid, service.address, service.log, service.version, service.data_dir)


def bootstrap(services: list[Service]) -> str:
    return ",".join(s.address for s in services if s.name == "kafka")


@dataclass(frozen=True)
class _Node:
    node_id: int
    port: int
    controller_port: int
    work: Path


def _start_nodes(nodes: list[_Node], cluster_id: str, timeout: float) -> list[Service]:
    libs = kafka_libs()
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    replication, min_isr = len(nodes), max(1, len(nodes) - 1)
    template = (HERE / "kafka" / "server.properties.template").read_text()
    procs: list[subprocess.Popen] = []
    try:
        for n in nodes:
            data_dir = n.work / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            props = n.work / "server.properties"
            props.write_text(template.format(node_id=n.node_id, voters=voters, port=n.port,
                                             controller_port=n.controller_port, data_dir=data_dir,
                                             replication=replication, min_isr=min_isr))
            if not (data_dir / "meta.properties").exists():
                subprocess.run(  # "--cluster-id=" form: a random id may start with "-", which would read as an option
                    _kafka_cmd(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c",
                               str(props)), check=True, stdout=subprocess.DEVNULL)
            procs.append(_launch(n.work))
        for n, proc in zip(nodes, procs):  # a cluster node answers once a quorum of controllers is up
            wait_for_kafka(f"127.0.0.1:{n.port}", timeout=timeout, proc=proc, brokers=len(nodes))
    except BaseException:
        for proc in procs:
            stop_pid(proc.pid)
        raise
    services = []
    for n, proc in zip(nodes, procs):
        version = _read_kafka_version(n.work / "kafka.log")
        log.info("Apache Kafka %s (KRaft, node %d of %d) up at 127.0.0.1:%d, pid %d", version, n.node_id, len(nodes),
                 n.port, proc.pid)
        services.append(Service("kafka", proc.pid, f"127.0.0.1:{n.port}", str(n.work / "kafka.log"), version,
                                str(n.work / "data")))
    return services


def _launch(work: Path) -> subprocess.Popen:
    with open(work / "kafka.log", "ab") as out:
        return subprocess.Popen(_kafka_cmd(kafka_libs(), "kafka.Kafka", str(work / "server.properties")), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _read_kafka_version(logfile: Path) -> str:
    match = re.search(r"Kafka version: (\S+)", logfile.read_text(errors="replace"))
    return match.group(1) if match else "unknown"


# --------------------------------------------------------------------------- Redis


def redis_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v=(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else "unknown"


#: the memory bound of a Redis started here, and what goes when it is reached: only keys with a TTL (session states,
#: finished retrain outcomes), nearest expiry first, i.e. the least recently active sessions.  The registry and the
#: controller's state have no TTL and are never evicted: past the bound with nothing left to evict, writes fail
#: loudly instead.
REDIS_MAXMEMORY = os.environ.get("STREAMREC_REDIS_MAXMEMORY", "2gb")
REDIS_EVICTION = "volatile-ttl"


def start_redis(state_dir: Path, port: int | None = None, timeout: float = 20.0,
                maxmemory: str = REDIS_MAXMEMORY) -> Service:
    """Start Debian's redis-server (7.x) on 127.0.0.1 with AOF persistence (``appendfsync everysec``).

    Redis holds what Kafka cannot rebuild: the model registry, the controller's state, the retrain
    queue.  Started again with the same ``state_dir`` and ``port`` it reads its AOF back (at most the
    last second of writes lost); session states come back too and otherwise expire as usual."""
    binary = _require("redis-server", "install Redis 7 (Debian: apt-get install redis-server)")
    version = redis_version(binary)
    if not version.startswith(("7.", "8.")):
        raise MissingPrerequisite(f"redis-server {version} found; Redis 7 or newer is required")
    port = port or free_port()
    work = Path(state_dir).resolve() / f"redis-{port}"  # redis-server runs in it: relative paths would break
    work.mkdir(parents=True, exist_ok=True)
    logfile = work / "redis.log"
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(work), "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", str(logfile), "--daemonize", "no",
         "--protected-mode", "yes", "--maxmemory", maxmemory, "--maxmemory-policy", REDIS_EVICTION],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}; see {logfile}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_pid(proc.pid)
            raise TimeoutError(f"redis-server on port {port} did not answer PING in {timeout:.0f}s")
        time.sleep(0.1)
    address = f"redis://127.0.0.1:{port}/0"
    log.info("Redis %s up at %s, pid %d", version, address, proc.pid)
    return Service("redis", proc.pid, address, str(logfile), version, str(work))


# --------------------------------------------------------------------------- processes


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process we started, then SIGKILL if it has not exited within ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
        except ChildProcessError:  # not our child (started by an earlier `up`): poll for existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# --------------------------------------------------------------------------- CLI


def _state_file(state_dir: Path) -> Path:
    return Path(state_dir) / "services.json"


def up(state_dir: Path, kafka_port: int | None, redis_port: int | None, brokers: int = 1,
       prometheus_port: int | None = None) -> list[Service]:
    """Start what is not running yet: Kafka (``brokers`` nodes), Redis and, given a port, Prometheus."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if _state_file(state_dir).exists():
        running = [Service(**s) for s in json.loads(_state_file(state_dir).read_text())]
        if all(_alive(s.pid) for s in running) and sum(s.name == "kafka" for s in running) == brokers \
                and any(s.name == "prometheus" for s in running) == bool(prometheus_port):
            return running
        down(state_dir)
    kafka = [start_kafka(state_dir, kafka_port)] if brokers == 1 else start_kafka_cluster(state_dir, brokers)
    services = [*kafka, start_redis(state_dir, redis_port)]
    if prometheus_port:
        from infra.monitoring import start_prometheus

        services.append(start_prometheus(state_dir, prometheus_port))
    _state_file(state_dir).write_text(json.dumps([asdict(s) for s in services], indent=2))
    return services


def down(state_dir: Path) -> None:
    path = _state_file(state_dir)
    if not path.exists():
        return
    for s in json.loads(path.read_text()):
        log.info("stopping %s (pid %d)", s["name"], s["pid"])
        stop_pid(s["pid"])
    path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv: list[str] | None = None) -> int:
    setup_logging("infra")
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "jars"])
    parser.add_argument("--state-dir", type=Path, default=Path(".run"))
    parser.add_argument("--kafka-port", type=int, default=None)
    parser.add_argument("--redis-port", type=int, default=None)
    parser.add_argument("--brokers", type=int, default=1, choices=[1, 3],
                        help="Kafka nodes: 1, or a 3-node KRaft cluster on loopback (replication factor 3, "
                             "min.insync.replicas 2)")
    parser.add_argument("--prometheus", action="store_true", help="also start Prometheus (Debian's package) with "
                        "infra/prometheus's config and alerting rules, scraping 127.0.0.1:9108 (a worker with "
                        "STREAMREC_METRICS_PORT=9108) and 127.0.0.1:8000 (serving)")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    args = parser.parse_args(argv)
    try:
        if args.command == "jars":
            print(kafka_libs())
        elif args.command == "up":
            services = up(args.state_dir.resolve(), args.kafka_port, args.redis_port, args.brokers,
                          args.prometheus_port if args.prometheus else None)
            kafka = [s for s in services if s.name == "kafka"]
            rds = next(s for s in services if s.name == "redis")
            print(f"STREAMREC_KAFKA={bootstrap(kafka)}  # Apache Kafka {kafka[0].version}, {len(kafka)} node(s)")
            if len(kafka) > 1:
                print(f"STREAMREC_KAFKA_REPLICATION={len(kafka)}")
            print(f"STREAMREC_REDIS={rds.address}  # Redis {rds.version}")
            for prom in (s for s in services if s.name == "prometheus"):
                print(f"STREAMREC_METRICS_PORT=9108  # for the worker; Prometheus {prom.version} at {prom.address}")
        elif args.command == "down":
            down(args.state_dir.resolve())
        else:
            path = _state_file(args.state_dir.resolve())
            for s in json.loads(path.read_text()) if path.exists() else []:
                print(f"{s['name']:6} pid {s['pid']:<8} {'up' if _alive(s['pid']) else 'DOWN'}  {s['address']}")
    except MissingPrerequisite as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
