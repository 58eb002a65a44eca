"""Exceptions of ``eventpush.connect``: the connect-python and Ruby SDK names on top of eventpush's tree.

::

    eventpush.errors.EventValidationError (ValueError)
    ├── InvalidEventError           connect-python: args[0] is the message str or {property: message}
    │   └── EventTooLargeError      the encoded event is over 64 kB ("Maximum event size of 64kb exceeded.")
    └── EventDataValidationError    Ruby API: a top-level property starts with tp_ (raised before any I/O)
    eventpush.errors.EventTypeError (TypeError)  a value that cannot be serialized (as json.dumps would raise)
    eventpush.errors.TransportError (OSError)    connection errors and timeouts, after the retries
    UnconfiguredError (RuntimeError)             push() before configure()
    eventpush.errors.ClosedError (RuntimeError)  a closed client was used

Every exception pickles with its context (they travel through futures).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from .. import errors as _errors

__all__ = ["InvalidEventError", "EventTooLargeError", "EventDataValidationError", "UnconfiguredError"]

UNCONFIGURED_MESSAGE = "Connect must configured before it can be used, please call Connect.configure"


class InvalidEventError(_errors.EventValidationError):
    """An event that connect-python refuses. ``args[0]`` is what the original carried: a message ``str``
    ("Event must be a dict object", "Events must be a list of dict objects") or a dict ``{property name:
    message}`` of every rule the event broke. ``index`` / ``collection`` / ``field`` name the event."""

    def __init__(
        self,
        message: Union[str, Dict[str, str]],
        *,
        index: Optional[int] = None,
        collection: Optional[str] = None,
        field: Optional[str] = None,
        errors: Optional[Dict[str, str]] = None,
    ) -> None:
        if isinstance(message, dict):
            errors = message if errors is None else errors
            text = next(iter(message.values())) if message else "invalid event"
        else:
            text = message
        super().__init__(text, index=index, collection=collection, field=field, errors=errors)
        # the original's single argument, unchanged (a str or the errors dict)
        self.args = (message,)

    def __str__(self) -> str:
        where = []
        if self.collection is not None:
            where.append(f"collection {self.collection!r}")
        if self.index is not None:
            where.append(f"event {self.index}")
        what = str(self.args[0])
        return f"{', '.join(where)}: {what}" if where else what

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.args[0], self.index, self.collection, self.field, self.errors))


def _rebuild(cls, arg, index, collection, field, errors):  # type: ignore[no-untyped-def]
    return cls(arg, index=index, collection=collection, field=field, errors=errors)


class EventTooLargeError(InvalidEventError, _errors.EventTooLargeError):
    """The encoded event exceeds Connect's 64 kB limit; refused before sending (the server would answer 413)."""


class EventDataValidationError(_errors.EventValidationError):
    """Ruby API: top-level properties use the reserved prefix ``tp_``. The message is the gem's:
    ``"The following properties use the reserved prefix tp_:"`` then one ``"\\n->name"`` per property."""

    def __str__(self) -> str:
        return self.message


class UnconfiguredError(_errors.EventPushError, RuntimeError):
    """``push`` was called before ``configure`` (or after ``reset``)."""

    def __init__(self, message: str = UNCONFIGURED_MESSAGE) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
