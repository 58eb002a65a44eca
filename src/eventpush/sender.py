"""Sender: worker threads that deliver sealed batches over one shared :class:`~eventpush.transport.Transport`.

Public API::

    EventResult                    (from eventpush.replies) tag, ok, duplicate, status, message, data, retryable,
                                   collection; .rejected
    BatchResult                    status, results (body order), data (parsed reply or None), attempts, retried,
                                   count, delivered, duplicates, rejected, retryable, ok, failures()
    RejectedError                  an HTTPStatusError for events the server refused for good (passed to on_error)
    Sender(transport, dialect, *, concurrency=4, max_in_flight=None, retry=None)
        .send(batch, *, resent=False) -> concurrent.futures.Future[BatchResult]
        .send_body(path, body, *, headers=None) -> concurrent.futures.Future[Response]
        .deliver(batch, *, resent=False, retry=None) -> BatchResult        (synchronous, in the calling thread)
        .close(timeout=None)                                                context manager too

A batch goes out as one request to ``dialect.batch_path`` with ``Content-Type: dialect.content_type`` and the
dialect's headers (gzip only when the dialect allows it). The reply is mapped to one :class:`EventResult` per
event (see :mod:`eventpush.replies`). Events the server marks retryable (Connect's "An error occurred inserting the
event please try again.", or a 200 whose body cannot be matched to the batch) are re-sent alone from their
encoded bytes (``batch.subset``), with the same backoff, up to ``retry.attempts`` rounds; a duplicate reported
after such a re-send counts as delivered (``ok`` and ``duplicate``). ``retried`` counts the events re-sent that
way plus every event of a whole-request retry made by the transport.

A connection failure or timeout that outlasts the transport's retries becomes the Future's exception
(:class:`~eventpush.errors.ConnectError` / :class:`~eventpush.errors.TimeoutError`); an HTTP status is never an
exception here: it is in the :class:`BatchResult` (``status`` and per-event ``retryable``), and the caller decides.

``send`` blocks while ``max_in_flight`` batches (default ``2 * concurrency``) are queued or in flight: that is the
backpressure. The Future supports ``asyncio.wrap_future`` (``await asyncio.wrap_future(sender.send(b))``).
Worker threads are daemon threads so that they still work inside ``atexit`` handlers (a ThreadPoolExecutor refuses
work once the interpreter starts shutting down).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Mapping, Optional

import orjson

from .dialects import Dialect
from .errors import ClosedError, HTTPStatusError, TransportError
from .replies import EventResult, map_reply, map_reply_lazy
from .transport import Response, Retry, Transport

__all__ = ["Sender", "BatchResult", "EventResult", "RejectedError"]

log = logging.getLogger("eventpush.sender")


class RejectedError(HTTPStatusError):
    """The server refused events for good (a 4xx other than 429, or a per-event rejection in a batch reply)."""


class BatchResult:
    """The outcome of one batch: ``status`` (of the last request), ``results`` (one :class:`EventResult` per event,
    body order), ``data`` (the parsed reply of the first request, or ``None``), ``attempts`` (requests made),
    ``retried`` (events sent more than once); :meth:`reply` gives the last reply that came with a failing status."""

    __slots__ = ("status", "_data", "_raw", "attempts", "retried", "count", "_results", "_batch", "_uniform",
                 "_created", "_replies")

    def __init__(
        self,
        status: int,
        results: Optional[List[EventResult]],
        data: Any = None,
        attempts: int = 1,
        retried: int = 0,
        *,
        batch: Any = None,
        uniform: Optional[Dict[str, Any]] = None,
        raw: Optional[bytes] = None,
        created: bool = False,
        replies: Optional[Dict[int, Response]] = None,
    ) -> None:
        self.status = status
        self._replies = replies
        self._data = data
        self._raw = raw
        self.attempts = attempts
        self.retried = retried
        self._results = results
        self._batch = batch
        self._uniform = uniform
        self._created = created  # a "created" reply: the per-event results carry the created events
        self.count = len(results) if results is not None else batch.count

    @property
    def data(self) -> Any:
        """The parsed JSON reply (parsed on first access when the fast path did not need it), or ``None``."""
        if self._data is None and self._raw:
            try:
                self._data = orjson.loads(self._raw)
            except orjson.JSONDecodeError:
                pass
            self._raw = None
        return self._data

    @property
    def results(self) -> List[EventResult]:
        """One result per event, in body order (built on first access when all events share one outcome)."""
        if self._results is None:
            b = self._batch
            tags = b.tags()
            colls = [b.collection(i) for i in range(b.count)] if b.dialect.needs_collection else [None] * b.count
            u = self._uniform or {}
            results = [EventResult(t, collection=c, **u) for t, c in zip(tags, colls)]
            if self._created:
                doc = self.data  # the created events, one per event (as map_reply attaches them)
                if isinstance(doc, list) and len(doc) == len(results):
                    for r, item in zip(results, doc):
                        r.data = item
            self._results = results
        return self._results

    def _tally(self, pred: Callable[[EventResult], bool], uniform_value: bool) -> int:
        if self._results is None:
            return self.count if uniform_value else 0
        return sum(1 for r in self._results if pred(r))

    @property
    def delivered(self) -> int:
        """Events the server stored (including duplicates after a re-send)."""
        u = self._uniform or {}
        return self._tally(lambda r: r.ok, bool(u.get("ok")))

    @property
    def duplicates(self) -> int:
        """Events the server reported as duplicates."""
        u = self._uniform or {}
        return self._tally(lambda r: r.duplicate, bool(u.get("duplicate")))

    @property
    def rejected(self) -> int:
        """Events refused for good."""
        u = self._uniform or {}
        return self._tally(lambda r: not r.ok and not r.retryable, not u.get("ok") and not u.get("retryable"))

    @property
    def retryable(self) -> int:
        """Events that failed but may succeed later (to be spooled or re-sent)."""
        u = self._uniform or {}
        return self._tally(lambda r: not r.ok and r.retryable, not u.get("ok") and bool(u.get("retryable")))

    @property
    def ok(self) -> bool:
        """Every event delivered."""
        return self.delivered == self.count

    def reply(self, status: int) -> Optional[Response]:
        """The last reply of this batch's requests that had the failing ``status`` (its headers and body, e.g.
        the reasons a server gave for refusing the batch), or ``None`` (no request got that status: a per-event
        rejection inside a 2xx reply)."""
        return self._replies.get(status) if self._replies else None

    def failures(self) -> List[int]:
        """Body indices of the events that were not delivered."""
        if self._results is None:
            return [] if (self._uniform or {}).get("ok") else list(range(self.count))
        return [i for i, r in enumerate(self._results) if not r.ok]

    def __repr__(self) -> str:
        return (f"<BatchResult {self.status}: {self.delivered}/{self.count} delivered, {self.rejected} rejected, "
                f"{self.retryable} retryable, {self.attempts} attempt(s)>")


_STOP = object()


class Sender:
    """Delivers sealed batches from ``concurrency`` worker threads; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        dialect: Dialect,
        *,
        concurrency: int = 4,
        max_in_flight: Optional[int] = None,
        retry: Optional[Retry] = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.transport = transport
        self.dialect = dialect
        self.concurrency = concurrency
        self.max_in_flight = max_in_flight or 2 * concurrency
        self.retry = retry or transport.retry
        self.headers: Dict[str, str] = {"Content-Type": dialect.content_type}
        self.headers.update(dialect.headers)
        self.gzip = transport.gzip and dialect.gzip_allowed
        if transport.gzip and not dialect.gzip_allowed:
            log.warning("dialect %s does not allow compressed bodies: sending uncompressed", dialect.name)
        self._closed = False
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()

    # -- synchronous core -------------------------------------------------------------------------------------

    def _post(self, body: Any, retry: Optional[Retry]) -> Response:
        return self.transport.post(self.dialect.batch_path, body, headers=self.headers, retry=retry,
                                   gzip=self.gzip)

    def deliver(self, batch: Any, *, resent: bool = False, retry: Optional[Retry] = None) -> BatchResult:
        """Send ``batch`` now, in this thread, re-sending retryable events alone; see the module docstring.
        ``resent=True`` says these events may have reached the server before (a replay), so duplicates count as
        delivered. Raises :class:`~eventpush.errors.TransportError` when the first request never completes."""
        policy = retry or self.retry
        resp = self._post(batch, policy)
        count = batch.count
        retried = (resp.attempts - 1) * count
        attempts = resp.attempts
        was_resent = resent or resp.attempts > 1
        results, doc, uniform = map_reply_lazy(self.dialect, batch, resp.status, resp.data, resent=was_resent)
        # PERF: no dict for the common 2xx reply
        replies = None if 200 <= resp.status < 300 else {resp.status: resp}
        if results is None:
            return BatchResult(resp.status, None, doc, attempts, retried, batch=batch, uniform=uniform,
                               raw=resp.data if doc is None else None, created=self.dialect.reply == "created",
                               replies=replies)
        pending = [i for i, r in enumerate(results) if r.retryable]
        status = resp.status
        rounds = 1
        while pending and 200 <= status < 300 and rounds < policy.attempts:
            if self.transport._interrupt.wait(policy.delay(rounds)):
                break  # a closing batcher's time is up: what is left gets spooled
            rounds += 1
            sub = batch if len(pending) == count else batch.subset(pending)
            try:
                r2 = self._post(sub, policy)
            except TransportError as exc:
                log.debug("re-sending %d event(s) failed: %s", len(pending), exc)
                attempts += getattr(exc, "attempts", 1)
                retried += len(pending)
                break
            attempts += r2.attempts
            retried += len(pending) * r2.attempts
            sub_results, _ = map_reply(self.dialect, sub, r2.status, r2.data, resent=True)
            for j, i in enumerate(pending):
                results[i] = sub_results[j]
            if r2.status >= 300:
                status = r2.status
                if replies is None:
                    replies = {}
                replies[r2.status] = r2
            pending = [i for i in pending if results[i].retryable]
        return BatchResult(status, results, doc, attempts, retried, replies=replies)

    # -- threads ----------------------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError("the sender is closed")
            while len(self._threads) < self.concurrency:
                t = threading.Thread(target=self._work, name=f"eventpush-sender-{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                self._slots.release()
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the Future carries it to the caller
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                self._slots.release()

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "Future[Any]":
        if self._closed:
            raise ClosedError("the sender is closed")
        if len(self._threads) < self.concurrency:
            self._start()
        self._slots.acquire()  # backpressure: at most max_in_flight queued or running
        fut: "Future[Any]" = Future()
        with self._lock:
            # close() may have begun while we waited for a slot: after it, nothing may queue behind the workers'
            # stop markers (no worker would ever run it, and its Future would never resolve)
            if self._closed:
                self._slots.release()
                raise ClosedError("the sender is closed")
            self._queue.put((fut, fn, args, kwargs))
        return fut

    def send(self, batch: Any, *, resent: bool = False) -> "Future[BatchResult]":
        """Queue ``batch`` for delivery; the Future resolves to its :class:`BatchResult` (or the transport
        error). Blocks while ``max_in_flight`` batches are pending."""
        return self._submit(self.deliver, batch, resent=resent)

    def send_body(self, path: str, body: Any, *, headers: Optional[Mapping[str, str]] = None) -> "Future[Response]":
        """POST one pre-encoded body (e.g. a single event) to ``path`` from a worker; the Future resolves to the
        final :class:`~eventpush.transport.Response` (any status) or the transport error."""
        hdrs = dict(self.headers)
        if headers:
            hdrs.update(headers)
        return self._submit(self.transport.post, path, body, headers=hdrs, gzip=self.gzip)

    def close(self, timeout: Optional[float] = None) -> None:
        """Finish queued sends (waiting at most ``timeout`` seconds) and stop the workers. The transport is the
        caller's to close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(_STOP)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
