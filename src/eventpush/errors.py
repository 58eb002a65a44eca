"""The one exception tree of eventpush.

::

    EventPushError
    ├── EventError                      a bad event, raised at the call site; carries .index, .collection, .field
    │   ├── EventValidationError        (also ValueError) the dialect's rules refused the event; .errors {field: message}
    │   │   └── EventTooLargeError      the encoded event exceeds the dialect's per-event limit (Connect: 413 message)
    │   └── EventTypeError              (also TypeError) not a dict, an unserializable value, a bad key type
    ├── TransportError                  (also OSError) the request did not complete; .method, .url
    │   ├── ConnectError                could not connect / connection reset
    │   ├── TimeoutError                connect or read timeout
    │   └── HTTPStatusError             the server answered with a failing status; .status, .body
    ├── BufferFullError                 the bounded buffer is full and overflow="raise" (or "block" timed out)
    ├── SpoolError                      (also OSError) the durable spool could not be written or read
    │   └── SpoolCorruptError           a torn or corrupted spool record; never sent
    └── ClosedError                     (also RuntimeError) a closed client or batcher was used

Every exception pickles with its context (they cross threads and futures).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

__all__ = [
    "EventPushError",
    "EventError",
    "EventValidationError",
    "EventTooLargeError",
    "EventTypeError",
    "TransportError",
    "ConnectError",
    "TimeoutError",
    "HTTPStatusError",
    "BufferFullError",
    "SpoolError",
    "SpoolCorruptError",
    "ClosedError",
]


class EventPushError(Exception):
    """Base class of every eventpush error."""


class EventError(EventPushError):
    """A bad event. ``index`` is its position in the call (0 for a single event), ``collection`` its collection
    (or None), ``field`` the dotted path of the first offending field (or None when the event itself is wrong)."""

    def __init__(
        self,
        message: str,
        *,
        index: Optional[int] = None,
        collection: Optional[str] = None,
        field: Optional[str] = None,
        errors: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.collection = collection
        self.field = field
        self.errors = errors

    def __str__(self) -> str:
        where = []
        if self.collection is not None:
            where.append(f"collection {self.collection!r}")
        if self.index is not None:
            where.append(f"event {self.index}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def __reduce__(self) -> Any:
        return (
            _rebuild_event_error,
            (type(self), self.message, self.index, self.collection, self.field, self.errors),
        )

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self.message == other.message  # type: ignore[attr-defined]
            and self.index == other.index  # type: ignore[attr-defined]
            and self.collection == other.collection  # type: ignore[attr-defined]
            and self.field == other.field  # type: ignore[attr-defined]
            and self.errors == other.errors  # type: ignore[attr-defined]
        )

    __hash__ = Exception.__hash__


def _rebuild_event_error(cls, message, index, collection, field, errors):  # type: ignore[no-untyped-def]
    return cls(message, index=index, collection=collection, field=field, errors=errors)


class EventValidationError(EventError, ValueError):
    """The dialect's rules refused the event. ``errors`` maps each offending field (for Connect: the leaf property
    name, as connect-python does) to its message; ``message`` is the dialect's one-line message."""


class EventTooLargeError(EventValidationError):
    """The encoded event is larger than the dialect's per-event limit."""


class EventTypeError(EventError, TypeError):
    """The event is not a dict, holds a value that cannot be serialized, or a key of an unsupported type."""


class TransportError(EventPushError, OSError):
    """The request did not complete (after the retries the policy allows)."""

    def __init__(self, message: str, *, method: Optional[str] = None, url: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url

    def __str__(self) -> str:
        if self.method and self.url:
            return f"{self.message} ({self.method} {self.url})"
        return self.message

    def __reduce__(self) -> Any:
        return (_rebuild_transport_error, (type(self), self.message, self.method, self.url))


def _rebuild_transport_error(cls, message, method, url):  # type: ignore[no-untyped-def]
    return cls(message, method=method, url=url)


class ConnectError(TransportError):
    """Could not connect, or the connection was reset."""


class TimeoutError(TransportError):  # noqa: A001 - deliberate, like httpx
    """A connect or read timeout."""


class HTTPStatusError(TransportError):
    """The server answered with a failing status (after retries for 429 / 5xx): ``status``, and the reply's
    ``body`` (bytes) and ``headers`` (``None`` when no reply with that status is at hand, e.g. a per-event
    rejection inside a 2xx batch reply)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: bytes = b"",
        method: Optional[str] = None,
        url: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.status = status
        self.body = body
        self.headers = headers

    def __reduce__(self) -> Any:
        return (_rebuild_status_error,
                (type(self), self.message, self.status, self.body, self.method, self.url, self.headers))


def _rebuild_status_error(cls, message, status, body, method, url, headers=None):  # type: ignore[no-untyped-def]
    return cls(message, status=status, body=body, method=method, url=url, headers=headers)


class BufferFullError(EventPushError):
    """The bounded buffer is full (overflow="raise", or "block" with a timeout that expired)."""


class SpoolError(EventPushError, OSError):
    """The durable spool could not be written or read."""


class SpoolCorruptError(SpoolError):
    """A torn or corrupted spool record: detected, reported, never sent."""


class ClosedError(EventPushError, RuntimeError):
    """A closed client, sender or batcher was used."""
