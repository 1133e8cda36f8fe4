"""The foundation's real path: clicks -> worker -> slates / dead letters, on a real broker."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from collections import Counter

import pytest

from stream.records import DeadLetter, Recommendation
from tests.kafka_helpers import ServiceProcess, consume, produce

pytestmark = pytest.mark.integration


def _click(session: str, item: str, ts: float) -> bytes:
    return json.dumps({"session_id": session, "item_id": item, "ts": ts, "event_type": "click"}).encode()


MALFORMED: dict[str, tuple[bytes | None, str]] = {
    # name: (raw value, a fragment the dead letter's reason must contain)
    "bad json": (b'{"session_id": "s", "item_id": ', "Invalid JSON"),
    "not json at all": (b"\xff\xfe\x00garbage", "Invalid JSON"),
    "missing item": (b'{"session_id": "s", "ts": 1.0}', "item_id: Field required"),
    "item is a number": (b'{"session_id": "s", "item_id": 7, "ts": 1.0}', "item_id: Input should be a valid string"),
    "ts is text": (b'{"session_id": "s", "item_id": "7", "ts": "yesterday"}', "ts:"),
    "bad event type": (b'{"session_id": "s", "item_id": "7", "ts": 1.0, "event_type": "hover"}', "event_type"),
    "empty session": (b'{"session_id": "", "item_id": "7", "ts": 1.0}', "session_id"),
    "array": (b"[1, 2, 3]", "record"),
    "oversized": (json.dumps({"session_id": "s", "item_id": "7", "ts": 1.0, "pad": "x" * 50_000}).encode(), "exceeds"),
    "null value": (None, "empty record"),
}


def test_every_valid_click_gets_one_slate_and_every_malformed_one_a_dead_letter(services, topics, stream_env, prefix, tmp_path):
    rng = random.Random(7)
    sessions = [f"sess-{i}" for i in range(25)]
    valid = [(s, str(rng.randint(1, 40))) for s in sessions for _ in range(rng.randint(2, 8))]
    rng.shuffle(valid)
    records: list[tuple[bytes | None, bytes | None]] = []
    kinds: list[str] = []
    bad = list(MALFORMED.items())
    for i, (session, item) in enumerate(valid):
        records.append((session.encode(), _click(session, item, 1_700_000_000 + i)))
        kinds.append("valid")
        if i % 15 == 3 and bad:  # interleave malformed records with valid ones
            name, (raw, _) = bad.pop()
            records.append((b"bad", raw))
            kinds.append(name)
    for name, (raw, _) in bad:
        records.append((b"bad", raw))
        kinds.append(name)

    worker = ServiceProcess(["stream", "worker"], stream_env, tmp_path / "worker.log").start()
    try:
        placed = produce(services.kafka, f"{prefix}clicks", records)
        assert len(placed) == len(records)
        bad_at = {placed[i]: kind for i, kind in enumerate(kinds) if kind != "valid"}

        got = consume(
            services.kafka, [f"{prefix}recommendations", f"{prefix}dead-letters"],
            until=lambda r: len(r[f"{prefix}recommendations"]) >= len(valid)
            and len(r[f"{prefix}dead-letters"]) >= len(MALFORMED),
            timeout=120, settle=3.0,
        )
        assert worker.alive(), f"worker died:\n{worker.log()[-3000:]}"

        slates = [Recommendation.model_validate(v) for _, v, _, _ in got[f"{prefix}recommendations"]]
        want_per_session = Counter(s for s, _ in valid)
        got_per_session = Counter(s.session_id for s in slates)
        assert got_per_session == want_per_session, "each valid click must get exactly one slate"
        assert all(k == s.session_id.encode() for (k, *_), s in zip(got[f"{prefix}recommendations"], slates))
        assert all(s.source == "stream" and s.items and len(s.items) == len(s.scores) for s in slates)
        assert len({s.impression_id for s in slates}) == len(slates)
        # the placeholder ranking really is "most clicked so far": scores never increase down a slate
        assert all(s.scores == sorted(s.scores, reverse=True) for s in slates)

        letters = [DeadLetter.model_validate(v) for _, v, _, _ in got[f"{prefix}dead-letters"]]
        by_place = {(d.partition, d.offset): d for d in letters}
        assert len(letters) == len(MALFORMED) == len(by_place)
        assert set(by_place) == set(bad_at)
        for place, kind in bad_at.items():
            letter = by_place[place]
            assert letter.topic == f"{prefix}clicks"
            assert MALFORMED[kind][1] in letter.error, (kind, letter.error)
        oversized = next(d for p, d in by_place.items() if bad_at[p] == "oversized")
        assert oversized.raw_size > 50_000

        # the worker is still serving after all that
        produce(services.kafka, f"{prefix}clicks", [(b"late", _click("late", "1", time.time()))])
        late = consume(services.kafka, [f"{prefix}recommendations"],
                       until=lambda r: any(k == b"late" for k, *_ in r[f"{prefix}recommendations"]), timeout=60)
        assert any(k == b"late" for k, *_ in late[f"{prefix}recommendations"])
    finally:
        worker.stop()


def test_plain_kafka_client_reads_slates_as_json(services, topics, stream_env, prefix, tmp_path):
    """kcat (Debian's plain Kafka client) reads `recommendations` as JSON: any client can subscribe."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: install it (Debian: apt-get install kcat); `make setup` does"
    worker = ServiceProcess(["stream", "worker"], stream_env, tmp_path / "worker.log").start()
    try:
        # three sessions click item 9 first: an item outside any catalog counts once that many did (models/newitems.py)
        produce(services.kafka, f"{prefix}clicks", [(f"w{n}".encode(), _click(f"w{n}", "9", 0.5)) for n in range(3)])
        consume(services.kafka, [f"{prefix}recommendations"], timeout=90,  # answered (partitions are not ordered)
                until=lambda r: len(r[f"{prefix}recommendations"]) >= 3)
        produce(services.kafka, f"{prefix}clicks", [(b"k1", _click("k1", "9", 1.0)), (b"k2", _click("k2", "9", 2.0))])
        out = subprocess.run(
            [kcat, "-b", services.kafka, "-t", f"{prefix}recommendations", "-C", "-o", "beginning", "-c", "5",
             "-q", "-f", "%k\t%s\n"],
            capture_output=True, text=True, timeout=90, check=True,
        ).stdout
        rows = [line.split("\t", 1) for line in out.strip().splitlines() if not line.startswith("w")]
        assert sorted(k for k, _ in rows) == ["k1", "k2"]
        for key, value in rows:
            slate = Recommendation.model_validate_json(value)
            assert slate.session_id == key and slate.items[0] == "9"
    finally:
        worker.stop()
