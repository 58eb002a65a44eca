"""The target-less ``eventpush bench``: an embedded hub and one table, eventpush against a plain client.

Rows, in one run, against the same embedded ``eventpush serve --sink`` (which parses, validates and counts every
event and stores nothing), each pushing the same number of synthetic Connect events in batches of the same size
with the same number of requests in flight:

- eventpush with the compiled core (``eventpush.EncoderC``) and with the pure-Python twin (``EncoderPy``): the
  engine as an application uses it (the caller's thread encodes, the ``Sender``'s workers post over the pooled
  ``Transport``), through the closed-model driver of :mod:`eventpush.bench.runner`;
- a baseline written the way a plain client is: ``requests.Session`` + ``json.dumps``, a UUID and an ISO timestamp
  stamped in Python, the reply parsed and every per-event result checked; one session per thread.

"delivered (hub)" is what the hub's ``/stats`` counted during the row, and must equal what the row sent. Client CPU
is ``time.process_time()`` of this process over the row (every thread; the hub is another process), and includes
making the events (a shallow copy of a template per event, the same for every row); hub CPU comes from
``/proc/<pid>/stat`` where available. Both machines' cores are shared by the client and the hub, so events/s
is bounded by whichever is slower; the CPU columns say what each side costs.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional

from .defaults import DEFAULT_BATCH, DEFAULT_CONCURRENCY, DEFAULT_EVENT_SIZE, DEFAULT_EVENTS
from .embedded import EmbeddedHub
from .events import SyntheticSource, split_evenly
from .runner import LoadConfig, run_load

__all__ = ["run_compare", "DEFAULT_EVENTS", "DEFAULT_BATCH", "DEFAULT_CONCURRENCY", "DEFAULT_EVENT_SIZE"]

COLLECTION = "bench"


def _baseline(url: str, events: int, *, batch: int, concurrency: int, event_size: int, seed: int) -> Dict[str, Any]:
    """Push ``events`` with requests + json (see the module docstring); returns sent / delivered / bytes / time."""
    import requests

    sent = [0] * concurrency
    delivered = [0] * concurrency
    nbytes = [0] * concurrency
    errors: List[str] = []
    shares = split_evenly(events, concurrency)

    def work(i: int) -> None:
        try:
            _work(i)
        except Exception as exc:  # reported in the row (and the delivered count shows the shortfall)
            errors.append(f"{type(exc).__name__}: {exc}")

    def _work(i: int) -> None:
        source = SyntheticSource("connect", size=event_size, seed=seed, stream=i)
        with requests.Session() as session:
            session.headers.update({"Content-Type": "application/json"})
            left = shares[i]
            while left > 0 and not stop.is_set():
                n = min(batch, left)
                items = source.take_many(n)
                for ev in items:
                    ev["id"] = str(uuid.uuid4())
                    ev["timestamp"] = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
                body = json.dumps({COLLECTION: items}, separators=(",", ":")).encode()
                r = session.post(url + "/connect/events", data=body, timeout=60)
                sent[i] += n
                nbytes[i] += len(body)
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                else:
                    delivered[i] += sum(1 for res in r.json().get(COLLECTION, ()) if res.get("success"))
                left -= n

    stop = threading.Event()
    # daemon threads and a stop flag: Ctrl-C in the main thread must not wait for a whole row to finish
    threads = [threading.Thread(target=work, args=(i,), name=f"bench-baseline-{i}", daemon=True)
               for i in range(concurrency)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:
        stop.set()
        raise
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {"sent": sum(sent), "delivered": sum(delivered), "bytes": sum(nbytes), "elapsed": elapsed, "cpu": cpu,
            "errors": errors}


def _skipped(name: str, kind: str, reason: str) -> Dict[str, Any]:
    row: Dict[str, Any] = dict.fromkeys(_ROW_KEYS)
    row.update(name=name, kind=kind, skipped=reason, errors=[])
    return row


_ROW_KEYS = ("name", "kind", "skipped", "events", "delivered", "server_counted", "elapsed_s", "events_per_s",
             "mb_per_s", "client_cpu_s", "client_cpu_per_million", "hub_cpu_per_million", "latency_ms", "errors",
             "speedup", "cpu_ratio")


def run_compare(
    *,
    events: int = DEFAULT_EVENTS,
    batch: int = DEFAULT_BATCH,
    concurrency: int = DEFAULT_CONCURRENCY,
    event_size: int = DEFAULT_EVENT_SIZE,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    live: Optional[Callable[[str], Callable[[Dict[str, Any]], None]]] = None,
) -> Dict[str, Any]:
    """Run the comparison (see the module docstring); returns the ``mode: compare`` document.

    ``progress`` gets one line per step; ``live(name)`` may return a tick callback for each eventpush row."""
    import eventpush

    from .. import __version__

    # refused before the hub starts (0 is not "the default": the CLI passes its defaults itself)
    for name, value, least in (("--events", events, 1), ("--batch", batch, 1), ("--concurrency", concurrency, 1),
                               ("--event-size", event_size, 16)):
        if value < least:
            raise ValueError(f"{name} must be at least {least}" + (" bytes" if name == "--event-size" else ""))
    say = progress or (lambda s: None)
    rows: List[Dict[str, Any]] = []
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t_start = time.perf_counter()
    with EmbeddedHub() as hub:
        say(f"embedded hub: eventpush serve --sink on {hub.base_url} (pid {hub.proc.pid})")  # type: ignore[union-attr]

        def measure(name: str, kind: str, fn: Callable[[], Dict[str, Any]]) -> None:
            before = hub.stats()
            hub_cpu0 = hub.cpu_seconds()
            say(f"{name}: pushing {events:,} events …")
            r = fn()
            hub_cpu1 = hub.cpu_seconds()
            after = hub.stats()
            counted = None if before is None or after is None else after["events"] - before["events"]
            hub_cpu = None if hub_cpu0 is None or hub_cpu1 is None else hub_cpu1 - hub_cpu0
            el = max(1e-9, r["elapsed"])
            rows.append({
                "name": name,
                "kind": kind,
                "skipped": None,
                "events": r["sent"],
                "delivered": r["delivered"],
                "server_counted": counted,
                "elapsed_s": round(el, 4),
                "events_per_s": round(r["delivered"] / el, 1),
                "mb_per_s": round(r["bytes"] / el / 1e6, 3),
                "client_cpu_s": round(r["cpu"], 4),
                "client_cpu_per_million": round(r["cpu"] / r["sent"] * 1e6, 3) if r["sent"] else None,
                "hub_cpu_per_million": (round(hub_cpu / r["sent"] * 1e6, 3)
                                        if hub_cpu is not None and r["sent"] else None),
                "latency_ms": r.get("latency_ms"),
                "errors": r["errors"][:5],
                "speedup": None,
                "cpu_ratio": None,
            })

        def engine_row(encoder: Any, name: str) -> Callable[[], Dict[str, Any]]:
            def run() -> Dict[str, Any]:
                cfg = LoadConfig(url=hub.base_url + "/connect", dialect="connect", collection=COLLECTION,
                                 concurrency=concurrency, events=events, batch=batch, event_size=event_size,
                                 seed=seed, encoder=encoder, stats_url=None, retries=0, label=name)
                doc = run_load(cfg, on_tick=live(name) if live else None)
                if doc["interrupted"]:
                    raise KeyboardInterrupt  # Ctrl-C / SIGTERM ends the whole comparison (the hub is stopped)
                errs = [f"{m['count']} × {m['message']}" for m in doc["errors"]["messages"]]
                return {"sent": doc["events"]["sent"], "delivered": doc["events"]["delivered"],
                        "bytes": doc["throughput"]["bytes_sent"], "elapsed": doc["elapsed_s"],
                        "cpu": doc["client_cpu"]["seconds"], "errors": errs, "latency_ms": doc["latency_ms"]}
            return run

        if eventpush.EncoderC is not None:
            measure("eventpush (compiled core)", "eventpush-cython", engine_row(eventpush.EncoderC,
                                                                               "eventpush (compiled core)"))
        else:
            rows.append(_skipped("eventpush (compiled core)", "eventpush-cython",
                                 "the compiled core is not built in this install"))
        measure("eventpush (pure-Python twin)", "eventpush-python", engine_row(eventpush.EncoderPy,
                                                                              "eventpush (pure-Python twin)"))
        try:
            __import__("requests")  # the baseline client
        except ImportError:
            rows.append(_skipped("requests + json (baseline)", "baseline",
                                 "requests is not installed (pip install requests)"))
        else:
            measure("requests + json (baseline)", "baseline",
                    lambda: _baseline(hub.base_url, events, batch=batch, concurrency=concurrency,
                                      event_size=event_size, seed=seed))
        hub_pid = hub.proc.pid  # type: ignore[union-attr]
    base = next((r for r in rows if r["kind"] == "baseline" and not r.get("skipped")), None)
    for r in rows:
        if r.get("skipped"):
            continue
        if base is not None and base["events_per_s"]:
            r["speedup"] = round(r["events_per_s"] / base["events_per_s"], 3)
        if base is not None and base["client_cpu_per_million"] and r["client_cpu_per_million"]:
            r["cpu_ratio"] = round(base["client_cpu_per_million"] / r["client_cpu_per_million"], 3)
    ok = all(r.get("skipped") or (r["server_counted"] == r["events"] and r["delivered"] == r["events"])
             for r in rows)
    return {
        "mode": "compare",
        "schema": "eventpush-bench/1",
        "version": __version__,
        "started_at": started,
        "elapsed_s": round(time.perf_counter() - t_start, 3),
        "hub": {"command": "eventpush serve --sink", "pid": hub_pid},
        "config": {"events_per_row": events, "batch": batch, "concurrency": concurrency, "event_size": event_size,
                   "seed": seed, "dialect": "connect"},
        "all_delivered": ok,
        "rows": rows,
    }
