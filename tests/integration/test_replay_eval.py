"""A short prequential replay through a real broker and worker: every click gets one slate, every target is scored
once (bench/replay_eval.py, the evaluation `make bench` runs on whole logs)."""

from __future__ import annotations

import pytest

from bench.replay_eval import parse, run_baseline, run_system, score, stream_events
from models.data import load_dataset
from models.prequential import log_order, targets

pytestmark = pytest.mark.integration


def test_a_short_replay_scores_every_slate_exactly_once(services, shared_data, tiny_gru, tmp_path):
    train, test = load_dataset("yoochoose-100k", shared_data)
    events = stream_events(test, log_order(test)).head(400)
    goals = targets(events, known=set(train.ItemId.astype(str)), order="time")
    args = parse(["--out", str(tmp_path), "--workers", "1", "--idle-timeout", "30"])
    run = run_system("static", tiny_gru, events, services.kafka, services.redis, tmp_path, args)
    assert run["failed_sends"] == 0 and run["repeats"] == 0
    assert set(run["slates"]) == set(events.EventId)  # one slate per click, each carrying its click's event id
    assert all(len(slate) == 20 for slate in run["slates"].values())
    result = score(run, goals, events, 20, window=50)
    assert result["missing"] == 0 and result["scored"] + result["unseen"] == len(goals) > 200
    assert 0 < result["hit_rate"] <= 1 and 0 < result["mrr"] <= result["hit_rate"]
    popular = score(run_baseline("popular", train, events, args), goals, events, 20, window=50)
    assert popular["scored"] == result["scored"] and result["hit_rate"] > popular["hit_rate"]
