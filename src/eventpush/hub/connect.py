"""Connect API rules on the server side (spec/connect.md §1, §2.1): event validation, stamping, batch results.

Everything here is plain functions over parsed JSON so that the hot loop stays in one place
(:func:`prepare_batch`); the ASGI layer in :mod:`eventpush.hub.app` only moves bytes.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

import orjson

from .. import _impl
from .._core_py import HUB_TIMESTAMP, hub_timestamp_ok, long_digit_run, orjson_dumps
from .._core_py import MAX_DEPTH as _MAX_CONTAINERS
from ..dialects import CONNECT_MAX_BATCH_EVENTS, CONNECT_MAX_EVENT_BYTES, CONNECT_TOO_LARGE_MESSAGE

__all__ = [
    "validate_event",
    "prepare_batch",
    "server_timestamp",
    "MAX_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "MSG_TP",
    "MSG_ID",
    "MSG_TOO_LARGE",
    "MSG_SERVER_ERROR",
    "MSG_UNAUTHORISED",
    "MSG_DUPLICATE",
    "MSG_NOT_OBJECT",
    "exact_document",
    "TooDeepToCheck",
]

# orjson writes at most 254 nested containers back; deeper events could be parsed but never stored. (100 with an
# orjson that cannot write deep nesting safely: eventpush._core_py.ORJSON_NESTS_SAFELY.)
MAX_DEPTH = _MAX_CONTAINERS - 1
MAX_KEY_LENGTH = 255
MAX_BATCH_EVENTS = CONNECT_MAX_BATCH_EVENTS
MAX_EVENT_BYTES = CONNECT_MAX_EVENT_BYTES

MSG_TP = "Property names starting with tp_ are reserved and cannot be set."
MSG_ID = "Property name _id is reserved and cannot be set."
MSG_TOO_LARGE = CONNECT_TOO_LARGE_MESSAGE
MSG_SERVER_ERROR = "An error occurred while processing your request"
MSG_UNAUTHORISED = "Unauthorised. Please check your Project Id and API Key"
MSG_DUPLICATE = "Duplicate event: an event with this id already exists in the collection."
MSG_NOT_OBJECT = "An event must be a JSON object."
MSG_TOO_DEEP = f"Event nesting exceeds the maximum depth of {MAX_DEPTH}."
DESC_PERIOD = "Property names cannot contain a period (.)"
DESC_LENGTH = f"Property names cannot exceed {MAX_KEY_LENGTH} characters"
DESC_TIMESTAMP = "timestamp must be an ISO-8601 date and time, e.g. 2015-02-05T14:55:56.587Z"
DESC_ID = "id must be a non-empty string of at most 255 characters"

# Timestamps (hub_timestamp_ok): ISO-8601 date and time on a day that exists; seconds, fraction and offset
# optional (naive values are taken as UTC, like the docs' "converted to UTC"; connect-python sends naive
# isoformat()). The encoder core holds the rule: its compiled bulk path checks the same thing in C.

# PERF: with the compiled core, one C walk per collection checks and writes every event (~0.4 us per event);
# the pure-Python fallback below scans the raw body first (~1.5 us in all).
_bulk = _impl.core_c.hub_connect_bulk if _impl.IMPLEMENTATION == "cython" else None  # type: ignore[union-attr]
# PERF: before that, one C pass over a whole request body in the usual form (compact events, each with an id and
# a timestamp) takes the events from its bytes, with no parse into objects: ~2.5x faster than parse + bulk walk
_scan = _impl.core_c.hub_connect_scan if _impl.IMPLEMENTATION == "cython" else None  # type: ignore[union-attr]

_dumps = orjson_dumps
_JSONEncodeError = orjson.JSONEncodeError


class _TooDeep(Exception):
    pass


# orjson.loads holds the integers -2**63 .. 2**64-1 exactly and gives any other integer as a float, rounded without
# a word; a body without a run of 19+ digits (almost every body) is exact as orjson parsed it (long_digit_run).
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


class TooDeepToCheck(ValueError):
    """A body with an integer beyond 64 bits nests deeper than Python's JSON parser goes (orjson goes further)."""


