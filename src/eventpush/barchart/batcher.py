"""``EventBatcher``: buffered capture with the SDK's push / start / stop / flush / clear contract (spec §4) on top
of the engine's :class:`~eventpush.batcher.Batcher`.

Why a front buffer in front of the engine: the SDK's contract needs things the engine's Batcher does not do — a
batcher that sends nothing until ``start()``, can be stopped and restarted, discards its buffer on ``clear()``,
and takes zero-argument callables that are evaluated at send time. So the events wait here, in push order, and
each *cycle* hands the whole buffer to the engine and waits until it is delivered, rejected or spooled. Everything
about delivery — the shared keep-alive transport, retries with backoff and jitter (honouring ``Retry-After``),
never retrying other 4xx, the durable checksummed spool and its replay, counters — is the engine's.

A plain event is validated and encoded once, in ``push()``: the front buffer holds its bytes, which go to the
engine as they are (``Batcher.push_encoded``), so what is sent is the event as it was when pushed.

One executor thread per batcher runs every cycle and every flush, one at a time, so there is at most one send loop
and flushes are serialised with cycles. A restart bumps a generation number, so a cycle that was in flight during
``stop()`` + ``start()`` never reschedules itself (the original's double-loop defect). The thread starts with the
first ``start()`` (or ``close()``): a batcher that is never started holds no thread and is collected when dropped.

Locking: ``self._lock`` guards the front buffer and the executor state only. No user code (generators, callbacks,
future callbacks) and no engine call runs with it held: items leave the buffer under the lock and are *handed off*
(generators run, events pushed to the engine) after it is released. A hand-off that finds the engine closed (a
``close(timeout)`` that ran out of time meanwhile) writes its events to the spool directory itself.

Fork: a forked child gets fresh locks and, when the batcher was started, its own executor thread; the parent's
buffered events stay the parent's (as in the engine, which re-initialises itself in the child too).
"""

from __future__ import annotations

import atexit as _atexit
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import orjson

from .. import _fork
from ..batcher import Batcher
from ..dialects import BARCHART
from ..errors import BufferFullError, ClosedError, EventError, SpoolError
from ..sender import RejectedError
from ..spool import Spool, SpooledBatch, default_spool_dir, spool_key
from .errors import DISPOSED_MESSAGE, BarchartStateError, BarchartValidationError
from .futures import AwaitableFuture
from .gateway import EventGateway, reply_error

__all__ = ["EventBatcher", "DEFAULT_INTERVAL"]

log = logging.getLogger("eventpush.barchart")

#: The SDK's hard-coded 5000 ms between the end of one cycle and the next check.
DEFAULT_INTERVAL = 5.0
_OVERFLOW = ("block", "raise", "spool")
_ENGINE_MAX_BUFFERED = 100_000
_ENGINE_COUNTERS = ("sent", "delivered", "retried", "failed", "spooled", "replayed", "bytes", "batches", "corrupt",
                    "rejected")


def _is_generator(item: Any) -> bool:
    return callable(item) and not isinstance(item, dict)


class _Lazy:
    """A pushed zero-argument callable, buffered with the index of its push() call (for error reports)."""

    __slots__ = ("fn", "index")

    def __init__(self, fn: Callable[[], Any], index: int) -> None:
        self.fn = fn
        self.index = index


def _as_events(items: List[Any]) -> List[Any]:
    """Front-buffer items as ``error_callback`` reports them: an encoded event decoded (as the engine reports
    the events of a failed batch), a callable as itself."""
    return [orjson.loads(item) if type(item) is bytes else item.fn for item in items]


def _atexit_close(ref: "weakref.ref[EventBatcher]") -> None:
    b = ref()
    if b is not None and not b.closed:
        b.close()


