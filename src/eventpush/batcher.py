"""Batcher: buffered capture with background delivery, a bounded buffer, a durable spool and no silent loss.

Public API::

    Batcher(target, dialect, *, encoder=None, interval=1.0, max_batch_events=None, max_batch_bytes=None,
            max_buffered=100_000, overflow="block", block_timeout=None, spool_dir=None, fsync="batch",
            concurrency=4, timeout=Timeout(), retry=Retry(), headers=None, gzip=False,
            on_delivered=None, on_error=None, atexit=True)
        .push(event, collection=None)                validate + encode now (raises here); no network I/O
        .push_many(events, collection=None) -> [EventError, …]   every good event pushed; the bad ones returned
        .flush(timeout=None) -> bool                 True once everything pushed is delivered, rejected or spooled
        .close(timeout=None)                         flush, then spool whatever is left; context manager too
        .stats -> dict                               pushed, sent, delivered, retried, failed, rejected, spooled,
                                                     replayed, dropped (always 0), bytes, batches, duplicates,
                                                     corrupt, buffered
        .settled_through -> int                      the first N events pushed are all settled (see below)
        .spool_pending() -> (records, events)        what waits in the spool
        .transport, .dialect, .spool (or None)

``target`` is a base URL (the batcher then owns a :class:`~eventpush.transport.Transport` built from ``headers``,
``timeout``, ``retry``, ``gzip`` and ``concurrency`` connections) or a ``Transport`` (shared; not closed here).

Flow: ``push`` encodes into the open batch under a lock; a batch is sealed when it reaches ``max_batch_events`` /
``max_batch_bytes`` (default: the dialect's limits) or every ``interval`` seconds, and ``concurrency`` worker
threads deliver sealed batches through a :class:`~eventpush.sender.Sender` (retries, per-event re-sends).

Every event ends in exactly one of these, and the counters say which:

* delivered (``delivered``; ``on_delivered(BatchResult)`` is called per batch that had deliveries);
* rejected for good by the server — a 4xx other than 429, or a per-event rejection (``rejected``;
  ``on_error(RejectedError, [event bytes…])``, never spooled);
* still failing after the retries (``failed``) → written to the spool (``spooled``) and replayed later, oldest
  first, as soon as a send succeeds again, after a quiet probe interval, and at the next start with the same spool
  directory (``replayed``). Without a spool (``spool_dir=False``) they are reported through ``on_error(error,
  [event bytes…])``.

Batches are sealed in push order but settle in any order (``concurrency`` of them are on the wire at once):
``settled_through`` is the length of the longest run of events, from the first one pushed, that are all settled
(delivered, rejected or spooled). A program that pushes from a replayable source can record its position up to
there and resume from it after a crash, sending again only what was not settled (``eventpush push`` does).

``overflow`` applies when ``max_buffered`` events are pushed but not yet settled: ``"block"`` waits for room (at
most ``block_timeout`` seconds, then :class:`~eventpush.errors.BufferFullError`), ``"raise"`` raises
``BufferFullError`` at once (the event is not taken), ``"spill"`` writes the oldest sealed batches to the spool
from the caller's thread and never waits (while every buffered event is in flight, the open batch fills up, at most
one batch over ``max_buffered``, and is spilled once sealed). Nothing is ever dropped (``dropped`` exists to prove
it).

``spool_dir``: a directory, ``None`` for the default location (:func:`eventpush.spool.default_spool_dir`, keyed by
URL, dialect and headers, created only when first needed), or ``False`` for no spool. While the endpoint is
failing the workers stop waiting out full retry schedules: one attempt per batch, straight to the spool, until a
send succeeds. A torn or corrupted spool record is reported through ``on_error(SpoolCorruptError, [])``, counted in
``corrupt``, and never sent.

Shutdown: ``close(timeout)`` (and the context manager) seals, waits up to ``timeout`` for delivery, then makes
pending retries give up and spools what is still queued or in flight (an in-flight batch may then arrive twice:
the ids make that safe; it counts as spooled, and a result that comes back for it later is not counted again).
``atexit=True`` registers ``close(timeout=10.0)`` (a number sets that timeout) so a normal interpreter exit without
``flush()`` delivers or spools everything. Fork-safe: a child process starts with its own connection pool, threads,
empty buffer and zeroed counters; the parent's buffered events stay the parent's.
"""

