"""An offline log of organic sessions (no recommendations shown): the data a first model is trained on.

Before the system has served anything, the only history is what users found on their own; the
simulator's users browse by their tastes and by popularity (``Population.organic_click``).  The log
is written in GRU4Rec's TSV format (``SessionId  ItemId  Time``), so ``python -m models train --train``
reads it.  The world must be the one the closed loop later runs in (same ``--seed``, ``--items``, ...).
"""

from __future__ import annotations

import pandas as pd

from simulator.population import Population


def organic_log(population: Population, sessions: int, rate: float = 10.0, t0: float = 0.0) -> pd.DataFrame:
    """``sessions`` organic sessions starting ``1/rate`` seconds apart (real-data think times inside)."""
    rows = []
    for n in range(sessions):
        s = population.new_session()
        t = t0 + n / rate
        while s.remaining > 0:
            item = population.organic_click(s, 0.0)
            rows.append((n, population.world.item_ids[item], t))  # integer session ids, as GRU4Rec TSVs have
            population.after_click(s, item)
            t += population.think_time(s)
    return pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])