class EventBatcher:
    """Buffers events and sends the whole buffer to ``event_gateway`` every ``interval`` seconds (counted from the
    end of the previous send) once :meth:`start` was called. See spec/barchart.md §4.2.

    ``callback(created_events)`` is called with the server's created events (plain dicts) for every delivered
    request, never for a failed one. ``error_callback(error, events)`` is called for events that end rejected:
    a generator that raised or returned an invalid event (``events`` = ``[the callable]`` / ``[the event]``), a
    request the server refused with a 4xx other than 429, or events that could not be spooled. Failed sends are
    retried by the engine (the gateway's ``retry`` policy) and then kept in the durable spool (``spool_dir``;
    ``None`` = the engine's default location) and replayed, oldest first, when sends succeed again and at the next
    start. ``max_batch_events`` / ``max_batch_bytes`` seal a request early (default: the whole buffer in one
    request). ``max_buffered`` bounds the buffer: ``overflow="block"`` waits for room, ``"raise"`` raises
    :class:`~eventpush.errors.BufferFullError`, ``"spool"`` hands the oldest events to the engine at once (it
    delivers them, or spills them to the spool when it is full too). Nothing is ever dropped silently.
    """

    def __init__(
        self,
        event_gateway: EventGateway,
        callback: Optional[Callable[[List[Dict[str, Any]]], Any]] = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_batch_events: Optional[int] = None,
        max_batch_bytes: Optional[int] = None,
        max_buffered: Optional[int] = None,
        overflow: str = "block",
        spool_dir: Any = None,
        error_callback: Optional[Callable[[BaseException, List[Any]], Any]] = None,
    ) -> None:
        if not isinstance(event_gateway, EventGateway):
            raise TypeError(f"event_gateway must be an EventGateway, not {type(event_gateway).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable or None")
        if error_callback is not None and not callable(error_callback):
            raise TypeError("error_callback must be callable or None")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
            raise ValueError(f"interval must be a number of seconds >= 0, not {interval!r}")
        if overflow not in _OVERFLOW:
            raise ValueError(f"overflow must be one of {_OVERFLOW}, not {overflow!r}")
        if max_buffered is not None and max_buffered < 1:
            raise ValueError("max_buffered must be at least 1 (or None)")
        for name, value in (("max_batch_events", max_batch_events), ("max_batch_bytes", max_batch_bytes)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None)")
        self._gateway = event_gateway
        self._callback = callback
        self._error_callback = error_callback
        self._interval = float(interval)
        self._max_buffered = max_buffered
        self._room = max_buffered if max_buffered is not None else sys.maxsize  # push() calls _make_room from here
        self._overflow = overflow
        self._codec = event_gateway.codec
        # PERF: push()'s own encoder for the usual event, used under self._lock (an Encoder is not thread-safe);
        # the codec's full path takes what it refuses, and every event when the gateway validates contexts
        self._encode_plain: Optional[Callable[[Any], bytes]] = None
        if not self._codec.validate_context:
            from .. import Encoder

            self._encode_plain = Encoder(BARCHART, max_batch_events=None, max_batch_bytes=None).encode

        self._engine_args = dict(
            max_batch_events=max_batch_events,
            max_batch_bytes=max_batch_bytes,
            max_buffered=max(max_buffered or 0, _ENGINE_MAX_BUFFERED),
            spool_dir=spool_dir,
        )
        self._engine: Optional[Batcher] = None  # created at the first start() (or close()): no I/O before

        self._engine_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)  # executor: jobs / due time; pushers: room
        self._buffer: List[Any] = []
        self._calls = itertools.count()  # push() calls, accepted or not: the index an error report names
        self._jobs: Deque[Tuple[str, Any, Optional[AwaitableFuture]]] = deque()
        self._running = False
        self._generation = 0
        self._due: Optional[float] = None
        self._due_generation = 0
        self._busy = False
        self._closed = False
        self._c: Dict[str, int] = {"rejected_client": 0, "spooled_client": 0, "cycles": 0}
        self._pushed = 0  # PERF: an attribute, not a key of self._c (push() counts every event)
        # The executor: started by the first start() / close() (a thread's target keeps its batcher alive)
        self._thread: Optional[threading.Thread] = None
        ref = weakref.ref(self)
        self._atexit_fn: Optional[Callable[[], None]] = lambda: _atexit_close(ref)
        _atexit.register(self._atexit_fn)
        _fork.reinit_after_fork(self)

    def _ensure_thread_locked(self) -> None:
        """Start the executor thread if it is not running (called with the lock held)."""
        if self._thread is None:
            t = threading.Thread(target=self._run, name="eventpush-barchart-batcher", daemon=True)
            t.start()
            self._thread = t

    def _reinit_after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here and its locks may have been held at the fork.
        Fresh locks, no jobs, an empty buffer (the parent's events stay the parent's), zeroed counters, and a new
        executor when the batcher had one (a running batcher keeps its cadence)."""
        self._engine_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._buffer = []
        self._calls = itertools.count()
        self._jobs = deque()  # (their futures are the parent's)
        self._busy = False
        self._c = {"rejected_client": 0, "spooled_client": 0, "cycles": 0}
        self._pushed = 0
        self._due = None
        had_thread = self._thread is not None
        self._thread = None
        if self._closed:
            return
        if self._running:
            self._due = time.monotonic() + self._interval
            self._due_generation = self._generation
        if had_thread or self._running:
            self._ensure_thread_locked()

    def _ensure_engine(self) -> Batcher:
        """The engine Batcher, created on first need. Creating it opens the spool, whose records from earlier
        runs are then replayed (oldest first): that is "replayed at the next start()"."""
        engine = self._engine
        if engine is not None:
            return engine
        with self._engine_lock:
            if self._engine is None:
                from .. import Encoder

                a = self._engine_args
                self._engine = Batcher(
                    self._gateway.transport,  # shared: the gateway's retry / timeout policy applies
                    BARCHART,
                    # Our own encoder so that "no limit" really means the whole buffer in one request.
                    encoder=Encoder(BARCHART, max_batch_events=a["max_batch_events"],
                                    max_batch_bytes=a["max_batch_bytes"]),
                    interval=None,  # sealing is driven by our cycles, not by a timer
                    max_buffered=a["max_buffered"],
                    overflow="spill" if self._overflow == "spool" else "block",
                    spool_dir=a["spool_dir"],
                    concurrency=1,  # one request in flight from the loop: batches go out in push order
                    on_delivered=self._on_delivered,
                    on_error=self._on_engine_error,
                    atexit=False,  # our own hook drains the front buffer first, then closes the engine
                )
            return self._engine

    # -- producer side ----------------------------------------------------------------------------------------

    def push(self, event: Any) -> None:
        """Buffer ``event`` (FIFO). A plain event is validated now: a bad one raises
        :class:`~eventpush.barchart.BarchartValidationError` here and is not buffered. A zero-argument callable is
        called at send time; if it raises or returns a bad event, only that event is rejected (reported through
        ``error_callback``). Either way the error's ``index`` is this call's position among the batcher's push()
        calls (0-based, accepted or not). Works while stopped (events accumulate). Thread-safe."""
        encode = self._encode_plain
        evicted: Optional[List[Any]] = None
        if encode is not None and type(event) is dict:
            # PERF: the usual event, encoded under the one lock the buffer needs anyway
            taken = False
            lock = self._lock
            lock.acquire()
            try:
                if self._closed:
                    raise ClosedError("the batcher is closed")
                index = next(self._calls)
                try:
                    data = encode(event)
                except EventError:
                    pass  # refused: the codec's full path below normalizes it or says why
                else:
                    if len(self._buffer) >= self._room:
                        evicted = self._make_room()
                    self._buffer.append(data)
                    self._pushed += 1
                    taken = True
            finally:
                lock.release()
            if evicted is not None:
                self._handoff(evicted)  # (outside the lock: it may run generators and error_callback)
            if taken:
                return
        else:
            if self._closed:
                raise ClosedError("the batcher is closed")
            index = next(self._calls)
        item: Any
        if _is_generator(event):
            item = _Lazy(event, index)
        else:
            item = self._codec.encode_one(event, index)  # the bytes: encoded once, here
        with self._lock:
            if self._closed:
                raise ClosedError("the batcher is closed")
            if len(self._buffer) >= self._room:
                evicted = self._make_room()
            self._buffer.append(item)
            self._pushed += 1
        if evicted is not None:
            self._handoff(evicted)

    def _make_room(self) -> Optional[List[Any]]:
        """Called with the lock held and the buffer full. With ``overflow="spool"``, returns the oldest items, taken
        out of the buffer: the caller must pass them to :meth:`_handoff` once it has released the lock (a hand-off
        runs generators and may call ``error_callback``)."""
        if self._overflow == "raise":
            raise BufferFullError(f"the buffer holds {len(self._buffer)} events (max_buffered={self._max_buffered})")
        if self._overflow == "spool":
            # The oldest half goes to the engine now: delivered, or spilled to the durable spool when it is full.
            n = max(1, len(self._buffer) // 2)
            oldest, self._buffer = self._buffer[:n], self._buffer[n:]
            return oldest
        while self._max_buffered is not None and len(self._buffer) >= self._max_buffered:
            if self._closed:
                raise ClosedError("the batcher was closed while waiting for room")
            if not self._running and not self._jobs and not self._busy:
                raise BufferFullError(
                    f"the buffer is full (max_buffered={self._max_buffered}) and the batcher is not running: "
                    "call start() or flush(), or use overflow='raise' / 'spool'"
                )
            self._cv.wait(0.1)
        return None

    def clear(self) -> None:
        """Discard every buffered event (events already handed to a cycle are not affected)."""
        with self._lock:
            self._buffer = []
            self._cv.notify_all()

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> AwaitableFuture:
        """Start sending: the first cycle runs at once; later ones ``interval`` seconds after each send completes.
        No-op when already running. The future settles after the first cycle (a completed one when running).
        Starts the gateway too when it was not (no I/O); a disposed gateway raises ``BarchartStateError``."""
        if self._closed:
            raise ClosedError("the batcher is closed")
        if self._gateway.is_disposed:
            raise BarchartStateError(DISPOSED_MESSAGE)
        self._gateway.start()  # sends go through the gateway's transport; starting it does no I/O
        self._ensure_engine()
        with self._lock:
            if self._closed:
                raise ClosedError("the batcher is closed")
            if self._running:
                return AwaitableFuture.completed(None)
            self._ensure_thread_locked()
            self._running = True
            self._generation += 1
            fut = AwaitableFuture()
            self._jobs.append(("cycle", self._generation, fut))
            self._cv.notify_all()
            return fut

    def stop(self) -> None:
        """Stop scheduling cycles (the pending timer is cancelled). Does not flush: buffered events stay buffered;
        a send in flight completes (its callback fires) and does not reschedule."""
        with self._lock:
            self._running = False
            self._due = None
            self._cv.notify_all()

    def flush(self, stop: bool = False) -> AwaitableFuture:
        """When running: take the whole buffer now (it is cleared), optionally :meth:`stop`, and send it after any
        cycle in flight. The future settles once those events are delivered, rejected or spooled. When not
        running: a no-op (a completed future), as in SDK 5.4.9+."""
        if not isinstance(stop, bool):
            raise TypeError("stop must be a bool")
        with self._lock:
            if not self._running or self._closed:
                return AwaitableFuture.completed(None)
            items, self._buffer = self._buffer, []
            fut = AwaitableFuture()
            self._jobs.append(("send", items, fut))
            if stop:
                self._running = False
                self._due = None
            self._cv.notify_all()
            return fut

    def close(self, timeout: float = 10.0) -> None:
        """Stop, send everything still buffered and wait up to ``timeout`` seconds; what is not delivered by then
        goes to the spool. Idempotent; also run by the context manager and at interpreter exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._running = False
            self._due = None
        if self._atexit_fn is not None:
            _atexit.unregister(self._atexit_fn)
            self._atexit_fn = None
        deadline = time.monotonic() + timeout
        try:
            self._ensure_engine()
        except BarchartStateError as exc:  # the gateway was disposed: nothing can be sent or spooled
            with self._lock:
                items, self._buffer = self._buffer, []
                self._jobs.append(("exit", None, AwaitableFuture()))
                self._cv.notify_all()
                thread = self._thread
            if items:
                self._reject(exc, _as_events(items))
            if thread is not None:
                thread.join(max(1.0, deadline - time.monotonic()))
            return
        with self._lock:
            self._ensure_thread_locked()
            thread = self._thread
            items, self._buffer = self._buffer, []
            fut = AwaitableFuture()
            self._jobs.append(("send", items, fut))
            self._cv.notify_all()
        try:
            fut.result(timeout)
        except Exception:  # timed out (or failed): the engine spools what is left just below
            pass
        with self._lock:
            late = list(self._jobs)
            self._jobs.clear()
        for kind, pending, pending_fut in late:
            if kind == "send":  # never started: hand the events over from here so that they get spooled
                self._handoff(pending)
            if pending_fut is not None and not pending_fut.done():
                pending_fut.set_result(None)
        # What is still being handed off (the executor resolving slow generators, a pusher making room) finds the
        # engine closed and goes to the spool directory from there (see _spool_late).
        self._ensure_engine().close(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._jobs.append(("exit", None, AwaitableFuture()))
            self._cv.notify_all()
        assert thread is not None
        thread.join(max(1.0, deadline - time.monotonic()))

    @property
    def interval(self) -> float:
        """Seconds between the end of one cycle and the next (the SDK's 5 s by default)."""
        return self._interval

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        """Events waiting for the next cycle."""
        return len(self._buffer)

    @property
    def stats(self) -> Dict[str, int]:
        """Counters (events unless named otherwise): ``pushed`` (accepted by push), ``buffered`` (waiting here),
        ``rejected`` (refused for good: bad generators, 4xx), ``cycles``, and the engine's ``sent``,
        ``delivered``, ``retried``, ``failed``, ``spooled``, ``replayed``, ``bytes``, ``batches``, ``corrupt``."""
        engine = self._engine
        s = engine.stats if engine is not None else dict.fromkeys(_ENGINE_COUNTERS, 0)
        with self._lock:
            out = {
                "pushed": self._pushed,
                "buffered": len(self._buffer),
                "cycles": self._c["cycles"],
                "rejected": s["rejected"] + self._c["rejected_client"],
            }
            spooled_client = self._c["spooled_client"]
        for k in ("sent", "delivered", "retried", "failed", "spooled", "replayed", "bytes", "batches", "corrupt"):
            out[k] = s[k]
        out["spooled"] += spooled_client
        return out

    def spool_pending(self) -> Tuple[int, int]:
        """``(records, events)`` waiting in the durable spool."""
        engine = self._engine
        return engine.spool_pending() if engine is not None else (0, 0)

    def __enter__(self) -> "EventBatcher":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __str__(self) -> str:
        return "[EventBatcher]"

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._running else "stopped")
        return f"<EventBatcher {state}, {len(self._buffer)} buffered -> {self._gateway.url}>"

    # -- the executor -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                job: Optional[Tuple[str, Any, Optional[AwaitableFuture]]] = None
                while job is None:
                    if self._jobs:
                        job = self._jobs.popleft()
                    elif self._due is not None and time.monotonic() >= self._due:
                        job = ("cycle", self._due_generation, None)
                        self._due = None
                    elif self._due is not None:
                        self._cv.wait(max(0.0, self._due - time.monotonic()))
                    else:
                        self._cv.wait()
                kind, arg, fut = job
                if kind == "exit":
                    return
                stale = kind == "cycle" and (not self._running or arg != self._generation)
                if not stale:
                    if kind == "cycle":
                        items, self._buffer = self._buffer, []
                        self._c["cycles"] += 1
                    else:
                        items = arg
                    self._busy = True
                    self._cv.notify_all()  # pushers blocked on a full buffer
            if stale:
                if fut is not None and not fut.done():
                    fut.set_result(None)  # (outside the lock: a future's done-callbacks are user code)
                continue
            try:
                self._send(items)
            except BaseException as exc:  # never let the loop die: that would strand the buffer
                log.exception("Failed to transmit events to Barchart Usage Tracking Service")
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                    fut = None
            finally:
                with self._lock:
                    self._busy = False
                    if kind == "cycle" and self._running and arg == self._generation:
                        self._due = time.monotonic() + self._interval
                        self._due_generation = arg
                    self._cv.notify_all()
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _resolve(self, items: List[Any]) -> List[bytes]:
        """Evaluate and encode generators (one failure = one rejected event); encoded events pass through."""
        out: List[bytes] = []
        for item in items:
            if type(item) is not _Lazy:
                out.append(item)
                continue
            try:
                event = item.fn()
            except Exception as exc:
                self._reject(exc, [item.fn])
                continue
            try:
                out.append(self._codec.encode_one(event, item.index))
            except BarchartValidationError as exc:
                self._reject(exc, [event])
        return out

    def _handoff(self, items: List[Any]) -> None:
        """Run the generators among ``items`` and push the events to the engine. Never called with the lock held
        (generators and ``error_callback`` are user code)."""
        events = self._resolve(items)
        engine = self._ensure_engine()
        push = engine.push_encoded
        for i, data in enumerate(events):
            try:
                push(data)
            except EventError as exc:  # the engine's limits refused what the codec accepted
                self._reject(BarchartValidationError([(0, {exc.field or "event": exc.message})]), _as_events([data]))
            except ClosedError:
                # close() ran out of time while these were being handed over (generators still running): "events
                # left after the timeout go to the spool" (spec §4.2)
                self._spool_late(events[i:])
                return

    def _spool_late(self, events: List[bytes]) -> None:
        """Write ``events`` to the spool directory of the (closed) engine, where the next start replays them; a
        spool that cannot be written reports them through ``error_callback`` (never dropped silently)."""
        if not events:
            return
        try:
            engine = self._ensure_engine()
            directory = self._engine_args["spool_dir"]
            if engine.spool is not None:
                directory = engine.spool.directory
            elif directory is None:  # the engine's default location (it never had to open it)
                t = engine.transport
                directory = default_spool_dir(spool_key(t.base_url, BARCHART, t.headers))
            spool = Spool(os.fspath(directory), dialects=[BARCHART])
            try:
                spool.append(SpooledBatch.from_events(BARCHART, [(None, e) for e in events]))
            finally:
                spool.close()
        except (SpoolError, OSError, BarchartStateError) as exc:
            log.error("cannot spool %d events left after close(): %s", len(events), exc)
            self._reject(exc, _as_events(events))
            return
        with self._lock:
            self._c["spooled_client"] += len(events)
        log.info("closed: spooled %d events handed over after the timeout", len(events))

    def _send(self, items: List[Any]) -> None:
        if items:
            engine = self._ensure_engine()
            if not engine.closed and engine.spool_pending()[0]:
                # spooled batches go before newer ones (spec/barchart.md §4.2): one attempt each; if the endpoint
                # still fails, the new events are tried (and spooled after the old ones)
                engine.replay_spool()
            self._handoff(items)
        engine = self._ensure_engine()
        if not engine.closed:  # (a closed engine has settled everything it had: spooled the rest)
            engine.flush()  # seal, wait: delivered, rejected or spooled (and the spool replayed if it can be)

    # -- engine callbacks (engine threads) --------------------------------------------------------------------

    def _reject(self, exc: BaseException, events: List[Any]) -> None:
        with self._lock:
            self._c["rejected_client"] += len(events)
        log.warning("rejected %d event(s): %s", len(events), exc)
        if self._error_callback is not None:
            try:
                self._error_callback(exc, events)
            except Exception:
                log.exception("error_callback failed")

    def _on_delivered(self, res: Any) -> None:
        if self._callback is None:
            return
        data = res.data
        # a reply that is not the list of created events attaches nothing to the events: one None per delivered
        # event, as [r.data for r in res.results if r.ok] would give, without building the results
        created = data if isinstance(data, list) else [None] * res.delivered
        try:
            self._callback(created)
        except Exception:
            log.exception("callback failed")

    def _on_engine_error(self, exc: BaseException, events: List[bytes]) -> None:
        if self._error_callback is None:
            return
        decoded = []
        for raw in events:
            try:
                decoded.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                decoded.append(raw)
        err: BaseException = exc
        if isinstance(exc, RejectedError):
            # the same BarchartError create_events gives for this reply (spec §3.6): a body with content-type
            # exactly application/json is .reasons, anything else REQUEST_GENERAL_FAILURE; .status either way
            # (an error without the reply's headers, a per-event rejection, is REQUEST_GENERAL_FAILURE)
            err = reply_error(exc.status, exc.headers, exc.body if exc.headers is not None else b"")
            err.__cause__ = exc
        try:
            self._error_callback(err, decoded)
        except Exception:
            log.exception("error_callback failed")