def exact_document(raw: bytes) -> Optional[Any]:
    """``raw``, a body that ``orjson.loads`` accepted, parsed again so that every integer orjson would have turned
    into a float stays exact: an ``orjson.Fragment`` of its digits, which ``orjson.dumps`` writes back verbatim.
    ``None`` when the body holds no such integer (orjson's document is exact). Raises :class:`TooDeepToCheck`
    when the body nests too deeply for the stdlib parser."""
    if not long_digit_run(raw):
        return None
    found = []

    def exact_int(text: str) -> Any:
        if len(text) <= 20:  # (a longer one is out of range; int() refuses over 4,300 digits)
            v = int(text)
            if _INT_MIN <= v <= _INT_MAX:
                return v
        found.append(text)
        return orjson.Fragment(text)

    try:
        doc = json.loads(raw, parse_int=exact_int)
    except RecursionError:
        raise TooDeepToCheck(
            "The request body holds an integer beyond 64 bits and nests too deeply to store it exactly.") from None
    return doc if found else None


def server_timestamp() -> str:
    """Now, as the server stamps it: ``2015-02-05T14:55:56.587Z``."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _nested(obj: Any, depth: int, errors: List[Dict[str, str]]) -> None:
    if depth > MAX_DEPTH:
        raise _TooDeep
    if type(obj) is dict:
        for k, v in obj.items():
            if "." in k:
                errors.append({"field": k, "description": DESC_PERIOD})
            elif len(k) > MAX_KEY_LENGTH:
                errors.append({"field": k, "description": DESC_LENGTH})
            t = type(v)
            if t is dict or t is list:
                _nested(v, depth + 1, errors)
    else:
        for v in obj:
            t = type(v)
            if t is dict or t is list:
                _nested(v, depth + 1, errors)


def validate_event(ev: Any) -> Optional[Tuple[int, Any]]:
    """``None`` when the event is acceptable, else ``(status, detail)``: ``(400, message)`` for a reserved or
    structurally wrong event, ``(422, [{"field", "description"}, …])`` for property and timestamp errors."""
    if type(ev) is not dict:
        return 400, MSG_NOT_OBJECT
    reserved = None
    errors: List[Dict[str, str]] = []
    try:
        # PERF: the top level is walked inline; most events are flat.
        for k, v in ev.items():
            c = k[:1]
            if (c == "t" or c == "T") and k[:3].lower() == "tp_":
                reserved = MSG_TP
            elif c == "_" and k.lower() == "_id":
                reserved = reserved or MSG_ID
            if "." in k:
                errors.append({"field": k, "description": DESC_PERIOD})
            elif len(k) > MAX_KEY_LENGTH:
                errors.append({"field": k, "description": DESC_LENGTH})
            t = type(v)
            if t is dict or t is list:
                _nested(v, 2, errors)
    except (_TooDeep, RecursionError):
        return 400, MSG_TOO_DEEP
    if reserved is not None:
        return 400, reserved
    ts = ev.get("timestamp")
    if ts is not None and (type(ts) is not str or not hub_timestamp_ok(ts)):
        errors.append({"field": "timestamp", "description": DESC_TIMESTAMP})
    eid = ev.get("id")
    if eid is not None and (type(eid) is not str or not eid or len(eid) > MAX_KEY_LENGTH):
        errors.append({"field": "id", "description": DESC_ID})
    if errors:
        return 422, errors
    return None


def stamp_and_encode(ev: Dict[str, Any], now: str) -> Tuple[Optional[str], bytes, Optional[Tuple[int, Any]]]:
    """Give a validated event its server ``id`` / ``timestamp`` when missing (or null) and encode it compactly.
    Returns ``(id, body, None)`` or ``(None, b"", (status, detail))`` (413 for an event over 64 kB)."""
    eid = ev.get("id")
    if eid is None:
        eid = ev["id"] = str(uuid.uuid4())
    if ev.get("timestamp") is None:
        ev["timestamp"] = now
    try:
        body = _dumps(ev)
    except _JSONEncodeError as exc:  # e.g. a value orjson parsed but cannot write back
        return None, b"", (400, f"The event cannot be stored as JSON: {exc}")
    if len(body) > MAX_EVENT_BYTES:
        return None, b"", (413, MSG_TOO_LARGE)
    return eid, body, None


def error_message(detail: Tuple[int, Any]) -> str:
    """One line for a batch item's ``message`` from a single-event error detail."""
    status, info = detail
    if status == 422:
        return "; ".join(f"{e['field']}: {e['description']}" for e in info)
    return str(info)


