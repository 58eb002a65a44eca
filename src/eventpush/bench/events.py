"""Event sources for the bench: deterministic synthetic events per dialect, or a replayed NDJSON file.

Synthetic events come from a pool of templates drawn with ``random.Random(seed)``: the same seed gives the same
event contents (names, numbers, strings, sizes) on every run. Ids and timestamps are *not* part of the seed: the
encoder stamps them fresh on every run (Connect), or the source stamps them when an event is taken (Barchart's
timestamp, NDJSON's ``id``), so that a second run against a storing server is not refused as duplicates.

PERF: events are produced by shallow-copying a template (the Connect rules write ``id`` / ``timestamp`` into the
caller's dict, so a template must never be handed out itself); building a fresh nested event per push would cost
more than encoding it and would measure the generator instead of the client.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence

import orjson

from .. import _barchart_data

__all__ = ["EventSource", "SyntheticSource", "FileSource", "synthetic_template", "encoded_size"]

#: distinct templates in the synthetic pool
POOL_SIZE = 256

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
    "romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
_PAGES = ("/", "/pricing", "/docs", "/docs/quickstart", "/blog", "/signup", "/login", "/account", "/cart")
_COUNTRIES = ("DE", "FR", "US", "GB", "NL", "SE", "JP", "BR", "IN", "CA")


def encoded_size(event: Any) -> int:
    """Bytes of ``event`` as compact JSON (integers beyond 64 bits, which orjson refuses, with all their digits)."""
    try:
        return len(orjson.dumps(event))
    except TypeError:
        return len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _pad_to(event: Dict[str, Any], size: int, rng: random.Random, key: str, overhead: int) -> None:
    """Grow ``event`` with a string under ``key`` so that, once stamped (``overhead`` bytes), it is about
    ``size`` bytes of compact JSON."""
    base = encoded_size(event) + overhead
    missing = size - base - len(key) - 6  # ,"key":"…"
    if missing > 0:
        letters = "abcdefghijklmnopqrstuvwxyz0123456789"
        event[key] = "".join(rng.choice(letters) for _ in range(missing))


def synthetic_template(dialect: str, rng: random.Random, size: int, n: int) -> Any:
    """One synthetic event for ``dialect`` (``connect``/``connect-ruby``, ``barchart``, ``ndjson``/``json-array``)
    of about ``size`` bytes once stamped; ``n`` is its position in the pool."""
    if dialect == "barchart":
        customers = [c["code"] for c in _barchart_data.CUSTOMERS]
        customer = customers[n % len(customers)]
        ev_type = _barchart_data.EVENT_TYPES[rng.randrange(len(_barchart_data.EVENT_TYPES))]
        # plain strings in context: valid without --strict-context; sized up through the last element
        context: List[str] = [f"user-{rng.randrange(10**6)}", rng.choice(_WORDS)]
        event: Dict[str, Any] = {
            "customer": customer,
            "product": ev_type["product"],
            "type": ev_type["code"],
            "version": f"{rng.randrange(1, 9)}.{rng.randrange(20)}.{rng.randrange(50)}",
            "context": context,
        }
        overhead = len(',"timestamp":1700000000000')
        missing = size - encoded_size(event) - overhead - 3
        if missing > 0:
            context.append("".join(rng.choice(_WORDS)[0] for _ in range(missing)))
        return event
    event = {
        "type": rng.choice(("page_view", "click", "signup", "purchase", "search")),
        "user": {"id": f"u{rng.randrange(10**7)}", "country": rng.choice(_COUNTRIES), "plan": rng.choice(_WORDS)},
        "page": rng.choice(_PAGES),
        "amount": round(rng.uniform(0, 500), 2),
        "items": rng.randrange(1, 9),
        "flags": [rng.random() < 0.5, rng.random() < 0.2],
    }
    # what the encoder / source adds: a UUID id and an ISO timestamp (Connect) or a bench id (NDJSON)
    overhead = len(',"id":"00000000-0000-0000-0000-000000000000","timestamp":"2026-01-01T00:00:00.000000"')
    _pad_to(event, size, rng, "note", overhead)
    return event


class EventSource:
    """Where the bench takes events from: ``take()`` gives the next ``(collection, event)``; ``limit`` is the
    number of distinct events when finite (a file replayed once), else ``None``."""

    description = ""
    limit: Optional[int] = None

    def take(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def take_many(self, n: int) -> List[Any]:
        """The next ``n`` events."""
        take = self.take
        return [take() for _ in range(n)]


class SyntheticSource(EventSource):
    """Deterministic synthetic events (see the module docstring); thread-safe enough for one taker per thread
    (each driver thread builds its own source from the same seed and a different ``stream``)."""

    def __init__(self, dialect: str, *, size: int = 250, seed: int = 0, stream: int = 0) -> None:
        self.dialect = dialect
        self.size = size
        self.seed = seed
        rng = random.Random(seed)
        self.templates = [synthetic_template(dialect, rng, size, n) for n in range(POOL_SIZE)]
        self.avg_size = sum(map(encoded_size, self.templates)) / len(self.templates)
        self.description = f"synthetic {dialect} events of ~{size} bytes (seed {seed})"
        self._cycle = itertools.cycle(self.templates[stream % POOL_SIZE:] + self.templates[: stream % POOL_SIZE])
        self._run = uuid.UUID(bytes=os.urandom(16)).hex[:12]
        self._counter = itertools.count()
        self._stream = stream

    def take(self) -> Any:
        template = next(self._cycle)
        event = dict(template)
        if self.dialect == "barchart":
            event["timestamp"] = int(time.time() * 1000)
        elif self.dialect in ("ndjson", "json-array"):
            # no rules stamp these dialects: give each event a unique id so a receiver can deduplicate
            event["id"] = f"{self._run}-{self._stream}-{next(self._counter)}"
        return event


class FileSource(EventSource):
    """Events replayed from an NDJSON file (one JSON value per line; blank lines skipped) or a JSON-array file, read
    exactly as ``eventpush push`` reads its inputs (a UTF-8 byte order mark skipped, integers beyond 64 bits kept
    exact). Cycled when the run asks for more events than the file holds."""

    def __init__(self, path: str, *, cycle: bool = False) -> None:
        from ..cli.push import read_events

        def bad(name: str, lineno: int, reason: str) -> None:
            raise ValueError(f"{path}, line {lineno}: not valid JSON: {reason}")

        try:
            events: List[Any] = [ev for _, ev in read_events(path, bad)]
        except OSError as exc:  # (a directory or an unreadable file: a ValueError of the reader already)
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        if not events:
            raise ValueError(f"{path}: no events")
        self.events = events
        self.path = path
        self.limit = None if cycle else len(events)
        self.avg_size = sum(encoded_size(e) for e in events[:1000]) / min(len(events), 1000)
        self.description = f"{len(events):,} events replayed from {os.path.basename(path)}" + (
            " (cycled)" if cycle else "")
        self._iter: Iterator[Any] = itertools.cycle(events) if cycle else iter(events)

    def take(self) -> Any:
        event = next(self._iter)
        # the Connect rules write id / timestamp into a dict: never let that leak into the replayed original
        return dict(event) if type(event) is dict else event

    def take_many(self, n: int) -> List[Any]:
        """The next ``n`` events (fewer, or none, at the end of a file replayed once)."""
        return [dict(e) if type(e) is dict else e for e in itertools.islice(self._iter, n)]


def split_evenly(total: int, parts: int) -> Sequence[int]:
    """``total`` split into ``parts`` near-equal non-negative integers."""
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]
