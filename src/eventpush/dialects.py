"""Dialects: small, declarative descriptions of what one service expects.

A dialect says which rules validate and stamp an event, how a batch body is framed, the limits, the paths and
headers, and how a reply maps back to one result per event. A face picks a dialect; the engine (encoder, sender,
batcher) reads only these fields and never branches on a face's name.

rules
    ``"connect_py"``  connect-python (spec/connect.md §2.3): errors collected per event keyed by leaf name,
                      ``id`` / ``timestamp`` appended and written into the caller's dict when absent, datetimes
                      (in dicts and lists) as ``isoformat()``.
    ``"connect_rb"``  Ruby gem (spec/connect.md §2.4): ``id`` and ``timestamp`` lead the key order, datetimes as
                      UTC ``YYYY-MM-DDTHH:MM:SSZ``, dates as midnight UTC, anchored ``^tp_`` check.
    ``"barchart"``    Barchart (spec/barchart.md §2): only customer, product, type, version, timestamp, context,
                      in that order; codes checked against the enumerations; integer epoch-ms timestamp.
    ``"none"``        no validation or stamping: the event (any JSON value) is serialized as given.

framing
    ``"collections"`` ``{"c1":[e,…],"c2":[…]}``  (Connect batch; events grouped by collection, first-seen order)
    ``"events"``      ``{"events":[e,…]}``       (Barchart)
    ``"ndjson"``      ``e\\ne\\n…``
    ``"array"``       ``[e,…]``

reply
    ``"collections"`` per-collection arrays of ``{"success","duplicate","message"}`` in request order
    ``"created"``     a JSON array of the created events, one per sent event, in order
    ``"status"``      only the HTTP status counts
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Mapping, Optional, Tuple

__all__ = ["Dialect", "CONNECT", "CONNECT_RUBY", "BARCHART", "NDJSON", "JSON_ARRAY", "get_dialect", "DIALECTS"]

CONNECT_MAX_EVENT_BYTES = 64 * 1024
CONNECT_MAX_BATCH_EVENTS = 5000
CONNECT_TOO_LARGE_MESSAGE = "Maximum event size of 64kb exceeded."


@dataclass(frozen=True)
class Dialect:
    """One service's contract, as the engine needs it."""

    name: str
    rules: str
    framing: str
    reply: str = "status"
    content_type: str = "application/json"
    batch_path: str = "/events"
    single_path: Optional[str] = None
    headers: Tuple[Tuple[str, str], ...] = ()
    gzip_allowed: bool = True
    max_event_bytes: Optional[int] = None
    too_large_message: str = "Maximum event size exceeded."
    max_batch_events: Optional[int] = None
    max_batch_bytes: Optional[int] = 4 * 1024 * 1024
    # Barchart only: the known codes, {"customer": frozenset, "product": frozenset, "type": frozenset}
    codes: Optional[Mapping[str, FrozenSet[str]]] = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.rules not in ("connect_py", "connect_rb", "barchart", "none"):
            raise ValueError(f"unknown rules {self.rules!r}")
        if self.framing not in ("collections", "events", "ndjson", "array"):
            raise ValueError(f"unknown framing {self.framing!r}")
        if self.reply not in ("collections", "created", "status"):
            raise ValueError(f"unknown reply {self.reply!r}")
        if self.rules == "barchart" and not self.codes:
            raise ValueError("the barchart rules need the enumeration codes")

    @property
    def needs_collection(self) -> bool:
        """True when every event must name a collection (Connect batches)."""
        return self.framing == "collections"


CONNECT = Dialect(
    name="connect",
    rules="connect_py",
    framing="collections",
    reply="collections",
    batch_path="/events",
    single_path="/events/{collection}",
    gzip_allowed=False,  # spec/connect.md §1.5: the API never documented compression
    max_event_bytes=CONNECT_MAX_EVENT_BYTES,
    too_large_message=CONNECT_TOO_LARGE_MESSAGE,
    max_batch_events=CONNECT_MAX_BATCH_EVENTS,
)

CONNECT_RUBY = Dialect(
    name="connect-ruby",
    rules="connect_rb",
    framing="collections",
    reply="collections",
    batch_path="/events",
    single_path="/events/{collection}",
    headers=(("Accept", "application/json"),),
    gzip_allowed=False,
    max_event_bytes=CONNECT_MAX_EVENT_BYTES,
    too_large_message=CONNECT_TOO_LARGE_MESSAGE,
    max_batch_events=CONNECT_MAX_BATCH_EVENTS,
)


def _barchart_codes() -> Dict[str, FrozenSet[str]]:
    from . import _barchart_data as data

    return {
        "customer": frozenset(c["code"] for c in data.CUSTOMERS),
        "product": frozenset(p["code"] for p in data.PRODUCTS),
        "type": frozenset(t["code"] for t in data.EVENT_TYPES),
    }


BARCHART = Dialect(
    name="barchart",
    rules="barchart",
    framing="events",
    reply="created",
    batch_path="/events",
    headers=(("Accept", "application/json"),),
    codes=_barchart_codes(),
)

NDJSON = Dialect(
    name="ndjson",
    rules="none",
    framing="ndjson",
    reply="status",
    content_type="application/x-ndjson",
    batch_path="/",
)

JSON_ARRAY = Dialect(
    name="json-array",
    rules="none",
    framing="array",
    reply="status",
    batch_path="/",
)

DIALECTS: Dict[str, Dialect] = {d.name: d for d in (CONNECT, CONNECT_RUBY, BARCHART, NDJSON, JSON_ARRAY)}


def get_dialect(name: str) -> Dialect:
    """Look a dialect up by name (``connect``, ``connect-ruby``, ``barchart``, ``ndjson``, ``json-array``)."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; known: {', '.join(sorted(DIALECTS))}") from None
