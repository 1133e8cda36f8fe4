"""The control plane's parts, each on hand-made outcomes (no services): drift watch, retrain policy, promotion
gate, guardrail, DBGD rounds; and that each resumes from its stored form (a leader change)."""

from __future__ import annotations

import json
import random

import numpy as np

from stream.control.dbgd_rounds import DbgdRounds
from stream.control.drift import CtrDriftDetector
from stream.control.gate import PromotionGate
from stream.control.guardrail import Guardrail
from stream.control.retrain_policy import RetrainPolicy


def test_drift_detector_fires_on_a_drop_and_not_on_a_steady_ctr():
    steady, dropping = CtrDriftDetector(min_impressions=500), CtrDriftDetector(min_impressions=500)
    assert not any([steady.update(100, 5) for _ in range(200)])
    assert not any([dropping.update(100, 5) for _ in range(50)])
    assert any([dropping.update(100, 1) for _ in range(50)]) and dropping.drops >= 1


def test_drift_detector_says_when_the_change_happened_and_holds_the_retrain_for_traffic_after_it():
    d = CtrDriftDetector(min_impressions=500, retrain_after=1000)
    for n in range(60):                  # 6,000 impressions at 10%, one batch per second from t=0
        d.update(100, 10, ts=float(n))
    for n in range(60, 120):             # from t=60 the CTR falls to 1%
        d.update(100, 1, ts=float(n))
        if d.drops:
            break
    assert d.drops == 1 and d.cut_ts is not None and 55.0 <= d.cut_ts <= 62.0, d.state()
    assert d.retrain_due() == (False, None) and d.state()["retrain_pending"]
    t = n + 1
    while True:                          # due once 1,000 impressions have followed the cut
        due, since = d.retrain_due()
        if due:
            break
        d.update(100, 1, ts=float(t))
        t += 1
    assert since == d.cut_ts and d.seen - 100 * int(d.cut_ts) >= 1000
    assert d.retrain_due() == (False, None)  # taken once
    assert len(d._batches) <= d.adwin.width // 100 + 2  # old batches are forgotten


def test_a_resumed_drift_detector_holds_the_same_evidence_and_still_finds_the_drop():
    rng = random.Random(3)
    d = CtrDriftDetector(min_impressions=500, retrain_after=500)
    for t in range(80):
        d.update(100, sum(rng.random() < 0.1 for _ in range(100)), float(t))
    resumed = CtrDriftDetector.from_dict(json.loads(json.dumps(d.to_dict())))  # through JSON, as stored
    assert resumed.seen == d.seen and abs(resumed.ctr - d.ctr) < 0.005 and resumed.drops == d.drops == 0
    assert len(resumed.to_dict()["batches"]) <= 256
    for t in range(80, 200):
        if resumed.update(100, sum(rng.random() < 0.02 for _ in range(100)), float(t)):
            break
    assert resumed.drops == 1 and 75.0 <= resumed.cut_ts <= 85.0


def test_retrain_windows_do_not_reach_back_before_the_last_drift():
    p = RetrainPolicy(window_s=200.0)
    assert p.window_start(1000.0) == 800.0
    p.request("drift", since=900.0)                 # a drift retrain learns from t=900 on
    due = p.due(1000.0, None, clicks=0)
    assert due.trigger == "drift" and due.since == 900.0
    assert p.window_start(1000.0) == 900.0 and p.window_start(1500.0) == 1300.0
    assert p.window_start(1000.0, since=950.0) == 950.0


def test_retrain_policy_takes_requests_first_then_schedule_then_clicks_and_resumes():
    p = RetrainPolicy(every_s=600.0, every_clicks=1000, window_s=3600.0)
    assert p.due(0.0, None, clicks=0) is None      # the first look starts the schedule and the count
    assert p.due(100.0, {"by": "admin"}, clicks=10).trigger == "admin"
    p.started(100.0, clicks=10)
    assert p.due(200.0, None, clicks=500) is None
    assert p.due(300.0, None, clicks=1010).trigger == "clicks"
    p.started(300.0, clicks=1010)
    q = RetrainPolicy(every_s=600.0, every_clicks=1000, window_s=3600.0)
    q.restore(json.loads(json.dumps(p.to_dict())))
    assert q.due(899.0, None, clicks=1100) is None and q.due(901.0, None, clicks=1100).trigger == "schedule"


def test_the_gate_refuses_nan_missing_and_worse_candidates_and_honours_the_margin():
    before = {"recall@20": 0.50, "mrr@20": 0.20}
    gate, lenient = PromotionGate(margin=0.0), PromotionGate(margin=0.01)
    assert gate.judge({"current": before, "new": {"recall@20": 0.50, "mrr@20": 0.20}}).promote
    assert not gate.judge({"current": before, "new": {"recall@20": float("nan"), "mrr@20": 0.9}}).promote
    assert not gate.judge({"current": before, "new": {"mrr@20": 0.9}}).promote
    assert not gate.judge(None).promote
    worse = {"current": before, "new": {"recall@20": 0.495, "mrr@20": 0.21}}
    assert not gate.judge(worse).promote and "recall@20" in gate.judge(worse).reason
    assert lenient.judge(worse).promote


