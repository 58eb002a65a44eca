"""Errors of the Barchart face, shaped like the SDK's rejections.

::

    EventPushError                        (eventpush.errors)
    └── BarchartError                     .reasons (FailureReason array), .status (HTTP status or None)
        ├── BarchartValidationError       (also EventValidationError / ValueError) a bad event, before any I/O;
        │                                 .index, .field, .errors {field: message}, .failures [(index, errors)]
        └── BarchartStateError            (also RuntimeError) the gateway is disposed or not started

A ``FailureReason`` array is the SDK's ``[{"value": {"code", "message"}, "children": [...]}]`` tree
(``@barchart/common-js`` ``FailureReason.format()``). Every error pickles with its context.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import EventPushError, EventValidationError

__all__ = [
    "BarchartError",
    "BarchartValidationError",
    "BarchartStateError",
    "failure_reason",
    "REQUEST_INPUT_MALFORMED",
    "REQUEST_PARAMETER_MALFORMED",
    "REQUEST_AUTHORIZATION_FAILURE",
    "REQUEST_GENERAL_FAILURE",
]

REQUEST_INPUT_MALFORMED = "REQUEST_INPUT_MALFORMED"
REQUEST_PARAMETER_MALFORMED = "REQUEST_PARAMETER_MALFORMED"
REQUEST_AUTHORIZATION_FAILURE = "REQUEST_AUTHORIZATION_FAILURE"
REQUEST_GENERAL_FAILURE = "REQUEST_GENERAL_FAILURE"

# The FailureType templates of @barchart/common-js with the endpoint descriptions the SDK uses filled in.
INPUT_MALFORMED_MESSAGE = "An attempt to serialize data into client failed, the data structure is invalid."
PARAMETER_MALFORMED_TEMPLATE = 'The "{name}" field cannot be interpreted.'
AUTHORIZATION_FAILURE_MESSAGE = "An attempt to create events failed. You are not authorized to perform this action."
GENERAL_FAILURE_MESSAGE = "An attempt to create events failed for unspecified reason(s)."
DISPOSED_MESSAGE = "Unable to use gateway, the gateway has been disposed."
NOT_STARTED_MESSAGE = "Unable to use gateway, the gateway has not started."


def failure_reason(code: str, message: str, children: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """One node of a FailureReason tree: ``{"value": {"code", "message"}, "children": [...]}``."""
    return {"value": {"code": code, "message": message}, "children": list(children)}


def malformed_reasons(fields: Sequence[str]) -> List[Dict[str, Any]]:
    """The SDK's schema-validation rejection: root ``REQUEST_INPUT_MALFORMED``, one ``REQUEST_PARAMETER_MALFORMED``
    child per bad field."""
    children = [failure_reason(REQUEST_PARAMETER_MALFORMED, PARAMETER_MALFORMED_TEMPLATE.format(name=f)) for f in fields]
    return [failure_reason(REQUEST_INPUT_MALFORMED, INPUT_MALFORMED_MESSAGE, children)]


def _first_message(reasons: Any) -> Optional[str]:
    try:
        return str(reasons[0]["value"]["message"])
    except (LookupError, TypeError):
        return None


class BarchartError(EventPushError):
    """A rejected Barchart call. ``reasons`` is what the JS SDK rejects with: a FailureReason array for client-side
    failures, or the parsed JSON body of a failing reply (whatever shape the server sent). ``status`` is the HTTP
    status, or ``None`` when no reply was received."""

    def __init__(self, message: Optional[str] = None, reasons: Any = None, status: Optional[int] = None) -> None:
        if message is None:
            message = _first_message(reasons) or GENERAL_FAILURE_MESSAGE
        super().__init__(message)
        self.message = message
        self.reasons = reasons if reasons is not None else []
        self.status = status

    def __str__(self) -> str:
        if self.status is not None:
            return f"{self.message} (HTTP {self.status})"
        return self.message

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.reasons, self.status))


class BarchartStateError(BarchartError, RuntimeError):
    """The gateway cannot be used: it was disposed, or ``start()`` was never called."""


class BarchartValidationError(BarchartError, EventValidationError):
    """A bad event, refused before any I/O. ``index`` is the first bad event's position in the call (or the
    batcher's push), ``field`` its first bad field, ``errors`` ``{field: message}`` for it; ``failures`` lists
    ``(index, errors)`` for every bad event of the call. ``reasons`` is the SDK's FailureReason array for the first
    bad event."""

    def __init__(
        self,
        failures: Sequence[Tuple[int, Dict[str, str]]],
        detail: Optional[str] = None,
    ) -> None:
        failures = [(int(i), dict(errs)) for i, errs in failures]
        if not failures:
            raise ValueError("BarchartValidationError needs at least one failure")
        index, errors = failures[0]
        fields = list(errors)
        message = "; ".join(errors.values()) if errors else INPUT_MALFORMED_MESSAGE
        if detail:
            message = f"{message} ({detail})"
        if len(failures) > 1:
            more = ", ".join(str(i) for i, _ in failures[1:6])
            message += f" [{len(failures) - 1} more bad event(s): {more}{', …' if len(failures) > 6 else ''}]"
        BarchartError.__init__(self, message, malformed_reasons(fields), None)
        self.index = index
        self.collection = None
        self.field = fields[0] if fields else None
        self.errors = errors
        self.failures = failures
        self.detail = detail

    def __str__(self) -> str:
        return f"event {self.index}, field {self.field!r}: {self.message}"

    def __reduce__(self) -> Any:
        return (type(self), (self.failures, self.detail))

    __eq__ = object.__eq__
    __hash__ = Exception.__hash__
