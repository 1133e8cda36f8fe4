"""How the controller gets a retrain done, behind a small interface.

The controller hands a job (``{id, trigger, since, until, based_on, started}``) to a :class:`Trainer`
and, on later ticks, looks for the job's outcome in its store.  In the worker the trainer starts a
separate process (:class:`stream.trainer.ProcessTrainer`), so training never shares a process with the
click path; in tests and in the online study :class:`InlineTrainer` runs the job at once in the caller's
process (the study's retrain happens inside its simulated clock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from stream.control.store import ControlStore


class Trainer(Protocol):
    def start(self, job: dict) -> None:
        """Begin the job; its outcome will appear as ``store.job_result(job["id"])``."""

    def alive(self, job_id: str) -> bool | None:
        """Whether the job still runs: None when this trainer did not start it (another leader's job)."""


class InlineTrainer:
    """Runs ``run(job) -> outcome`` synchronously in :meth:`start` and leaves the outcome in the store."""

    def __init__(self, run: Callable[[dict], dict], store: ControlStore) -> None:
        self.run, self.store = run, store
        self.jobs: list[dict] = []

    def start(self, job: dict) -> None:
        self.jobs.append(job)
        try:
            outcome = self.run(job)
        except Exception as err:  # noqa: BLE001 - a failed job is an outcome too
            outcome = {"version": None, "reason": f"the retrain failed: {err!r}", "summary": {}}
        self.store.put_job_result(job["id"], outcome)

    def alive(self, job_id: str) -> bool | None:
        return False if any(j["id"] == job_id for j in self.jobs) else None
