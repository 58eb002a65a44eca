"""The load drivers: closed model (N requests in flight, as fast as the target answers) and open model (a fixed
timetable of requests at ``rate`` events/s), over the engine (``Encoder`` + ``Sender`` + ``Transport``).

Latency is per request, in microseconds, into a :class:`~eventpush.bench.histogram.Histogram`:

- closed model: from the moment the batch is handed to the sender to the moment its result is in;
- open model: from the batch's *intended* send time on the timetable (``t0 + k * batch / rate``) to its result.
  A slow reply therefore cannot hide the requests that should have gone out meanwhile (no coordinated omission):
  the scheduler never waits for replies, it only sends late when the machine itself is late, and the lateness is
  charged to the latency (and reported on its own as the send lag).

The caller's thread encodes and schedules; the sender's worker threads do the HTTP. Results are tallied from the
futures' callbacks: events delivered / duplicates / rejected as the server reported them per event, retries, and
errors broken down by status and by kind. A sampler thread closes an interval every ``interval`` seconds (the
timeline of the report and the live display).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit, urlunsplit

from .. import errors as ep_errors
from ..cli.push import MAX_SECONDS, exact_target
from ..dialects import get_dialect
from .events import EventSource, FileSource, SyntheticSource
from .embedded import fetch_stats
from .histogram import Histogram

__all__ = ["LoadConfig", "run_load", "is_loopback", "default_stats_url", "LATENCY_PERCENTILES"]

log = logging.getLogger("eventpush.bench")

LATENCY_PERCENTILES = ((50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99_9"))
MAX_MESSAGES = 10


def is_loopback(url: str) -> bool:
    """True when ``url``'s host is ``localhost`` or a loopback address (127.0.0.0/8, ::1). Other names are not
    resolved: a name that is not ``localhost`` counts as remote."""
    host = urlsplit(url).hostname or ""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_stats_url(url: str) -> str:
    """Where an eventpush hub serving ``url`` answers ``GET /stats``: the same scheme, host and port."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/stats", "", ""))


