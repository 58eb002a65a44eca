"""Fixtures for the delivery tests: real fault-injecting servers on 127.0.0.1 and short retry policies."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterator, List

import pytest

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (_TESTS, os.path.dirname(_TESTS)):  # `support` and `tests.support` both importable
    if _p not in sys.path:
        sys.path.insert(0, _p)

from support import EventServer, Faults  # noqa: E402

from dl_helpers import FAST_RETRY  # noqa: E402
from eventpush.transport import Retry  # noqa: E402


@pytest.fixture
def fast_retry() -> Retry:
    return FAST_RETRY


@pytest.fixture
def make_server() -> Iterator[Callable[..., EventServer]]:
    """``make_server(kind="collections", **fault_settings)`` → a started :class:`EventServer`, stopped after the
    test."""
    started: List[EventServer] = []

    def make(kind: str = "collections", **faults: Any) -> EventServer:
        s = EventServer(kind, faults=Faults(**faults))
        s.start()
        started.append(s)
        return s

    try:
        yield make
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def server(make_server: Callable[..., EventServer]) -> EventServer:
    """A well-behaved Connect-style server."""
    return make_server("collections")


@pytest.fixture
def spool_dir(tmp_path: Any) -> str:
    d = tmp_path / "spool"
    return str(d)


@pytest.fixture(autouse=True)
def _isolated_default_spool(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batchers built with spool_dir=None must not write into the real user cache."""
    monkeypatch.setenv("EVENTPUSH_SPOOL_DIR", str(tmp_path / "default-spool"))

