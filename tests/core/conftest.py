"""Fixtures of the encoder-core tests: deterministic clock and random source, encoder factories."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Iterator

import pytest

from core_support import CountingClock, PatternRandom


@pytest.fixture
def clock() -> CountingClock:
    return CountingClock()


@pytest.fixture
def urandom() -> PatternRandom:
    return PatternRandom()


@pytest.fixture
def make(core: ModuleType, clock: CountingClock, urandom: PatternRandom) -> Callable[..., Any]:
    """``make(dialect, **kw)``: an Encoder of the core under test with the deterministic clock and random source."""

    def factory(dialect: Any, **kw: Any) -> Any:
        kw.setdefault("clock", clock)
        kw.setdefault("urandom", urandom)
        return core.Encoder(dialect, **kw)

    return factory


@pytest.fixture
def released() -> Iterator[list]:
    """Batches to release at the end of a test (keeps the buffer bookkeeping honest)."""
    batches: list = []
    yield batches
    for b in batches:
        b.release()
