"""What several benchmarks share: a GRU4Rec over Diginetica's catalog with learned (not random) embeddings, and
the test clicks in the order many people browsing at once would send them, and a live reader of a topic."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import Consumer

from infra.local import cache_dir
from models.data import load_dataset
from models.gru4rec import GRU4Rec, GRU4RecParams
from stream.clients import client_config

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
log = logging.getLogger(__name__)


def diginetica_model(hidden: int = 100, sessions: int = 60_000) -> GRU4Rec:
    """One epoch of cross-entropy GRU4Rec over Diginetica's first ``sessions`` training sessions (~25 s), cached.

    Speed does not depend on how good the weights are, but the HNSW index does: random weights have no
    structure for a graph index to find, so the benchmarks use weights that learned something.  The item
    ids of the whole training set are kept (43,097) by adding the unseen ones through a warm start with
    zero epochs.
    """
    path = cache_dir() / f"bench-diginetica-h{hidden}-s{sessions}.pt"
    if path.exists():
        return GRU4Rec.load(path, device="cpu")
    train, _ = load_dataset("diginetica", DATA)
    params = GRU4RecParams(layers=[hidden], n_epochs=1, loss="cross-entropy", n_sample=2048, batch_size=64,
                           learning_rate=0.05, seed=0)
    gru = GRU4Rec(params, device="cpu").fit(train[train.SessionId.isin(train.SessionId.unique()[:sessions])])
    gru.params.n_epochs = 0
    gru.fit(train, warm_start=True)  # every catalog item gets a row
    gru.save(path)
    log.info("trained the benchmark model (%d items) into %s", gru.n_items, path)
    return gru


def aim(value: float | None, target: str, met: bool | None, note: str = "") -> dict:
    """One of an issue's aims beside its figure, in the shape every benchmark prints (``met`` None: this run alone
    cannot tell, e.g. a ratio against older code, which is measured by running both back to back)."""
    out = {"value": None if value is None else round(float(value), 4), "aim": target, "met": met}
    return {**out, "note": note} if note else out


def interleaved(events: pd.DataFrame) -> pd.DataFrame:
    """Every session's first click, then every second click, and so on (a stable sort on each click's place in
    its session): all sessions active at once, as when many people browse together."""
    place = events.groupby("SessionId", sort=False).cumcount()
    return events.iloc[np.argsort(place.to_numpy(), kind="stable")]


class LiveReader:
    """Reads a topic as it is written (read_committed), noting when each record arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(client_config(bootstrap, {
            "group.id": f"bench-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "isolation.level": "read_committed", "fetch.wait.max.ms": 5}))
        self.consumer.subscribe([topic])
        self.got: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():  # poll, not consume(n, timeout), which waits for n records or the timeout
            m = self.consumer.poll(0.05)
            if m is not None and not m.error():
                self.got.append((time.time(), m.value()))

    def stop(self) -> list[tuple[float, bytes]]:
        self._stop.set()
        self._thread.join(timeout=10)
        self.consumer.close()
        return self.got
