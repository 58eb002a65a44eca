"""The Ruby gem's module API: ``configure(...)`` then ``push(...)`` in the gem's three modes and a buffered one
(spec/connect.md §4).

``push(collection_or_batches, event_or_events=None)`` is a **batch** when the first argument is not a ``str`` or
the second is a list: ``push("c", {...})`` → ``POST /events/c``; ``push("c", [{...}])`` → ``POST /events``
``{"c": [...]}``; ``push({"c1": [...], "c2": [...]})`` as given. Every event is processed with the gem's rules
(``id`` and ``timestamp`` first, dates as ``YYYY-MM-DDTHH:MM:SSZ``, ``^tp_`` refused with
:class:`EventDataValidationError`) before any I/O, in every mode.

Modes
    ``"sync"``   returns the :class:`EventPushResponse`; transport errors raise.
    ``"async"``  returns a :class:`DeferredResponse` at once; ``response_received(cb)`` gets the response (any
                 status), ``error_occured(cb)`` / ``error_occurred(cb)`` the transport error; callbacks run once
                 each on the sender thread (or at once when added after completion). No event loop needed.
    ``"await"``  returns an :class:`AwaitableResponse`: ``await push(...)`` inside asyncio gives the response.
    ``"buffered"`` (eventpush) returns ``None`` at once: events are validated and encoded at the call site and go
                 through a :class:`~eventpush.batcher.Batcher` (batched, retried, spooled to disk when they
                 cannot be delivered: nothing is dropped silently); ``flush()`` waits for them, ``reset()`` /
                 ``configure()`` drain them. ``buffer`` (a dict of Batcher options) tunes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Dict, Generator, List, Mapping, Optional

import orjson

from .._core_py import loads_exact
from ..dialects import CONNECT_RUBY
from ..errors import ClosedError, EventError, EventTypeError
from ..transport import Limits, Retry, Timeout, Transport
from ._engine import (DEFAULT_BASE_URL, DEFAULT_TIMEOUT, MSG_NOT_LIST, SentBatches, close_once, encoder, loads_or_none,
                      rb_error, single_path)
from .exceptions import UnconfiguredError
from .responses import EventPushResponse

__all__ = ["Configuration", "configure", "reset", "push", "flush", "DeferredResponse", "AwaitableResponse", "MODES"]

log = logging.getLogger("eventpush.connect")

MODES = ("sync", "async", "await", "buffered")


class Configuration:
    """Settings of the module API (keyword-only): ``api_key``, ``project_id``, ``mode`` (``"sync"``,
    ``"async"``, ``"await"`` or ``"buffered"``), ``base_url`` (path included), and beyond the gem ``retry``, ``timeout``
    (seconds, connect and read; default 60), ``max_workers`` (concurrent requests in async / await / buffered
    mode), ``verify`` (TLS) and ``buffer`` (options of the Batcher behind ``mode = "buffered"``: ``interval``,
    ``max_buffered``, ``overflow``, ``spool_dir``, ``on_error``, …). ``async_ = True`` is the gem's
    ``async = true`` (``mode = "async"``)."""

    def __init__(
        self,
        *,
        api_key: str = "",
        project_id: str = "",
        mode: str = "sync",
        base_url: str = DEFAULT_BASE_URL,
        async_: Optional[bool] = None,
        retry: Optional[Retry] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_workers: int = 2,
        verify: Any = True,
        buffer: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.api_key = api_key
        self.project_id = project_id
        self.mode = mode
        self.base_url = base_url
        self.retry = retry
        self.timeout = timeout
        self.max_workers = max_workers
        self.verify = verify
        self.buffer = buffer
        if async_ is not None:
            self.async_ = async_

    @property
    def async_(self) -> bool:
        """The gem's ``async`` flag: True when ``mode == "async"``."""
        return self.mode == "async"

    @async_.setter
    def async_(self, value: bool) -> None:
        self.mode = "async" if value else "sync"

    def __repr__(self) -> str:
        return (f"Configuration(project_id={self.project_id!r}, mode={self.mode!r}, base_url={self.base_url!r}, "
                f"timeout={self.timeout!r})")