# A prepared batch: per collection (name, event ids, bodies, positions of the stored candidates in the results
# list, results list with None for the candidates).
Prepared = Tuple[str, List[str], List[bytes], List[int], List[Optional[bytes]]]

RESULT_OK = b'{"success":true,"duplicate":false}'
RESULT_DUP = orjson.dumps({"success": False, "duplicate": True, "message": MSG_DUPLICATE})


def _fail(message: str) -> bytes:
    return _dumps({"success": False, "duplicate": False, "message": message})


# A raw body where none of these occur cannot hold a root tp_ / _id key, a key with a '.', or a key over 255
# characters (raw length >= decoded length; any backslash escape goes to the exact path). Values may match
# (e.g. "tp_x" as a value): that only costs the exact path.
_DOT_KEY = re.compile(rb'\.[^"]*"[ \t\r\n]*:').search
_LONG_STRING = re.compile(rb'"[^"]{256}').search


def _suspect(raw: bytes) -> bool:
    """True when the raw body might hold a forbidden key or an integer beyond 64 bits (then every event takes the
    exact path)."""
    if b"\\" in raw or long_digit_run(raw):  # (a long digit run: maybe an integer beyond 64 bits)
        return True
    low = raw.lower()
    return b'"tp_' in low or b'"_id"' in low or _DOT_KEY(raw) is not None or _LONG_STRING(raw) is not None


_IDS = re.compile(r"(?:[^\x00]{1,255}\x00)*[^\x00]{1,255}\Z", re.DOTALL).match
_TIMESTAMPS = re.compile(r"(?:" + HUB_TIMESTAMP.pattern[:-2] + r"\n)*" + HUB_TIMESTAMP.pattern).match


def _fast_collection(events: List[Any]) -> Optional[Tuple[List[str], List[bytes]]]:
    """The common case in bulk: every event a dict with a valid string ``id`` (unique in the batch) and ISO
    ``timestamp``, no suspicious key (checked on the raw body by the caller), none too large or too deep.
    Returns ``(ids, bodies)`` or ``None`` for the exact per-event path."""
    try:
        ids = [ev["id"] for ev in events]
        stamps = [ev["timestamp"] for ev in events]
        jids = "\x00".join(ids)
        jstamps = "\n".join(stamps)
    except (KeyError, TypeError):
        return None
    n = len(ids)
    if (
        jids.count("\x00") != n - 1
        or _IDS(jids) is None
        or jstamps.count("\n") != n - 1
        or _TIMESTAMPS(jstamps) is None
        or (("-29T" in jstamps or "-30T" in jstamps or "-31T" in jstamps) and not all(map(hub_timestamp_ok, stamps)))
        or len(set(ids)) != n
    ):
        return None
    try:
        bodies = [_dumps(ev) for ev in events]
    except _JSONEncodeError:  # e.g. nested too deep: let the exact path say which event
        return None
    if max(map(len, bodies)) > MAX_EVENT_BYTES:
        return None
    return ids, bodies


