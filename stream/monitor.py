"""``python -m stream monitor``: a live terminal view of the ``metrics`` topic (rich).

The window a user leaves open during a run: per worker the last window (clicks/s, CTR, HitRate and
MRR against the previous slate, latency, how far behind the log), the totals across workers, the
CTR of each interleaving team, the DBGD round and accepted updates, the drift detector, the model
version and age, and -- when the simulator runs -- its ground truth (observed, expected and oracle
CTR, regret).  A sparkline shows CTR over the last windows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque

from confluent_kafka import Consumer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from stream.clients import client_config
from stream.settings import Settings
from stream.topics import METRICS

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """Values as a one-line bar chart.

    >>> sparkline([0.0, 0.5, 1.0])
    '▁▅█'
    """
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(SPARKS[min(int((v - lo) / span * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)] for v in values)


def _f(x, fmt: str = ".3f", none: str = "–") -> str:
    return none if x is None else format(x, fmt)


class MonitorState:
    """What the monitor knows: the latest window of each worker, the simulator's latest, CTR history."""

    def __init__(self, history: int = 60) -> None:
        self.workers: dict[str, dict] = {}
        self.simulator: dict | None = None
        self.ctr_history: deque[float] = deque(maxlen=history)
        self.truth_history: deque[float] = deque(maxlen=history)
        self.messages = 0

    def add(self, message: dict) -> None:
        self.messages += 1
        if message.get("source") == "stream":
            self.workers[message.get("worker", "?")] = message
            if message.get("ctr") is not None:
                self.ctr_history.append(message["ctr"])
        elif message.get("source") == "simulator":
            self.simulator = message
            if message.get("expected_ctr") is not None:
                self.truth_history.append(message["expected_ctr"])

    def render(self) -> Group:
        table = Table(title="stream workers (last window)", expand=True)
        for col in ("worker", "model", "clicks/s", "impr.", "CTR", "Hit@K", "MRR@K", "coverage", "p50 ms",
                    "p99 ms", "behind s"):
            table.add_column(col, justify="right" if col not in ("worker", "model") else "left")
        totals = {"impressions": 0, "slate_clicks": 0, "clicks_per_s": 0.0}
        team_clicks: dict[str, int] = {}
        for worker, m in sorted(self.workers.items()):
            table.add_row(worker, f"{m.get('model_version')} ({_f(m.get('model_age_s'), '.0f')} s)",
                          _f(m.get("clicks_per_s"), ".0f"), str(m.get("impressions", 0)), _f(m.get("ctr")),
                          _f(m.get("hit_rate")), _f(m.get("mrr")), _f(m.get("coverage")),
                          _f(m.get("latency_p50_ms"), ".1f"), _f(m.get("latency_p99_ms"), ".1f"),
                          _f(m.get("behind_log_s"), ".2f"))
            totals["impressions"] += m.get("impressions", 0)
            totals["slate_clicks"] += m.get("slate_clicks", 0)
            totals["clicks_per_s"] += m.get("clicks_per_s") or 0.0
            for team, n in (m.get("cumulative", {}).get("clicks_by_team") or {}).items():
                team_clicks[team] = team_clicks.get(team, 0) + n
        any_worker = next(iter(self.workers.values()), {})
        dbgd, drift = any_worker.get("dbgd") or {}, any_worker.get("drift") or {}
        lines = [
            f"all workers: {totals['clicks_per_s']:,.0f} clicks/s · CTR "
            f"{_f(totals['slate_clicks'] / totals['impressions'] if totals['impressions'] else None)} "
            f"· CTR trend {sparkline(list(self.ctr_history))}",
            "interleaving (cumulative clicks): " + (" · ".join(f"{t} {n}" for t, n in sorted(team_clicks.items()))
                                                     or "–"),
            f"DBGD: round {dbgd.get('rounds', '–')} · {dbgd.get('round_impressions', '–')}/{dbgd.get('window', '–')} "
            f"impressions · current {dbgd.get('current_clicks', '–')} vs explorers {dbgd.get('explorer_clicks', '–')} "
            f"clicks · accepted updates {dbgd.get('accepted_updates', '–')}",
            f"drift (ADWIN): CTR {_f(drift.get('ctr'))} over {drift.get('window', '–')} impressions · "
            f"drops {drift.get('drops', '–')}",
        ]
        if self.simulator is not None:
            s = self.simulator
            lines.append(f"simulator: observed CTR {_f(s.get('ctr'))} · expected {_f(s.get('expected_ctr'))} · "
                         f"oracle {_f(s.get('oracle_ctr'))} · regret {_f(s.get('regret'))} · "
                         f"{sparkline(list(self.truth_history))}")
        return Group(table, Panel(Text("\n".join(lines)), title=f"streamrec · {self.messages} metrics messages"))


def run(settings: Settings, duration_s: float | None = None, from_beginning: bool = False,
        console: Console | None = None) -> MonitorState:
    """Follow ``metrics`` and redraw until interrupted (or for ``duration_s``)."""
    console = console or Console()
    consumer = Consumer(client_config(settings.kafka, {"group.id": f"streamrec-monitor-{uuid.uuid4().hex[:8]}",
                                                       "auto.offset.reset": "earliest" if from_beginning else "latest",
                                                       "enable.auto.commit": False}))
    consumer.subscribe([settings.topic(METRICS)])
    state = MonitorState()
    end = time.monotonic() + duration_s if duration_s else None
    try:
        with Live(state.render(), console=console, refresh_per_second=4, transient=False) as live:
            while end is None or time.monotonic() < end:
                for msg in consumer.consume(100, 0.25):
                    if msg.error():
                        continue
                    try:
                        state.add(json.loads(msg.value()))
                    except ValueError:
                        continue
                live.update(state.render())
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return state
