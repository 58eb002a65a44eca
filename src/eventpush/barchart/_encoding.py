"""Validation and encoding of Barchart events through the engine's encoder (rules ``"barchart"``).

One place turns a list of events into request bodies or a ``BarchartValidationError`` naming every bad event,
for the gateway (``create_events``) and the batcher (``push``). No I/O happens here.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..dialects import BARCHART
from ..errors import EventError
from ._schema import check_context, normalize
from .errors import PARAMETER_MALFORMED_TEMPLATE, BarchartValidationError

__all__ = ["EventCodec"]

_REQUIRED = ("customer", "product", "type", "timestamp", "context")
_KNOWN = frozenset(("customer", "product", "type", "version", "timestamp", "context"))


def _field_errors(exc: EventError) -> Dict[str, str]:
    """``{field: message}`` in the SDK's wording for one encoder error."""
    if exc.errors:
        out: Dict[str, str] = {}
        for field, msg in exc.errors.items():
            top = field.split(".", 1)[0].split("[", 1)[0]
            if top in _KNOWN:  # the SDK names the schema field, not a path inside it
                out[top] = msg if top == field else PARAMETER_MALFORMED_TEMPLATE.format(name=top)
            else:
                out[field] = msg
        return out
    path = exc.field
    if path:
        top = path.split(".", 1)[0].split("[", 1)[0]
        if top in _KNOWN:
            return {top: PARAMETER_MALFORMED_TEMPLATE.format(name=top)}
        return {path: PARAMETER_MALFORMED_TEMPLATE.format(name=path)}
    # Not an object at all: none of the required fields can be read (what EventSchema.CLIENT reports).
    return {f: PARAMETER_MALFORMED_TEMPLATE.format(name=f) for f in _REQUIRED}


class EventCodec:
    """Encodes Barchart events with the selected encoder core (compiled or twin). Thread-safe (one lock around
    the encoder, which is not thread-safe by contract)."""

    def __init__(self, *, validate_context: bool = False) -> None:
        from .. import Encoder  # the selected core; imported lazily like eventpush itself does

        self.validate_context = bool(validate_context)
        # No size limits: one create_events call is one request, like the SDK.
        self._encoder = Encoder(BARCHART, max_batch_events=None, max_batch_bytes=None)
        self._lock = threading.Lock()

    def _prepare(self, events: Sequence[Any]) -> Tuple[List[Any], Dict[int, Tuple[Dict[str, str], Optional[str]]]]:
        """Apply the opt-in context transformers/validators; returns the events to encode and the context errors."""
        if not self.validate_context:
            return list(events), {}
        out: List[Any] = []
        bad: Dict[int, Tuple[Dict[str, str], Optional[str]]] = {}
        for i, ev in enumerate(events):
            ev, errors, detail = check_context(ev)
            if errors:
                bad[i] = (errors, detail)
            out.append(ev)
        return out, bad

    def encode_events(self, events: Sequence[Any]) -> Optional[Any]:
        """One sealed ``Batch`` holding every event in order (``None`` for an empty list); raises
        ``BarchartValidationError`` naming every bad event (index, fields) when at least one is bad. Never partial.

        PERF: the whole list goes through ``encode_batch`` in one call; only refused events are looked at again.
        """
        prepared, context_bad = self._prepare(events)
        with self._lock:
            batches, errors = self._encoder.encode_batch(prepared)
            if errors:
                # The SDK's Schema.format converts what it can (datetimes, Timestamp-like values, enum-likes) and
                # keeps the original when a conversion fails; do the same, then encode once more.
                fixed = list(prepared)
                changed = False
                for err in errors:
                    alt = normalize(fixed[err.index])
                    if alt is not fixed[err.index]:
                        fixed[err.index] = alt
                        changed = True
                if changed:
                    first = {e.index: e for e in errors}
                    batches, errors = self._encoder.encode_batch(fixed)
                    errors = [first.get(e.index, e) for e in errors]
        failures: Dict[int, Tuple[Dict[str, str], Optional[str]]] = {e.index: (_field_errors(e), None) for e in errors}
        for i, (errs, detail) in context_bad.items():
            if i in failures:
                failures[i][0].update(errs)
            else:
                failures[i] = (errs, detail)
        if failures:
            for b in batches:
                b.release()
            raise _validation_error(failures)
        if not batches:
            return None
        assert len(batches) == 1, "no limits are set, so one list is one batch"
        return batches[0]

    def encode_one(self, event: Any, index: int = 0) -> bytes:
        """Validate and encode one event (for ``EventBatcher.push``): the bytes to send (of the event transformed
        when ``validate_context`` changed it, normalized when needed), ready for ``Batcher.push_encoded``; or raises
        ``BarchartValidationError`` naming ``index``."""
        if not self.validate_context:
            # PERF: the hot path of EventBatcher.push - one encode under the lock, nothing else.
            try:
                with self._lock:
                    return self._encoder.encode(event)
            except EventError:
                pass
        prepared, context_bad = self._prepare((event,))
        ev = prepared[0]
        data = b""
        with self._lock:
            try:
                data = self._encoder.encode(ev)
                errs: Dict[str, str] = {}
            except EventError as exc:
                alt = normalize(ev)
                errs = _field_errors(exc)
                if alt is not ev:
                    try:
                        data = self._encoder.encode(alt)
                        errs = {}
                    except EventError:
                        pass
        detail = None
        if 0 in context_bad:
            errs.update(context_bad[0][0])
            detail = context_bad[0][1]
        if errs:
            raise _validation_error({index: (errs, detail)})
        return data


def _validation_error(failures: Dict[int, Tuple[Dict[str, str], Optional[str]]]) -> BarchartValidationError:
    ordered = sorted(failures.items())
    detail = ordered[0][1][1]
    return BarchartValidationError([(i, errs) for i, (errs, _) in ordered], detail)
