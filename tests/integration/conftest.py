"""Fixtures shared by the integration tests (the services themselves come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from models.data import load_dataset
from models.gru4rec import GRU4Rec, GRU4RecParams


@pytest.fixture(scope="session")
def tiny_gru(shared_data) -> GRU4Rec:
    """A small GRU4Rec trained on yoochoose-100k (a few seconds on 2 cores), shared by the session."""
    train, _ = load_dataset("yoochoose-100k", shared_data)
    params = GRU4RecParams(layers=[48], n_epochs=2, n_sample=256, batch_size=64, learning_rate=0.1, seed=1)
    return GRU4Rec(params, device="cpu").fit(train)
