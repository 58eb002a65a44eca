"""``ConnectClient`` (connect-python's API) and ``Event``; ``BufferedPusher`` for fire-and-forget pushing.

``push_event`` / ``push_events`` validate, stamp and encode in the caller's thread with the engine's encoder
(rules ``connect_py``: the caller's dict gets ``id`` / ``timestamp`` as in the original) and hand the encoded bytes
to ``_executor`` (at most ``max_workers`` requests in flight over one keep-alive pool). Bad input never raises:
it is an already-failed Future holding :class:`InvalidEventError` (or the ``TypeError`` of an unserializable
value). A push of more than 5,000 events goes out as consecutive requests whose results are merged in request
order.
"""

from __future__ import annotations

import logging
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import orjson

from .._core_py import dumps_exact, loads_exact
from ..dialects import CONNECT
from ..errors import ClosedError, EventError
from ..transport import Retry
from ._engine import MSG_NOT_LIST, close_once, encoder, py_error
from .api import ConnectApi
from .exceptions import InvalidEventError
from .responses import PushBatchResponse, PushResponse

__all__ = ["ConnectClient", "Event", "BufferedPusher"]

log = logging.getLogger("eventpush.connect")


def _failed(exc: BaseException) -> "Future[Any]":
    fut: "Future[Any]" = Future()
    fut.set_exception(exc)
    return fut


class Event:
    """connect-python's ``Event(collection_name, event_data)``: validated, stamped and encoded at once (raises
    :class:`InvalidEventError`). ``body`` is the processed event as sent (a new dict), ``collection_name``,
    ``error`` (always ``None``)."""

    def __init__(self, collection_name: str, event_data: Any) -> None:
        try:
            self._encoded: bytes = encoder(CONNECT).encode(event_data, _coll(collection_name))
        except EventError as exc:
            raise py_error(exc) from None
        self._body: Any = None
        self.collection_name = collection_name
        self.error = None

    @property
    def body(self) -> Any:
        """The processed event (datetimes as ISO strings), decoded from the encoded bytes on first access. It is
        what gets sent: changes made to it in place are sent too (as the original's ``json.dumps(event.body)``)."""
        if self._body is None:
            self._body = loads_exact(self._encoded)
        return self._body

    @body.setter
    def body(self, value: Any) -> None:
        self._body = value
        self._encoded = dumps_exact(value)

    def _bytes(self) -> bytes:
        """The body to send. PERF: the bytes encoded at construction while nobody has seen ``body``; once it was
        handed out it may have been changed in place, so it is encoded again."""
        if self._body is None:
            return self._encoded
        return dumps_exact(self._body)

    def _process(self, event_data: Dict[Any, Any]) -> Dict[Any, Any]:
        """Validate ``event_data`` (which must already have its ``timestamp``, as in the original) and return the
        processed copy; raises :class:`InvalidEventError`."""
        event_data["timestamp"]  # noqa: B018 - the original reads it unguarded (KeyError when absent)
        try:
            return loads_exact(encoder(CONNECT).encode(event_data, _coll(self.collection_name)))
        except EventError as exc:
            raise py_error(exc) from None

    def _validate_and_process_nested(self, event_data: Dict[Any, Any], errors: Dict[Any, str]) -> Any:
        """The original's recursive helper: record bad property names at every dict depth in ``errors`` (keyed by
        name) and convert dates to ISO strings in place (lists too: eventpush's fix); returns
        ``(event_data, errors)``."""
        _nested(event_data, errors)
        return event_data, errors


def _nested(obj: Any, errors: Dict[Any, str]) -> None:
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for k, v in list(items):
        if isinstance(obj, dict) and isinstance(k, str):
            if "." in k:
                errors[k] = "Property names cannot contain a period (.)"
            elif k.startswith("$"):
                errors[k] = "Property names cannot start with $"
            elif len(k) > 255:
                errors[k] = "Property names cannot exceed 255 characters"
        if hasattr(v, "isoformat"):
            obj[k] = v.isoformat()
        elif isinstance(v, dict):
            _nested(v, errors)
        elif isinstance(v, list):
            _dates_in_list(v)


