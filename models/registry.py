"""Versioned models in Redis, one atomically swapped pointer, rollback.

Keys (``ns`` is a namespace prefix, empty in production, unique per test)::

    {ns}model:seq                 counter for version ids (v1, v2, ...)
    {ns}model:{v}:meta            JSON: kind (major|minor|rollback), parent, created, gru_version, summary
    {ns}model:{v}:gru             GRU4Rec (torch state, hyperparameters, item ids)   - major versions only
    {ns}model:{v}:items           JSON list of item ids                              - major versions only
    {ns}model:{v}:emb             float32 item embeddings, row per item              - major versions only
    {ns}model:{v}:ranker          float32 ranker weights W
    {ns}model:{v}:explorer        float32 explorer weights W + ΔW (DBGD)
    {ns}model:current             the promoted version
    {ns}model:versions            list of versions in publication order

A minor version (a DBGD step) stores only ranker weights and points at its parent's GRU and
embeddings through ``gru_version``.  ``promote`` runs as one Lua script: it checks the version
exists and swaps the pointer, so a reader sees the old or the new version, never a mix.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import redis

from models.gru4rec import GRU4Rec

log = logging.getLogger(__name__)

_PROMOTE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('no such version: ' .. ARGV[1]) end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return previous
"""


@dataclass
class ModelVersion:
    version: str
    meta: dict
    gru: GRU4Rec
    ranker: np.ndarray
    explorer: np.ndarray


