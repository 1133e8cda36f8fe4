"""GRU4Rec's top-N over the catalog, exactly or through an HNSW index (faiss).

GRU4Rec scores item i for hidden state h as ``h . w_i + b_i``.  Scoring all 43k Diginetica items
for every click and taking the top-N costs about 75 ms per batch of 256 on one core; a graph index
answers the same question approximately in a fraction of that.  Maximum inner product is turned
into nearest neighbours under L2 (Bachrach et al., 2014): items become ``[w_i, b_i, sqrt(M^2 - |x_i|^2)]``,
queries ``[h, 1, 0]``, so the closest item is the one with the highest score.  Returned candidates
carry their exact scores.

The index is built on one thread, which makes it deterministic: every worker and the serving
endpoint build the same graph from the same version and so return the same candidates.
Catalogs smaller than ``min_items`` are scored exactly: there the matrix product is already cheap
and exact is simpler to reason about.

Examples
--------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> w, b = torch.randn(500, 8, generator=g), torch.randn(500, generator=g)
>>> exact, hnsw = CatalogIndex(w, b, min_items=10**9), CatalogIndex(w, b, min_items=0)
>>> h = torch.randn(4, 8, generator=g)
>>> e, a = exact.top(h, 10)[0], hnsw.top(h, 10)[0]
>>> sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(e, a)) >= 38
True
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch


class CatalogIndex:
    def __init__(self, w: torch.Tensor, b: torch.Tensor, min_items: int = 10_000, m: int = 32,
                 ef_construction: int = 80, ef_search: int = 128) -> None:
        self.w, self.b = w.detach().float().contiguous(), b.detach().float().reshape(-1).contiguous()
        self.n = self.w.shape[0]
        self.ef_search = ef_search
        self.hnsw: faiss.Index | None = None
        if self.n >= min_items:
            x = torch.cat([self.w, self.b[:, None]], 1).numpy().astype(np.float32)
            norms = (x * x).sum(1)
            extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None].astype(np.float32)
            index = faiss.IndexHNSWFlat(x.shape[1] + 1, m)
            index.hnsw.efConstruction = ef_construction
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # deterministic graph (parallel insertion orders vary)
            try:
                index.add(np.ascontiguousarray(np.hstack([x, extra])))
            finally:
                faiss.omp_set_num_threads(threads)
            self.hnsw = index

    @property
    def kind(self) -> str:
        return "hnsw" if self.hnsw is not None else "exact"

    def scores(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Exact scores of items ``idx`` (B, N; -1 gives -inf) for hidden states ``h`` (B, H)."""
        safe = idx.clamp(min=0)
        s = torch.einsum("bh,bnh->bn", h, self.w[safe]) + self.b[safe]
        return s.masked_fill(idx < 0, -math.inf)

    def top(self, h: torch.Tensor, n: int, exclude: list[list[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (B, n) and exact scores of each row's n best items, leaving out ``exclude[b]``; -1 pads."""
        exclude = exclude or [[] for _ in range(h.shape[0])]
        n = min(n, self.n)
        extra = max((len(e) for e in exclude), default=0)
        if self.hnsw is None:
            s = h @ self.w.T + self.b
            for row, items in enumerate(exclude):
                if items:
                    s[row, items] = -math.inf
            values, idx = torch.topk(s, n, dim=1)
            return idx.masked_fill(torch.isinf(values), -1), values
        k = min(n + extra, self.n)
        q = torch.cat([h.detach().float(), torch.ones(h.shape[0], 1), torch.zeros(h.shape[0], 1)], 1).numpy()
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        _, found = self.hnsw.search(np.ascontiguousarray(q, dtype=np.float32), k, params=params)
        skip = found < 0
        if extra:  # drop excluded items, then keep each row's first n: all in numpy, no per-row Python
            excluded = np.full((len(exclude), extra), -2, dtype=found.dtype)
            for row, items in enumerate(exclude):
                excluded[row, : len(items)] = items
            skip |= (found[:, :, None] == excluded[:, None, :]).any(2)
        order = np.argsort(skip, axis=1, kind="stable")[:, :n]
        kept = np.take_along_axis(found, order, 1)
        kept[np.take_along_axis(skip, order, 1)] = -1
        idx = torch.from_numpy(kept.astype(np.int64))
        values = self.scores(h, idx)
        order = torch.argsort(values, dim=1, descending=True, stable=True)
        return idx.gather(1, order), values.gather(1, order)
