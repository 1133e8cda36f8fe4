"""Versioned models in Redis, one pointer swapped by compare-and-set, rollback to earlier major versions.

Keys (``ns`` is a namespace prefix, empty in production, unique per test)::

    {ns}model:seq                 the last version number handed out (see below)
    {ns}model:{v}:meta            JSON: kind (major|minor), parent, created, gru_version, chunks, summary
    {ns}model:{v}:gru:{i}         GRU4Rec (torch state, hyperparameters, item ids), chunk i  - major versions only
    {ns}model:{v}:optim:{i}       the GRU's optimiser accumulators (torch), chunk i: for warm starts only
    {ns}model:{v}:items:{i}       JSON list of item ids, chunk i                             - major versions only
    {ns}model:{v}:emb:{i}         float32 item embeddings, row per item, chunk i             - major versions only
    {ns}model:{v}:index:{i}       the recall index's trained lists and codes (faiss), chunk i - major, large catalogs
    {ns}model:{v}:ranker          float32 ranker weights W
    {ns}model:{v}:explorer        float32 explorers' weights W + ΔW_j, one row each (DBGD: one; MGD: several)
    {ns}model:current             the promoted version
    {ns}model:versions            list of versions in publication order
    {ns}model:majors              list of major versions in the order they were first promoted (rollback targets)

**Version ids are never reused**: ``v<n>`` where ``n`` is the larger of Redis' clock in milliseconds and the
last number plus one (one Lua script), so ids sort by time and a Redis restart that lost the last
second of ``model:seq`` (AOF ``appendfsync everysec``) still hands out new ones.

**Nothing broken is published or promoted**: before publishing, every weight must be finite, the ranker
must fit the GRU's hidden size and the GRU blob must load back; before promoting, the version is loaded
back from Redis and checked again (a GRU checked once is remembered, so a DBGD step checks its ranker
only).  A broken version raises :class:`InvalidModel` and ``model:current`` stays as it was.

**Compare-and-set**: :meth:`ModelRegistry.promote` names the version the promotion was based on; the Lua
script swaps the pointer only if that is still current, else raises :class:`StaleBase` with the version
that is, so the caller re-decides.  Readers see the old or the new version, never a mix.

**Large blobs in chunks** of at most ``chunk_bytes`` (1 MiB by default), each written by its own
command: Redis caps a string at 512 MB and blocks every client while it handles one command, so a
1M-item catalog's embeddings publish as many short writes that session reads interleave with.  (Publishing
391 MB with AOF on, a reader's p99 was 80-83 ms in 16 MiB chunks and 30-32 ms in 1 MiB chunks, two runs
each of ``python -m bench.registry_publish --chunk-mb 16`` / ``--chunk-mb 1``.)

**Large blobs are paced** where a process is given ``read_mb_s`` / ``write_mb_s`` (the settings
``registry_read_mb_s`` / ``registry_write_mb_s``): every process that shares Redis with the click path and
serving does.  Redis serves one command at a time, and with AOF on every byte written is also appended to
its log.  Publishing a Diginetica-sized model (43k items × 100) while another client reads 64 session keys
per MGET: that read's p99 was 5.6-10.9 ms during an unpaced publish and 1.1-1.2 ms paced at 10 MiB/s
(4.3 s instead of 1.0), 19-29 ms while the version was read back unpaced and 6.3-8.7 ms at 40 MiB/s
(two runs of ``python -m bench.registry_publish --items 43097 --hidden 100 --skip-whole``).

**The recall index is trained once**, when a major version of a catalog of ``index_min_items`` or more is
published: its lists and codes (``CatalogIndex.trained_index``, 1.6 MB for 43k items) are stored with it,
and every process that switches to the version reads them back instead of running k-means again (~0.8 s
of a core for 43k items, which a serving process spent beside the requests it was answering).

A minor version (a DBGD step) stores only ranker weights and points at its parent's GRU and
embeddings through ``gru_version``.  Pruning keeps the newest ``keep`` versions, the current one, the
last ``keep_majors`` promoted major versions and every GRU they reference.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import redis
import torch

from models.gru4rec import GRU4Rec
from models.recall import CatalogIndex
from models.ranker import DuelingQNetwork

log = logging.getLogger(__name__)

_NEW_ID = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = math.max(ms, last + 1)
while redis.call('EXISTS', ARGV[1] .. 'model:v' .. string.format('%d', n) .. ':meta') == 1 do n = n + 1 end
redis.call('SET', KEYS[1], string.format('%d', n))
return n
"""

