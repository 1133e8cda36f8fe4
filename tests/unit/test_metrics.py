"""Online metric arithmetic on hand-made streams (no services)."""

from __future__ import annotations

import pytest

from stream.metrics import OnlineMetrics
from stream.report import write_report


def test_ctr_overall_per_version_and_per_team():
    m = OnlineMetrics(k=3)
    for n in range(4):
        m.observe_slate(f"s{n}", f"i{n}", ["a", "b", "c"], ["current", "explorer", "current"], "v1" if n < 2 else "v2",
                        10.0)
    m.observe_click("s0", "a", "i0", 0)          # current, v1
    m.observe_click("s2", "b", "i2", 1)          # explorer, v2
    m.observe_click("s3", "c", "i3", 0)          # wrong slot for the item: not a slate click
    m.observe_click("s1", "a", "unknown", 0)     # an impression this worker never made
    w = m.window(now=10.0, window_s=10.0)
    assert (w["impressions"], w["clicks"], w["slate_clicks"]) == (4, 4, 2)
    assert w["ctr"] == 0.5
    assert w["ctr_by_version"] == {"v1": 0.5, "v2": 0.5}
    assert w["ctr_by_team"] == {"current": 1 / 8, "explorer": 1 / 4}  # clicks per slot shown
    assert w["clicks_by_team"] == {"current": 1, "explorer": 1}
    assert m.window(now=20.0, window_s=10.0)["impressions"] == 0  # a new window starts empty
    assert m.window(now=30.0, window_s=10.0)["cumulative"]["impressions"] == 4


def test_hit_rate_and_mrr_against_the_previous_slate():
    m = OnlineMetrics(k=2)
    m.observe_click("s", "x")                      # no previous slate: not judged
    m.observe_slate("s", "i1", ["a", "b", "c"], None, "v1", 5.0)
    m.observe_click("s", "b")                      # rank 2 within K=2: hit, 1/2
    m.observe_slate("s", "i2", ["b", "a", "c"], None, "v1", 5.0)
    m.observe_click("s", "c")                      # rank 3 > K: miss
    m.observe_slate("s", "i3", ["a", "a", "c"], None, "v1", 5.0)   # a repeated item counts at its first slot
    m.observe_click("s", "a")                      # rank 1: hit, 1/1
    w = m.window(now=1.0, window_s=1.0)
    assert w["hit_rate"] == pytest.approx(2 / 3)
    assert w["mrr"] == pytest.approx((0.5 + 0 + 1.0) / 3)
    assert w["clicks"] == 4


def test_latency_percentiles_and_coverage():
    m = OnlineMetrics(k=10, catalog_size=10)
    for n, ms in enumerate(range(1, 101)):
        m.observe_slate(f"s{n}", f"i{n}", [str(n % 5)], None, "v1", float(ms))
    w = m.window(now=100.0, window_s=10.0)
    assert w["latency_p50_ms"] == pytest.approx(50.5)
    assert w["latency_p99_ms"] == pytest.approx(99.01)
    assert w["coverage"] == 0.5 and w["distinct_items"] == 5
    assert 45 <= w["cumulative"]["latency_p50_ms"] <= 56  # river's streaming quantile, approximate
    assert w["clicks_per_s"] == 0.0


def test_report_writes_plots_and_a_summary(tmp_path):
    metrics = [{"source": "stream", "worker": "w", "ts": 1000.0 + n, "window_s": 1.0, "impressions": 10,
                "slate_clicks": n % 3, "clicks_per_s": 10.0, "latency_p50_ms": 3.0, "latency_p99_ms": 9.0,
                "hit_rate": 0.2, "mrr": 0.1, "model_version": "v1" if n < 5 else "v2",
                "cumulative": {"clicks_by_team": {"current": n, "explorer": 2 * n}}, "dbgd": {"accepted_updates": 1}}
               for n in range(10)]
    metrics.append({"source": "simulator", "ts": 1005.0, "ctr": 0.1, "expected_ctr": 0.08, "oracle_ctr": 0.3,
                    "regret": 0.22, "slates": 50, "slate_clicks": 5})
    summary = write_report(metrics, [{"kind": "major", "ts": 1005.5, "version": "v2"}], tmp_path)
    assert summary["impressions"] == 100 and summary["slate_clicks"] == sum(n % 3 for n in range(10))
    assert summary["model_versions_seen"] == 2 and summary["last_version"] == "v2"
    assert summary["model_updates"]["major"] == 1
    assert summary["simulator"]["observed_ctr"] == 0.1
    for name in ("ctr.png", "latency.png", "throughput.png", "learning.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| impressions | 100 |" in (tmp_path / "summary.md").read_text()
    with pytest.raises(ValueError, match="no stream windows"):
        write_report([], [], tmp_path / "empty")
