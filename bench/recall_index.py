"""GRU4Rec top-N recall on the Diginetica catalog: exact scoring against faiss indexes, speed and agreement.

    python -m bench.recall_index [--queries 2048] [--n 40]

The stream and the serving endpoint take each click's top ``--n`` items by GRU4Rec score
(``models.recall.CatalogIndex``).  This measures, on real hidden states (Diginetica test clicks
stepped through the benchmark model, sessions interleaved as ``bench.stream_throughput`` sends
them), one core:

- ms per batch of 256 and of 32 queries;
- recall@n against exact scoring: the share of the exact top ``n`` the index also returns;
- build time.

Rows: exact scoring (torch), ``CatalogIndex`` as configured (IVF with 4-bit fast-scan PQ codes and an
exact re-scoring of each query's best 3k, ~sqrt(n) lists, 6.5% probed) and with other probe shares,
IVF-Flat (the default until 2026-11-24: the lists hold the vectors, 5% probed), and the HNSW index used
before that (M 32, efConstruction 80, efSearch 128 and 64).  Prints one JSON object.  Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import faiss
import numpy as np
import torch

from bench.common import DATA, diginetica_model, interleaved
from models.data import load_dataset
from models.recall import CatalogIndex


def _hidden_states(gru, queries: int) -> torch.Tensor:
    """The last GRU layer after each of the first ``queries`` test clicks, sessions interleaved."""
    _, test = load_dataset("diginetica", DATA)
    events = interleaved(test.head(20_000)).head(queries)
    _, _, ids = gru.item_embeddings()
    index = {item: i for i, item in enumerate(ids)}
    state: dict = {}
    out = []
    with torch.no_grad():
        for session, item in zip(events.SessionId.to_numpy(), events.ItemId.astype(str).to_numpy()):
            h, _ = gru.step(state.get(session, gru.init_hidden(1)), torch.tensor([index.get(item, -1)]), score=False)
            state[session] = h
            out.append(h[-1, 0])
    return torch.stack(out)


def _timed(search, q, batch: int) -> float:
    """Median ms of ``search`` over consecutive batches of ``q``."""
    times = []
    for i in range(0, len(q) - batch + 1, batch):
        t0 = time.perf_counter()
        search(q[i: i + batch])
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=2048)
    p.add_argument("--n", type=int, default=40, help="top-N (the stream's STREAMREC_CANDIDATES_GRU)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    gru = diginetica_model(100)
    w, b, _ = gru.item_embeddings()
    w, b = torch.as_tensor(w).float(), torch.as_tensor(b).float().reshape(-1)
    h = _hidden_states(gru, args.queries)
    exact = CatalogIndex(w, b, min_items=10**9)
    truth = exact.top(h, args.n)[0].numpy()

    def recall(found: np.ndarray) -> float:
        return round(float(np.mean([len(set(f[: args.n]) & set(t)) / args.n for f, t in zip(found, truth)])), 4)

    rows = [{"index": "exact (torch)", "build_s": 0.0, "ms_per_256": _timed(lambda x: exact.top(x, args.n), h, 256),
             "ms_per_32": _timed(lambda x: exact.top(x, args.n), h, 32), "recall": 1.0}]
    variants = [(0.065, True, "(CatalogIndex default)"), (0.05, True, ""), (0.1, True, ""),
                (0.05, False, "(the default until 2026-11-24)"), (0.1, False, "")]
    for probe, fast_scan, note in variants:
        t0 = time.perf_counter()
        ivf = CatalogIndex(w, b, min_items=0, probe=probe, fast_scan=fast_scan)
        built = time.perf_counter() - t0
        kind = "IVF-PQ 4-bit fast scan, exact refine of 3k" if fast_scan else "IVF-Flat"
        rows.append({"index": f"{kind}, {ivf.ivf.nlist} lists, {ivf.ivf.nprobe} probed {note}".rstrip(),
                     "build_s": round(built, 2), "ms_per_256": _timed(lambda x: ivf.top(x, args.n), h, 256),
                     "ms_per_32": _timed(lambda x: ivf.top(x, args.n), h, 32),
                     "recall": recall(ivf.top(h, args.n)[0].numpy())})
    # the graph index used before: maximum inner product as L2 on augmented vectors, as models/recall.py does
    x = torch.cat([w, b[:, None]], 1).numpy()
    norms = (x * x).sum(1)
    items = np.ascontiguousarray(np.hstack([x, np.sqrt(norms.max() - norms)[:, None]]).astype(np.float32))
    q = np.ascontiguousarray(torch.cat([h, torch.ones(len(h), 1), torch.zeros(len(h), 1)], 1).numpy())
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(items.shape[1], 32)
    hnsw.hnsw.efConstruction = 80
    hnsw.add(items)
    built = time.perf_counter() - t0
    for ef in (128, 64):
        params = faiss.SearchParametersHNSW(efSearch=max(ef, args.n))

        def search(qq: np.ndarray, params=params) -> np.ndarray:
            return hnsw.search(qq, args.n, params=params)[1]
        rows.append({"index": f"HNSW M 32, efSearch {ef}", "build_s": round(built, 2),
                     "ms_per_256": _timed(search, q, 256), "ms_per_32": _timed(search, q, 32),
                     "recall": recall(search(q))})
    result = {"benchmark": "recall_index", "catalog_items": int(w.shape[0]), "queries": len(h), "n": args.n,
              "threads": 1, "command": f"python -m bench.recall_index --queries {args.queries} --n {args.n}",
              "rows": rows}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
