"""Deterministic clock and random source for the encoder-core tests (importable by the test modules)."""

from __future__ import annotations

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
