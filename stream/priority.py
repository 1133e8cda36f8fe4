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

The priority is set by a tiny launcher, not between fork and exec: :func:`lowered` wraps the command in
``python -m stream.priority --nice N [--sched-idle] -- command...``, which lowers its own priority and
execs the command (niceness, autogroup and policy carry over).  A ``preexec_fn`` forces Python to
``fork()`` the parent, and forking a process of a few GB (a worker, or a benchmark holding the catalog)
copies its page tables while its other threads wait.  In ``python -m bench.serving_latency`` the second
in which the job started had p99 20-52 ms in 8 runs started with a ``preexec_fn``, and 4.8, 6.1 and
15.7 ms in three of four runs through the launcher (the fourth was slow before the job too: 9.7-26 ms a second).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def lowered(command: list[str], nice: int, sched_idle: bool) -> list[str]:
    """``command`` run at a lower priority (see the module): what to hand ``subprocess.Popen``, with no ``preexec_fn``.

    >>> lowered(["python", "-m", "stream", "retrain-job", "{}"], 10, True)[1:]
    ['-m', 'stream.priority', '--nice', '10', '--sched-idle', '--', 'python', '-m', 'stream', 'retrain-job', '{}']
    """
    return [sys.executable, "-m", "stream.priority", "--nice", str(nice)] + (["--sched-idle"] if sched_idle else []) \
        + ["--", *command]


def lower_process_priority(nice: int, sched_idle: bool) -> None:
    """This process's niceness (and its autogroup's), and SCHED_IDLE if asked."""
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
    except OSError:  # not permitted here: the niceness still applies (no logging: the launcher runs before any is set up)
        pass


def main(argv: list[str] | None = None) -> None:
    """``python -m stream.priority --nice N [--sched-idle] -- command...``: lower this process's priority, exec."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--sched-idle", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command to run")
    lower_process_priority(args.nice, args.sched_idle)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
