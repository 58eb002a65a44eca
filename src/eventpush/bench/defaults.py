"""Defaults of ``eventpush bench`` (a light module: the CLI parser reads them without loading the bench)."""

from __future__ import annotations

__all__ = ["DEFAULT_EVENTS", "DEFAULT_BATCH", "DEFAULT_CONCURRENCY", "DEFAULT_EVENT_SIZE"]

#: events per row of the target-less run: sized so the whole run stays well under a minute on a 2-core machine
#: (about 20 s here, the three rows together, hub start included)
DEFAULT_EVENTS = 200_000
#: events per request
DEFAULT_BATCH = 500
#: requests in flight in the target-less run
DEFAULT_CONCURRENCY = 2
#: bytes of a synthetic event as JSON, id and timestamp included
DEFAULT_EVENT_SIZE = 250
