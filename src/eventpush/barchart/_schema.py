"""Client-side shaping of Barchart events before the encoder sees them (``EventSchema.CLIENT``, spec §2.1, §3.3-4).

The encoder (rules ``"barchart"``) is the validator: exact codes, integer epoch-ms timestamp, list context,
optional str version, only the schema keys in order. This module only does what the encoder cannot know about:

* Python-side conveniences the spec allows: a ``datetime`` timestamp (naive = UTC) and Timestamp-like objects
  (an object with an integer ``timestamp`` attribute, like ``@barchart/common-js`` ``Timestamp``) become int ms;
* the opt-in context check (``validate_context=True``) with the event type's transformers and validators.

PERF: both run only for events that need them. The common case (plain dicts with codes or enum members and int
timestamps) goes straight to the encoder; an event the encoder refuses is normalized and tried once more.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List, Optional, Tuple

from .enums import CustomerType, EventType

__all__ = ["to_millis", "normalize", "check_context"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_FIELDS = ("customer", "product", "type", "version", "timestamp", "context")


def to_millis(value: Any) -> Any:
    """``value`` as integer epoch milliseconds when it is a datetime or Timestamp-like; otherwise unchanged (so the
    encoder reports it)."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400_000) + (delta.seconds * 1000) + (delta.microseconds // 1000)
    if type(value) is not bool and isinstance(value, int) and type(value) is not int:
        return int(value)  # an int subclass (IntEnum, numpy-like) -> plain int
    inner = getattr(value, "timestamp", None)
    if inner is not None and not callable(inner) and type(inner) is int:
        return inner
    return value


def normalize(event: Any) -> Any:
    """A copy of ``event`` with plain codes and an int timestamp where conversion is possible (the SDK's
    ``Schema.format``: a conversion that fails keeps the original value). Non-dicts are returned unchanged."""
    if not isinstance(event, dict):
        return event
    out: Dict[str, Any] = {}
    for key in _FIELDS:
        if key not in event:
            continue
        value = event[key]
        if key == "timestamp":
            value = to_millis(value)
        elif isinstance(value, str) and type(value) is not str:
            value = str.__str__(value)  # an enum member (str subclass) -> its code
        out[key] = value
    return out


def check_context(event: Any) -> Tuple[Any, Optional[Dict[str, str]], Optional[str]]:
    """Apply the event type's transformers and validators for the event's customer (opt-in, spec §2.3).

    Returns ``(event, errors, detail)``: the event (a copy when a transformer changed the context), ``{field:
    message}`` for context items that fail their validator (``None`` when all pass), and a human-readable detail.
    Events whose type, customer or context cannot be read are returned unchanged: the encoder reports those.
    """
    if not isinstance(event, dict):
        return event, None, None
    etype = EventType.parse(event.get("type"))
    customer = CustomerType.parse(event.get("customer"))
    context = event.get("context")
    if etype is None or customer is None or not isinstance(context, list):
        return event, None, None
    transformers = etype.transformers.get(customer)
    if transformers:
        items: List[Any] = list(context)
        if len(items) < len(transformers):
            items.extend([None] * (len(transformers) - len(items)))
        for i, t in enumerate(transformers):
            if t is not None:
                items[i] = t(items[i])
        if items != context:
            event = dict(event)
            event["context"] = items
            context = items
    validators = etype.validators.get(customer)
    if not validators:
        return event, None, None
    errors: Dict[str, str] = {}
    details: List[str] = []
    keys = etype.context_keys
    for i, v in enumerate(validators):
        if v is None:
            continue
        value = context[i] if i < len(context) else None
        if not v(value):
            field = f"context[{i}]"
            errors[field] = f'The "{field}" field cannot be interpreted.'
            details.append(f"{field} ({keys[i]}) must be a {v.description}, got {value!r}")
    if errors:
        return event, errors, "; ".join(details)
    return event, None, None