class DeferredResponse:
    """What ``push`` returns in async mode (the gem's ``DeferredHttpResponse``). ``response_received(cb)``
    (alias ``callback``) and ``error_occured(cb)`` (aliases ``error_occurred``, ``errback``) return ``self`` so
    they chain. Each callback runs once, on the sender thread, or at once in the caller's thread when the push
    already finished. ``wait(timeout)`` blocks for the response (or raises the error)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ok: List[Callable[[Any], Any]] = []
        self._err: List[Callable[[BaseException], Any]] = []
        self._state: Optional[str] = None
        self._value: Any = None

    def response_received(self, cb: Callable[[EventPushResponse], Any]) -> "DeferredResponse":
        """Call ``cb(response)`` when the server answers (whatever the status)."""
        with self._lock:
            if self._state is None:
                self._ok.append(cb)
                return self
            run = self._state == "ok"
        if run:
            _call(cb, self._value)
        return self

    def error_occured(self, cb: Callable[[BaseException], Any]) -> "DeferredResponse":
        """Call ``cb(error)`` when the request fails (connection error, timeout) after the retries."""
        with self._lock:
            if self._state is None:
                self._err.append(cb)
                return self
            run = self._state == "error"
        if run:
            _call(cb, self._value)
        return self

    callback = response_received
    errback = error_occured
    error_occurred = error_occured

    def _settle(self, state: str, value: Any) -> None:
        with self._lock:
            self._state = state
            self._value = value
            cbs = self._ok if state == "ok" else self._err
            self._ok, self._err = [], []
        self._done.set()
        for cb in cbs:
            _call(cb, value)

    @property
    def done(self) -> bool:
        """True once the push finished (either way)."""
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> EventPushResponse:
        """Block until the push finished; return the response or raise the error (``TimeoutError`` of the
        builtins when ``timeout`` expires first)."""
        if not self._done.wait(timeout):
            raise TimeoutError("the push has not finished yet")
        if self._state == "error":
            raise self._value
        return self._value

    def __repr__(self) -> str:
        return f"<DeferredResponse {self._state or 'pending'}>"


def _call(cb: Callable[[Any], Any], value: Any) -> None:
    try:
        cb(value)
    except Exception:  # a failing callback must not break the sender thread or the other callbacks
        log.exception("a push callback raised")


class AwaitableResponse:
    """What ``push`` returns in await mode: ``await`` it (in any asyncio loop) for the
    :class:`EventPushResponse`; transport errors raise there. ``future`` is the underlying
    ``concurrent.futures.Future``."""

    __slots__ = ("future",)

    def __init__(self, future: "Future[EventPushResponse]") -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, EventPushResponse]:
        return asyncio.wrap_future(self.future).__await__()

    def result(self, timeout: Optional[float] = None) -> EventPushResponse:
        """Block for the response without an event loop."""
        return self.future.result(timeout)


class _Client:
    """One configured client: the transport (keep-alive pool, retries) and, for async / await, the sender
    threads."""

    def __init__(self, config: Configuration) -> None:
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {config.mode!r}")
        self.mode = config.mode
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "X-Api-Key": str(config.api_key),
            "X-Project-Id": str(config.project_id),
        }
        self._transport = Transport(
            config.base_url,
            headers=headers,
            timeout=Timeout(connect=config.timeout, read=config.timeout),
            retry=Retry() if config.retry is None else config.retry,
            limits=Limits(max_connections=max(1, config.max_workers)),
            gzip=False,
            verify=config.verify,
        )
        self._executor: Optional[ThreadPoolExecutor] = None
        self._batcher: Any = None
        if self.mode == "buffered":
            from ..batcher import Batcher

            self._batcher = Batcher(self._transport, CONNECT_RUBY, concurrency=max(1, config.max_workers),
                                    **(config.buffer or {}))
        elif self.mode != "sync":
            self._executor = ThreadPoolExecutor(max_workers=max(1, config.max_workers),
                                                thread_name_prefix="eventpush-connect-rb")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when the last push in progress ends
        self._active = 0  # pushes between _enter() and _leave(): close() waits for them
        self._local = threading.local()  # this thread's pushes in progress on this client (depth)
        self._done = threading.Event()  # set once close() closed the pool
        self._closed = False

    def push(self, collection_or_batches: Any, event_or_events: Any = None) -> Any:
        """Push on this client (raises :class:`ClosedError` once :meth:`close` began)."""
        self._enter()
        try:
            return self._push(collection_or_batches, event_or_events)
        finally:
            self._leave()

    def _enter(self) -> None:
        """Count a push in progress; from here on :meth:`close` waits for it (its encoding, dispatch and, in sync
        mode, its send with the retries) before it closes anything."""
        with self._lock:
            if self._closed:
                raise ClosedError("this Connect client was closed (configure() or reset() replaced it)")
            self._active += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1

    def _leave(self) -> None:
        self._local.depth -= 1
        with self._lock:
            self._active -= 1
            if not self._active:
                self._idle.notify_all()

    def _push(self, collection_or_batches: Any, event_or_events: Any) -> Any:
        if self._batcher is not None:
            return self._push_buffered(collection_or_batches, event_or_events)
        enc = encoder(CONNECT_RUBY)
        first = collection_or_batches
        if isinstance(first, str) and not isinstance(event_or_events, list):
            try:
                body = enc.encode(event_or_events, first)
            except EventError as exc:
                raise rb_error(exc) from None
            job = partial(self._send_single, first, body)
        else:
            batch = _as_batch(first, event_or_events)
            try:
                batches, errs = enc.encode_batch(batch)
            except EventError as exc:
                raise rb_error(exc) from None
            if errs:
                raise rb_error(errs[0])
            job = partial(self._send_batches, batches, list(batch))
        return self._dispatch(job)

    def _push_buffered(self, first: Any, event_or_events: Any) -> None:
        """Buffered mode: every good event is queued; then the first bad one raises (its ``index`` names it)."""
        b = self._batcher
        if isinstance(first, str) and not isinstance(event_or_events, list):
            try:
                b.push(event_or_events, first)
            except EventError as exc:
                raise rb_error(exc) from None
            return None
        bad: Optional[EventError] = None
        for collection, events in _as_batch(first, event_or_events).items():
            if not isinstance(events, list):  # as the encoder says it in the other modes
                raise rb_error(EventTypeError(MSG_NOT_LIST, collection=collection))
            errors = b.push_many(events, collection)
            if errors and bad is None:
                bad = errors[0]
        if bad is not None:
            raise rb_error(bad)
        return None

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Buffered mode: wait until every pushed event was delivered, rejected or spooled (True) or ``timeout``
        passed (False). The other modes buffer nothing: True at once."""
        if self._batcher is not None:
            return bool(self._batcher.flush(timeout))
        return True

    def _dispatch(self, job: Callable[[], EventPushResponse]) -> Any:
        # Called between _enter() and _leave(): close() has not shut the executor down nor closed the transport
        # yet, even when it began meanwhile (it waits for this push), so the send goes out.
        if self.mode == "sync":
            return job()
        if self.mode == "await":
            return AwaitableResponse(self._executor.submit(job))  # type: ignore[union-attr]
        deferred = DeferredResponse()
        self._executor.submit(_run_deferred, job, deferred)  # type: ignore[union-attr]
        return deferred

    def _send_single(self, collection: str, body: bytes) -> EventPushResponse:
        resp = self._transport.post(single_path(collection), body)
        r = EventPushResponse._from_parts(resp.status, resp.headers.get("Content-Type"), resp.data,
                                          partial(loads_exact, body), batch=False, attempts=resp.attempts)
        return r

    def _send_batches(self, batches: List[Any], collections: List[str]) -> EventPushResponse:
        sent = SentBatches(batches)
        if not batches:  # no event at all: the gem still posts the batch ({"c": []}) and answers the server's reply
            resp = self._transport.post(CONNECT_RUBY.batch_path, orjson.dumps({c: [] for c in collections}))
            return EventPushResponse._from_parts(resp.status, resp.headers.get("Content-Type"), resp.data,
                                                 sent.by_collection, batch=True, attempts=resp.attempts)
        replies = [self._transport.post(CONNECT_RUBY.batch_path, b) for b in batches]
        if len(replies) == 1:
            resp = replies[0]
            return EventPushResponse._from_parts(resp.status, resp.headers.get("Content-Type"), resp.data,
                                                 sent.by_collection, batch=True, attempts=resp.attempts)
        # a push over 5,000 events went out in parts: merge them back in request order
        return _merge_parts(batches, replies, sent)

    def close(self) -> None:
        """Let the pushes already started finish (sync: their sends, retries included; async / await: their
        queued sends; buffered: delivery or spooling), then close the pool. A second call waits for the first
        to finish. Called from one of this client's own threads (a callback), it returns at once and the rest
        happens in the background."""
        close_once(self, self._on_own_thread())

    def _on_own_thread(self) -> bool:
        """True in one of our sender threads, or in a thread with a push of ours in progress."""
        if getattr(self._local, "depth", 0):
            return True
        ex = self._executor
        return ex is not None and threading.current_thread() in getattr(ex, "_threads", ())

    def _finish(self) -> None:
        try:
            with self._idle:
                while self._active:
                    self._idle.wait()
            if self._batcher is not None:
                self._batcher.close()  # delivers or spools what is buffered
            if self._executor is not None:
                self._executor.shutdown(wait=True)
        finally:
            self._transport.close()  # whatever happened above, the pool is closed
            self._done.set()


