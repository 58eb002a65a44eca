"""The README section of eventpush.barchart (the seed's examples in Python) runs as written, against the hub.

The section lives in tests/barchart/README_barchart.md (so it ships with the tests) and is meant to be pasted into
the top-level README.md; once it is there, the copy in README.md runs too. The only substitution: the staging / production factories point at the hub on 127.0.0.1 (their URLs are checked
in test_bc_gateway.py), so nothing leaves the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventpush.barchart import EventGateway
from support.readme import blocks, section

HERE = Path(__file__).resolve().parent
SECTION = HERE / "README_barchart.md"
TITLE = "## Barchart Event Tracking"


def sources():
    found = [(str(SECTION), SECTION.read_text(encoding="utf-8"))]
    root = HERE.parents[1] / "README.md"
    if root.exists():
        text = root.read_text(encoding="utf-8")
        if TITLE in text:
            found.append((str(root), section(text, TITLE[3:])))
    return found


@pytest.mark.parametrize("source", sources(), ids=lambda s: Path(s[0]).name)
def test_readme_examples_run_against_the_hub(hub, monkeypatch, tmp_path, capsys, source) -> None:
    path, text = source
    monkeypatch.setenv("EVENTPUSH_SPOOL_DIR", str(tmp_path))  # the default spool location, kept out of ~/.cache
    local = classmethod(lambda cls, **kw: EventGateway.for_endpoint(hub.base_url))
    for name in ("for_staging", "for_production", "for_development"):
        monkeypatch.setattr(EventGateway, name, local)
    code = blocks(text)
    assert len(code) == 7
    before = len(hub.stored())
    namespace: dict = {}
    for block in code:
        exec(compile(block, path, "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "Sent [ 3 ] event(s) to the Barchart Event Tracking Service." in out
    assert "Sent [ 1 ] event(s) to the Barchart Event Tracking Service." in out
    assert "1 event(s) created" in out
    stored = hub.stored()[before:]
    # 3 (immediate) + 1 (await) + 1 (raw API) + 3 (batcher) + 1 (context manager)
    assert len(stored) == 9
    assert [e["context"] for e in stored[:3]] == [
        ["user-123", "watchlist-456", "AAPL"], ["user-123", "watchlist-456", "MSFT"],
        ["user-123", "watchlist-456", "TSLA"],
    ]  # fmt: skip
    assert stored[-2]["context"] == ["user-123", "watchlist-456"]  # the lazy generator used the factory cache
    namespace["event_gateway"].dispose()
