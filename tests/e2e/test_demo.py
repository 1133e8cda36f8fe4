"""`make demo` end to end on the session's broker and Redis: GRU4Rec's slates beat the popular fallback's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.kafka_helpers import ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_shows_gru4rec_slates_beside_the_popular_fallback(stream_env, shared_data, tmp_path):
    done = subprocess.run([sys.executable, "-m", "infra.demo", "--state-dir", str(tmp_path)], env=stream_env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "GRU4Rec + Q-network" in done.stdout and "popular fallback" in done.stdout
    result = json.loads((tmp_path / "summary.json").read_text())
    popular, gru = result["popular"], result["gru4rec"]
    assert popular["versions"] == ["popular"] and gru["versions"] and gru["versions"] != ["popular"]
    assert popular["scored"] == gru["scored"] > 50  # the same held-out clicks, every one answered both times
    assert gru["hits"] > popular["hits"], result
    assert "Connection refused" not in done.stdout + done.stderr
