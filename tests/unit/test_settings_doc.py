"""docs/operations.md's settings reference is what stream/settings.py generates (`make docs` regenerates it)."""

from __future__ import annotations

from pathlib import Path

from stream import settings_doc
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_settings_reference_is_the_generated_one():
    assert settings_doc.committed(ROOT / "docs" / "operations.md") == settings_doc.reference(), \
        "docs/operations.md's settings reference is out of date: run `make docs`"


def test_every_setting_has_a_row_with_a_description():
    table = settings_doc.reference()
    for name, info in Settings.model_fields.items():
        assert f"| `STREAMREC_{name.upper()}` |" in table
        assert info.description, f"{name} has no description: the reference would say nothing about it"


def test_writing_replaces_only_the_part_between_the_markers(tmp_path):
    doc = tmp_path / "ops.md"
    doc.write_text(f"before\n{settings_doc.BEGIN}\nold table\n{settings_doc.END}\nafter\n")
    assert settings_doc.write(doc) is True
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old table" not in text
    assert settings_doc.committed(doc) == settings_doc.reference()
    assert settings_doc.write(doc) is False  # a second run changes nothing