def _guard_runs(p_true: float, runs: int, seed: int, p0: float = 0.05, baseline: int = 20_000) -> tuple[float, list]:
    """Rollback share and impressions to a verdict, with the baseline itself estimated from ``baseline`` impressions."""
    rng = np.random.default_rng(seed)
    rollbacks, spent = 0, []
    for _ in range(runs):
        g = Guardrail(alpha=0.01, beta=0.05, drop=0.2, min_baseline=2000, max_impressions=50_000, delay_s=0, click_lag_s=0)
        assert g.watch("v2", "v1", baseline, int(rng.binomial(baseline, p0))) is None
        verdict = None
        while verdict is None:
            verdict = g.observe(100, int(rng.binomial(100, p_true)), now=0.0)
        rollbacks += verdict.action == "rollback"
        spent.append(verdict.impressions)
    return rollbacks / runs, spent


def test_the_guardrail_rarely_rolls_back_a_version_as_good_as_the_last():
    # alpha = 0.01; the baseline's own noise (20,000 impressions) adds a little: measured 0.014 over 1,000 runs
    rate, _ = _guard_runs(0.05, runs=1000, seed=1)
    assert rate <= 0.03
    better, _ = _guard_runs(0.055, runs=300, seed=2)
    assert better <= 0.01


def test_the_guardrail_rolls_back_a_halved_ctr_within_a_few_thousand_impressions():
    rate, spent = _guard_runs(0.025, runs=300, seed=3)
    assert rate == 1.0 and np.percentile(spent, 95) <= 3000


def test_late_clicks_do_not_read_as_a_drop_when_impressions_wait_for_them():
    """Clicks arrive 5 s after their slates: counted at once, a version as good as the last reads as a drop."""
    def run(delay_s: float, click_lag_s: float) -> str:
        rng = np.random.default_rng(4)
        g = Guardrail(alpha=0.01, drop=0.2, min_baseline=2000, max_impressions=30_000, delay_s=delay_s,
                      click_lag_s=click_lag_s)
        g.watch("v2", "v1", 20_000, 2_000)                        # 10%, as the new version really is
        shown = []                                                 # (time, impressions) of each 0.5 s batch
        for step in range(2000):
            now = step * 0.5
            shown.append(100)
            late = shown[-11] if len(shown) > 10 else 0           # the clicks of the slates 5 s ago
            verdict = g.observe(100, int(rng.binomial(late, 0.10)), now)
            if verdict is not None:
                return verdict.action
        return "none"

    assert run(delay_s=0, click_lag_s=0) == "rollback"             # the bias the lag is there for
    assert run(delay_s=30, click_lag_s=5) == "keep"                # the lag right
    assert run(delay_s=30, click_lag_s=3) == "keep"                # or short of it, after a warm-up


def test_the_guardrail_keeps_nothing_it_cannot_test_and_resumes_mid_test():
    g = Guardrail(min_baseline=2000, delay_s=0, click_lag_s=0)
    assert "baseline" in g.watch("v2", "v1", 500, 50)
    assert "no previous" in g.watch("v2", None, 10_000, 500)
    g.watch("v2", "v1", 10_000, 1_000)
    assert g.observe(1000, 95, now=0.0) is None        # close to the baseline's 10%: no verdict yet
    resumed = Guardrail(min_baseline=2000, delay_s=0, click_lag_s=0)
    resumed.restore(json.loads(json.dumps(g.to_dict())))
    assert resumed.watching == g.watching and resumed.watching["impressions"] == 1000
    verdicts = [resumed.observe(1000, 50, now=1.0) for _ in range(5)]
    verdict = next(v for v in verdicts if v is not None)
    assert verdict.action == "rollback" and verdict.version == "v2" and verdict.previous == "v1"


def test_dbgd_rounds_count_only_the_current_version_and_a_resumed_round_draws_the_same_explorer():
    w = np.linspace(0.5, 1.5, 8).astype(np.float32)
    w_explorer = w * 1.05
    a = DbgdRounds(alpha=0.1, eta=0.5, window=100, window_s=1e9, seed=7)
    assert a.observe("v1", w, w_explorer, {"version": "v0", "impressions": 500, "current": 9}, now=0.0) is None
    assert a.observe("v1", w, w_explorer, {"version": "v1", "impressions": 60, "current": 3}, now=1.0) is None
    b = DbgdRounds(alpha=0.1, eta=0.5, window=100, window_s=1e9, seed=7)
    b.restore(json.loads(json.dumps(a.to_dict())))
    message = {"version": "v1", "impressions": 60, "current": 0, "explorer": 1}
    step_a, step_b = a.observe("v1", w, w_explorer, message, 2.0), b.observe("v1", w, w_explorer, message, 2.0)
    assert not step_a.accepted and step_a.summary["impressions"] == 120 and step_a.summary["current_clicks"] == 3
    np.testing.assert_array_equal(step_a.weights, w)                       # the explorer lost: W stays
    np.testing.assert_array_equal(step_a.explorers, step_b.explorers)      # the same next explorer
    assert not np.allclose(step_a.explorers, w_explorer)


def test_a_dbgd_round_also_ends_after_its_time_window():
    w = np.ones(4, dtype=np.float32)
    rounds = DbgdRounds(alpha=0.1, eta=0.5, window=10_000, window_s=60.0, seed=0)
    assert rounds.observe("v1", w, w * 1.1, {"version": "v1", "impressions": 5, "explorer": 1}, now=0.0) is None
    step = rounds.observe("v1", w, w * 1.1, {"version": "v1", "impressions": 5, "explorer": 1}, now=61.0)
    assert step.accepted and np.allclose(step.weights, 1.05)
