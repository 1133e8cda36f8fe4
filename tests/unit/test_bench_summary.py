"""``python -m bench``'s summary gathers every benchmark's aims into one table, in whatever shape each prints them."""

from __future__ import annotations

from bench.__main__ import collect_aims, to_markdown
from bench.common import aim
from bench.stream_throughput import _aims as stream_aims


def test_every_benchmark_s_aims_land_in_one_table_with_the_cross_benchmark_ceiling() -> None:
    results = {
        "serving-latency": {"benchmark": "serving_latency", "aims": {"after_promotion_rps": aim(2911.5, ">= 1500", True)}},
        "warm-start": {"benchmark": "warm_start", "aims": {"full_minus_frozen": False}},
        "stream-batch": {"benchmark": "stream_batch", "rows": [{"batch": 4, "clicks_per_s": 900},
                                                               {"batch": 256, "clicks_per_s": 8000}]},
        "stream-throughput": {"benchmark": "stream_throughput", "workers": 1, "worker_clicks_per_s": 6000.0,
                              "catalog_items": 43097, "clicks": 30000, "command": "python -m bench.stream_throughput",
                              "passthrough_clicks_per_s": 25000.0, "worker_over_passthrough": 0.24,
                              "latency_rate_target": 1000, "latency_p50_ms": 9.0, "latency_p99_ms": 40.0},
    }
    rows = {(r["benchmark"], r["aim"]): r for r in collect_aims(results)}
    assert rows[("serving-latency", "after_promotion_rps")]["met"] is True
    assert rows[("warm-start", "full_minus_frozen")]["met"] is False
    ceiling = rows[("stream-throughput", "worker_over_in_process_ceiling")]
    assert ceiling["value"] == 0.75 and ceiling["met"] is False  # 6,000 against the batch of 256's 8,000
    table = to_markdown(results, {"date": "d", "cpus": 2, "cpu": "c", "memory_gb": 1, "python": "3"})
    assert "| serving-latency | after_promotion_rps | 2,912 | >= 1500 | yes |" in table
    assert "| stream-throughput | worker_over_in_process_ceiling | 0.75 | >= 0.85" in table


def test_the_stream_benchmark_judges_its_latency_against_the_pass_through_of_the_same_run() -> None:
    result = {"worker_clicks_per_s": 12_000.0, "worker_cpu_s_per_1000_clicks": {"worker-0": 0.1, "worker-1": 0.05,
                                                                                 "kafka": 0.07, "redis": 0.01},
              "latency_p99_ms": 31.0, "passthrough_latency_p99_ms": 20.0}
    aims = stream_aims(result, workers=2)
    assert aims["worker_clicks_per_s"]["met"] is False  # two workers aim at 15,000
    assert aims["worker_cpu_ms_per_click"]["value"] == 0.15 and aims["worker_cpu_ms_per_click"]["met"] is None
    assert aims["latency_p99_ms"]["met"] is False  # 31 > 20 + 10
    assert stream_aims({**result, "latency_p99_ms": 29.0}, workers=2)["latency_p99_ms"]["met"] is True
