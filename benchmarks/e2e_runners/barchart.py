"""Barchart rows for the end-to-end benchmark (``benchmarks/e2e.py``): ``EventGateway.create_events`` with lists
and ``EventBatcher.push`` one event at a time, with the compiled core and with the pure-Python twin.

The events are Barchart events of about 250 bytes (``{"customer","product","type","version","timestamp",
"context"}``), built as the run goes like the other rows' events; the sink counts them by ``"timestamp":`` (once per
event). The sink answers ``{}`` on the Barchart path: every reply is still read, and delivery is what the sink
counted. Standalone, ``python benchmarks/e2e_runners/barchart.py [--events N]`` runs the same rows against the
real hub (``eventpush serve --sink``, which answers the created events) and checks the created count of every reply.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections import deque
from typing import Any, Dict, Iterator, List

_SYMBOLS = ["AAPL", "MSFT", "TSLA", "GOOG", "AMZN", "NVDA", "META", "NFLX"]
# 64 variants of about 250 bytes once stamped with a 13-digit timestamp
_TEMPLATES = [
    {"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-SYMBOL-ADDED", "version": "6.0.0",
     "context": [f"user-{1000 + k:06d}", f"watchlist-{k * 7919 % 100000:05d}", _SYMBOLS[k % 8],
                 "n" * (79 - len(_SYMBOLS[k % 8]))]}
    for k in range(64)
]
BATCH = 1000
MARKER = b'"timestamp":'


def barchart_chunks(n: int, size: int) -> Iterator[List[Dict[str, Any]]]:
    """Fresh Barchart events, ``n`` in all, in lists of at most ``size``."""
    import time

    t = _TEMPLATES
    for start in range(0, n, size):
        now = int(time.time() * 1000)
        out = []
        for i in range(start, min(n, start + size)):
            e = t[i & 63].copy()
            e["timestamp"] = now
            out.append(e)
        yield out


def _use_core(impl: str) -> None:
    """Make the face encode with ``impl`` (each row runs in a fresh process, so this is the row's whole world)."""
    import eventpush

    if impl == "compiled":
        from eventpush._core import Encoder
    else:
        from eventpush._core_py import Encoder
    eventpush.Encoder = Encoder


def _base(url: str) -> str:
    return url if url.rstrip("/").endswith("/barchart") else url.rstrip("/") + "/barchart"


def _gateway(impl: str):
    def run(ctx: Any) -> Dict[str, Any]:
        from eventpush.barchart import EventGateway

        _use_core(impl)
        delivered = requests = 0
        window: deque = deque()
        with EventGateway.for_endpoint(_base(ctx.url), concurrency=4, max_connections=4) as gateway:
            for chunk in barchart_chunks(ctx.n, BATCH):
                window.append((len(chunk), gateway.create_events(chunk)))
                requests += 1
                while window and (len(window) > 8 or window[0][1].done()):
                    n, fut = window.popleft()
                    reply = fut.result()  # read every reply; a list of created events from a real server
                    delivered += len(reply) if isinstance(reply, list) else n
            while window:
                n, fut = window.popleft()
                reply = fut.result()
                delivered += len(reply) if isinstance(reply, list) else n
        assert delivered == ctx.n, delivered
        return {"client_delivered": delivered, "batches": requests}

    return run


def _batcher(impl: str):
    def run(ctx: Any) -> Dict[str, Any]:
        from eventpush.barchart import EventBatcher, EventGateway

        _use_core(impl)
        created = [0]
        lock = threading.Lock()

        def callback(events: List[Any]) -> None:
            with lock:
                created[0] += len(events)

        with tempfile.TemporaryDirectory() as spool:
            gateway = EventGateway.for_endpoint(_base(ctx.url))
            batcher = EventBatcher(gateway, callback, interval=0.05, max_batch_events=5000, spool_dir=spool)
            batcher.start()
            push = batcher.push
            for chunk in barchart_chunks(ctx.n, 5000):
                for ev in chunk:
                    push(ev)
            batcher.close(timeout=600)
            gateway.dispose()
        st = batcher.stats
        assert st["delivered"] == ctx.n and st["spooled"] == 0 and st["rejected"] == 0, st
        return {"client_delivered": st["delivered"], "batches": st["batches"], "callback_events": created[0]}

    return run


def _prepare() -> None:
    import eventpush.barchart  # noqa: F401


_NOTE = ("barchart rows push Barchart events (~250 B, {\"events\": [...]} bodies) instead of the Connect-shaped "
         "events of the other rows")

ROWS = [
    {"name": "eventpush.barchart EventGateway.create_events, compiled (1,000 per call)", "run": _gateway("compiled"),
     "marker": MARKER, "requires": ("eventpush._core", "eventpush.barchart"), "prepare": _prepare, "note": _NOTE},
    {"name": "eventpush.barchart EventBatcher.push(), compiled", "run": _batcher("compiled"), "marker": MARKER,
     "requires": ("eventpush._core", "eventpush.barchart"), "prepare": _prepare},
    {"name": "eventpush.barchart EventGateway.create_events, twin (1,000 per call)", "run": _gateway("twin"),
     "marker": MARKER, "requires": ("eventpush.barchart",), "prepare": _prepare},
    {"name": "eventpush.barchart EventBatcher.push(), twin", "run": _batcher("twin"), "marker": MARKER,
     "requires": ("eventpush.barchart",), "prepare": _prepare},
]


class _Ctx:
    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.n = n


def main(argv: Any = None) -> int:
    """Run the rows against the real hub (``eventpush serve --sink``) and check its own count."""
    import time

    from eventpush.bench.embedded import EmbeddedHub

    p = argparse.ArgumentParser(description="Barchart rows against the hub")
    p.add_argument("--events", type=int, default=200_000)
    args = p.parse_args(argv)
    print(f"{'row':74} {'events':>9} {'events/s':>10} {'CPU s/1M':>9}")
    with EmbeddedHub() as hub:
        for row in ROWS:
            before = (hub.stats() or {}).get("events", 0)
            c0 = time.process_time()
            t0 = time.perf_counter()
            row["run"](_Ctx(hub.base_url, args.events))
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
            counted = (hub.stats() or {}).get("events", 0) - before
            assert counted == args.events, (row["name"], counted)
            print(f"{row['name']:74} {args.events:>9} {args.events / wall:>10,.0f} {cpu / args.events * 1e6:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.path[:] = [q for q in sys.path if os.path.abspath(q or os.curdir) != os.path.dirname(os.path.abspath(__file__))]
    raise SystemExit(main())