def _dates_in_list(lst: List[Any]) -> None:
    # key rules do not enter lists (the original's behaviour); dates inside them are converted (the fix)
    for i, v in enumerate(lst):
        if hasattr(v, "isoformat"):
            lst[i] = v.isoformat()
        elif isinstance(v, dict):
            _nested(v, {})
        elif isinstance(v, list):
            _dates_in_list(v)


def _coll(name: Any) -> str:
    return name if type(name) is str else str(name)


def _encode_until_error(events: Dict[Any, List[Any]]) -> List[Any]:
    """Encode ``{collection: [event, …]}`` into sealed batches, or raise the first event's error (the
    :class:`InvalidEventError` / ``TypeError`` of connect-python) as the original does, having stamped ``id`` /
    ``timestamp`` only into the dicts up to and including the failing one (it builds ``Event`` after ``Event``
    and stops at the first that raises): the encoder stops there too."""
    try:
        batches, errs = encoder(CONNECT).encode_batch(events, stop_at_error=True)
    except EventError as exc:  # refused as a whole (a collection name): per-event processing has not begun
        raise py_error(exc) from None
    if errs:
        raise py_error(errs[0])
    return batches


class ConnectClient:
    """Drop-in for connect-python's ``ConnectClient(project_id, api_key, base_url=None, get_timeout=None,
    post_timeout=None, max_workers=2)``; timeouts default to 60 s.

    Beyond the original (keyword-only): ``retry`` (a :class:`~eventpush.transport.Retry`; default 5 attempts
    with exponential backoff and jitter on connection errors, timeouts, 429 and 5xx; ``Retry.NONE`` for the
    original's single attempt) and ``verify`` (TLS: ``True``, ``False`` or a CA bundle path). ``close()`` (or
    ``with``) finishes queued pushes and closes the pool; afterwards pushing raises
    :class:`~eventpush.errors.ClosedError`."""

    def __init__(
        self,
        project_id: str,
        api_key: str,
        base_url: Optional[str] = None,
        get_timeout: Optional[float] = None,
        post_timeout: Optional[float] = None,
        max_workers: int = 2,
        *,
        retry: Optional[Retry] = None,
        verify: Any = True,
    ) -> None:
        self._api = ConnectApi(project_id=project_id, api_key=api_key, base_url=base_url,
                               post_timeout=post_timeout, get_timeout=get_timeout, retry=retry,
                               max_connections=max_workers, verify=verify)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="eventpush-connect")
        self._closed = False
        self._lock = threading.Lock()
        self._done = threading.Event()  # set once close() closed the pool
        self._pushers: "weakref.WeakSet[BufferedPusher]" = weakref.WeakSet()

    def push_event(self, collection_name: str, event: Any) -> "Future[PushResponse]":
        """Validate and encode ``event`` now; the Future resolves to the :class:`PushResponse` (or fails with
        :class:`InvalidEventError`, or a transport error after the retries)."""
        if self._closed:
            raise ClosedError("this ConnectClient is closed")
        try:
            body = encoder(CONNECT).encode(event, _coll(collection_name))
        except EventError as exc:
            return _failed(py_error(exc))
        return self._submit(self._api._post_single, collection_name, body)

    def push_events(self, events: Any) -> "Future[PushBatchResponse]":
        """Validate and encode ``{collection: [event, …]}`` now; the Future resolves to the
        :class:`PushBatchResponse` (or fails with the first event's :class:`InvalidEventError`)."""
        if self._closed:
            raise ClosedError("this ConnectClient is closed")
        if not isinstance(events, dict):
            return _failed(InvalidEventError(MSG_NOT_LIST))
        # The original stops at the first collection whose value is not a list; events before it still count.
        for pos, (coll, evs) in enumerate(events.items()):
            if not isinstance(evs, list):
                if pos:
                    head = dict(list(events.items())[:pos])
                    try:
                        _encode_until_error(head)
                    except EventError as exc:
                        return _failed(exc)
                return _failed(InvalidEventError(MSG_NOT_LIST, collection=coll))
        try:
            batches = _encode_until_error(events)
        except EventError as exc:
            return _failed(exc)
        if not batches:  # nothing to send: the original posts "{}"
            return self._submit(self._api.post_events, {})
        return self._submit(self._api._post_batches, batches)

    def _submit(self, fn: Any, *args: Any) -> "Future[Any]":
        # under the lock close() takes to mark the client closed: a push either is queued before the executor
        # shuts down (and close() finishes it) or raises ClosedError, never the executor's RuntimeError
        with self._lock:
            if self._closed:
                raise ClosedError("this ConnectClient is closed")
            return self._executor.submit(fn, *args)

    def _push_processed_events(self, events: List[Event]) -> PushBatchResponse:
        """Push :class:`Event` objects as one batch, synchronously."""
        by_collection: Dict[str, List[Any]] = {}
        for e in events:
            by_collection.setdefault(e.collection_name, []).append(e.body)
        return self._api.post_events(by_collection)

    def buffered(self, **options: Any) -> "BufferedPusher":
        """A fire-and-forget pusher over this client's connection pool, backed by a
        :class:`~eventpush.batcher.Batcher` (``options`` are the Batcher's: ``interval``, ``max_buffered``,
        ``overflow``, ``spool_dir``, ``on_error``, …). See :class:`BufferedPusher`. Closing the client closes
        (flushes) its pushers first: they share its connection pool."""
        with self._lock:  # a pusher is either closed by close() or refused
            if self._closed:
                raise ClosedError("this ConnectClient is closed")
            pusher = BufferedPusher(self._api._session, **options)
            self._pushers.add(pusher)
        return pusher

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Close the buffered pushers (delivering or spooling what they hold), finish every queued push, then
        close the connection pool. A second call waits for the first to finish. Called from one of this
        client's worker threads (a Future's done-callback), it returns at once and the rest happens in the
        background: a worker cannot wait for itself."""
        close_once(self, threading.current_thread() in getattr(self._executor, "_threads", ()))

    def _finish(self) -> None:
        try:
            for pusher in list(self._pushers):
                pusher.close()
            self._executor.shutdown(wait=True)
        finally:
            self._api.close()  # whatever happened above, the pool is closed
            self._done.set()

    def __enter__(self) -> "ConnectClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ConnectClient {self._api._base_url}{' closed' if self._closed else ''}>"


class BufferedPusher:
    """Fire-and-forget pushing for Connect: ``push_event`` / ``push_events`` validate and encode at the call site
    (bad input raises :class:`InvalidEventError` there) and return at once; a
    :class:`~eventpush.batcher.Batcher` batches, sends in the background, retries, and spools what cannot be
    delivered, so nothing is lost silently. ``flush()``, ``close()``, ``stats``, context manager."""

    def __init__(self, target: Any, **options: Any) -> None:
        from ..batcher import Batcher

        self._batcher = Batcher(target, CONNECT, **options)

    def push_event(self, collection_name: str, event: Any) -> None:
        """Queue one event (raises on bad input)."""
        try:
            self._batcher.push(event, _coll(collection_name))
        except EventError as exc:
            raise py_error(exc) from None

    def push_events(self, events: Dict[str, List[Any]]) -> None:
        """Queue ``{collection: [events]}``; every good event is queued, then the first bad one raises."""
        if not isinstance(events, dict):
            raise InvalidEventError(MSG_NOT_LIST)
        first: Optional[BaseException] = None
        for coll, evs in events.items():
            if not isinstance(evs, list):
                first = first or InvalidEventError(MSG_NOT_LIST, collection=coll)
                continue
            errs = self._batcher.push_many(evs, _coll(coll))
            if errs and first is None:
                first = py_error(errs[0])
        if first is not None:
            raise first

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything pushed is delivered, rejected or spooled; True when it all settled."""
        return self._batcher.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Flush, then spool whatever is left."""
        self._batcher.close(timeout)

    @property
    def stats(self) -> Dict[str, int]:
        """The batcher's counters (pushed, delivered, rejected, spooled, dropped = 0, …)."""
        return self._batcher.stats

    @property
    def batcher(self) -> Any:
        """The underlying :class:`~eventpush.batcher.Batcher`."""
        return self._batcher

    def __enter__(self) -> "BufferedPusher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