_NO_RESULT = "Connect returned no result for this event"


def _part_failure(status: int, doc: Any, data: bytes) -> Any:
    """The message given to each event of a split push's part that has no result list: the reply's
    ``errorMessage``, else its ``errors``, else a text naming the status."""
    if not isinstance(doc, dict):
        what = "an empty body" if not data else "a body that is not JSON"
        return f"Connect answered HTTP {status} with {what}"
    if "errorMessage" in doc:
        return doc["errorMessage"]
    if "errors" in doc:
        return doc["errors"]
    return f"Connect answered HTTP {status} with no result for this event"


def _merge_parts(batches: List[Any], replies: List[Any], sent: SentBatches) -> EventPushResponse:
    """One response for a push that went out in parts (spec §1.5): the first non-200 status (else 200), and per
    collection one result per event in request order. A part that failed as a whole (a 500 with
    ``errorMessage``, a reply that is not JSON, …) gives each of its events a failed result carrying the part's
    error, so that no result is paired with another part's event; a short list is padded the same way. A
    ``duplicate`` counts as stored (``success`` true, spec §3.5) only in a part that was itself retried. Other
    top-level keys (``errorMessage``) come from the first part that has them."""
    status = next((r.status for r in replies if r.status != 200), 200)
    names = {coll for b in batches for coll, _s, _e in b.groups()}
    merged: Dict[str, Any] = {}
    for b, r in zip(batches, replies):
        ct = r.headers.get("Content-Type") or ""
        doc = loads_or_none(r.data) if "application/json" in ct.lower() else None
        if not isinstance(doc, dict):
            doc = None
        resent = r.attempts > 1
        for coll, start, stop in b.groups():
            n = stop - start
            out = merged.setdefault(coll, [])
            items = doc.get(coll) if doc is not None else None
            if not isinstance(items, list):
                failure = _part_failure(r.status, doc, r.data)
                out.extend({"success": False, "duplicate": False, "message": failure} for _ in range(n))
                continue
            if len(items) > n:
                items = items[:n]
            if resent:
                for item in items:
                    if type(item) is dict and item.get("duplicate") is True:
                        item["success"] = True  # stored by this part's own earlier attempt
            out.extend(items)
            if len(items) < n:
                out.extend({"success": False, "duplicate": False, "message": _NO_RESULT}
                           for _ in range(n - len(items)))
        if doc is not None:
            for k, v in doc.items():
                if k not in names:
                    merged.setdefault(k, v)
    attempts = max(r.attempts for r in replies)
    # resent=False: the duplicates were settled part by part above, not by the merged response's attempts
    return EventPushResponse._from_parts(status, "application/json", orjson.dumps(merged), sent.by_collection,
                                         batch=True, attempts=attempts, parsed=merged, resent=False)