class ModelRegistry:
    def __init__(self, client: redis.Redis, namespace: str = "", keep: int = 10) -> None:
        self.r, self.ns, self.keep = client, namespace, keep
        self._promote = self.r.register_script(_PROMOTE)

    def key(self, version: str, part: str) -> str:
        return f"{self.ns}model:{version}:{part}"

    @property
    def current_key(self) -> str:
        return f"{self.ns}model:current"

    # ------------------------------------------------------------------ write

    def _new_version(self) -> str:
        return f"v{self.r.incr(f'{self.ns}model:seq')}"

    def publish_major(self, gru: GRU4Rec, ranker: np.ndarray, explorer: np.ndarray, parent: str | None = None,
                      summary: dict | None = None, kind: str = "major") -> str:
        """Store a full model (GRU4Rec + embeddings + ranker) as a new, not yet promoted, version."""
        version = self._new_version()
        buf = io.BytesIO()
        gru.save(buf)
        emb, _bias, ids = gru.item_embeddings()
        meta = {"kind": kind, "parent": parent, "created": time.time(), "gru_version": version,
                "n_items": len(ids), "summary": summary or {}}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.key(version, "gru"), buf.getvalue())
        pipe.set(self.key(version, "items"), json.dumps(ids))
        pipe.set(self.key(version, "emb"), emb.astype(np.float32).tobytes())
        pipe.set(self.key(version, "ranker"), np.asarray(ranker, dtype=np.float32).tobytes())
        pipe.set(self.key(version, "explorer"), np.asarray(explorer, dtype=np.float32).tobytes())
        pipe.set(self.key(version, "meta"), json.dumps(meta))  # last: a version exists once its meta does
        pipe.rpush(f"{self.ns}model:versions", version)
        pipe.execute()
        return version

    def publish_minor(self, parent: str, ranker: np.ndarray, explorer: np.ndarray, summary: dict | None = None) -> str:
        """A DBGD step: new ranker weights on the parent's GRU and embeddings (referenced, not copied)."""
        parent_meta = self.meta(parent)
        version = self._new_version()
        meta = {"kind": "minor", "parent": parent, "created": time.time(), "gru_version": parent_meta["gru_version"],
                "n_items": parent_meta.get("n_items"), "summary": summary or {}}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.key(version, "ranker"), np.asarray(ranker, dtype=np.float32).tobytes())
        pipe.set(self.key(version, "explorer"), np.asarray(explorer, dtype=np.float32).tobytes())
        pipe.set(self.key(version, "meta"), json.dumps(meta))
        pipe.rpush(f"{self.ns}model:versions", version)
        pipe.execute()
        return version

    def promote(self, version: str) -> str | None:
        """Make ``version`` current, atomically; return the version it replaced."""
        previous = self._promote(keys=[self.current_key, self.key(version, "meta")], args=[version])
        self._prune()
        return previous.decode() if isinstance(previous, bytes) else previous

    def rollback(self, to: str | None = None) -> str:
        """Point ``model:current`` back at ``to`` (default: the current version's parent)."""
        current = self.current_version()
        if current is None:
            raise LookupError("no current version to roll back from")
        target = to or self.meta(current).get("parent")
        if not target or not self.r.exists(self.key(target, "meta")):
            raise LookupError(f"cannot roll back from {current}: version {target!r} is not in the registry")
        self.promote(target)
        log.info("rolled back from %s to %s", current, target)
        return target

    def _prune(self) -> None:
        """Keep the newest ``keep`` versions, the current one, and every GRU they reference."""
        versions = [v.decode() for v in self.r.lrange(f"{self.ns}model:versions", 0, -1)]
        if len(versions) <= self.keep:
            return
        current = self.current_version()
        kept = set(versions[-self.keep:]) | ({current} if current else set())
        kept |= {self.meta(v)["gru_version"] for v in kept if self.r.exists(self.key(v, "meta"))}
        for v in versions:
            if v not in kept:
                self.r.delete(*[self.key(v, p) for p in ("meta", "gru", "items", "emb", "ranker", "explorer")])
                self.r.lrem(f"{self.ns}model:versions", 0, v)

    # ------------------------------------------------------------------ read

    def current_version(self) -> str | None:
        v = self.r.get(self.current_key)
        return v.decode() if v is not None else None

    def versions(self) -> list[str]:
        return [v.decode() for v in self.r.lrange(f"{self.ns}model:versions", 0, -1)]

    def meta(self, version: str) -> dict:
        raw = self.r.get(self.key(version, "meta"))
        if raw is None:
            raise LookupError(f"model version {version} is not in the registry")
        return json.loads(raw)

    def ranker_weights(self, version: str) -> tuple[np.ndarray, np.ndarray]:
        """(W, W~) of a version without loading its GRU: what the DBGD leader needs."""
        ranker, explorer = self.r.mget(self.key(version, "ranker"), self.key(version, "explorer"))
        if ranker is None or explorer is None:
            raise LookupError(f"model version {version} has no ranker weights")
        return np.frombuffer(ranker, dtype=np.float32).copy(), np.frombuffer(explorer, dtype=np.float32).copy()

    def load(self, version: str | None = None, device: str | None = "cpu",
             loaded: ModelVersion | None = None) -> ModelVersion:
        """Load a version (default: current) with its GRU, ranker and explorer weights.

        A minor (DBGD) version shares its GRU with its parent.  Given the ``loaded`` version a caller
        already holds, its GRU object is reused when the GRU version is the same, and the GRU blob
        (43k embeddings and their optimiser state for Diginetica: tens of MB) is not read at all.  The
        stream switches to a new minor version about every thousand slates, so this matters.
        """
        version = version or self.current_version()
        if version is None:
            raise LookupError("the registry has no current model")
        meta = self.meta(version)
        ranker, explorer = self.r.mget(self.key(version, "ranker"), self.key(version, "explorer"))
        if ranker is None or explorer is None:
            raise LookupError(f"model version {version} is incomplete in the registry")
        if loaded is not None and loaded.meta.get("gru_version") == meta["gru_version"]:
            gru = loaded.gru
        else:
            gru_blob = self.r.get(self.key(meta["gru_version"], "gru"))
            if gru_blob is None:
                raise LookupError(f"model version {version} is incomplete in the registry")
            gru = GRU4Rec.load(io.BytesIO(gru_blob), device=device)
        return ModelVersion(version, meta, gru, np.frombuffer(ranker, dtype=np.float32).copy(),
                            np.frombuffer(explorer, dtype=np.float32).copy())
