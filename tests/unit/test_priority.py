"""stream.priority: a job started through the launcher runs niced and under SCHED_IDLE, as the same process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.priority import lowered

ROOT = Path(__file__).resolve().parents[2]

REPORT = "import json, os; print(json.dumps([os.getpid(), os.nice(0), os.sched_getscheduler(0)]))"


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_launched_command_runs_at_the_lower_priority_under_the_pid_the_parent_was_given():
    proc = subprocess.Popen(lowered([sys.executable, "-c", REPORT], 7, True), stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    out, _ = proc.communicate(timeout=60)
    pid, nice, policy = json.loads(out)
    assert proc.returncode == 0
    assert pid == proc.pid  # exec, not a child: the trainer's bookkeeping and stop-by-PID still hold
    assert nice == min(os.nice(0) + 7, 19) and policy == os.SCHED_IDLE


def test_without_sched_idle_only_the_niceness_changes():
    out = subprocess.run(lowered([sys.executable, "-c", REPORT], 3, False), capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    _, nice, policy = json.loads(out)
    assert nice == min(os.nice(0) + 3, 19) and policy == os.sched_getscheduler(0)


def test_a_launcher_without_a_command_says_so():
    run = subprocess.run([sys.executable, "-m", "stream.priority", "--nice", "1", "--"], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 2 and "no command to run" in run.stderr