def _as_batch(first: Any, event_or_events: Any) -> Dict[Any, Any]:
    """``push("c", [events])`` or ``push({c: [events]})`` as one ``{collection: events}`` dict."""
    if isinstance(first, str):
        return {first: event_or_events}
    if isinstance(first, Mapping):
        if event_or_events is not None:
            raise TypeError("push({collection: [events]}) takes no second argument")
        return first if isinstance(first, dict) else dict(first)
    raise TypeError("push() takes a collection name (str) and an event or a list of events, or a "
                    f"{{collection: [events]}} dict; got {type(first).__name__}")


def _run_deferred(job: Callable[[], EventPushResponse], deferred: DeferredResponse) -> None:
    try:
        resp = job()
    except BaseException as exc:  # delivered to error_occured, never lost
        deferred._settle("error", exc)
    else:
        deferred._settle("ok", resp)


_state_lock = threading.Lock()
_client: Optional[_Client] = None


def configure(fn: Optional[Callable[[Configuration], Any]] = None, /, **settings: Any) -> Configuration:
    """Build a fresh :class:`Configuration`, let ``fn(config)`` fill it in (the gem's block) and apply
    ``settings`` as attributes, then replace the current client (the old one finishes its in-flight sends before
    it closes). Returns the configuration."""
    global _client
    config = Configuration()
    if fn is not None:
        fn(config)
    for name, value in settings.items():
        if name.startswith("_") or not hasattr(config, name):
            raise TypeError(f"configure() got an unknown setting {name!r}")
        setattr(config, name, value)
    new = _Client(config)
    with _state_lock:
        old, _client = _client, new
    if old is not None:
        old.close()
    return config


def reset() -> None:
    """Drop the configured client (after its in-flight sends); ``push`` then raises :class:`UnconfiguredError`."""
    global _client
    with _state_lock:
        old, _client = _client, None
    if old is not None:
        old.close()


def flush(timeout: Optional[float] = None) -> bool:
    """In buffered mode, wait until every pushed event was delivered, rejected or spooled; True when done. (A
    client that configure() / reset() replaces meanwhile settles everything it took before it closes.)"""
    with _state_lock:
        client = _client
    if client is None:
        raise UnconfiguredError()
    return client.flush(timeout)


def push(collection_or_batches: Any, event_or_events: Any = None) -> Any:
    """Push one event, a list of events into one collection, or ``{collection: [events]}``; see the module
    docstring for the dispatch rule and what each mode returns. A push that races ``configure()`` /
    ``reset()`` goes out on the client it found: replacing a client waits for the pushes already started."""
    with _state_lock:
        client = _client
        if client is None:
            raise UnconfiguredError()
        # counted under the lock that configure() swaps clients with, so the old client cannot close between
        # our reading it and our push starting on it
        client._enter()
    try:
        return client._push(collection_or_batches, event_or_events)
    finally:
        client._leave()
