import json

import pytest
from hypothesis import given, settings, strategies as st

from stream.records import Click, InvalidRecord, Recommendation, dead_letter, decode_click


def test_valid_click_round_trips():
    raw = {"session_id": "s", "item_id": "i", "ts": 3, "event_type": "purchase", "impression_id": "x", "position": 2}
    click = decode_click(json.dumps(raw).encode())
    assert click == Click(session_id="s", item_id="i", ts=3.0, event_type="purchase", impression_id="x", position=2)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    click = decode_click(b'{"session_id": "s", "item_id": "i", "ts": 1, "referrer": "mail"}')
    assert click.event_type == "click"


@pytest.mark.parametrize("raw, reason", [
    (b'{"session_id": "s", "item_id": 1, "ts": 1}', "item_id: Input should be a valid string"),
    (b'{"session_id": "s", "ts": 1}', "item_id: Field required"),
    (b'{"session_id": "s", "item_id": "i", "ts": -1}', "ts: Input should be greater than or equal to 0"),
    (b'{"session_id": "s", "item_id": "i", "ts": NaN}', "ts"),
    (b'{"session_id": "s", "item_id": "i", "ts": 1, "position": -3}', "position"),
    (b'not json', "Invalid JSON"),
    (None, "empty record"),
])
def test_malformed_clicks_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidRecord, match=reason.replace("(", r"\(")):
        decode_click(raw)


def test_size_limit():
    raw = json.dumps({"session_id": "s", "item_id": "i", "ts": 1, "pad": "x" * 300}).encode()
    with pytest.raises(InvalidRecord, match="exceeds the 256-byte limit"):
        decode_click(raw, max_bytes=256)


def test_dead_letter_keeps_a_bounded_copy_of_the_raw_record():
    letter = dead_letter("clicks", 1, 42, "why", b"\xffabc" * 100, keep=10)
    assert (letter.partition, letter.offset, letter.raw_size, letter.raw_truncated) == (1, 42, 400, True)
    assert letter.raw.startswith("\\xffabc")
    assert json.loads(letter.model_dump_json())["error"] == "why"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_either_parse_or_raise_invalid_record(raw):
    try:
        click = decode_click(raw)
    except InvalidRecord as err:
        assert str(err)
    else:
        assert isinstance(click, Click) and click.session_id and click.item_id


def test_recommendation_is_plain_json():
    rec = Recommendation(session_id="s", impression_id="i", items=["a"], scores=[1.0], model_version="v",
                         source="stream", ts=1.0, latency_ms=2.0)
    assert json.loads(rec.model_dump_json())["teams"] is None
