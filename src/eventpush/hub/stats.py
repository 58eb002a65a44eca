"""One process's counters behind ``GET /stats`` (with ``--workers N`` the answering worker adds up every
worker's snapshot: :mod:`eventpush.hub.workers`)."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

__all__ = ["Stats"]

_WINDOW = 60
#: Collections counted by name; beyond that (e.g. a client inventing names) they are counted under OTHER, so the
#: counters cannot grow without bound.
MAX_COLLECTIONS = 10_000
OTHER = "(other)"


class Stats:
    """Counts per API and collection, bytes, rejections, and a 60-slot per-second ring for the ingest rate."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.rejected_requests = 0
        self.bytes_in = 0
        self.apis: Dict[str, Dict[str, Any]] = {
            api: {"events": 0, "duplicates": 0, "rejected": 0, "bytes": 0, "requests": 0, "collections": {}}
            for api in ("connect", "barchart")
        }
        self._slots = [0] * _WINDOW
        self._slot_sec = [0] * _WINDOW

    def request(self, nbytes: int, rejected: bool) -> None:
        """Count one HTTP request (any route)."""
        self.requests += 1
        self.bytes_in += nbytes
        if rejected:
            self.rejected_requests += 1

    def events(self, api: str, collection: str, stored: int, duplicates: int, rejected: int, nbytes: int) -> None:
        """Count the outcome of one request's events in one collection."""
        a = self.apis[api]
        a["events"] += stored
        a["duplicates"] += duplicates
        a["rejected"] += rejected
        a["bytes"] += nbytes
        colls = a["collections"]
        c = colls.get(collection)
        if c is None:
            if len(colls) >= MAX_COLLECTIONS:
                collection = OTHER
                c = colls.get(OTHER)
            if c is None:
                c = colls[collection] = {"events": 0, "duplicates": 0, "rejected": 0, "bytes": 0}
        c["events"] += stored
        c["duplicates"] += duplicates
        c["rejected"] += rejected
        c["bytes"] += nbytes
        if stored:
            sec = int(time.time())
            i = sec % _WINDOW
            if self._slot_sec[i] != sec:
                self._slot_sec[i] = sec
                self._slots[i] = 0
            self._slots[i] += stored

    def api_request(self, api: str) -> None:
        self.apis[api]["requests"] += 1

    def rate(self) -> float:
        """Events stored per second over the last minute (over the uptime when shorter)."""
        now = int(time.time())
        total = sum(n for n, s in zip(self._slots, self._slot_sec) if now - _WINDOW < s <= now)
        span = min(_WINDOW, max(1.0, time.time() - self.started))
        return total / span

    def snapshot(self, **extra: Any) -> Dict[str, Any]:
        """The ``/stats`` document."""
        doc: Dict[str, Any] = {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "requests": self.requests,
            "rejected_requests": self.rejected_requests,
            "bytes_in": self.bytes_in,
            "events_per_second_1m": round(self.rate(), 3),
            "events": sum(a["events"] for a in self.apis.values()),
            "rejected": sum(a["rejected"] for a in self.apis.values()),
            "apis": self.apis,
        }
        doc.update(extra)
        return doc
