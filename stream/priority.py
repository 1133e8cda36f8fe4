"""CPU priority for jobs that must not slow the click path or the serving endpoint: retrains and pre-ranking.

Two cores are shared by the stream, Redis, Kafka and serving; training a new version takes minutes of
CPU.  A process started for such a job lowers its own priority (:func:`lower_process_priority`).  (A
thread of the worker or of serving must not: while a low-priority thread holds the GIL and waits for a
core, every other thread of its process waits too.)

Where the kernel groups sessions for scheduling (autogroup, ``/proc/sys/kernel/sched_autogroup_enabled``)
a process's niceness counts only against the processes of its own session, and a job started in a
session of its own competes with the worker's session as an equal; so the job's group gets the
niceness too.  One run each of ``python -m bench.serving_latency`` (serving at 500 requests/s, p99 per
second while the job publishes and pre-ranks): without it 40-311 ms, with it 10-88 ms but for one second
of 283 ms (the seconds before the job: 7-66 ms on that machine).
"""

from __future__ import annotations

import os
from pathlib import Path


def lower_process_priority(nice: int, sched_idle: bool) -> None:
    """In a child process before it runs (``preexec_fn``): niceness for it and its autogroup, SCHED_IDLE if asked."""
    if nice:
        os.nice(nice)
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
        except OSError:  # no autogroup here (or not Linux): the niceness applies on its own
            pass
    if sched_idle:
        _sched_idle()


def _sched_idle() -> None:
    if not hasattr(os, "SCHED_IDLE"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # not permitted here: the niceness still applies (no logging: this runs between fork and exec)
        pass