def scan_batch(raw: bytes) -> Optional[List[Prepared]]:
    """The prepared collections of a batch body, read straight from its bytes by the compiled core, when every
    event of it is one the bulk path takes as it is (compact, with an id and a timestamp, no key the hub might
    refuse) and no collection is named twice; ``None`` otherwise (parse it and :func:`prepare_batch` it). What it
    returns is what :func:`prepare_batch` gives for the parsed body: the events' bytes are those orjson writes."""
    if _scan is None or type(raw) is not bytes:  # (uvicorn on h11 may hand over a bytearray: parsed)
        return None
    scanned = _scan(raw, MAX_EVENT_BYTES)
    if scanned is None:
        return None
    return [(coll, ids, bodies, list(range(len(ids))), [None] * len(ids)) for coll, ids, bodies in scanned]


def prepare_batch(batch: Dict[str, Any], now: str, raw: Optional[bytes] = None) -> Tuple[List[Prepared], int]:
    """Validate and encode every event of a ``{collection: [events]}`` batch, in request order.

    Returns the prepared collections and the number of rejected events. Within one batch, a repeated id (in the
    same collection) is a duplicate of its first occurrence, exactly as if it had been stored already. Each
    collection first tries the bulk path (the compiled core's ``hub_connect_bulk``; without it, the Python one,
    enabled by ``raw``, the request body, when nothing in it looks like a forbidden key); a collection it does not
    take goes event by event, from the document :func:`exact_document` parses again when ``raw`` holds integers
    beyond 64 bits (they are stored exactly). Raises :class:`TooDeepToCheck` (a 400).
    """
    prepared: List[Prepared] = []
    rejected = 0
    validate = validate_event
    encode = stamp_and_encode
    bulk = _bulk
    # PERF: without the compiled core, the fast path replaces ~2 us of per-event Python key checks by one regex
    # scan of the raw body.
    fast = bulk is None and raw is not None and not _suspect(raw)
    exact: Any = None
    reparsed = raw is None
    for coll, events in batch.items():
        if events and (bulk is not None or fast):
            done = bulk(events, MAX_EVENT_BYTES) if bulk is not None else _fast_collection(events)
            if done is not None:
                ids, fast_bodies = done
                prepared.append((coll, ids, fast_bodies, list(range(len(ids))), [None] * len(ids)))
                continue
        if not reparsed:  # integers beyond 64 bits decline the bulk path; keep them exact (once per request)
            reparsed = True
            exact = exact_document(raw)  # type: ignore[arg-type]
        if exact is not None:
            events = exact[coll]
        eids: List[str] = []
        bodies: List[bytes] = []
        positions: List[int] = []
        results: List[Optional[bytes]] = []
        seen = set()
        for ev in events:
            err = validate(ev)
            if err is None:
                eid, body, err = encode(ev, now)
                if err is None:
                    if eid in seen:
                        results.append(RESULT_DUP)
                        continue
                    seen.add(eid)
                    positions.append(len(results))
                    results.append(None)
                    eids.append(eid)  # type: ignore[arg-type]
                    bodies.append(body)
                    continue
            rejected += 1
            results.append(_fail(error_message(err)))
        prepared.append((coll, eids, bodies, positions, results))
    return prepared, rejected


def batch_response(prepared: List[Prepared], duplicates: List[int]) -> Tuple[bytes, int, int]:
    """Fill in the stored / duplicate results (``duplicates``: flat positions over all candidates, as returned
    by the storage) and encode the reply. Returns ``(body, stored, duplicates_count)``."""
    dup = set(duplicates)
    parts = []
    flat = 0
    stored = 0
    ndup = 0
    for coll, _eids, _bodies, positions, results in prepared:
        if not dup and len(positions) == len(results):
            # PERF: the common case (every event new and valid) without a per-event loop
            results[:] = [RESULT_OK] * len(results)
            stored += len(results)
            flat += len(results)
            parts.append(_dumps(coll) + b":[" + b",".join(results) + b"]")  # type: ignore[arg-type]
            continue
        for pos in positions:
            if flat in dup:
                results[pos] = RESULT_DUP
            else:
                results[pos] = RESULT_OK
                stored += 1
            flat += 1
        ndup += results.count(RESULT_DUP)
        parts.append(_dumps(coll) + b":[" + b",".join(results) + b"]")  # type: ignore[arg-type]
    return b"{" + b",".join(parts) + b"}", stored, ndup
