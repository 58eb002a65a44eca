"""Shared pieces of the encoder-core tests (importable by the test modules): a deterministic clock and random
source, the compiled core when it is in use, and the plain Connect event of the hub bulk-path tests."""

from __future__ import annotations

from typing import Any

from eventpush._envflags import env_flag
from eventpush.dialects import CONNECT_MAX_EVENT_BYTES

#: the compiled core, or None on the pure leg (EVENTPUSH_PURE); tests compare it with the twin when present
CORE_C = None if env_flag("EVENTPUSH_PURE") else __import__("eventpush._core", fromlist=["_core"])
#: the hub's per-event size limit (``eventpush.hub.connect.MAX_EVENT_BYTES``), and a valid timestamp of the hub tests
MAX = CONNECT_MAX_EVENT_BYTES
TS = "2026-01-01T00:00:00.000Z"


def plain(i: int, **extra: Any) -> dict:
    """A Connect event the hub's bulk path must take: id, timestamp and ordinary values."""
    ev = {"id": f"id-{i}", "timestamp": TS, "user": f"u{i}", "value": 12.5, "props": {"page": "/", "ab": [1, 2]}}
    ev.update(extra)
    return ev

#: 2015-08-01T00:00:00.123456Z in microseconds
FIXED_MICROS = 1438387200_123456


class CountingClock:
    """A clock returning fixed microseconds, counting its calls."""

    def __init__(self, micros: int = FIXED_MICROS) -> None:
        self.micros = micros
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.micros


class PatternRandom:
    """``urandom`` stand-in: deterministic bytes (a running counter), recording each request size."""

    def __init__(self) -> None:
        self.requests: list = []
        self._next = 0

    def __call__(self, n: int) -> bytes:
        self.requests.append(n)
        out = bytes((self._next + i) % 256 for i in range(n))
        self._next = (self._next + n) % 256
        return out