class LoadConfig:
    """Keyword-only settings of one load run (see ``eventpush bench --help`` for each)."""

    def __init__(
        self,
        *,
        url: str,
        dialect: str = "connect",
        project_id: Optional[str] = None,
        api_key: Optional[str] = None,
        collection: str = "bench",
        concurrency: int = 4,
        rate: Optional[float] = None,
        duration: Optional[float] = None,
        events: Optional[int] = None,
        batch: int = 500,
        event_size: int = 250,
        gzip: bool = False,
        events_file: Optional[str] = None,
        seed: int = 0,
        retries: int = 2,
        timeout: float = 30.0,
        encoder: Any = None,
        stats_url: Optional[str] = "auto",
        interval: Optional[float] = None,
        label: Optional[str] = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if batch < 1:
            raise ValueError("--batch must be at least 1")
        # (not x > 0 also refuses NaN; a non-finite rate would never end an open-model run)
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ValueError("--rate must be a finite number above 0")
        if duration is not None and not (math.isfinite(duration) and 0 < duration <= MAX_SECONDS):
            raise ValueError(f"--duration must be a finite number above 0, at most {MAX_SECONDS:g}")
        if not (math.isfinite(timeout) and 0 < timeout <= MAX_SECONDS):
            raise ValueError(f"--timeout must be a finite number above 0, at most {MAX_SECONDS:g}")
        if events is not None and events < 1:
            raise ValueError("--events must be at least 1")
        if event_size < 16:
            raise ValueError("--event-size must be at least 16 bytes")
        if retries < 0:
            raise ValueError("--retries must not be negative")
        self.dialect_obj = get_dialect(dialect)
        if self.dialect_obj.max_batch_events is not None and batch > self.dialect_obj.max_batch_events:
            raise ValueError(f"--batch {batch} exceeds the {dialect} limit of {self.dialect_obj.max_batch_events} "
                             "events per request")
        if gzip and not self.dialect_obj.gzip_allowed:
            raise ValueError(f"--gzip: the {dialect} API does not accept compressed bodies")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--to must be an http:// or https:// URL, got {url!r}")
        if duration is None and events is None and events_file is None:
            duration = 10.0
        self.url = url
        self.dialect = dialect
        self.project_id = project_id
        self.api_key = api_key
        self.collection = collection
        self.concurrency = concurrency
        self.rate = rate
        self.duration = duration
        self.events = events
        self.batch = batch
        self.event_size = event_size
        self.gzip = gzip
        self.events_file = events_file
        self.seed = seed
        self.retries = retries
        self.timeout = timeout
        self.encoder = encoder
        self.stats_url = default_stats_url(url) if stats_url == "auto" else stats_url
        self.interval = interval
        self.label = label

    @property
    def model(self) -> str:
        """``"open"`` with a rate, else ``"closed"``."""
        return "open" if self.rate is not None else "closed"

    def as_json(self) -> Dict[str, Any]:
        return {
            "model": self.model,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "duration_s": self.duration,
            "events": self.events,
            "batch": self.batch,
            "event_size": self.event_size,
            "gzip": self.gzip,
            "events_file": self.events_file,
            "seed": self.seed,
            "retries": self.retries,
            "timeout_s": self.timeout,
            "collection": self.collection if self.dialect_obj.needs_collection else None,
        }


class _Tally:
    """Counters shared by the scheduler thread and the sender's workers (one lock; callbacks are short)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency = Histogram()
        self.window = Histogram()
        self.lag = Histogram()
        self.requests_sent = 0
        self.requests_done = 0
        self.requests_ok = 0
        self.retries = 0
        self.retried_events = 0
        self.events_sent = 0
        self.events_done = 0
        self.delivered = 0
        self.duplicates = 0
        self.rejected = 0
        self.failed = 0
        self.invalid = 0
        self.bytes_sent = 0
        self.errors_total = 0
        self.by_status: Counter = Counter()
        self.by_kind: Counter = Counter()
        self.messages: Counter = Counter()
        self.last_done = 0.0
        self.last_send = 0.0
        # requests queued for the sender but never sent (their Future cancelled when the run was interrupted): they
        # are taken out of the sent counts (requests_sent, events_sent, bytes_sent count what was queued)
        self.unsent_requests = 0
        self.unsent_events = 0
        self.unsent_bytes = 0
        # the requests counted as sent whose result is not tallied yet: Future -> (start, events, bytes)
        self.queued: Dict[Any, Any] = {}

    @property
    def net_events_sent(self) -> int:
        return self.events_sent - self.unsent_events

    def error(self, kind: str, message: Optional[str], n: int = 1) -> None:
        # caller holds the lock
        self.errors_total += n
        self.by_kind[kind] += n
        if message:
            message = message[:200]
            if message in self.messages or len(self.messages) < MAX_MESSAGES:
                self.messages[message] += n


def _stats_source(doc: Dict[str, Any]) -> Any:
    """Which processes counted a ``/stats`` document: a hub with ``--workers N`` adds up every worker's counts
    and names them in ``pids`` (any worker may answer); older hubs and other servers give one ``pid``. Two
    documents from the same source can be subtracted."""
    pids = doc.get("pids")
    return tuple(pids) if isinstance(pids, list) else doc.get("pid")


def _transport_kind(exc: BaseException) -> str:
    if isinstance(exc, ep_errors.TimeoutError):
        return "timeout"
    if isinstance(exc, ep_errors.ConnectError):
        return "connect"
    if isinstance(exc, ep_errors.TransportError):
        return "transport"
    return type(exc).__name__


def _ms(us: Optional[float]) -> Optional[float]:
    return None if us is None else round(us / 1000.0, 3)


def latency_summary(h: Histogram) -> Dict[str, Any]:
    """``{count, min, mean, p50, p90, p99, p99_9, max}`` in milliseconds (``None`` when empty)."""
    doc: Dict[str, Any] = {"count": h.count, "min": _ms(h.min), "mean": _ms(h.mean)}
    for q, name in LATENCY_PERCENTILES:
        doc[name] = _ms(h.percentile(q))
    doc["max"] = _ms(h.max)
    return doc


def _encoder_class(config: LoadConfig) -> Any:
    if config.encoder is not None:
        return config.encoder
    import eventpush

    return eventpush.Encoder


def _make_source(config: LoadConfig) -> EventSource:
    if config.events_file:
        # replayed once unless the run asks for a duration or more events than the file holds
        return FileSource(config.events_file, cycle=config.duration is not None or config.events is not None)
    return SyntheticSource(config.dialect, size=config.event_size, seed=config.seed)


def _sleep_until(deadline: float) -> None:
    """Sleep until ``time.perf_counter() >= deadline``. No spinning: Linux wakes a sleeper within ~0.1 ms, and a
    spinning scheduler would take CPU from the workers (and inflate client CPU); any lateness is in the send lag."""
    left = deadline - time.perf_counter()
    while left > 0:
        time.sleep(left)
        left = deadline - time.perf_counter()


def run_load(
    config: LoadConfig,
    *,
    on_tick: Optional[Callable[[Dict[str, Any]], None]] = None,
    stop: Optional[threading.Event] = None,
) -> Dict[str, Any]:
    """Run one load against ``config.url``; returns the result document (see ``schema.json``, ``"mode": "load"``).

    ``on_tick`` gets each closed interval (the live display); setting ``stop`` ends the run early (as Ctrl-C
    does: no new requests, in-flight ones finish, the result says ``interrupted``)."""
    from .. import __version__
    from ..sender import Sender
    from ..transport import Limits, Retry, Timeout, Transport

    dialect = config.dialect_obj
    encoder_cls = _encoder_class(config)
    encoder = encoder_cls(dialect, max_batch_events=config.batch)
    source = _make_source(config)
    limit = config.events
    if limit is None and source.limit is not None and config.duration is None:
        limit = source.limit
    collection = config.collection if dialect.needs_collection else None

    headers: Dict[str, str] = {}
    if config.project_id is not None:
        headers["X-Project-Id"] = config.project_id
    if config.api_key is not None:
        headers["X-Api-Key"] = config.api_key
    # dialects without a path of their own (ndjson, json-array) post to exactly the URL the user named
    base_url, send_dialect = exact_target(config.url, dialect)
    retry = Retry(attempts=config.retries + 1, backoff=0.05, backoff_max=1.0, total=max(5.0, config.timeout))
    transport = Transport(base_url, headers=headers,
                          timeout=Timeout(connect=min(10.0, config.timeout), read=config.timeout), retry=retry,
                          gzip=config.gzip, limits=Limits(max_connections=max(10, config.concurrency)))
    open_model = config.rate is not None
    # closed: exactly `concurrency` in flight (our semaphore); open: the timetable decides, the queue absorbs
    # bursts (bounded: a scheduler that is blocked still charges the wait to latency via the intended time)
    max_in_flight = config.concurrency + (1000 if open_model else 0)
    sender = Sender(transport, send_dialect, concurrency=config.concurrency, max_in_flight=max_in_flight, retry=retry)

    tally = _Tally()
    slots = threading.Semaphore(config.concurrency)
    stop = stop or threading.Event()
    done_all = threading.Condition(tally.lock)

    if config.interval is not None:
        interval = config.interval
    else:
        expected = config.duration or (limit / config.rate if (limit and config.rate) else 10.0)
        interval = max(0.25, min(1.0, expected / 40.0), expected / 600.0)

    stats_before = fetch_stats(config.stats_url, timeout=3.0) if config.stats_url else None

    def on_done(fut: Any) -> None:
        # once per request (the driver may call it too, for a request whose callback an interrupt kept from being
        # added): whoever takes the request out of ``queued`` tallies it
        with tally.lock:
            info = tally.queued.pop(fut, None)
        if info is None:
            return
        start, count, nbytes = info
        if fut.cancelled():  # queued, never sent: the run was interrupted (see below)
            with tally.lock:
                tally.unsent_requests += 1
                tally.unsent_events += count
                tally.unsent_bytes += nbytes
                done_all.notify_all()
            if not open_model:
                slots.release()
            return
        now = time.perf_counter()
        us = int((now - start) * 1e6)
        exc = fut.exception()
        with tally.lock:
            tally.requests_done += 1
            tally.events_done += count
            tally.last_done = now
            if exc is not None:
                tally.failed += count
                tally.error(_transport_kind(exc), str(exc))
                tally.retries += max(0, getattr(exc, "attempts", 1) - 1)
            else:
                res = fut.result()
                tally.retries += max(0, res.attempts - 1)
                tally.retried_events += res.retried
                delivered = res.delivered
                tally.delivered += delivered
                if delivered == count and res.attempts == 1 and 200 <= res.status < 300:
                    # PERF: the common case; the other tallies would walk every event again for zeros
                    tally.requests_ok += 1
                    tally.latency.record(us)
                    tally.window.record(us)
                    done_all.notify_all()
                    if not open_model:
                        slots.release()
                    return
                tally.duplicates += res.duplicates
                not_ok = count - delivered
                if not 200 <= res.status < 300:
                    tally.by_status[str(res.status)] += 1
                    msg = next((r.message for r in res.results if r.message), None) if not_ok else None
                    tally.error("http_status", f"HTTP {res.status}: {msg}" if msg else f"HTTP {res.status}")
                elif delivered == count:
                    tally.requests_ok += 1
                if 200 <= res.status < 300 and not_ok:
                    # per-event outcomes inside a successful reply
                    rejected = res.rejected
                    retryable = res.retryable
                    dups = sum(1 for r in res.results if r.duplicate and not r.ok)
                    if dups:
                        tally.error("duplicate_events", "duplicate id", dups)
                    if rejected - dups > 0:
                        msg = next((r.message for r in res.results if r.rejected and not r.duplicate), None)
                        tally.error("rejected_events", msg, rejected - dups)
                    if retryable:
                        msg = next((r.message for r in res.results if r.retryable), None)
                        tally.error("retryable_events", msg, retryable)
                tally.rejected += res.rejected
                tally.failed += res.retryable  # not delivered and not refused for good: given up on
            tally.latency.record(us)
            tally.window.record(us)
            done_all.notify_all()
        if not open_model:
            slots.release()

    timeline: List[Dict[str, Any]] = []
    prev = {"t": 0.0, "events_sent": 0, "events_done": 0, "delivered": 0, "requests_done": 0, "errors": 0,
            "bytes": 0}
    t0 = time.perf_counter()
    sampler_stop = threading.Event()

    history: List[Dict[str, Any]] = []

    def close_interval(now: float) -> Dict[str, Any]:
        history.append(dict(prev))
        with tally.lock:
            win = tally.window.snapshot_and_reset()
            cur = {"events_sent": tally.net_events_sent, "events_done": tally.events_done,
                   "delivered": tally.delivered, "requests_done": tally.requests_done, "errors": tally.errors_total,
                   "bytes": tally.bytes_sent - tally.unsent_bytes}
        t = now - t0
        dt = max(1e-9, t - prev["t"])
        point = {
            "t": round(t, 3),
            # (max: requests counted when queued, then cancelled by an interrupt, are taken back out)
            "events_per_s": round(max(0, cur["events_sent"] - prev["events_sent"]) / dt, 1),
            "delivered_per_s": round((cur["delivered"] - prev["delivered"]) / dt, 1),
            "requests": cur["requests_done"] - prev["requests_done"],
            "errors": cur["errors"] - prev["errors"],
            "mb_per_s": round(max(0, cur["bytes"] - prev["bytes"]) / dt / 1e6, 3),
            "p50_ms": _ms(win.percentile(50)),
            "p99_ms": _ms(win.percentile(99)),
            "max_ms": _ms(win.max),
        }
        prev.update(cur, t=t)
        timeline.append(point)
        return point

    def sampler() -> None:
        k = 1
        while not sampler_stop.wait(max(0.0, t0 + k * interval - time.perf_counter())):
            point = close_interval(time.perf_counter())
            k += 1
            if on_tick is not None:
                try:
                    with tally.lock:
                        totals = {"elapsed": point["t"], "events_sent": tally.net_events_sent,
                                  "delivered": tally.delivered, "errors": tally.errors_total,
                                  "p99_total_ms": _ms(tally.latency.percentile(99))}
                    on_tick({**point, **totals})
                except Exception:  # a broken display must not stop the run
                    log.exception("live display failed")

    # open model: seconds between two requests on the timetable
    per_request = config.batch / config.rate if config.rate is not None else 0.0
    interrupted = False
    cpu0 = time.process_time()
    sampler_thread = threading.Thread(target=sampler, name="eventpush-bench-sampler", daemon=True)
    sampler_thread.start()
    t0 = time.perf_counter()
    fut: Any = None
    tracked = True
    try:
        k = 0
        pending: List[Any] = []
        while not stop.is_set():
            if not pending:
                if config.duration is not None:
                    if open_model:
                        if k * per_request >= config.duration:
                            break
                    elif time.perf_counter() - t0 >= config.duration:
                        break
                n = config.batch if limit is None else min(config.batch, limit - tally.events_sent)
                if n <= 0:
                    break
                events = source.take_many(n)
                if not events:
                    break
                if collection is not None:
                    batches, bad = encoder.encode_batch(events, collection)
                else:
                    batches, bad = encoder.encode_batch(events)
                if bad:
                    with tally.lock:
                        tally.invalid += len(bad)
                        tally.events_sent += len(bad)
                        tally.error("invalid_event", str(bad[0]), len(bad))
                pending = list(batches)
                if not pending:
                    continue
            batch = pending.pop(0)
            if open_model:
                intended = t0 + k * per_request
                if not pending:
                    k += 1
                _sleep_until(intended)
                start = intended
            else:
                slots.acquire()
                start = time.perf_counter()
            send_at = time.perf_counter()
            fut, tracked = None, False
            fut = sender.send(batch)
            # counted once queued: an interrupt before this line leaves nothing in flight to wait for
            with tally.lock:
                tally.requests_sent += 1
                tally.events_sent += batch.count
                tally.bytes_sent += batch.nbytes
                tally.last_send = send_at
                tally.queued[fut] = (start, batch.count, batch.nbytes)
            tracked = True
            fut.add_done_callback(on_done)
            if open_model:
                tally.lag.record(int((send_at - start) * 1e6))
    except KeyboardInterrupt:
        interrupted = True
        if fut is not None and not tracked:
            # the interrupt came between the request being queued and being counted: count it now (its result is
            # tallied below, when it is done: no callback was added)
            with tally.lock:
                if fut not in tally.queued:
                    tally.requests_sent += 1
                    tally.events_sent += batch.count
                    tally.bytes_sent += batch.nbytes
                    tally.last_send = send_at
                    tally.queued[fut] = (start, batch.count, batch.nbytes)
    except BaseException:
        # an unexpected failure of the driver itself: stop the threads and the pool, then let it propagate
        sampler_stop.set()
        sender.close(timeout=5)
        transport.close()
        raise
    if stop.is_set():
        interrupted = True
    try:
        if interrupted:
            # stop at once: the requests queued behind the busy connections (up to 1,000 in the open model) are not
            # sent (cancelled, counted as not sent); only the requests in flight finish
            with tally.lock:
                waiting = list(tally.queued)
            for fut in waiting:
                fut.cancel()
        # in-flight requests finish: bounded by the transport's timeouts and retry cap, and by this deadline
        deadline = time.perf_counter() + config.timeout * (config.retries + 1) + 10.0
        with tally.lock:
            while any(not f.done() for f in tally.queued) and time.perf_counter() < deadline:
                done_all.wait(0.5)
    except KeyboardInterrupt:
        interrupted = True
    # a request that is done but not tallied: its callback was never added (an interrupt came between), or it runs
    # right now (then on_done tallies it once all the same)
    with tally.lock:
        finished = [f for f in tally.queued if f.done()]
    for f in finished:
        on_done(f)
    end = time.perf_counter()
    cpu = time.process_time() - cpu0
    sampler_stop.set()
    sampler_thread.join(5)
    if not timeline or timeline[-1]["t"] < end - t0 - 1e-3:
        if timeline and len(timeline) > 1 and end - t0 - timeline[-1]["t"] < interval / 2:
            # a sliver after the last full interval (the last replies) would plot as a spike: fold it into the
            # interval before (its latency window is gone, so keep that interval's percentiles)
            last = timeline.pop()
            prev.clear()
            prev.update(history.pop())
            point = close_interval(end)
            for key in ("p50_ms", "p99_ms"):
                if last[key] is not None:
                    point[key] = last[key]
            maxes = [v for v in (last["max_ms"], point["max_ms"]) if v is not None]
            point["max_ms"] = max(maxes) if maxes else None
        else:
            close_interval(end)
    sender.close(timeout=5)
    transport.close()
    stats_after = fetch_stats(config.stats_url, timeout=5.0) if config.stats_url else None
    server_counted = None
    if stats_before is not None and stats_after is not None and _stats_source(stats_before) == _stats_source(
            stats_after):
        server_counted = stats_after["events"] - stats_before["events"]

    elapsed = max(1e-9, end - t0)
    with tally.lock:
        if tally.unsent_requests:
            tally.error("not_sent", f"interrupted: {tally.unsent_requests:,} queued requests "
                        f"({tally.unsent_events:,} events) were not sent", tally.unsent_events)
        events_sent = tally.net_events_sent
        requests_sent = tally.requests_sent - tally.unsent_requests
        bytes_sent = tally.bytes_sent - tally.unsent_bytes
        # open model: how well the timetable was kept, from the first intended send to the last actual send plus
        # one request slot (a run that sent everything on time scores exactly the offered rate)
        issue_span = max(1e-9, (tally.last_send or end) - t0 + per_request)
        impl = getattr(encoder_cls, "__module__", "")
        doc: Dict[str, Any] = {
            "mode": "load",
            "schema": "eventpush-bench/1",
            "version": __version__,
            "label": config.label,
            "encoder": "cython" if impl.endswith("_core") else "python",
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "target": {"url": config.url, "dialect": config.dialect, "loopback": is_loopback(config.url),
                       "stats_url": config.stats_url},
            "config": config.as_json(),
            "source": source.description,
            "interrupted": interrupted,
            "elapsed_s": round(elapsed, 4),
            "events": {
                "sent": events_sent,
                "delivered": tally.delivered,
                "duplicates": tally.duplicates,
                "rejected": tally.rejected,
                "failed": tally.failed,
                "invalid": tally.invalid,
                "retried": tally.retried_events,
                "server_counted": server_counted,
            },
            "requests": {"sent": requests_sent, "completed": tally.requests_done, "ok": tally.requests_ok,
                         "retries": tally.retries},
            "throughput": {
                "events_per_s": round(tally.delivered / elapsed, 1),
                "sent_per_s": round(events_sent / elapsed, 1),
                "requests_per_s": round(tally.requests_done / elapsed, 2),
                "bytes_sent": bytes_sent,
                "mb_per_s": round(bytes_sent / elapsed / 1e6, 3),
                "offered_rate": config.rate,
                "achieved_rate": round((events_sent - tally.invalid) / issue_span, 1) if open_model else None,
            },
            "latency_ms": latency_summary(tally.latency),
            "send_lag_ms": latency_summary(tally.lag) if open_model else None,
            "errors": {
                "total": tally.errors_total,
                "by_status": dict(sorted(tally.by_status.items())),
                "by_kind": dict(sorted(tally.by_kind.items())),
                "messages": [{"message": m, "count": c} for m, c in tally.messages.most_common()],
            },
            "client_cpu": {
                "seconds": round(cpu, 4),
                "per_million_events": round(cpu / events_sent * 1e6, 3) if events_sent else None,
            },
            "timeline": timeline,
            "latency_buckets": [[lo, hi, c] for lo, hi, c in tally.latency.buckets()],
        }
    return doc
