"""The front door holds: the README stays short, and its links and commands point at things that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamrec.cli import VERBS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_fits_on_a_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_that_exists(doc):
    links = re.findall(r"\]\(([^)\s]+)\)", doc.read_text())
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:|#", link)]
    missing = [link for link in local if not (doc.parent / link).exists()]
    assert not missing, f"{doc.name} links to {missing}"


def test_the_readmes_commands_exist():
    text = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    used_targets = set(re.findall(r"`?make ([a-z-]+)", text))
    assert used_targets and used_targets <= targets, used_targets - targets
    verbs = set(re.findall(r"streamrec ([a-z-]+)", text))
    assert verbs <= set(VERBS), verbs - set(VERBS)
