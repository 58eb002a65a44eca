"""Barchart Event Tracking API rules on the server side (spec/barchart.md §1, §2).

An event is ``{customer, product, type, version?, timestamp, context}``; codes are checked against the
enumerations of :mod:`eventpush._barchart_data`; ``--strict-context`` also applies the per-customer context
transformers and validators (``string``, ``uuid``, ``stringOptional``) and requires the type to belong to the
product. Errors use the FailureReason shape ``[{"value": {"code", "message"}, "children": […]}]``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import orjson

from .. import _barchart_data as data

__all__ = ["prepare_events", "failure", "msg_named_twice", "CUSTOMERS", "PRODUCTS", "TYPES", "MSG_GENERAL_FAILURE"]

CUSTOMERS = frozenset(c["code"] for c in data.CUSTOMERS)
PRODUCTS = frozenset(p["code"] for p in data.PRODUCTS)
TYPES: Dict[str, Dict[str, Any]] = {str(t["code"]): t for t in data.EVENT_TYPES}

MSG_INPUT_MALFORMED = "An attempt to accept new events failed, the data structure is invalid."
MSG_GENERAL_FAILURE = "An attempt to accept new events failed for unspecified reason(s)."
MAX_REASONS = 100

# JS Date range; JSON numbers parse to float beyond it anyway.
_TS_LIMIT = 8_640_000_000_000_000

# uuid.validate of the `uuid` npm package (what @barchart/common-js uses).
_UUID = re.compile(
    r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)\Z",
    re.IGNORECASE,
).match


def reason(code: str, message: str, children: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """One FailureReason node."""
    return {"value": {"code": code, "message": message}, "children": children or []}


def field_reason(name: str, detail: str = "") -> Dict[str, Any]:
    """``REQUEST_PARAMETER_MALFORMED`` for one field, with the SDK's message."""
    msg = f'The "{name}" field cannot be interpreted.'
    return reason("REQUEST_PARAMETER_MALFORMED", msg + (" " + detail if detail else ""))


def msg_named_twice(name: str) -> str:
    """The 400 message for a body whose top-level object holds ``name`` more than once (the JSON parser would keep
    only the last value: for ``events``, the events of every earlier array would vanish without an answer)."""
    return f"The request body holds the field {name!r} more than once; send all events in one \"events\" array."


def failure(message: str, children: Optional[List[Dict[str, Any]]] = None) -> bytes:
    """A FailureReason array body with one ``REQUEST_INPUT_MALFORMED`` root."""
    return orjson.dumps([reason("REQUEST_INPUT_MALFORMED", message, children)])


def _check_context(ev_type: Dict[str, Any], customer: str, context: List[Any]) -> List[Dict[str, Any]]:
    bad: List[Dict[str, Any]] = []
    keys = ev_type["context_keys"]
    transformers = ev_type["transformers"].get(customer)
    if transformers:
        for i, tr in enumerate(transformers):
            if tr == "stringOptional":
                while len(context) <= i:
                    context.append("")
                if not context[i]:
                    context[i] = ""
    validators = ev_type["validators"].get(customer)
    if validators:
        for i, rule in enumerate(validators):
            if rule is None:
                continue
            value = context[i] if i < len(context) else None
            ok = type(value) is str and (
                (rule == "string" and value != "")
                or (rule == "uuid" and _UUID(value) is not None)
                or rule == "stringOptional"
            )
            if not ok:
                desc = data.VALIDATOR_DEFINITIONS.get(rule, {}).get("description", rule)
                bad.append(field_reason(f"context[{i}]", f"{keys[i] if i < len(keys) else '?'} must be a {desc}."))
    return bad


def validate_event(ev: Any, strict: bool) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """``(clean event, [])`` or ``(None, [field reasons])``. The clean event keeps only the schema fields, in
    the EventSchema order (customer, product, type, version, timestamp, context)."""
    if type(ev) is not dict:
        return None, [reason("REQUEST_PARAMETER_MALFORMED", "An event must be a JSON object.")]
    bad: List[Dict[str, Any]] = []
    customer = ev.get("customer")
    if type(customer) is not str or customer not in CUSTOMERS:
        bad.append(field_reason("customer"))
    product = ev.get("product")
    if type(product) is not str or product not in PRODUCTS:
        bad.append(field_reason("product"))
    code = ev.get("type")
    ev_type = TYPES.get(code) if type(code) is str else None
    if ev_type is None:
        bad.append(field_reason("type"))
    version = ev.get("version")
    if version is not None and type(version) is not str:
        bad.append(field_reason("version"))
    ts: Any = ev.get("timestamp")
    t = type(ts)
    if t is float and ts.is_integer():  # JSON cannot tell 1.0 from 1; JavaScript does not either
        ts = int(ts)
        t = int
    if t is not int or not -_TS_LIMIT <= ts <= _TS_LIMIT:
        bad.append(field_reason("timestamp"))
    context = ev.get("context")
    if type(context) is not list:
        bad.append(field_reason("context"))
    if strict and not bad:
        if ev_type["product"] != product:  # type: ignore[index]
            bad.append(field_reason("type", f"{code} is not an event type of product {product}."))
        bad.extend(_check_context(ev_type, customer, context))  # type: ignore[arg-type]
    if bad:
        return None, bad
    clean = {"customer": customer, "product": product, "type": code}
    if version is not None:
        clean["version"] = version
    clean["timestamp"] = ts
    clean["context"] = context
    return clean, []


def prepare_events(body: Any, strict: bool, batch: str) -> Tuple[Optional[List[bytes]], Optional[bytes], int]:
    """Validate a ``{"events": […]}`` request. Returns ``(encoded EventFull list, None, 0)`` or
    ``(None, FailureReason body, number of invalid events)``. One invalid event rejects the request (the API has
    no per-event results); every invalid event is named by its index, up to 100."""
    if type(body) is not dict or type(body.get("events")) is not list:
        return None, failure('The request body must be a JSON object with an "events" array.',
                             [field_reason("events")]), 0
    events = body["events"]
    out: List[bytes] = []
    reasons: List[Dict[str, Any]] = []
    invalid = 0
    dumps = orjson.dumps
    for seq, ev in enumerate(events):
        clean, bad = validate_event(ev, strict)
        if clean is None:
            invalid += 1
            if len(reasons) < MAX_REASONS:
                reasons.append(
                    reason("REQUEST_INPUT_MALFORMED",
                           f"An attempt to accept new events failed, events[{seq}] is invalid.", bad)
                )
            continue
        if invalid:
            continue
        clean["batch"] = batch
        clean["sequence"] = seq
        try:
            out.append(dumps(clean))
        except orjson.JSONEncodeError as exc:
            invalid += 1
            reasons.append(reason("REQUEST_INPUT_MALFORMED",
                                  f"An attempt to accept new events failed, events[{seq}] is invalid.",
                                  [field_reason("context", str(exc))]))
    if invalid:
        return None, orjson.dumps(reasons), invalid
    return out, None, 0
