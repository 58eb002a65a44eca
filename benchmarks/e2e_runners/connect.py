"""End-to-end rows: ``eventpush.connect.ConnectClient.push_events`` (the connect-python drop-in), to compare with
connect-client 0.1.1's ``ConnectClient.push_events`` (the row in ``peers.py``): the same events, 5,000 per call (the
API's batch limit), the default ``max_workers=2``, the same sink, and the same check (every Future resolved to a
successful response). ``ROWS`` follows the runner interface of ``benchmarks/e2e.py``; the compiled core and the
pure-Python twin each get a row.

Standalone, against the real hub instead of the counting sink (``eventpush serve --sink`` parses and validates
every event, so it costs more per event than the client): ``RUNNERS`` maps a row name to ``fn(url, events, *, batch, concurrency, event_size, seed) ->
{"sent", "delivered", "seconds", "client_cpu"}``, where ``url`` is the hub root (``http://127.0.0.1:PORT``; the
Connect API lives under ``/connect``). Events are generated before the clock starts; ``delivered`` counts the
per-event results with ``success`` (every result is read, as an application checking its pushes would).

Standalone: ``python benchmarks/e2e_runners/connect.py [--events N] [--batch B] [--concurrency C]`` starts an
embedded ``eventpush serve --sink``, runs both rows side by side, checks the hub's own count, prints a table.
The peer is installed with ``pip install --no-deps connect-client==0.1.1`` (it needs ``requests``); its
``connect.security`` module imports pycrypto and is never imported here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, List

from eventpush.bench.events import SyntheticSource

COLLECTION = "bench"
PROJECT, KEY = "bench-project", "bench-key"


def _batches(events: int, batch: int, event_size: int, seed: int) -> List[List[Dict[str, Any]]]:
    source = SyntheticSource("connect", size=event_size, seed=seed)
    out = []
    left = events
    while left > 0:
        n = min(batch, left)
        out.append(source.take_many(n))
        left -= n
    return out


def _drive(client: Any, batches: List[List[Dict[str, Any]]]) -> Dict[str, Any]:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    futures = [client.push_events({COLLECTION: b}) for b in batches]
    delivered = 0
    for f in futures:
        r = f.result()
        if r.success:
            delivered += sum(1 for item in r.results.get(COLLECTION, ()) if item.success)
    seconds = time.perf_counter() - t0
    return {"sent": sum(map(len, batches)), "delivered": delivered, "seconds": seconds,
            "client_cpu": time.process_time() - cpu0}


def run_eventpush(url: str, events: int, *, batch: int, concurrency: int, event_size: int = 250,
                  seed: int = 0) -> Dict[str, Any]:
    """eventpush.connect.ConnectClient (the drop-in), ``max_workers=concurrency``."""
    from eventpush.connect import ConnectClient

    batches = _batches(events, batch, event_size, seed)
    with ConnectClient(PROJECT, KEY, base_url=url + "/connect", max_workers=concurrency) as client:
        return _drive(client, batches)


def run_peer(url: str, events: int, *, batch: int, concurrency: int, event_size: int = 250,
             seed: int = 0) -> Dict[str, Any]:
    """connect-client 0.1.1's ConnectClient, ``max_workers=concurrency``."""
    ConnectClient = _peer_client_class()
    batches = _batches(events, batch, event_size, seed)
    client = ConnectClient(PROJECT, KEY, base_url=url + "/connect", max_workers=concurrency)
    try:
        return _drive(client, batches)
    finally:
        client._executor.shutdown(wait=True)
        client._api._session.close()


def _peer_client_class() -> Any:
    """connect-client's ``connect.client.ConnectClient``. This file is also named ``connect.py``: when its folder
    is on ``sys.path`` (run as a script) it would shadow the peer's ``connect`` package, so that folder is left
    out for the import. ``connect.security`` (pycrypto, which does not build on 3.11) is never imported."""
    here = os.path.dirname(os.path.abspath(__file__))
    shadow = sys.modules.get("connect")
    if shadow is not None and os.path.dirname(os.path.abspath(getattr(shadow, "__file__", "") or "")) == here:
        del sys.modules["connect"]
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        from connect.client import ConnectClient
    finally:
        sys.path[:] = saved
    return ConnectClient


