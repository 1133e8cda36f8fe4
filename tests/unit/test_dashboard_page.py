"""The dashboard page renders what it receives as text, never as markup.

Its labels and tables carry fields of ``metrics`` and ``model-updates`` records (model versions, reasons), and
anyone who can write those topics writes them: a field holding ``<img src=x onerror=...>`` must show as those
characters, not run.  The page is plain JavaScript without a build, so the check is on its source: none of the
DOM sinks that parse HTML appear in it.
"""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "serving" / "dashboard.html"
HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|createContextualFragment")


def test_the_dashboard_script_uses_no_html_parsing_sink():
    script = "\n".join(re.findall(r"<script[^>]*>(.*?)</script>", PAGE.read_text(), flags=re.S))
    assert "textContent" in script  # what it uses instead (and the regex found the script at all)
    found = [(n, line.strip()) for n, line in enumerate(script.splitlines(), 1) if HTML_SINKS.search(line)]
    assert not found, f"HTML sinks in serving/dashboard.html: {found}"
