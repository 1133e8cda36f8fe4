"""A worker that ends, crashed or stopped, ends its process, even with a thread blocked forever (as one inside a
librdkafka call the intake gave up on): a crashed worker must not stay alive answering nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _exit_status(body: str) -> int:
    script = textwrap.dedent(f"""
        import threading, time
        from stream.__main__ import _exit_when_done
        threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon: a normal exit would wait for it
        def run_worker():
        {textwrap.indent(textwrap.dedent(body), "    ")}
        _exit_when_done(run_worker)
        """)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=30, capture_output=True).returncode


@pytest.mark.parametrize("body, status", [
    ("raise RuntimeError('the intake crashed')", 1),
    ("raise SystemExit(0)", 0),
    ("raise SystemExit(3)", 3),
    ("return None", 0),
])
def test_the_process_ends_with_the_workers_status_despite_a_blocked_thread(body, status):
    assert _exit_status(body) == status
