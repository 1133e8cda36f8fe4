"""Major retrains in their own process: the job the controller launches, and the launcher.

:class:`ProcessTrainer` starts ``python -m stream retrain-job '<job JSON>'`` beside the worker (at a
lower priority, ``STREAMREC_RETRAIN_NICE``), so training never shares a process, or the GIL, with the
click path.  The job (:func:`run_job`) reads its window of ``clicks`` and ``recommendations`` back from
Kafka (:mod:`stream.clicklog`: the log is the source of truth), hands the records to
:func:`models.retrain.train_candidate` (which knows nothing of Kafka), pre-ranks the recently active sessions
with the candidate (:mod:`models.prerank`: so that serving is not left ranking every request itself after
the promotion), and leaves the outcome in Redis
(:meth:`stream.control.store.RedisControlStore.put_job_result`), where whichever worker leads by then
finds it on its next tick and decides.  The job outlives a worker killed meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from models.prerank import prerank_version
from models.registry import ModelRegistry
from models.retrain import RetrainConfig, train_candidate
from models.sessions import SessionStore
from stream.clicklog import read_window
from stream.control.store import RedisControlStore
from stream.priority import lowered
from stream.settings import Settings
from stream.topics import CLICKS, RECOMMENDATIONS

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


class ProcessTrainer:
    """Launches each job as a separate, niced Python process; remembers the ones it started."""

    def __init__(self, settings: Settings, log_dir: Path | None = None) -> None:
        self.s = settings
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, job: dict) -> None:
        env = {**os.environ, **settings_env(self.s),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"retrain-{job['id']}.log", "wb")  # noqa: SIM115 - closed below
        try:
            self.procs[job["id"]] = subprocess.Popen(
                lowered([sys.executable, "-m", "stream", "retrain-job", json.dumps(job)], self.s.retrain_nice,
                        self.s.retrain_sched_idle),
                env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=str(ROOT), start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # the child has its own descriptor
        log.info("retrain job %s started as process %d", job["id"], self.procs[job["id"]].pid)

    def alive(self, job_id: str) -> bool | None:
        proc = self.procs.get(job_id)
        if proc is None:
            return None
        if proc.poll() is None:
            return True
        self.procs.pop(job_id, None)
        return False


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``STREAMREC_*`` variables, so the job process sees exactly the worker's settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"STREAMREC_{name.upper()}"] = str(value)
    return env


def run_job(settings: Settings, job: dict) -> dict:
    """Read the job's window from Kafka, train a candidate, and leave the outcome in Redis."""
    import torch

    torch.set_num_threads(settings.retrain_torch_threads)
    client = redis.Redis.from_url(settings.redis)
    store = RedisControlStore(client, settings.topic_prefix)
    registry = ModelRegistry(client, namespace=settings.topic_prefix, keep=settings.registry_keep,
                             keep_majors=settings.registry_keep_majors, **settings.registry_pacing())
    try:
        started = time.time()
        clicks = read_window(settings.kafka, settings.topic(CLICKS), job["since"], until=job.get("until"))
        slates = read_window(settings.kafka, settings.topic(RECOMMENDATIONS), job["since"], until=job.get("until"))
        window = {"since": job["since"], "until": job.get("until"), "read_seconds": round(time.time() - started, 2),
                  "clicks_offsets": {str(p): list(o) for p, o in clicks.offsets.items()},
                  "skipped_records": clicks.skipped}
        config = RetrainConfig(epochs=settings.retrain_epochs, learning_rate=settings.retrain_learning_rate,
                               holdout=settings.retrain_holdout, alpha=settings.dbgd_alpha,
                               explorers=settings.dbgd_explorers, seed=settings.seed,
                               half_life_s=settings.popular_half_life_s, fresh_window_s=settings.fresh_window_s)
        candidate = train_candidate(registry, clicks.records, slates.records, config, job["trigger"], window,
                                    based_on=job.get("based_on"))
        outcome = {"version": candidate.version, "reason": candidate.reason, "summary": candidate.summary}
        if candidate.version is not None:
            outcome["summary"]["prerank"] = prerank_candidate(settings, client, registry, candidate.version)
    except Exception as err:  # noqa: BLE001 - the controller must hear about a failure, not wait for a timeout
        log.exception("retrain job %s failed", job["id"])
        outcome = {"version": None, "reason": f"the retrain failed: {err!r}", "summary": {}}
    store.put_job_result(job["id"], outcome)
    return outcome


def prerank_candidate(settings: Settings, client: redis.Redis, registry: ModelRegistry, version: str) -> dict:
    """Rank the recently active sessions with the candidate before the job reports it (models/prerank.py), so that
    serving need not rank them itself right after a promotion.  A failure costs only that: it is noted, not fatal."""
    if settings.prerank_window_s <= 0 or settings.session_ranking_items <= 0:
        return {"sessions": 0, "skipped": "off"}
    try:
        sessions = SessionStore(client, settings.topic_prefix, settings.session_ttl_s, settings.session_max_items)
        return prerank_version(client, registry, version, sessions, settings.candidate_params(),
                               depth=settings.session_ranking_items, window_s=settings.prerank_window_s,
                               limit=settings.prerank_max_sessions, seed=settings.seed,
                               ann_min_items=settings.ann_min_items, ann_probe=settings.ann_probe).summary()
    except Exception as err:  # noqa: BLE001 - serving then ranks these sessions itself, as without pre-ranking
        log.exception("pre-ranking with %s failed", version)
        return {"sessions": 0, "error": repr(err)}