def _e2e_row(impl: str) -> Callable[[Any], Dict[str, Any]]:
    def run(ctx: Any) -> Dict[str, Any]:
        from eventpush import _impl
        from eventpush.connect import ConnectClient

        # the face reads the selected core when it builds an encoder: pick the one this row measures
        _impl.core = _impl.core_c if impl == "compiled" else _impl.core_py
        futures = []
        coll = ctx.collection
        with ConnectClient("project", "key", base_url=ctx.url) as client:
            for chunk in ctx.chunks(5000):  # the API's batch limit, as the connect-client row
                futures.append(client.push_events({coll: chunk}))
            for f in futures:
                resp = f.result()
                if not resp.success:
                    raise RuntimeError(f"eventpush.connect: HTTP {resp.http_status_code}: {resp.error_message}")
        return {"batches": len(futures)}

    return run


def _prepare() -> None:
    import eventpush.connect  # noqa: F401
    from eventpush import _impl  # noqa: F401


ROWS = [
    {"name": "eventpush.connect ConnectClient.push_events (compiled, 5,000 per call)", "run": _e2e_row("compiled"),
     "marker": b'"id":', "requires": ("eventpush._core",), "prepare": _prepare,
     "note": "eventpush.connect rows: the connect-python drop-in, same calls and max_workers=2 as the "
             "connect-client 0.1.1 row."},
    {"name": "eventpush.connect ConnectClient.push_events (pure twin, 5,000 per call)", "run": _e2e_row("pure"),
     "marker": b'"id":', "prepare": _prepare},
]


RUNNERS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "eventpush.connect ConnectClient.push_events": run_eventpush,
    "connect-client 0.1.1 ConnectClient.push_events": run_peer,
}


def main(argv: Any = None) -> int:
    from eventpush.bench.embedded import EmbeddedHub

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events for the eventpush row")
    p.add_argument("--peer-events", type=int, default=20_000, help="events for the connect-client row")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--event-size", type=int, default=250)
    p.add_argument("--rounds", type=int, default=3, help="alternate the rows this many times; best round kept")
    args = p.parse_args(argv)
    best: Dict[str, Dict[str, Any]] = {}
    with EmbeddedHub() as hub:
        for _ in range(args.rounds):
            for name, fn in RUNNERS.items():
                n = args.events if fn is run_eventpush else args.peer_events
                before = (hub.stats() or {}).get("events", 0)
                hub_cpu0 = hub.cpu_seconds()
                row = fn(hub.base_url, n, batch=args.batch, concurrency=args.concurrency,
                         event_size=args.event_size)
                hub_cpu1 = hub.cpu_seconds()
                row["hub_cpu"] = None if hub_cpu0 is None or hub_cpu1 is None else hub_cpu1 - hub_cpu0
                row["hub_counted"] = (hub.stats() or {}).get("events", 0) - before
                assert row["delivered"] == row["sent"] == row["hub_counted"], row
                row["rate"] = row["sent"] / row["seconds"]
                if name not in best or row["rate"] > best[name]["rate"]:
                    best[name] = row
    peer = best["connect-client 0.1.1 ConnectClient.push_events"]["rate"]
    print(f"batch {args.batch}, {args.concurrency} in flight, ~{args.event_size} B events, best of {args.rounds}")
    print(f"{'row':48} {'events':>7} {'events/s':>10} {'client CPU us/ev':>17} {'hub CPU us/ev':>14} "
          f"{'vs peer':>8}")
    for name, row in best.items():
        hub_cpu = "n/a" if row["hub_cpu"] is None else f"{row['hub_cpu'] / row['sent'] * 1e6:.1f}"
        print(f"{name:48} {row['sent']:>7} {row['rate']:>10,.0f} {row['client_cpu'] / row['sent'] * 1e6:>17.1f} "
              f"{hub_cpu:>14} {row['rate'] / peer:>7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
