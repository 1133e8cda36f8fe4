"""``make demo``: real Kafka + Redis up, a stream worker, a few clicks in, slates printed, all stopped again.

When ``STREAMREC_KAFKA`` is set the running infrastructure is used and left running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from infra import local
from stream.logs import setup_logging

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    setup_logging("demo")
    state = ROOT / ".run" / "demo"
    started: list[local.Service] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not env.get("STREAMREC_KAFKA"):
        started = [local.start_kafka(state), local.start_redis(state)]
        env.update(STREAMREC_KAFKA=started[0].address, STREAMREC_REDIS=started[1].address)
    env.setdefault("STREAMREC_WORKER_WEB_PORT", "0")
    env.setdefault("STREAMREC_DATA_DIR", str(state / "faust"))
    worker_log = state / "worker.log"
    state.mkdir(parents=True, exist_ok=True)
    with open(worker_log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env, cwd=ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Ready" not in worker_log.read_text(errors="replace"):  # Faust logs "[^Worker]: Ready"
            if worker.poll() is not None or time.monotonic() > deadline:
                print(worker_log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.2)
        rc = subprocess.call([sys.executable, "-m", "simulator", "demo", "--clicks", "20"], env=env, cwd=ROOT)
        print(f"\nread the slates with any Kafka client, e.g.:\n  kcat -b {env['STREAMREC_KAFKA']} -t "
              f"{env.get('STREAMREC_TOPIC_PREFIX', '')}recommendations -C -e -q | tail -3\n(worker log: {worker_log})")
        return rc
    finally:
        local.stop_pid(worker.pid)
        for service in reversed(started):
            local.stop_pid(service.pid)


if __name__ == "__main__":
    sys.exit(main())
