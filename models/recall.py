"""GRU4Rec's top-N over the catalog, exactly or through an inverted-file index (faiss).

GRU4Rec scores item i for hidden state h as ``h . w_i + b_i``.  Scoring all 43k Diginetica items
for every click and taking the top-N costs about 65-90 ms per batch of 256 on one core; an index
answers the same question approximately in a fraction of that.  Maximum inner product is turned
into nearest neighbours under L2 (Bachrach et al., 2014): items become ``[w_i, b_i, sqrt(M^2 - |x_i|^2)]``,
queries ``[h, 1, 0]``, so the closest item is the one with the highest score.

The index: k-means into ~sqrt(n) lists; a query scans the closest 6.5% of them.  The lists hold each
item as a 4-bit product-quantisation code (faiss "fast scan": two dimensions per code, 16 centroids
each, compared in SIMD registers), and each query's best 3k by code are then re-scored exactly
(``IndexRefineFlat``), so the scores returned are exact.  On the Diginetica model it finds more of the
exact top 40 than the IVF-Flat index used before (recall 0.950 against 0.941) in 6.1 ms per 256
queries against 7.9 (one core), building in 1.0 s instead of 0.65.  IVF-Flat, whose lists hold the
vectors themselves, reads about 1 MB of them per query; that memory traffic was its cost.  HNSW
(used before IVF) found 0.933 in 13.8 ms and built in 3 s (``python -m bench.recall_index``; README,
"Recall index").

The index is built on one thread with faiss's fixed k-means seed, which makes it deterministic: every
worker and the serving endpoint build the same lists and codes from the same version and so return
the same candidates.  Catalogs smaller than ``min_items`` are scored exactly: there the matrix product
is already cheap and exact is simpler to reason about.

Examples
--------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> w, b = torch.randn(2000, 8, generator=g), torch.randn(2000, generator=g)
>>> exact, ivf = CatalogIndex(w, b, min_items=10**9), CatalogIndex(w, b, min_items=0)
>>> ivf.kind
'ivf'
>>> h = torch.randn(4, 8, generator=g)
>>> e, a = exact.top(h, 10)[0], ivf.top(h, 10)[0]
>>> sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(e, a)) >= 34  # most of the exact top 10
True
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch

#: k-means wants about 39 training points per list (faiss warns below that)
_POINTS_PER_LIST = 39


class CatalogIndex:
    def __init__(self, w: torch.Tensor, b: torch.Tensor, min_items: int = 10_000, probe: float = 0.065,
                 min_probe: int = 8, fast_scan: bool = True, refine: float = 3.0, trained: bytes | None = None) -> None:
        """``probe`` is the share of the ~sqrt(n) lists scanned per query (at least ``min_probe`` of them).
        ``fast_scan`` keeps the lists as 4-bit product-quantisation codes and re-scores each query's best
        ``refine`` × n by code exactly; without it the lists hold the vectors themselves (IVF-Flat).
        ``trained`` is :meth:`trained_index` of an index built from the same ``w`` and ``b``: the lists and codes
        are then read back, not built again (see :meth:`trained_index`)."""
        self.w, self.b = w.detach().float().contiguous(), b.detach().float().reshape(-1).contiguous()
        self.n = self.w.shape[0]
        self.index: faiss.Index | None = None
        if self.n >= min_items:
            x = self._augmented()
            lists = max(1, min(int(math.sqrt(self.n)), self.n // _POINTS_PER_LIST))
            self.refine = refine if fast_scan else 0.0
            restored = _restored(trained, x.shape[0], x.shape[1], lists) if fast_scan and trained is not None else None
            if restored is not None:
                index = faiss.IndexRefineFlat(restored, faiss.swig_ptr(x))  # copies x: the exact re-scoring's vectors
                self._base = restored  # the refine index does not own its base: it lives as long as this object
            else:
                index = _trained(x, lists, fast_scan)
            self.ivf = faiss.extract_index_ivf(index)
            self.ivf.nprobe = min(lists, max(min_probe, math.ceil(probe * lists)))
            self.index = index

    def _augmented(self) -> np.ndarray:
        """Items as ``[w_i, b_i, sqrt(M^2 - |x_i|^2)]`` (and a zero column for an even width); sets M^2."""
        x = torch.cat([self.w, self.b[:, None]], 1).numpy().astype(np.float32)
        norms = (x * x).sum(1)
        extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None].astype(np.float32)
        pad = np.zeros((self.n, (x.shape[1] + 1) % 2), np.float32)  # an even width: two dimensions per PQ code
        self._m2 = float(norms.max())  # every augmented item has squared norm M^2
        return np.ascontiguousarray(np.hstack([x, extra, pad]))

    def trained_index(self) -> bytes | None:
        """The index's lists and codes, serialised (1.6 MB for Diginetica's 43k items), or None (exact, IVF-Flat).

        Building them is k-means: ~0.8 s of a core for 43k items.  The registry stores them with a major
        version, so a process switching to it (serving, a worker, the pre-ranking job) reads them back in
        under a millisecond instead of competing for the CPU with the requests it is answering.  The exact
        vectors the best candidates are re-scored with are not stored: they are the embeddings themselves."""
        if self.index is None or not self.refine:
            return None
        return faiss.serialize_index(faiss.downcast_index(self.index.base_index)).tobytes()

    @property
    def kind(self) -> str:
        return "ivf" if self.index is not None else "exact"

    def top(self, h: torch.Tensor, n: int, exclude: list[list[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (B, n) and scores of each row's n best items, best first, leaving out ``exclude[b]``; -1 pads
        (score -inf).  Exact scoring gives exact scores; the index gives them to float32 precision."""
        idx, values = self.top_np(h.detach().float().numpy(), n, padded(exclude) if exclude else None)
        return torch.from_numpy(idx), torch.from_numpy(values)

    def top_np(self, h: np.ndarray, n: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top` on numpy arrays, with the items to leave out as a (B, w) matrix padded with negative
        numbers (:func:`padded`): what the ranking path has at hand, without converting twice."""
        n = min(n, self.n)
        if self.index is None:
            s = torch.from_numpy(h) @ self.w.T + self.b
            if excluded is not None and excluded.size:
                rows, cols = np.nonzero(excluded >= 0)
                s[torch.from_numpy(rows), torch.from_numpy(excluded[rows, cols])] = -math.inf
            values, idx = torch.topk(s, n, dim=1)
            return idx.masked_fill(torch.isinf(values), -1).numpy(), values.numpy()
        extra = 0 if excluded is None else excluded.shape[1]
        k = min(n + extra, self.n)
        q = np.zeros((h.shape[0], self.index.d), dtype=np.float32)  # [h, 1, 0] (and the padding's 0)
        q[:, : h.shape[1]] = h
        q[:, h.shape[1]] = 1.0
        if self.refine:  # re-score the best refine x n by code, whatever the exclusions add to k
            params = faiss.IndexRefineSearchParameters(k_factor=max(1.0, self.refine * n / k))
            dist, found = self.index.search(q, k, params=params)
        else:
            dist, found = self.index.search(q, k)
        skip = found < 0
        if extra:  # drop excluded items, then keep each row's first n: all in numpy, no per-row Python
            skip |= (found[:, :, None] == excluded[:, None, :]).any(2)
            order = np.argsort(skip, axis=1, kind="stable")[:, :n]
            found, dist, skip = (np.take_along_axis(x, order, 1) for x in (found, dist, skip))
        else:
            found, dist, skip = found[:, :n], dist[:, :n], skip[:, :n]
        # |q - x|^2 = |q|^2 + M^2 - 2 q.x, and q.x is the score: the lists come back best first, scores from
        # the distances (float32, so within ~1e-5 of h.w + b; the ranker recomputes the candidates' exact scores)
        values = (((q * q).sum(1, keepdims=True) + self._m2 - dist) / 2).astype(np.float32)
        kept = found.astype(np.int64)
        kept[skip] = -1
        values[skip] = -np.inf
        return kept, values


def _trained(x: np.ndarray, lists: int, fast_scan: bool) -> faiss.Index:
    """k-means into ``lists`` lists, then every item added: one thread, faiss's fixed seed, so deterministic."""
    d = x.shape[1]
    if fast_scan:
        index = faiss.index_factory(d, f"IVF{lists},PQ{d // 2}x4fs,RFlat")
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, lists)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # the same lists and codes in every process (k-means's seed is fixed)
    try:
        index.train(x)
        index.add(x)
    finally:
        faiss.omp_set_num_threads(threads)
    return index


def _restored(trained: bytes, n: int, d: int, lists: int) -> faiss.Index | None:
    """The fast-scan lists of :meth:`CatalogIndex.trained_index`, if they hold ``n`` items of ``d`` dimensions in
    ``lists`` lists (else None: the caller builds the index itself)."""
    try:
        # already of its own class; a faiss.downcast_index proxy of it would not own it, and it would be freed
        index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    except RuntimeError:  # not a faiss index: build one instead
        return None
    if not isinstance(index, faiss.IndexIVFPQFastScan) or index.ntotal != n or index.d != d or index.nlist != lists:
        return None
    return index


def padded(rows: list[list[int]], fill: int = -2) -> np.ndarray:
    """Lists of item indices as one (B, longest) int64 matrix, ``fill`` (negative: matches no item) after each."""
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