from __future__ import annotations

import atexit as _atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _fork, _impl
from .dialects import Dialect
from .errors import BufferFullError, ClosedError, EventError, SpoolCorruptError, SpoolError, TransportError
from .sender import BatchResult, RejectedError, Sender
from .spool import Spool, SpooledBatch, default_spool_dir, spool_key
from .transport import Limits, Retry, Timeout, Transport

if TYPE_CHECKING:
    from ._core_py import BatcherBase as _BatcherBase
else:
    _BatcherBase = _impl.core.BatcherBase

__all__ = ["Batcher", "OVERFLOW_POLICIES"]

log = logging.getLogger("eventpush.batcher")

OVERFLOW_POLICIES = ("block", "raise", "spill")
_COUNTERS = ("pushed", "sent", "delivered", "retried", "failed", "rejected", "spooled", "replayed", "dropped",
             "bytes", "batches", "duplicates", "corrupt")
ATEXIT_TIMEOUT = 10.0
_CLOSE_RESERVE = 0.25  # of close(timeout)'s two extra seconds: for closing the spool and the transport

class _Ready(deque):  # type: ignore[type-arg]
    """The sealed batches waiting for a worker (FIFO). Every batch enters through ``append`` (the core's push and
    ``_seal_locked``), in push order: ``starts`` records where each unsettled batch begins in that order, and the
    batcher removes a batch's entry when the batch settles (the end of ``_send_one``, a spill, ``close``)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: Dict[int, int] = {}
        self.sealed = 0  # events in the batches sealed so far

    def append(self, batch: Any) -> None:
        # PERF: once per batch, not per event
        self.starts[id(batch)] = self.sealed
        self.sealed += batch.count
        super().append(batch)


#: Statuses that refuse a whole request for its credentials, not for its events: a replayed spool record that gets
#: one stays spooled (the events are not what is wrong); ``eventpush push`` stops its run on one.
CREDENTIALS_REFUSED = (401, 403)


def _atexit_close(ref: "weakref.ref[Batcher]") -> None:
    b = ref()
    if b is not None and not b._closed:
        b.close(timeout=b._atexit_timeout)


class Batcher(_BatcherBase):
    """Buffered capture: ``push`` now, delivery in the background, nothing lost; see the module docstring."""

    def __init__(
        self,
        target: Union[str, Transport],
        dialect: Dialect,
        *,
        encoder: Any = None,
        interval: Optional[float] = 1.0,
        max_batch_events: Optional[int] = None,
        max_batch_bytes: Optional[int] = None,
        max_buffered: int = 100_000,
        overflow: str = "block",
        block_timeout: Optional[float] = None,
        spool_dir: Union[str, None, bool] = None,
        fsync: str = "batch",
        concurrency: int = 4,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        headers: Optional[Dict[str, str]] = None,
        gzip: bool = False,
        on_delivered: Optional[Callable[[BatchResult], Any]] = None,
        on_error: Optional[Callable[[BaseException, List[bytes]], Any]] = None,
        atexit: Union[bool, float] = True,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if overflow == "spill" and spool_dir is False:
            raise ValueError('overflow="spill" needs a spool (spool_dir=False disables it)')
        if isinstance(target, Transport):
            self.transport = target
            self._owns_transport = False
        else:
            self.transport = Transport(target, headers=headers, timeout=timeout, retry=retry,
                                       limits=Limits(max_connections=concurrency), gzip=gzip)
            self._owns_transport = True
        self.dialect = dialect
        self.interval = interval
        self.max_buffered = max_buffered
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.concurrency = concurrency
        self.on_delivered = on_delivered
        self.on_error = on_error
        self._user_encoder = encoder
        self._enc_kwargs: Dict[str, Any] = {}
        if max_batch_events is not None:
            self._enc_kwargs["max_batch_events"] = max_batch_events
        if max_batch_bytes is not None:
            self._enc_kwargs["max_batch_bytes"] = max_batch_bytes
        self._sender = Sender(self.transport, dialect, concurrency=concurrency)
        self._fsync = fsync
        if spool_dir is None:
            self._spool_dir: Optional[str] = default_spool_dir(
                spool_key(self.transport.base_url, dialect, self.transport.headers))
            self._spool_lazy = True
        elif spool_dir is False:
            self._spool_dir = None
            self._spool_lazy = False
        else:
            self._spool_dir = os.fspath(spool_dir)  # type: ignore[arg-type]
            self._spool_lazy = False
        self.spool: Optional[Spool] = None
        if self._spool_dir is not None and (not self._spool_lazy or os.path.isdir(self._spool_dir)):
            self._open_spool()
        self._atexit_timeout = ATEXIT_TIMEOUT if atexit is True else float(atexit or 0)
        self._atexit_fn: Optional[Callable[[], None]] = None
        self._closed = False
        self._init_state()
        if atexit is not False:
            ref = weakref.ref(self)
            self._atexit_fn = lambda: _atexit_close(ref)
            _atexit.register(self._atexit_fn)
        _fork.reinit_after_fork(self)
        self._start_threads()

    # -- state ------------------------------------------------------------------------------------------------

    def _new_encoder(self) -> Any:
        if self._user_encoder is not None:
            return self._user_encoder
        from . import Encoder

        return Encoder(self.dialect, **self._enc_kwargs)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers wait for sealed batches
        self._room = threading.Condition(self._lock)  # blocked pushers wait for room
        self._idle = threading.Condition(self._lock)  # flush waits for settlement
        self._replay_cv = threading.Condition(self._lock)
        self._replay_one_at_a_time = threading.Lock()  # the replayer thread and replay_spool(): oldest first
        self._encoder = self._new_encoder()
        self._ready = _Ready()
        self._inflight: Dict[int, Any] = {}
        self._buffered = 0
        self._stopping = False
        self._stop_event = threading.Event()
        self._abandoned: set = set()  # ids of in-flight batches that close() spooled: their results are ignored
        self._spilling = 0  # events being spilled by push() right now (the spool write runs without the lock)
        self._unhealthy = False
        self._replay_wanted = self.spool is not None
        self._replaying = False
        self._threads: List[threading.Thread] = []
        self._inline = False  # no worker threads could start: flush() sends
        self._c: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._left = 0  # events that left the buffer (settled or spooled): pushed = _left + _buffered
        self._limit = -1 if self._closed else self.max_buffered
        self._pid = os.getpid()

    def _open_spool(self) -> Spool:
        if self.spool is None:
            assert self._spool_dir is not None
            self.spool = Spool(self._spool_dir, fsync=self._fsync, on_corrupt=self._on_corrupt,
                               dialects=[self.dialect])
        return self.spool

    def _start_threads(self) -> None:
        for i in range(self.concurrency):
            self._spawn(self._worker, f"eventpush-batcher-worker-{i}")
        if self.interval:
            self._spawn(self._ticker, "eventpush-batcher-ticker")
        if self._spool_dir is not None:
            self._spawn(self._replayer, "eventpush-batcher-replay")

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        # daemon: a forgotten batcher must not hang interpreter exit; the atexit hook does the delivering
        t = threading.Thread(target=fn, name=name, daemon=True)
        try:
            t.start()
        except RuntimeError as exc:
            if "interpreter shutdown" not in str(exc):
                raise
            # Python 3.12.0-3.12.1 refuse new threads in atexit handlers (a batcher first made there, e.g. by
            # EventBatcher's exit hook): flush() then sends from the thread that calls it.
            self._inline = True
            return
        self._threads.append(t)

    def _reinit_after_fork(self) -> None:
        if self._user_encoder is not None:
            try:
                self._user_encoder.seal()  # the parent's open batch stays the parent's
            except Exception:
                pass
        self.transport._after_fork_in_child()
        if self.spool is not None:
            self.spool._after_fork_in_child()
        self._sender = Sender(self.transport, self.dialect, concurrency=self.concurrency)
        self._init_state()
        if not self._closed:
            self._start_threads()

    # -- producer side ----------------------------------------------------------------------------------------

    # push() is BatcherBase.push: the engine's hot path lives in the core (compiled, or the twin's Python)

    def push_many(self, events: Iterable[Any], collection: Optional[str] = None) -> List[EventError]:
        """Push every event; the bad ones are skipped and returned as errors (``.index`` = position in
        ``events``), so one bad event never costs the others."""
        errors: List[EventError] = []
        push = self.push
        for i, ev in enumerate(events):
            try:
                push(ev, collection)
            except EventError as exc:
                exc.index = i
                errors.append(exc)
        return errors

    def _seal_locked(self) -> None:
        batch = self._encoder.seal()
        if batch is not None:
            self._ready.append(batch)
            self._work.notify()

    def _make_room(self) -> None:
        """Called with the lock held and the buffer full (or the batcher closed)."""
        if self._closed:
            raise ClosedError("the batcher is closed")
        if self.overflow == "raise":
            raise BufferFullError(f"the buffer holds {self._buffered} events (max_buffered={self.max_buffered})")
        if self._spilling and self._buffered - self._spilling < self.max_buffered:
            return  # another pusher is spilling the batches that make the room
        if self.overflow == "spill" and not self._ready and \
                sum(b.count for b in self._inflight.values()) >= self.max_buffered:
            # every buffered event is on the wire (a slow or hanging endpoint): nothing can be spilled yet. The
            # open batch fills up meanwhile (at most one batch over max_buffered) and is spilled once sealed.
            return
        self._seal_locked()  # a full buffer may be all in the open batch: it must get a chance to leave
        if self.overflow == "spill":
            spill: List[Any] = []
            n = 0
            while self._ready and self._buffered - self._spilling - n >= self.max_buffered:
                b = self._ready.popleft()
                spill.append(b)
                n += b.count
            if spill:
                spool = self._open_spool()
                # The spool write (an fsync) runs without our lock: workers and other pushers go on meanwhile, and
                # the spool may report a corrupt or lost record through on_error, which may read ``stats``. The
                # batches stay counted in ``_buffered`` (flush waits for them) and in ``_ready.starts``.
                self._spilling += n
                self._lock.release()
                try:
                    spool.append_many(spill)  # all or nothing
                except BaseException:
                    self._lock.acquire()
                    self._spilling -= n
                    self._ready.extendleft(reversed(spill))
                    self._work.notify(len(spill))
                    raise
                self._lock.acquire()
                self._spilling -= n
                for b in spill:
                    self._ready.starts.pop(id(b), None)
                    self._release(b)
                self._c["spooled"] += n
                self._buffered -= n
                self._left += n
                self._replay_wanted = True
                self._replay_cv.notify()
                self._room.notify_all()
                self._idle.notify_all()
                log.info("buffer full: spilled %d events to the spool", n)
                if self._closed:  # closed while we wrote: the event being pushed is not taken (as in "block")
                    raise ClosedError("the batcher was closed while making room")
            return  # spill never waits: what is still buffered is on the wire (the open batch fills up meanwhile)
        deadline = None if self.block_timeout is None else time.monotonic() + self.block_timeout
        while self._buffered >= self.max_buffered:
            if self._closed:
                raise ClosedError("the batcher was closed while waiting for room")
            if self._inline and self._ready:  # no worker threads (see _spawn): this thread makes the room
                self._lock.release()
                try:
                    self._send_inline(deadline)
                finally:
                    self._lock.acquire()
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise BufferFullError(f"no room in the buffer after {self.block_timeout} s "
                                      f"(max_buffered={self.max_buffered})")
            self._room.wait(remaining)

    # -- delivery ---------------------------------------------------------------------------------------------

    @staticmethod
    def _release(batch: Any) -> None:
        try:
            batch.release()
        except (BufferError, AttributeError):
            pass

    def _ticker(self) -> None:
        interval = float(self.interval or 1.0)
        stop = self._stop_event
        while not stop.wait(interval):
            with self._lock:
                if self._encoder.pending:
                    self._seal_locked()

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._ready and not self._stopping:
                    self._work.wait()
                if not self._ready:
                    return
                batch, probe = self._take_locked()
            self._send_one(batch, probe)

    def _send_inline(self, deadline: Optional[float]) -> None:
        """No worker threads (see ``_spawn``): send the sealed batches from this thread until none is left or the
        deadline passed (close() then spools the rest)."""
        while deadline is None or time.monotonic() < deadline:
            with self._lock:
                if not self._ready:
                    return
                batch, probe = self._take_locked()
            self._send_one(batch, probe)

    def _take_locked(self) -> Tuple[Any, bool]:
        batch = self._ready.popleft()
        self._inflight[id(batch)] = batch
        # the endpoint looked down: one attempt, then straight to the spool (without a spool, every batch gets the
        # full retry policy: failing there means on_error)
        return batch, self._unhealthy and self._spool_dir is not None

    def _send_one(self, batch: Any, probe: bool) -> None:
        try:
            self._deliver(batch, probe)
        except Exception:  # never let a worker die: that would strand events
            log.exception("unexpected error while delivering a batch; spooling it")
            if self._claim(batch):
                self._fail(batch, batch.count, None, SpoolError("delivery crashed"))
        finally:
            with self._lock:
                self._inflight.pop(id(batch), None)
                abandoned = id(batch) in self._abandoned
                if abandoned:
                    self._abandoned.discard(id(batch))  # (close() did the bookkeeping; ids are reused)
                else:
                    self._ready.starts.pop(id(batch), None)
                    self._buffered -= batch.count
                    self._left += batch.count
                    self._room.notify_all()
                    if self._buffered == 0:
                        self._idle.notify_all()
            if self.on_delivered is None and not abandoned:
                self._release(batch)  # PERF: lets the encoder reuse the buffer (a result may still need it)

    def _claim(self, batch: Any) -> bool:
        """The result of ``batch`` is in: take it out of the in-flight set, so that ``close()`` no longer spools
        it; False when ``close()`` took it first (spooled and counted there: this result must not count too)."""
        with self._lock:
            if id(batch) in self._abandoned:
                log.info("a result came back for %d events that close() had spooled: not counted again",
                         batch.count)
                return False
            self._inflight.pop(id(batch), None)
            return True

    def _deliver(self, batch: Any, probe: bool) -> None:
        n = batch.count
        with self._lock:
            self._c["sent"] += n
            self._c["bytes"] += batch.nbytes
            self._c["batches"] += 1
        try:
            res = self._sender.deliver(batch, retry=Retry.NONE if probe else None)
        except TransportError as exc:
            if not self._claim(batch):
                return
            attempts = getattr(exc, "attempts", 1)
            with self._lock:
                self._c["retried"] += (attempts - 1) * n
                self._unhealthy = True
            log.warning("delivery of %d events failed: %s", n, exc)
            self._fail(batch, n, None, exc)
            return
        if not self._claim(batch):
            return
        self._settle(batch, res, replay=False)

    def _settle(self, batch: Any, res: BatchResult, *, replay: bool) -> List[int]:
        """Count and report one result; spool what may still succeed. Returns the indices left retryable."""
        delivered = res.delivered
        dup_only = 0
        if not res.ok:
            # the server already had these ids: the events are there, which is all a batcher promises
            dup_only = sum(1 for r in res.results if not r.ok and r.duplicate)
            delivered += dup_only
        with self._lock:
            self._c["retried"] += res.retried
            self._c["delivered"] += delivered
            self._c["duplicates"] += res.duplicates
            if replay:
                self._c["replayed"] += delivered
            if delivered:
                self._unhealthy = False
                if self._replay_wanted:
                    self._replay_cv.notify()
        if delivered and self.on_delivered is not None:
            self._callback(self.on_delivered, res)
        if res.ok or delivered == res.count:
            return []
        results = res.results
        rejected: Dict[Tuple[int, Optional[str]], List[int]] = {}
        retryable: List[int] = []
        for i, r in enumerate(results):
            if r.ok or r.duplicate:
                continue
            if r.retryable:
                retryable.append(i)
            else:
                rejected.setdefault((r.status, r.message), []).append(i)
        for (status, message), idx in rejected.items():
            with self._lock:
                self._c["rejected"] += len(idx)
            reply = res.reply(status)
            err = RejectedError(message or f"HTTP {status}", status=status, method="POST",
                                url=self.transport.url(self.dialect.batch_path),
                                body=reply.data if reply is not None else b"",
                                headers=reply.headers if reply is not None else None)
            log.warning("%d event(s) rejected by the server: %s", len(idx), err)
            if self.on_error is not None:
                self._callback(self.on_error, err, [batch.event(i) for i in idx])
        if retryable and not replay:
            if len(retryable) == batch.count and res.status >= 300:
                with self._lock:
                    self._unhealthy = True
            sub = batch if len(retryable) == batch.count else batch.subset(retryable)
            self._fail(sub, len(retryable), res, None)
        return retryable

    def _fail(self, batch: Any, n: int, res: Optional[BatchResult], exc: Optional[BaseException]) -> None:
        """``n`` events of ``batch`` could not be delivered after the retries: spool them, else report them."""
        with self._lock:
            if id(batch) in self._abandoned:
                return  # close() already spooled it
            self._c["failed"] += n
        if exc is None:
            msg = "still failing after retries"
            if res is not None:
                msgs = {r.message for r in res.results if not r.ok and r.retryable}
                msg = "; ".join(sorted(m for m in msgs if m)) or f"HTTP {res.status}"
            exc = TransportError(msg, method="POST", url=self.transport.url(self.dialect.batch_path))
        if self._spool_dir is not None:
            try:
                self._open_spool().append(batch)
            except SpoolError as serr:
                log.error("cannot spool %d events: %s", n, serr)
                if self.on_error is not None:
                    self._callback(self.on_error, serr, [batch.event(i) for i in range(batch.count)])
                return
            with self._lock:
                self._c["spooled"] += n
                self._replay_wanted = True
                self._replay_cv.notify()  # the replayer may be idle: it probes the endpoint from now on
            return
        if self.on_error is not None:
            self._callback(self.on_error, exc, [batch.event(i) for i in range(batch.count)])

    def _callback(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("callback %r failed", fn)

    def _on_corrupt(self, err: SpoolCorruptError) -> None:
        # The spool calls this without its lock held, and the batcher never holds its own lock across a spool call
        # (see _make_room): taking the lock here cannot deadlock, and neither can an on_error that reads stats.
        lock = getattr(self, "_lock", None)
        if lock is not None:  # (None during construction)
            with lock:
                self._c["corrupt"] += 1
        if self.on_error is not None:
            self._callback(self.on_error, err, [])

    def _probe_interval(self) -> float:
        return max(0.05, min(self.transport.retry.backoff_max, max(self.transport.retry.backoff * 4, 1.0)))

    def _replayer(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not (self._replay_wanted and not self._unhealthy):
                    if self._replay_wanted:
                        # the endpoint looked down: probe again after a while even without new traffic
                        if not self._replay_cv.wait(self._probe_interval()):
                            break
                    else:
                        self._replay_cv.wait()
                if self._stopping:
                    self._replaying = False
                    self._idle.notify_all()
                    return
                self._replaying = True
                probe = self._unhealthy
            try:
                with self._replay_one_at_a_time:
                    more = self._replay_one(probe)
            except Exception:
                log.exception("spool replay failed")
                more = False
                with self._lock:
                    self._unhealthy = True
            with self._lock:
                if not more:
                    self._replaying = False
                    self._idle.notify_all()

    def replay_spool(self) -> bool:
        """Replay the spool now, from the calling thread, oldest record first, one attempt per record, until it is
        empty (True) or the endpoint fails (False: the records stay, the background replay goes on as usual).
        For callers that must not send newer events before older spooled ones (``EventBatcher``)."""
        spool = self.spool
        if spool is None:
            return True
        for _ in range(spool.pending()[0]):  # (bounded: a partly delivered record is spooled again, as a new one)
            try:
                with self._replay_one_at_a_time:
                    if not self._replay_one(True):
                        break
            except Exception:
                log.exception("spool replay failed")
                with self._lock:
                    self._unhealthy = True
                break
        if spool.pending()[0]:
            return False
        with self._lock:
            self._replay_wanted = False  # (as the replayer thread notes when it finds the spool empty)
        return True

    def _replay_one(self, probe: bool) -> bool:
        """Replay the oldest spool record; False when the spool is empty or the endpoint still fails."""
        spool = self.spool
        if spool is None:
            with self._lock:
                self._replay_wanted = False
            return False
        rec = spool.next_record()
        if rec is None:
            with self._lock:
                self._replay_wanted = False
            return False
        done = False  # acked or released
        try:
            batch = rec.batch
            try:
                res = self._sender.deliver(batch, resent=True, retry=Retry.NONE if probe else None)
            except TransportError as exc:
                done = True
                rec.release()
                with self._lock:
                    self._unhealthy = True
                log.info("spool replay paused: %s", exc)
                return False
            with self._lock:
                self._c["sent"] += batch.count
                self._c["bytes"] += batch.nbytes
                self._c["batches"] += 1
            if res.status in CREDENTIALS_REFUSED and not res.delivered:
                # The whole request refused for its credentials (a key changed between the run that spooled the
                # events and this one): nothing is wrong with the events, so they stay spooled for a run with the
                # right key instead of ending rejected and leaving the spool.
                done = True
                rec.release()
                with self._lock:
                    self._unhealthy = True
                log.warning("spool replay paused: the server refused the credentials (HTTP %d); the %d spooled "
                            "event(s) stay in the spool", res.status, batch.count)
                return False
            left = self._settle(batch, res, replay=True)
            if left and len(left) == batch.count and res.status >= 300:
                done = True
                rec.release()  # the endpoint still fails: keep the record as it is
                with self._lock:
                    self._unhealthy = True
                return False
            if left:
                spool.append(batch.subset(left))  # only the events that may still succeed stay spooled
            rec.ack()
            done = True
            return True
        finally:
            if not done:
                # anything raised (re-spooling the retryable events failed on a full disk, the ack could not be
                # stored): the record stays for a later replay; the caller logs the error
                try:
                    rec.release()
                except Exception:
                    log.exception("cannot release a spool record")

    # -- lifecycle --------------------------------------------------------------------------------------------

    def _settled(self) -> bool:
        return self._buffered == 0 and not self._replaying and not (self._replay_wanted and not self._unhealthy
                                                                    and self.spool is not None)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Seal the open batch and wait until every event pushed so far is delivered, rejected or spooled (and,
        while the endpoint answers, the spool is replayed). Returns False if ``timeout`` expired first."""
        if threading.current_thread() in self._threads:
            raise RuntimeError("flush() / close() cannot be called from an on_delivered / on_error callback: "
                               "the batch being reported is still in flight")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._inline:
            with self._lock:
                self._seal_locked()
            self._send_inline(deadline)
            if self.spool is not None and (deadline is None or time.monotonic() < deadline):
                self.replay_spool()
        with self._lock:
            self._seal_locked()
            while not self._settled():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is not None else 0.25)
            return True

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop taking events, deliver what is buffered (waiting at most ``timeout`` seconds), spool the rest,
        and release the threads, the spool and (when owned) the transport. Returns within ``timeout`` + 2 s (a
        grace second for requests in flight to finish, one for the threads to stop). Idempotent."""
        if self._closed:
            return
        start = time.monotonic()
        with self._lock:
            self._closed = True
            self._limit = -1  # every push now takes the slow path, which raises ClosedError
        if self._atexit_fn is not None:
            _atexit.unregister(self._atexit_fn)
            self._atexit_fn = None
        done = self.flush(timeout)
        if not done:  # (only with a timeout)
            self._spool_leftovers(start + timeout + 1.0)  # type: ignore[operator]
        with self._lock:
            self._stopping = True
            self._stop_event.set()
            self._work.notify_all()
            self._replay_cv.notify_all()
            self._room.notify_all()
        # one deadline for all the threads (a worker stuck in a read of a hanging endpoint is a daemon thread:
        # it is left behind, its batch already spooled): close(timeout) returns within timeout + 2 s, counted from
        # the start of close() (a little of it kept for closing the spool and the transport)
        deadline = time.monotonic() + (1.0 if not done else 5.0)
        if timeout is not None:
            deadline = min(deadline, start + timeout + 2.0 - _CLOSE_RESERVE)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            if self.spool is not None:
                self.spool.close()
        except SpoolError as exc:  # reported (a lost segment goes through on_error); the closing goes on
            log.error("closing the spool: %s", exc)
        finally:
            if self._owns_transport:
                self.transport.close()
            _fork.forget(self)

    def _spool_leftovers(self, grace_until: float) -> None:
        """Time is up: make pending retries give up, and spool what is queued or still in flight (waiting for the
        requests in flight until ``grace_until`` at most, and one second at most)."""
        self.transport.interrupt()
        with self._lock:
            self._seal_locked()
            queued = list(self._ready)
            self._ready.clear()
            self._work.notify_all()
        grace = min(time.monotonic() + 1.0, grace_until)
        with self._lock:
            while self._inflight and time.monotonic() < grace:
                self._idle.wait(0.05)
            # The batches still in flight are ours from now on (a worker that gets a result for one later sees it
            # abandoned and counts nothing, see _claim): each event is counted exactly once, and nothing stays
            # buffered once close() returns.
            inflight = list(self._inflight.values())
            self._inflight.clear()
            for batch in queued + inflight:
                self._ready.starts.pop(id(batch), None)  # spooled below, or reported through on_error
                self._buffered -= batch.count
                self._left += batch.count
            self._abandoned.update(id(b) for b in inflight)
            self._room.notify_all()
            if self._buffered == 0:
                self._idle.notify_all()
        for batch in queued + inflight:
            n = batch.count
            if self._spool_dir is None:
                with self._lock:
                    self._c["failed"] += n
                if self.on_error is not None:
                    self._callback(self.on_error, ClosedError("closed before these events could be delivered"),
                                   [batch.event(i) for i in range(n)])
                continue
            try:
                self._open_spool().append(SpooledBatch.from_batch(batch))
            except SpoolError as exc:
                log.error("cannot spool %d events at close: %s", n, exc)
                with self._lock:
                    self._c["failed"] += n
                if self.on_error is not None:
                    self._callback(self.on_error, exc, [batch.event(i) for i in range(n)])
                continue
            with self._lock:
                self._c["spooled"] += n
            log.info("closing: spooled %d undelivered events", n)

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> Dict[str, int]:
        """A snapshot of the counters (events unless named otherwise): pushed, sent, delivered, retried, failed,
        rejected, spooled, replayed, dropped, bytes, batches, duplicates, corrupt, buffered."""
        with self._lock:
            s = dict(self._c)
            s["pushed"] = self._left + self._buffered
            s["buffered"] = self._buffered
        return s

    @property
    def settled_through(self) -> int:
        """How many events, counted in push order from the first one, are all settled (delivered, rejected or
        spooled). Every event before that point is settled; events after it may be settled too (batches settle
        out of order) or still buffered. The count restarts at 0 in a forked child."""
        with self._lock:
            starts = self._ready.starts
            return min(starts.values()) if starts else self._ready.sealed

    def spool_pending(self) -> Tuple[int, int]:
        """``(records, events)`` waiting in the spool."""
        if self.spool is None:
            return (0, 0)
        return self.spool.pending()

    def __repr__(self) -> str:
        return f"<Batcher {self.dialect.name} -> {self.transport.base_url}{' closed' if self._closed else ''}>"
