"""Small models the tests build in a second or two."""

from __future__ import annotations

import pandas as pd

from models.gru4rec import GRU4Rec, GRU4RecParams


def small_gru(seed: int, items: int = 40) -> GRU4Rec:
    """A 16-unit GRU4Rec over ``items`` items, trained one epoch on 200 synthetic sessions of 5 clicks."""
    rows = [(s, str((s + t) % items), float(t)) for s in range(200) for t in range(5)]
    data = pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])
    return GRU4Rec(GRU4RecParams(layers=[16], n_epochs=1, n_sample=16, batch_size=16, seed=seed), device="cpu").fit(data)