# KEYS: current, meta of the version, majors list.  ARGV: version, based_on ('' = nothing current), is_major
_PROMOTE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('no such version: ' .. ARGV[1]) end
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[2] then return {0, current} end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[3] == '1' and redis.call('LPOS', KEYS[3], ARGV[1]) == false then redis.call('RPUSH', KEYS[3], ARGV[1]) end
return {1, current}
"""

CHUNK_BYTES = 1024 * 1024
INDEX_MIN_ITEMS = 10_000  # CatalogIndex's own default: smaller catalogs are scored exactly
_BLOBS = ("gru", "optim", "emb", "items", "index")
_PARTS = ("meta", "ranker", "explorer")


class RegistryError(Exception):
    """Something the registry refused to do; ``model:current`` is unchanged."""


class InvalidModel(RegistryError):
    """Weights that are not finite, do not fit together, or do not load back."""


class StaleBase(RegistryError):
    """A promotion based on a version that is no longer current."""

    def __init__(self, version: str, based_on: str | None, current: str | None) -> None:
        super().__init__(f"{version} was based on {based_on}, but {current} is current now")
        self.version, self.based_on, self.current = version, based_on, current


@dataclass
class ModelVersion:
    version: str
    meta: dict
    gru: GRU4Rec
    ranker: np.ndarray
    explorers: np.ndarray      # (n, d): the explorers' weights, one row each (DBGD has one, MGD several)
    index: bytes | None = None  # the recall index's trained lists (CatalogIndex.trained_index); None: build them


def _pace(started: float, done_bytes: int, mb_s: float) -> None:
    """Sleep until ``done_bytes`` since ``started`` is no faster than ``mb_s`` MiB/s (0: no limit)."""
    if mb_s > 0:
        wait = started + done_bytes / (mb_s * 2**20) - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def version_number(version: str) -> int:
    """The number in a version id (``v1764543600123`` -> 1764543600123); ids compare by it.

    >>> version_number("v17") < version_number("v123")
    True
    """
    return int(version.lstrip("v"))


def check_ranker(ranker: np.ndarray, explorers: np.ndarray, hidden_size: int) -> None:
    """Raise :class:`InvalidModel` unless W and every explorer are finite and fit a Q-network on ``hidden_size``
    states (``explorers``: one weight vector, or one row per explorer)."""
    expected = _q_network_size(hidden_size)
    if explorers.size == 0 or explorers.size % expected:
        raise InvalidModel(f"explorer weights have {explorers.size} values; a Q-network on {hidden_size} units has "
                           f"{expected} (one row per explorer)")
    rows = explorers.reshape(-1, expected)
    for name, w in (("ranker", ranker), *((f"explorer {j}", row) for j, row in enumerate(rows, 1))):
        if w.size != expected:
            raise InvalidModel(f"{name} weights have {w.size} values; a Q-network on {hidden_size} units has {expected}")
        if not np.isfinite(w).all():
            raise InvalidModel(f"{name} weights are not finite ({int((~np.isfinite(w)).sum())} NaN or inf values)")


@functools.lru_cache(maxsize=8)
def _q_network_size(hidden_size: int) -> int:
    """Parameters of a Q-network on ``hidden_size`` units (built once per size: its random initialisation costs more
    than the check it serves, and a DBGD round checks a version every few hundred slates)."""
    return sum(p.numel() for p in DuelingQNetwork(hidden_size).parameters())


def _weights(ranker: bytes, explorers: bytes) -> tuple[np.ndarray, np.ndarray]:
    """W and the explorers (n, d) from their stored bytes."""
    w = np.frombuffer(ranker, dtype=np.float32).copy()
    return w, np.frombuffer(explorers, dtype=np.float32).copy().reshape(-1, w.size)


def check_gru(gru: GRU4Rec) -> None:
    """Raise :class:`InvalidModel` unless every GRU4Rec parameter is finite."""
    for name, param in gru.model.named_parameters():
        if not torch.isfinite(param).all():
            raise InvalidModel(f"GRU4Rec parameter {name} is not finite")


class ModelRegistry:
    def __init__(self, client: redis.Redis, namespace: str = "", keep: int = 10, keep_majors: int = 4,
                 chunk_bytes: int = CHUNK_BYTES, index_min_items: int = INDEX_MIN_ITEMS, read_mb_s: float = 0.0,
                 write_mb_s: float = 0.0) -> None:
        """``read_mb_s`` / ``write_mb_s`` pace the blobs' chunks (0: as fast as Redis takes them); see the module."""
        self.r, self.ns, self.keep, self.keep_majors, self.chunk_bytes = client, namespace, keep, keep_majors, chunk_bytes
        self.index_min_items, self.read_mb_s, self.write_mb_s = index_min_items, read_mb_s, write_mb_s
        self._promote = self.r.register_script(_PROMOTE)
        self._new_id = self.r.register_script(_NEW_ID)
        self._checked_grus: set[str] = set()

    def key(self, version: str, part: str) -> str:
        return f"{self.ns}model:{version}:{part}"

    @property
    def current_key(self) -> str:
        return f"{self.ns}model:current"

    @property
    def majors_key(self) -> str:
        return f"{self.ns}model:majors"

    # ------------------------------------------------------------------ write

    def _new_version(self) -> str:
        # the counter, or Redis' clock if it is ahead; never an id a stored version has (the counter may be lost)
        return f"v{int(self._new_id(keys=[f'{self.ns}model:seq'], args=[self.ns]))}"

    def _write_blob(self, version: str, part: str, data: bytes) -> int:
        """``data`` as chunks of at most ``chunk_bytes``, one command each (paced); returns the number of chunks."""
        chunks = max(1, -(-len(data) // self.chunk_bytes))
        view, started = memoryview(data), time.monotonic()
        for i in range(chunks):
            if i:
                _pace(started, i * self.chunk_bytes, self.write_mb_s)
            self.r.set(self.key(version, f"{part}:{i}"), bytes(view[i * self.chunk_bytes:(i + 1) * self.chunk_bytes]))
        return chunks

    def _read_blob(self, version: str, part: str, chunks: int) -> bytes:
        parts, started, done = [], time.monotonic(), 0
        for i in range(chunks):
            if i:
                _pace(started, done, self.read_mb_s)
            parts.append(self.r.get(self.key(version, f"{part}:{i}")))
            done += len(parts[-1] or b"")
        if any(p is None for p in parts):
            raise LookupError(f"model version {version} is incomplete in the registry ({part})")
        return b"".join(parts)

    def publish_major(self, gru: GRU4Rec, ranker: np.ndarray, explorers: np.ndarray, parent: str | None = None,
                      summary: dict | None = None, kind: str = "major") -> str:
        """Store a full model (GRU4Rec + embeddings + ranker) as a new, not yet promoted, version.

        Raises :class:`InvalidModel` (and stores nothing) if a weight is not finite, the ranker does not
        fit the GRU, or the GRU blob does not load back."""
        ranker, explorers = np.asarray(ranker, dtype=np.float32), np.asarray(explorers, dtype=np.float32)
        check_gru(gru)
        check_ranker(ranker, explorers, gru.model.layers[-1])
        buf = io.BytesIO()
        gru.save(buf, accumulators=False)  # what scoring needs; the accumulators only a warm start reads
        try:
            GRU4Rec.load(io.BytesIO(buf.getvalue()), device="cpu")
        except Exception as err:  # noqa: BLE001 - whatever torch raises, the blob is not publishable
            raise InvalidModel(f"the GRU4Rec blob does not load back: {err}") from err
        version = self._new_version()
        emb, bias, ids = gru.item_embeddings()
        chunks = {"gru": self._write_blob(version, "gru", buf.getvalue()),
                  "emb": self._write_blob(version, "emb", emb.astype(np.float32).tobytes()),
                  "items": self._write_blob(version, "items", json.dumps(ids).encode())}
        if gru.accumulators:
            optim = io.BytesIO()
            torch.save(gru.accumulators, optim)
            chunks["optim"] = self._write_blob(version, "optim", optim.getvalue())
        if len(ids) >= self.index_min_items:
            index = CatalogIndex(torch.from_numpy(emb), torch.from_numpy(bias), min_items=0).trained_index()
            if index is not None:
                chunks["index"] = self._write_blob(version, "index", index)
        meta = {"kind": kind, "parent": parent, "created": time.time(), "gru_version": version,
                "n_items": len(ids), "hidden": int(gru.model.layers[-1]), "chunks": chunks, "summary": summary or {}}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.key(version, "ranker"), ranker.tobytes())
        pipe.set(self.key(version, "explorer"), np.ascontiguousarray(explorers).tobytes())
        pipe.set(self.key(version, "meta"), json.dumps(meta))  # last: a version exists once its meta does
        pipe.rpush(f"{self.ns}model:versions", version)
        pipe.execute()
        return version

    def publish_minor(self, parent: str, ranker: np.ndarray, explorers: np.ndarray, summary: dict | None = None) -> str:
        """A DBGD/MGD step: new ranker weights (W and its explorers, one row each) on the parent's GRU and
        embeddings (referenced, not copied)."""
        parent_meta = self.meta(parent)
        ranker, explorers = np.asarray(ranker, dtype=np.float32), np.asarray(explorers, dtype=np.float32)
        check_ranker(ranker, explorers, parent_meta.get("hidden") or self._hidden(parent_meta))
        version = self._new_version()
        meta = {"kind": "minor", "parent": parent, "created": time.time(), "gru_version": parent_meta["gru_version"],
                "n_items": parent_meta.get("n_items"), "hidden": parent_meta.get("hidden"), "summary": summary or {}}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.key(version, "ranker"), ranker.tobytes())
        pipe.set(self.key(version, "explorer"), np.ascontiguousarray(explorers).tobytes())
        pipe.set(self.key(version, "meta"), json.dumps(meta))
        pipe.rpush(f"{self.ns}model:versions", version)
        pipe.execute()
        return version

    def _hidden(self, meta: dict) -> int:
        return int(self._load_gru(meta["gru_version"]).model.layers[-1])

    def check(self, version: str) -> dict:
        """Check that ``version`` loads and its weights are finite; its meta, or :class:`InvalidModel`.

        A GRU this registry has checked before (a minor version's parent) is not read again: versions are
        immutable, and DBGD promotes a minor version every few hundred slates (reading and checking the
        Diginetica GRU blob each time took ~8% of a busy worker's samples)."""
        meta = self.meta(version)
        gru_version = meta["gru_version"]
        try:
            if gru_version in self._checked_grus and meta.get("hidden"):
                ranker, explorers = self.ranker_weights(version)
                hidden = int(meta["hidden"])
            else:
                mv = self.load(version)
                check_gru(mv.gru)
                self._checked_grus.add(gru_version)
                ranker, explorers, hidden = mv.ranker, mv.explorers, mv.gru.model.layers[-1]
        except LookupError:
            raise
        except Exception as err:  # noqa: BLE001 - a blob torch or numpy cannot read
            raise InvalidModel(f"{version} does not load: {err}") from err
        check_ranker(ranker, explorers, hidden)
        return meta

    def promote(self, version: str, based_on: str | None, check: bool = True) -> str | None:
        """Make ``version`` current if ``based_on`` still is (None: if nothing is); return the version replaced.

        Raises :class:`StaleBase` when another version became current meanwhile, :class:`InvalidModel`
        when the version does not load or its weights are not finite, and LookupError when it does not exist."""
        kind = (self.check(version) if check else self.meta(version))["kind"]
        ok, previous = self._promote(keys=[self.current_key, self.key(version, "meta"), self.majors_key],
                                     args=[version, based_on or "", "1" if kind == "major" else "0"])
        previous = previous.decode() if isinstance(previous, bytes) else previous
        if not ok:
            raise StaleBase(version, based_on, previous or None)
        self._prune()
        return previous or None

    def previous_major(self, version: str | None = None) -> str | None:
        """The major version promoted before the one ``version`` (default: current) is built on."""
        version = version or self.current_version()
        if version is None:
            return None
        gru_version = self.meta(version)["gru_version"]
        majors = [v.decode() for v in self.r.lrange(self.majors_key, 0, -1)]
        if gru_version not in majors:  # current is built on a major promoted outside the list (pruned): the newest
            return majors[-1] if majors else None
        at = majors.index(gru_version)
        return majors[at - 1] if at > 0 else None

    def rollback(self, to: str | None = None, based_on: str | None = None) -> str:
        """Point ``model:current`` back at ``to`` (default: the previous major version) by compare-and-set.

        ``based_on`` (default: the current version as read now) is the version the caller decided on."""
        current = based_on or self.current_version()
        if current is None:
            raise LookupError("no current version to roll back from")
        target = to or self.previous_major(current)
        if not target or not self.r.exists(self.key(target, "meta")):
            raise LookupError(f"cannot roll back from {current}: version {target!r} is not in the registry")
        self.promote(target, based_on=current)
        log.info("rolled back from %s to %s", current, target)
        return target

    def _prune(self) -> None:
        """Keep the newest ``keep`` versions, the current one, the last ``keep_majors`` majors, and their GRUs."""
        versions = self.versions()
        majors = [v.decode() for v in self.r.lrange(self.majors_key, 0, -1)]
        if len(versions) <= self.keep and len(majors) <= self.keep_majors:
            return
        current = self.current_version()
        kept = set(versions[-self.keep:]) | set(majors[-self.keep_majors:]) | ({current} if current else set())
        metas = self.r.mget([self.key(v, "meta") for v in kept])  # one round trip: DBGD prunes every round
        kept |= {json.loads(m)["gru_version"] for m in metas if m is not None}
        for v in versions:
            if v not in kept:
                self._delete(v)
                self.r.lrem(f"{self.ns}model:versions", 0, v)
        for v in majors:
            if v not in kept:
                self.r.lrem(self.majors_key, 0, v)

    def _delete(self, version: str) -> None:
        raw = self.r.get(self.key(version, "meta"))
        chunks = json.loads(raw).get("chunks", {}) if raw is not None else {}
        keys = [self.key(version, p) for p in _PARTS]
        keys += [self.key(version, f"{b}:{i}") for b in _BLOBS for i in range(int(chunks.get(b, 0)))]
        self.r.unlink(*keys)  # freed in Redis' background thread: a large blob does not block other clients

    # ------------------------------------------------------------------ read

    def current_version(self) -> str | None:
        v = self.r.get(self.current_key)
        return v.decode() if v is not None else None

    def versions(self) -> list[str]:
        return [v.decode() for v in self.r.lrange(f"{self.ns}model:versions", 0, -1)]

    def majors(self) -> list[str]:
        """Major versions in the order they were first promoted (those still kept)."""
        return [v.decode() for v in self.r.lrange(self.majors_key, 0, -1)]

    def meta(self, version: str) -> dict:
        raw = self.r.get(self.key(version, "meta"))
        if raw is None:
            raise LookupError(f"model version {version} is not in the registry")
        return json.loads(raw)

    def gru_blob(self, gru_version: str) -> bytes:
        """The serialised GRU4Rec of a major version (joined from its chunks), without its optimiser's state."""
        meta = self.meta(gru_version)
        return self._read_blob(gru_version, "gru", int(meta.get("chunks", {}).get("gru", 1)))

    def embeddings(self, gru_version: str) -> np.ndarray:
        """The item embeddings of a major version, (items, hidden) float32."""
        meta = self.meta(gru_version)
        raw = self._read_blob(gru_version, "emb", int(meta.get("chunks", {}).get("emb", 1)))
        return np.frombuffer(raw, dtype=np.float32).reshape(int(meta["n_items"]), -1)

    def _load_gru(self, gru_version: str, device: str | None = "cpu") -> GRU4Rec:
        return GRU4Rec.load(io.BytesIO(self.gru_blob(gru_version)), device=device)

    def training_gru(self, gru_version: str) -> GRU4Rec:
        """A major version's GRU4Rec with its optimiser's accumulators: what a warm-started retrain continues from.

        Scoring never needs them, so they are a blob of their own: a process switching to the version reads
        half the bytes (17 of 34 MB for Diginetica with 100 units)."""
        gru = self._load_gru(gru_version)
        chunks = int(self.meta(gru_version).get("chunks", {}).get("optim", 0))
        if chunks:
            gru.accumulators = dict(torch.load(io.BytesIO(self._read_blob(gru_version, "optim", chunks)),
                                               map_location="cpu", weights_only=True))
        return gru

    def ranker_weights(self, version: str) -> tuple[np.ndarray, np.ndarray]:
        """(W, explorers (n, d)) of a version without loading its GRU: what the DBGD rounds need."""
        ranker, explorer = self.r.mget(self.key(version, "ranker"), self.key(version, "explorer"))
        if ranker is None or explorer is None:
            raise LookupError(f"model version {version} has no ranker weights")
        return _weights(ranker, explorer)

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
            return ModelVersion(version, meta, loaded.gru, *_weights(ranker, explorer), loaded.index)
        gru = self._load_gru(meta["gru_version"], device)
        return ModelVersion(version, meta, gru, *_weights(ranker, explorer), self.trained_index(meta["gru_version"]))

    def trained_index(self, gru_version: str) -> bytes | None:
        """The recall index's trained lists stored with a major version, or None (a small catalog, or a version
        published before they were stored)."""
        chunks = int(self.meta(gru_version).get("chunks", {}).get("index", 0))
        return self._read_blob(gru_version, "index", chunks) if chunks else None
