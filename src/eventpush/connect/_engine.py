"""What the faces of ``eventpush.connect`` share: one encoder per thread and dialect, error translation, the
collection path, the lazily decoded events of a sent batch, and the transport settings."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

import orjson

from .. import _impl
from .. import errors as _errors
from ..dialects import Dialect
from .._core_py import MSG_NOT_DICT, MSG_NOT_LIST  # the encoder's own messages (the compiled core uses them too)
from .._core_py import loads_exact
from .exceptions import EventDataValidationError, EventTooLargeError, InvalidEventError

__all__: List[str] = []

DEFAULT_BASE_URL = "https://api.getconnect.io"
DEFAULT_TIMEOUT = 60.0

_tls = threading.local()


def encoder(dialect: Dialect) -> Any:
    """This thread's encoder for ``dialect`` from the selected core (encoders are not thread-safe; the core is
    read on each call so that a test can switch it)."""
    core = _impl.core
    cache = getattr(_tls, "cache", None)
    if cache is None:
        cache = _tls.cache = {}
    key = (id(core), dialect.name)
    enc = cache.get(key)
    if enc is None:
        enc = cache[key] = core.Encoder(dialect)
    return enc


def close_once(client: Any, own_thread: bool) -> None:
    """A client's ``close()``: the first call marks ``client`` closed (under ``client._lock``) and runs
    ``client._finish()``, which finishes the pushes and closes the pool and then sets ``client._done``; a later
    call waits for that. From one of the client's own threads (``own_thread``: a callback) nothing waits, since
    the thread would wait for itself: the first call finishes in a background thread."""
    with client._lock:
        first = not client._closed
        client._closed = True
    if not first:
        if not own_thread:
            client._done.wait()
        return
    if own_thread:
        threading.Thread(target=client._finish, name="eventpush-connect-close").start()
        return
    client._finish()


def single_path(collection: Any) -> str:
    """``/events/{collection}`` with the name percent-encoded as one path segment (spec §1.2)."""
    return "/events/" + quote(collection if isinstance(collection, str) else str(collection), safe="")


def py_error(exc: BaseException) -> BaseException:
    """The connect-python form of an encoder error: :class:`InvalidEventError` (args[0] = the original message
    or ``{property: message}``); an unserializable value stays an ``EventTypeError`` (a ``TypeError``, as
    ``json.dumps`` raised it in the original)."""
    if not isinstance(exc, _errors.EventError) or isinstance(exc, InvalidEventError):
        return exc
    kw: Dict[str, Any] = dict(index=exc.index, collection=exc.collection, field=exc.field)
    if isinstance(exc, _errors.EventTooLargeError):
        return EventTooLargeError(exc.message, **kw)
    if isinstance(exc, _errors.EventValidationError):
        return InvalidEventError(exc.errors or exc.message, errors=exc.errors, **kw)
    if isinstance(exc, _errors.EventTypeError) and exc.message in (MSG_NOT_DICT, MSG_NOT_LIST):
        return InvalidEventError(exc.message, **kw)
    return exc


def rb_error(exc: BaseException) -> BaseException:
    """The Ruby form: a ``tp_`` rule violation becomes :class:`EventDataValidationError`; the rest (not a dict,
    unserializable, too large) stays the engine's error."""
    if isinstance(exc, _errors.EventValidationError) and not isinstance(
        exc, (_errors.EventTooLargeError, EventDataValidationError)
    ):
        return EventDataValidationError(
            exc.message, index=exc.index, collection=exc.collection, field=exc.field, errors=exc.errors
        )
    return exc


class SentBatches:
    """The sealed batches of one push, kept so that the events as sent can be decoded on demand.

    PERF: nothing per event happens until a caller looks at an event (``PushResponse.event``, ``data``)."""

    __slots__ = ("batches",)

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = list(batches)

    def by_collection(self) -> Dict[str, List[Any]]:
        """``{collection: [event dict, …]}`` in request order (split batches merged back)."""
        out: Dict[str, List[Any]] = {}
        loads = loads_exact
        for b in self.batches:
            ev = b.event
            for coll, start, stop in b.groups():
                out.setdefault(coll, []).extend(loads(ev(i)) for i in range(start, stop))
        return out


def loads_or_none(data: bytes) -> Optional[Any]:
    """The parsed JSON body, or ``None`` when it is empty or not JSON (connect-python's ``ValueError`` path)."""
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
