"""Pure-Python twin of the compiled encoder core (``eventpush._core``).

Same names, same behaviour, same bytes: the differential tests hold the two against each other. This module is
the fallback where no compiler is available, the reference for the compiled core, and the benchmarks' baseline.
See ``_core.pyi`` for the contract.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import re
import sys
import threading
import time
from array import array
from datetime import date, datetime, timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import orjson

from .dialects import Dialect
from .errors import EventError, EventTooLargeError, EventTypeError, EventValidationError

__all__ = [
    "Encoder",
    "Batch",
    "BatcherBase",
    "uuid4_str",
    "format_iso_naive",
    "format_iso_seconds_z",
    "hub_connect_bulk",
    "hub_connect_scan",
    "hub_id_hashes",
    "hub_index_keys",
    "hub_timestamp_ok",
]

# ---------------------------------------------------------------------------------------------------------------
# Messages (spec/connect.md §2.3, §2.4; spec/barchart.md §3 step 4). The typo "thereserved" is original.
MSG_NOT_DICT = "Event must be a dict object"
MSG_NOT_LIST = "Events must be a list of dict objects"
MSG_TP = "Property names cannot start with thereserved prefix 'tp_'"
MSG_ID = "Top level properties cannot be named '_id'"
MSG_PERIOD = "Property names cannot contain a period (.)"
MSG_DOLLAR = "Property names cannot start with $"
MSG_LONG = "Property names cannot exceed 255 characters"
MSG_TIMESTAMP = "timestamp property must be a datetime"
MSG_RB_TP = "The following properties use the reserved prefix tp_:"
MSG_BC = "An attempt to serialize data into client failed, the data structure is invalid."
MSG_BC_FIELD = 'The "{}" field cannot be interpreted.'
#: A Barchart timestamp is milliseconds since the epoch within JavaScript's Date range (what the server accepts).
BC_TIMESTAMP_LIMIT = 8_640_000_000_000_000
MSG_COLLECTION = "Collection name must be a str"
MSG_NAN = "NaN and Infinity cannot be serialized to JSON"
MSG_BIG_INT = "Integer exceeds 64-bit range"  # orjson's words


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in text.split(".")[:3])  # type: ignore[union-attr]


#: orjson before 3.11.6 (for Python 3.9 the newest is 3.11.5) can corrupt memory when it writes containers nested
#: about 150 deep (measured with nested dicts), below its own limit of 255. With such an orjson, events may nest
#: 100 containers deep (MongoDB's limit too): the encoders and the hub refuse deeper ones, and ``orjson_dumps``
#: measures the depth before orjson writes anything.
ORJSON_NESTS_SAFELY = _version(orjson.__version__) >= (3, 11, 6)

#: Containers may nest MAX_DEPTH - 1 deep: orjson refuses 255 (101 here with an orjson that cannot write deeper
#: safely); the walk reports the container that reaches it.
MAX_DEPTH = 255 if ORJSON_NESTS_SAFELY else 101
MSG_DEPTH = f"Nesting too deep (the limit is {MAX_DEPTH - 1} levels of containers)"


_CONTAINERS = (dict, list, tuple)
#: PERF: the usual values, told apart from containers by one set lookup of their type
_LEAVES = frozenset((str, int, float, bool, type(None)))


def _too_deep(obj: Any, depth: int) -> bool:
    """Whether ``obj`` (a dict, list or tuple, or a subclass, sitting ``depth`` deep: the root is 1), or a container
    inside it, sits ``MAX_DEPTH`` deep. Counts dicts, lists and tuples (orjson 3.13 does not count tuples: nested
    deep enough they corrupt its heap) over what orjson writes: a subclass's own storage, not its overridden
    methods. Recursion ends at ``MAX_DEPTH``."""
    if depth >= MAX_DEPTH:
        return True
    t = type(obj)
    if t is dict:
        items: Any = obj.values()
    elif t is list or t is tuple:
        items = obj
    elif isinstance(obj, dict):
        items = dict.values(obj)
    elif isinstance(obj, list):
        items = list.__iter__(obj)
    else:
        items = tuple.__iter__(obj)
    depth += 1
    for x in items:
        if type(x) not in _LEAVES and _child_too_deep(x, depth):
            return True
    return False


def _child_too_deep(x: Any, depth: int) -> bool:
    """``_too_deep`` for a container, ``_object_too_deep`` for anything else (``x`` sits ``depth`` deep)."""
    return _too_deep(x, depth) if isinstance(x, _CONTAINERS) else _object_too_deep(x, depth)


def _orjson_object_items(obj: Any) -> Optional[List[Tuple[Optional[str], Any]]]:
    """What orjson writes of ``obj`` when it is a dataclass instance (its ``__dict__`` items, or without one its
    fields, leaving out the names that start with ``_``) or an ``Enum`` member (its value, named ``None``);
    ``None`` for anything else. orjson does not count the tuples inside these either: the depth guard walks them."""
    if isinstance(obj, enum.Enum):
        return [(None, obj.value)]
    fields = getattr(type(obj), "__dataclass_fields__", None)
    if fields is None:
        return None
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        return [(k, v) for k, v in d.items() if not (isinstance(k, str) and k.startswith("_"))]
    return [(k, getattr(obj, k)) for k in fields if not k.startswith("_") and hasattr(obj, k)]


def _object_too_deep(obj: Any, depth: int) -> bool:
    """``_too_deep`` for a dataclass instance or an ``Enum`` member sitting ``depth`` deep (a level, as a dict is);
    ``False`` for any other object."""
    if type(obj) is datetime or type(obj) is date:  # PERF: the usual non-JSON values
        return False
    items = _orjson_object_items(obj)
    if items is None:
        return False
    if depth >= MAX_DEPTH:
        return True
    depth += 1
    for _, x in items:
        if type(x) not in _LEAVES and _child_too_deep(x, depth):
            return True
    return False


class _TooDeep:
    """What the Ruby-style conversion leaves where a container sits ``MAX_DEPTH`` deep: orjson refuses it (no
    JSON type) and ``_find_problem`` names it (the nesting limit)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<nested too deep>"


_DEEP = _TooDeep()


def _nests_too_deep(obj: Any) -> bool:
    """Whether a container in ``obj`` (dicts, lists, tuples) sits ``MAX_DEPTH`` deep (the root is 1)."""
    stack = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        if isinstance(v, dict):
            items: Any = v.values()
        elif isinstance(v, (list, tuple)):
            items = v
        else:
            pairs = _orjson_object_items(v)
            if pairs is None:
                continue
            items = [x for _, x in pairs]
        if depth >= MAX_DEPTH:
            return True
        for x in items:
            if type(x) not in _LEAVES:
                push((x, depth + 1))
    return False


if ORJSON_NESTS_SAFELY:
    orjson_dumps = orjson.dumps
else:

    def orjson_dumps(obj: Any, default: Any = None, option: Any = None) -> bytes:  # type: ignore[misc]
        """``orjson.dumps``, refusing (as orjson does past its own limit) what nests ``MAX_DEPTH`` deep."""
        if _nests_too_deep(obj):
            raise orjson.JSONEncodeError("Recursion limit reached")
        return orjson.dumps(obj, default=default, option=option)

_RANDOM_CHUNK = 4096
_MIN_MICROS = -62135596800 * 1000000  # 0001-01-01T00:00:00
_MAX_MICROS = 253402300800 * 1000000 - 1  # 9999-12-31T23:59:59.999999
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)

_OPT_CONNECT_PY = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_BC_FIELDS = ("customer", "product", "type")


# ---------------------------------------------------------------------------------------------------------------
# Random pool, UUIDs, times


class _Pool:
    """UUID4s drawn 16 bytes at a time from a buffer refilled by ``urandom(4096)``."""

    __slots__ = ("urandom", "buf", "pos")

    def __init__(self, urandom: Optional[Callable[[int], bytes]]) -> None:
        self.urandom = urandom
        self.buf = b""
        self.pos = 0

    def uuid(self) -> str:
        pos = self.pos
        if pos + 16 > len(self.buf):
            fill = self.urandom if self.urandom is not None else os.urandom
            buf = bytes(fill(_RANDOM_CHUNK))
            if len(buf) < 16:
                raise ValueError("urandom returned fewer than 16 bytes")
            self.buf = buf
            pos = 0
        self.pos = pos + 16
        return _uuid_from(self.buf[pos : pos + 16])


def _uuid_from(raw: bytes) -> str:
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_SHARED_POOL = _Pool(None)


def uuid4_str(urandom: Optional[Callable[[int], bytes]] = None) -> str:
    """One UUID4 string from the shared buffered pool (or from ``urandom(16)`` when given)."""
    if urandom is None:
        return _SHARED_POOL.uuid()
    raw = bytes(urandom(16))
    if len(raw) < 16:
        raise ValueError("urandom returned fewer than 16 bytes")
    return _uuid_from(raw[:16])


def _system_clock() -> int:
    return time.time_ns() // 1000


def _check_micros(micros: Any) -> int:
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise TypeError(f"the clock must return an int of microseconds, not {type(micros).__name__}")
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise OverflowError(f"timestamp out of range: {micros} microseconds")
    return int(micros)


def _naive_from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=_check_micros(micros))


def format_iso_naive(micros: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]`` (naive UTC; microseconds only when non-zero), like ``isoformat()``."""
    return _naive_from_micros(micros).isoformat()


def format_iso_seconds_z(micros: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    return _seconds_z(_naive_from_micros(micros))


def _seconds_z(d: datetime) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}Z"


def _utc_naive(d: datetime) -> datetime:
    offset = d.utcoffset()
    d = d.replace(tzinfo=None)
    return d - offset if offset is not None else d


# ---------------------------------------------------------------------------------------------------------------
# Slow path: find the field orjson could not serialize (or that holds NaN / Infinity)


def _iso_default(obj: Any) -> Any:
    iso = getattr(obj, "isoformat", None)
    if iso is None:
        raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")
    return iso()


def _child(path: str, key: Any) -> str:
    return key if not path else f"{path}.{key}"


def _find_problem(obj: Any, path: str, depth: int, option: int, default: Any) -> Optional[Tuple[str, str]]:
    """The first (path, message) that orjson refuses or would silently write as null, depth first; or None."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        if t is str:
            try:
                obj.encode("utf-8")
            except UnicodeEncodeError:
                return path, "str is not valid UTF-8: surrogates not allowed"
        elif t is int and not -(2**63) <= obj < 2**64:
            return path, MSG_BIG_INT
        return None
    if t is float:
        return None if math.isfinite(obj) else (path, MSG_NAN)
    if isinstance(obj, dict):
        depth += 1
        if depth >= MAX_DEPTH:
            return path, MSG_DEPTH
        for k, v in obj.items():
            if type(k) is str:
                name = k
                if not k.isascii():
                    try:
                        k.encode("utf-8")
                    except UnicodeEncodeError:
                        return _child(path, k), "str is not valid UTF-8: surrogates not allowed"
            else:
                try:
                    orjson.dumps({k: None}, option=option, default=default)
                except TypeError as exc:
                    return _child(path, str(k)), str(exc)
                name = str(k)
            found = _find_problem(v, _child(path, name), depth, option, default)
            if found is not None:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        depth += 1
        if depth >= MAX_DEPTH:
            return path, MSG_DEPTH
        for i, v in enumerate(obj):
            found = _find_problem(v, f"{path}[{i}]", depth, option, default)
            if found is not None:
                return found
        return None
    if obj is _DEEP:
        return path, MSG_DEPTH
    if isinstance(obj, float) and not math.isfinite(obj):
        return path, MSG_NAN
    pairs = _orjson_object_items(obj)
    if pairs is not None:  # a dataclass or an Enum: what orjson writes of it, before orjson sees it
        depth += 1
        if depth >= MAX_DEPTH:
            return path, MSG_DEPTH
        for name, v in pairs:
            found = _find_problem(v, path if name is None else _child(path, name), depth, option, default)
            if found is not None:
                return found
    # a float subclass (orjson writes none), or anything else: orjson's own verdict
    try:
        orjson.dumps(obj, option=option, default=default)
    except TypeError as exc:
        return path, str(exc)
    return None


def _big_ints_verbatim(obj: Any, depth: int) -> Any:
    """``obj`` with every integer outside -2**63 .. 2**64-1 replaced by an ``orjson.Fragment`` of its digits; the
    containers on the way are copied (the caller's data is never changed), the rest is shared."""
    if isinstance(obj, int):
        if type(obj) is bool or -(2**63) <= obj < 2**64:
            return obj
        try:
            return orjson.Fragment(int.__repr__(obj))
        except ValueError:  # over sys.get_int_max_str_digits() digits: left to orjson, which names the field
            return obj
    if depth >= MAX_DEPTH:
        return obj
    if isinstance(obj, dict):
        out = None
        for k, v in obj.items():
            w = _big_ints_verbatim(v, depth + 1)
            if w is not v:
                if out is None:
                    out = dict(obj.items())
                out[k] = w
        return obj if out is None else out
    if isinstance(obj, (list, tuple)):
        items = None
        for i, v in enumerate(obj):
            w = _big_ints_verbatim(v, depth + 1)
            if w is not v:
                if items is None:
                    items = list(obj)
                items[i] = w
        return obj if items is None else items
    return obj


# orjson.loads holds the integers -2**63 .. 2**64-1 exactly and gives any other integer as a float, rounded without
# a word. Every such integer has a run of at least 19 digits (-2**63 - 1 has 19), so a document without one (almost
# every document) is exact as orjson parsed it. PERF: translate + find look for the run at ~0.2 us per 200-byte
# event; a regex takes over 2 us.
_DIGIT_MAP = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_DIGIT_RUN = b"0" * 19


def long_digit_run(data: bytes) -> bool:
    """``True`` when ``data`` holds 19 or more digits in a row: maybe an integer that ``orjson.loads`` rounds."""
    return data.translate(_DIGIT_MAP).find(_DIGIT_RUN) >= 0


def dumps_exact(obj: Any) -> bytes:
    """``orjson.dumps(obj)``, with integers beyond 64 bits written with all their digits (as ``json.dumps``);
    a value that cannot be written raises :class:`~eventpush.errors.EventTypeError` (a ``TypeError``) naming it."""
    return _serialize(obj, 0, None)


def loads_exact(data: bytes) -> Any:
    """``orjson.loads(data)`` (its errors too), except that a document that may hold an integer beyond 64 bits is
    parsed again by the standard library, which keeps every integer exact (the encoder writes such integers with
    all their digits)."""
    doc = orjson.loads(data)
    if long_digit_run(data):
        try:
            return json.loads(data)
        except RecursionError:  # deeper than Python's parser goes: orjson's reading is the best there is
            pass
    return doc


def _type_error(path: str, message: str) -> EventTypeError:
    return EventTypeError(message, field=path or None)


def _serialize(obj: Any, option: int, default: Any, big_ints: bool = True, deep: Optional[bool] = None) -> bytes:
    """orjson once; the walk only when it fails, or when a ``null`` might be a NaN it let through.

    ``big_ints``: integers beyond orjson's 64 bits are written with all their digits, as ``json.dumps`` writes
    them (connect-python, the Ruby gem and plain JSON send them so); the Barchart rules refuse them (the original
    client's JavaScript numbers cannot hold one).

    ``deep``: whether a container sits ``MAX_DEPTH`` deep (``_too_deep``), when the caller's own walk found out;
    ``None`` walks here. Nothing that deep ever reaches orjson (which does not count tuples): it is refused as
    orjson refuses a list that deep."""
    try:
        if deep is None:
            deep = isinstance(obj, _CONTAINERS) and _too_deep(obj, 1)
        if deep:
            raise TypeError(MSG_DEPTH)
        data = orjson_dumps(obj, option=option, default=default)
    except TypeError as exc:
        found = _find_problem(obj, "", 0, option, default)
        if found is None:
            raise EventTypeError(str(exc)) from None
        if big_ints and found[1] == MSG_BIG_INT:
            # PERF: only here, after orjson refused: a copy of the containers on the way to each such integer
            return _serialize(_big_ints_verbatim(obj, 0), option, default, False)
        raise _type_error(*found) from None
    if b"null" in data:
        found = _find_problem(obj, "", 0, option, default)
        if found is not None:
            raise _type_error(*found)
    return data


# ---------------------------------------------------------------------------------------------------------------
# Rules


# Subclasses of dict and str: every rule reads the data that is written (a dict's own storage, a str's own
# characters), never an overridden method (``__getitem__``, ``lower``, ``startswith``, ``__len__`` …), so the
# compiled core, which reads them through the C API, decides the same. Exact types take the plain spelling.


def _py_key_errors(d: dict, errors: Dict[str, str], depth: int) -> bool:
    """connect-python's elif chain at every dict depth, through dict values only (lists are not entered for keys);
    returns whether a container sits ``MAX_DEPTH`` deep (the depth guard, folded into this walk: ``_too_deep``)."""
    deep = depth >= MAX_DEPTH
    for k, v in d.items() if type(d) is dict else dict.items(d):
        if type(k) is str:
            if "." in k:
                errors[k] = MSG_PERIOD
            elif k.startswith("$"):
                errors[k] = MSG_DOLLAR
            elif len(k) > 255:
                errors[k] = MSG_LONG
        elif isinstance(k, str):
            if str.__contains__(k, "."):
                errors[k] = MSG_PERIOD
            elif str.startswith(k, "$"):
                errors[k] = MSG_DOLLAR
            elif str.__len__(k) > 255:
                errors[k] = MSG_LONG
        t = type(v)
        if t in _LEAVES:
            continue
        if t is dict or isinstance(v, dict):
            if depth < MAX_DEPTH and _py_key_errors(v, errors, depth + 1):
                deep = True
        elif deep:
            pass
        elif t is list or t is tuple:
            # PERF: a list of plain values (the usual one) is looked at here, without a call
            for x in v:
                if type(x) not in _LEAVES:  # a container, or an object the guard looks into
                    deep = _too_deep(v, depth + 1)
                    break
        elif isinstance(v, (list, tuple)):
            deep = _too_deep(v, depth + 1)
        elif _object_too_deep(v, depth + 1):
            deep = True
    return deep


_MISSING: Any = object()


def _prepare_connect_py(event: Any, pool: _Pool, clock: Callable[[], int]) -> bytes:
    if not isinstance(event, dict):
        raise EventTypeError(MSG_NOT_DICT)
    if type(event) is dict:
        if "id" not in event:
            event["id"] = pool.uuid()
        if "timestamp" not in event:
            event["timestamp"] = _naive_from_micros(clock())
            ts_ok = True
        else:
            ts_ok = hasattr(event["timestamp"], "date")
    else:  # the storage decides; the stamps go through the subclass's own __setitem__ (an OrderedDict's order)
        if not dict.__contains__(event, "id"):
            event["id"] = pool.uuid()
        if not dict.__contains__(event, "timestamp"):
            event["timestamp"] = _naive_from_micros(clock())
            ts_ok = True
        else:
            ts_ok = hasattr(dict.__getitem__(event, "timestamp"), "date")
    deep = _connect_py_check(event, ts_ok)
    return _serialize(event, _OPT_CONNECT_PY, _iso_default, True, deep)


def _connect_py_check(event: dict, ts_ok: bool) -> bool:
    """Raise connect-python's one error per event (spec §2.3 steps 3–6), or return whether a container sits
    ``MAX_DEPTH`` deep."""
    errors: Dict[str, str] = {}
    for k in event if type(event) is dict else dict.keys(event):
        if type(k) is str:
            low = k.lower()
        elif isinstance(k, str):
            low = str.lower(k)
        else:
            continue
        if low.startswith("tp_"):
            errors[k] = MSG_TP
        elif low == "_id":
            errors[k] = MSG_ID
    deep = _py_key_errors(event, errors, 1)
    if not ts_ok:
        errors["timestamp"] = MSG_TIMESTAMP
    if errors:
        first = next(iter(errors))
        raise EventValidationError(errors[first], field=first, errors=errors)
    return deep


MSG_DATE_RANGE = "Date value out of range: its UTC value is outside years 1 to 9999"


def _rb_convert(v: Any, depth: int) -> Any:
    if isinstance(v, datetime):
        return _seconds_z(_utc_naive(v))
    if isinstance(v, date):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T00:00:00Z"
    if depth >= MAX_DEPTH:
        # orjson must never see it (it does not count tuples): _find_problem names the field
        return _DEEP if isinstance(v, _CONTAINERS) or _object_too_deep(v, depth + 1) else v
    if isinstance(v, dict):
        return {k: _rb_convert(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rb_convert(x, depth + 1) for x in v]
    if _object_too_deep(v, depth + 1):  # a dataclass or an Enum, written by orjson as it is
        return _DEEP
    return v


def _rb_date_error(event: dict) -> EventValidationError:
    """The error for an aware datetime whose UTC value is outside years 1–9999 (``_utc_naive`` overflowed while
    ``_rb_convert`` walked ``event``): the first such value in the same walk names the field."""
    field = _rb_find_bad_date(event, "", 1)
    return EventValidationError(MSG_DATE_RANGE, field=field,
                                errors={field: MSG_DATE_RANGE} if field is not None else None)


def _rb_find_bad_date(v: Any, path: str, depth: int) -> Optional[str]:
    if isinstance(v, datetime):
        try:
            _utc_naive(v)
        except OverflowError:
            return path or None
        return None
    if isinstance(v, date) or depth >= MAX_DEPTH:
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            found = _rb_find_bad_date(x, _child(path, k if isinstance(k, str) else str(k)), depth + 1)
            if found is not None:
                return found
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            found = _rb_find_bad_date(x, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


def _rb_check(event: dict) -> None:
    """Raise the Ruby gem's reserved-prefix error (spec §2.4, anchored), or return."""
    bad = [k for k in event if isinstance(k, str) and str.lower(k).startswith("tp_")]
    if bad:
        message = MSG_RB_TP + "".join("\n->" + str.__str__(k) for k in bad)
        raise EventValidationError(message, field=bad[0], errors={k: message for k in bad})


def _prepare_connect_rb(event: Any, pool: _Pool, clock: Callable[[], int]) -> bytes:
    if not isinstance(event, dict):
        raise EventTypeError(MSG_NOT_DICT)
    _rb_check(event)
    out: Dict[Any, Any] = {}
    if type(event) is dict:
        out["id"] = event["id"] if "id" in event else pool.uuid()
        out["timestamp"] = None if "timestamp" in event else format_iso_seconds_z(clock())
    else:  # the storage decides (the items come from the subclass's own items(), as written)
        out["id"] = dict.__getitem__(event, "id") if dict.__contains__(event, "id") else pool.uuid()
        out["timestamp"] = None if dict.__contains__(event, "timestamp") else format_iso_seconds_z(clock())
    try:
        for k, v in event.items():
            out[k] = _rb_convert(v, 1)
    except OverflowError:
        raise _rb_date_error(event) from None
    # the conversion left only dicts and lists, none MAX_DEPTH deep (_DEEP stands there): no second walk
    return _serialize(out, 0, None, True, False)


def _bc_code(v: Any, allowed: frozenset) -> Optional[str]:
    if type(v) is str:
        return v if v in allowed else None
    code = getattr(v, "code", None)
    if isinstance(code, str):
        code = str.__str__(code)
        if code in allowed:
            return code
    if isinstance(v, str):
        v = str.__str__(v)
        if v in allowed:
            return v
    return None


def _epoch_ms(d: datetime) -> int:
    return (_utc_naive(d) - _EPOCH) // _MS


def _prepare_barchart(event: Any, codes: Mapping[str, frozenset]) -> bytes:
    if not isinstance(event, dict):
        raise EventTypeError(MSG_NOT_DICT)
    get = event.get if type(event) is dict else functools.partial(dict.get, event)
    out: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    for name in _BC_FIELDS:
        code = _bc_code(get(name), codes[name])
        if code is None:
            errors[name] = MSG_BC_FIELD.format(name)
        else:
            out[name] = code
    version = get("version")
    if version is not None:
        if isinstance(version, str):
            out["version"] = str.__str__(version)
        else:
            errors["version"] = MSG_BC_FIELD.format("version")
    ts = get("timestamp")
    if isinstance(ts, int) and not isinstance(ts, bool):
        if -BC_TIMESTAMP_LIMIT <= ts <= BC_TIMESTAMP_LIMIT:
            out["timestamp"] = int(ts)
        else:  # (time.time_ns() where milliseconds were meant: the server refuses it, and its whole batch)
            errors["timestamp"] = MSG_BC_FIELD.format("timestamp")
    elif isinstance(ts, datetime):
        try:
            out["timestamp"] = _epoch_ms(ts)
        except OverflowError:  # an aware datetime whose UTC value is outside years 1–9999
            errors["timestamp"] = MSG_BC_FIELD.format("timestamp")
    else:
        errors["timestamp"] = MSG_BC_FIELD.format("timestamp")
    context = get("context")
    if isinstance(context, list):
        out["context"] = context
    else:
        errors["context"] = MSG_BC_FIELD.format("context")
    if errors:
        raise EventValidationError(MSG_BC, field=next(iter(errors)), errors=errors)
    # the depth guard: the context is the only container (it sits at depth 2); PERF: plain values looked at here
    deep = False
    for x in context:  # type: ignore[union-attr]
        if type(x) not in _LEAVES:
            deep = _too_deep(context, 2)
            break
    return _serialize(out, 0, None, False, deep)


# ---------------------------------------------------------------------------------------------------------------
# Batches


class Batch(bytes):
    """A sealed batch: one contiguous body plus the span of every event in it (see ``_core.pyi``).

    The twin stores the body as the ``bytes`` it subclasses, so ``memoryview(batch)`` is zero-copy and read-only
    on every Python version. Exported views are counted (for ``release()``) on Python 3.12+ only, where a
    pure-Python class can see them (PEP 688); the compiled core counts them everywhere.
    """

    def __new__(cls, body: bytes, *args: Any) -> "Batch":
        return super().__new__(cls, body)

    def __init__(
        self,
        body: bytes,
        dialect: Dialect,
        spans: List[Tuple[int, int]],
        collections: List[Optional[str]],
        tags: List[Any],
        groups: List[Tuple[Optional[str], int, int]],
    ) -> None:
        self._dialect = dialect
        self._spans = spans
        self._collections = collections
        self._tags = tags
        self._groups = groups
        self._released = False
        self._exports = 0

    if sys.version_info >= (3, 12):

        def __buffer__(self, flags: int) -> memoryview:
            # a released batch serves an empty body, as the compiled core does (before 3.12 a bytes subclass
            # cannot choose what its buffer shows: memoryview(batch) still shows the old body there)
            view = bytes.__buffer__(b"" if self._released else self, flags)  # type: ignore[attr-defined]
            self._exports += 1
            return view

        def __release_buffer__(self, view: memoryview) -> None:
            self._exports -= 1

    @property
    def count(self) -> int:
        """Number of events."""
        return len(self._spans)

    @property
    def nbytes(self) -> int:
        """Length of the body in bytes."""
        return 0 if self._released else bytes.__len__(self)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def __len__(self) -> int:
        return len(self._spans)

    def __bool__(self) -> bool:
        return bool(self._spans)

    def __repr__(self) -> str:
        return f"<Batch {self._dialect.name} count={self.count} nbytes={self.nbytes}>"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Batch cannot be pickled; send body() and re-encode")

    def _check(self, i: int) -> int:
        if not isinstance(i, int):
            raise TypeError(f"batch indices must be integers, not {type(i).__name__}")
        if not 0 <= i < len(self._spans):
            raise IndexError(f"batch index {i} out of range (count {len(self._spans)})")
        return i

    def __bytes__(self) -> bytes:
        return b"" if self._released else bytes.__getitem__(self, slice(None))

    def body(self) -> bytes:
        """A copy of the body."""
        return b"" if self._released else bytes.__getitem__(self, slice(None))

    def event(self, i: int) -> bytes:
        """The encoded bytes of event ``i`` (no framing)."""
        off, length = self._spans[self._check(i)]
        return bytes.__getitem__(self, slice(off, off + length))

    def span(self, i: int) -> Tuple[int, int]:
        """``(offset, length)`` of event ``i`` inside the body."""
        return self._spans[self._check(i)]

    def collection(self, i: int) -> Optional[str]:
        """The collection of event ``i`` (None for dialects without collections)."""
        return self._collections[self._check(i)]

    def tag(self, i: int) -> Any:
        """The tag given with event ``i``."""
        return self._tags[self._check(i)]

    def tags(self) -> List[Any]:
        """All tags in body order."""
        return list(self._tags)

    def groups(self) -> List[Tuple[Optional[str], int, int]]:
        """``[(collection, start, stop), …]`` in body order."""
        return list(self._groups)

    def subset(self, indices: Sequence[int]) -> "Batch":
        """A new sealed batch of the given events, framed anew from their stored bytes."""
        acc = _Acc(self._dialect)
        for i in indices:
            self._check(i)
            acc.append(self.event(i), self._collections[i], self._tags[i])
        if not acc.n:
            raise ValueError("an empty subset")
        return acc.seal()

    def release(self) -> None:
        """Give the buffer back. Raises ``BufferError`` while a view is alive; afterwards the batch is empty."""
        if self._exports:
            raise BufferError("the batch is exported: release every memoryview of it first")
        self._released = True
        self._spans = []
        self._collections = []
        self._tags = []
        self._groups = []


class _Acc:
    """The open batch: stored event bytes and their collections/tags, and the body size as if sealed now."""

    __slots__ = ("dialect", "framing", "parts", "colls", "tags", "n", "nbytes", "groups", "names")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.framing = dialect.framing
        self.names: Dict[str, bytes] = {}
        self.reset()

    def reset(self) -> None:
        self.parts: List[bytes] = []
        self.colls: List[Optional[str]] = []
        self.tags: List[Any] = []
        self.groups: Dict[Optional[str], List[int]] = {}
        self.n = 0
        self.nbytes = 0

    def size_with(self, length: int, collection: Optional[str]) -> int:
        """Body size if an event of ``length`` bytes were added."""
        framing = self.framing
        if framing == "ndjson":
            return self.nbytes + length + 1
        if framing == "events":
            return (self.nbytes + length + 1) if self.n else length + 13
        if framing == "array":
            return (self.nbytes + length + 1) if self.n else length + 2
        name = self.names[collection]  # type: ignore[index]
        if not self.n:
            return len(name) + length + 5  # {"c":[e]}
        if collection in self.groups:
            return self.nbytes + length + 1
        return self.nbytes + len(name) + length + 4  # ,"c":[e]

    def escaped(self, collection: Any) -> bytes:
        name = self.names.get(collection) if type(collection) is str else None
        if name is None:
            if not isinstance(collection, str):
                raise EventTypeError(MSG_COLLECTION)
            try:
                name = orjson.dumps(collection)
            except TypeError as exc:
                raise EventTypeError(f"Collection name cannot be encoded: {exc}") from None
            self.names[collection] = name
        return name

    def append(self, data: bytes, collection: Optional[str], tag: Any) -> None:
        if self.framing == "collections":
            self.escaped(collection)
        else:
            collection = None
        self.nbytes = self.size_with(len(data), collection)
        self.groups.setdefault(collection, []).append(self.n)
        self.parts.append(data)
        self.colls.append(collection)
        self.tags.append(tag)
        self.n += 1

    def seal(self) -> Batch:
        framing = self.framing
        out: List[bytes] = []
        spans: List[Tuple[int, int]] = []
        colls: List[Optional[str]] = []
        tags: List[Any] = []
        groups: List[Tuple[Optional[str], int, int]] = []
        pos = 0

        def put(b: bytes) -> None:
            nonlocal pos
            out.append(b)
            pos += len(b)

        def put_event(j: int) -> None:
            spans.append((pos, len(self.parts[j])))
            colls.append(self.colls[j])
            tags.append(self.tags[j])
            put(self.parts[j])

        if framing == "collections":
            put(b"{")
            for gi, (name, members) in enumerate(self.groups.items()):
                if gi:
                    put(b",")
                put(self.names[name])  # type: ignore[index]
                put(b":[")
                start = len(spans)
                for k, j in enumerate(members):
                    if k:
                        put(b",")
                    put_event(j)
                put(b"]")
                groups.append((name, start, len(spans)))
            put(b"}")
        elif framing == "ndjson":
            for j in range(self.n):
                put_event(j)
                put(b"\n")
            groups.append((None, 0, self.n))
        else:
            put(b'{"events":[' if framing == "events" else b"[")
            for j in range(self.n):
                if j:
                    put(b",")
                put_event(j)
            put(b"]}" if framing == "events" else b"]")
            groups.append((None, 0, self.n))
        body = b"".join(out)
        assert len(body) == self.nbytes
        batch = Batch(body, self.dialect, spans, colls, tags, groups)
        self.reset()
        return batch


# ---------------------------------------------------------------------------------------------------------------
# Encoder

_DIALECT_LIMIT: Any = object()


class Encoder:
    """Validates, stamps, serializes and frames events for one dialect (see ``_core.pyi``)."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        max_batch_events: Any = _DIALECT_LIMIT,
        max_batch_bytes: Any = _DIALECT_LIMIT,
        clock: Optional[Callable[[], int]] = None,
        urandom: Optional[Callable[[int], bytes]] = None,
    ) -> None:
        if not isinstance(dialect, Dialect):
            raise TypeError(f"dialect must be a Dialect, not {type(dialect).__name__}")
        if max_batch_events is _DIALECT_LIMIT:
            max_batch_events = dialect.max_batch_events
        if max_batch_bytes is _DIALECT_LIMIT:
            max_batch_bytes = dialect.max_batch_bytes
        for name, value in (("max_batch_events", max_batch_events), ("max_batch_bytes", max_batch_bytes)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        self._dialect = dialect
        self._rules = dialect.rules
        self._max_events = max_batch_events
        self._max_bytes = max_batch_bytes
        self._max_event = dialect.max_event_bytes
        self._clock = clock if clock is not None else _system_clock
        self._pool = _Pool(urandom)
        self._open = _Acc(dialect)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def pending(self) -> int:
        """Events in the open (unsealed) batch."""
        return self._open.n

    @property
    def pending_bytes(self) -> int:
        """Body bytes of the open batch, as it would be if sealed now."""
        return self._open.nbytes

    def __repr__(self) -> str:
        return f"<Encoder {self._dialect.name} (python) pending={self._open.n}>"

    def _encode_one(self, event: Any, collection: Any, acc: _Acc, single: bool = False) -> bytes:
        if self._dialect.framing == "collections" and not (single and collection is None):
            acc.escaped(collection)
        rules = self._rules
        if rules == "connect_py":
            data = _prepare_connect_py(event, self._pool, self._clock)
        elif rules == "connect_rb":
            data = _prepare_connect_rb(event, self._pool, self._clock)
        elif rules == "barchart":
            data = _prepare_barchart(event, self._dialect.codes)  # type: ignore[arg-type]
        else:
            data = _serialize(event, 0, None)
        if self._max_event is not None and len(data) > self._max_event:
            raise EventTooLargeError(self._dialect.too_large_message)
        return data

    def _encode_located(self, event: Any, collection: Any, index: int, acc: _Acc, single: bool = False) -> bytes:
        try:
            return self._encode_one(event, collection, acc, single)
        except EventError as exc:
            exc.index = index
            exc.collection = collection if isinstance(collection, str) else None
            raise

    def _add_to(self, acc: _Acc, data: bytes, collection: Any, tag: Any, sealed: List[Batch]) -> None:
        coll = collection if acc.framing == "collections" else None
        if acc.n and self._max_bytes is not None and acc.size_with(len(data), coll) > self._max_bytes:
            sealed.append(acc.seal())
        acc.append(data, coll, tag)
        if self._max_events is not None and acc.n >= self._max_events:
            sealed.append(acc.seal())

    def encode(self, event: Any, collection: Optional[str] = None) -> bytes:
        """Validate, stamp and serialize one event; return its bytes (``collection`` may be omitted here)."""
        return self._encode_located(event, collection, 0, self._open, True)

    def add(self, event: Any, collection: Optional[str] = None, tag: Any = None) -> Optional[Batch]:
        """Encode one event into the open batch; return a batch sealed by it, if any."""
        data = self._encode_located(event, collection, 0, self._open)
        sealed: List[Batch] = []
        self._add_to(self._open, data, collection, tag, sealed)
        return sealed[0] if sealed else None

    def add_encoded(self, data: bytes, collection: Optional[str] = None, tag: Any = None) -> Optional[Batch]:
        """Append an event's bytes as ``encode()`` of this dialect returned them; return a batch sealed by it."""
        if type(data) is not bytes:
            raise TypeError(f"add_encoded takes the bytes encode() returned, not {type(data).__name__}")
        if self._max_event is not None and len(data) > self._max_event:
            raise EventTooLargeError(self._dialect.too_large_message)
        if self._open.framing == "collections":
            self._open.escaped(collection)  # a collection name that is no str raises here, the batch unchanged
        sealed: List[Batch] = []
        self._add_to(self._open, data, collection, tag, sealed)
        return sealed[0] if sealed else None

    def seal(self) -> Optional[Batch]:
        """Seal and return the open batch, or None when it is empty."""
        return self._open.seal() if self._open.n else None

    def encode_batch(self, events: Any, collection: Optional[str] = None, *,
                     stop_at_error: bool = False) -> Tuple[List[Batch], List[EventError]]:
        """Encode many events at once, independently of the open batch (see ``_core.pyi``)."""
        if isinstance(events, Mapping):
            if collection is not None:
                raise ValueError("collection must be None when events is a mapping")
            for name, items in events.items():
                if not isinstance(items, (list, tuple)):
                    raise EventTypeError(MSG_NOT_LIST, collection=name if isinstance(name, str) else None)
            work = [(name, items, True) for name, items in events.items()]
        elif isinstance(events, (list, tuple)):
            work = [(collection, events, False)]
        else:
            raise EventTypeError(MSG_NOT_LIST, collection=collection)
        acc = _Acc(self._dialect)
        sealed: List[Batch] = []
        errors: List[EventError] = []
        for name, items, keyed in work:
            for i, event in enumerate(items):
                try:
                    data = self._encode_located(event, name, i, acc)
                except EventError as exc:
                    errors.append(exc)
                    if stop_at_error:
                        return [], errors
                    continue
                self._add_to(acc, data, name, (name, i) if keyed else i, sealed)
        if acc.n:
            sealed.append(acc.seal())
        return sealed, errors


class BatcherBase:
    """The hot path of :class:`eventpush.batcher.Batcher` (its base class), as in the compiled core: ``push``.
    The subclass owns everything else (threads, spool, flush, close) and keeps these attributes; ``_make_room`` is
    its own."""

    _lock: Any
    _encoder: Any
    _ready: Any
    _work: Any
    _buffered: int
    _limit: float

    def _make_room(self) -> None:  # pragma: no cover - the subclass defines it
        raise NotImplementedError

    def push(self, event: Any, collection: Optional[str] = None) -> None:
        """Validate, stamp and encode ``event`` now (bad input raises the encoder's
        :class:`~eventpush.errors.EventError` here, naming the field); delivery happens in the background.
        Thread-safe. Raises :class:`~eventpush.errors.BufferFullError` per the overflow policy and
        :class:`~eventpush.errors.ClosedError` after ``close()``."""
        self._push(event, collection, False)

    def push_encoded(self, data: bytes, collection: Optional[str] = None) -> None:
        """``push`` for an event already encoded by an ``Encoder`` of this dialect (``encode()``'s bytes): buffered
        and delivered as they are, without a second validation or encoding."""
        self._push(data, collection, True)

    def _push(self, item: Any, collection: Optional[str], encoded: bool) -> None:
        # PERF: one lock, one comparison (``_limit`` drops below zero once closed, so the closed check rides on
        # the room check), one encoder call, one counter. acquire/release cost half of what ``with lock:`` does
        # on CPython 3.11.
        lock = self._lock
        lock.acquire()
        try:
            if self._buffered >= self._limit:
                self._make_room()
            if encoded:
                batch = self._encoder.add_encoded(item, collection)
            else:
                batch = self._encoder.add(item, collection)
            self._buffered += 1
            if batch is not None:
                self._ready.append(batch)
                self._work.notify()
        finally:
            lock.release()


# ---------------------------------------------------------------------------------------------------------------
# The hub's bulk path (``eventpush.hub.connect``): one collection of a Connect batch, checked and written at once.

#: The hub's ISO-8601 rule: seconds, fraction and offset optional (naive values are taken as UTC).
HUB_TIMESTAMP = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::(?:[0-5][0-9]|60)(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?\Z"
)
_hub_ts = HUB_TIMESTAMP.match
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_TWO_63 = float(1 << 63)
_MAX_NESTING = MAX_DEPTH  # the compiled writer leaves a container at this depth (orjson's limit) to the exact path


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _real_day(text: str) -> bool:
    """The day of a ``HUB_TIMESTAMP`` match exists in its month (proleptic Gregorian leap years)."""
    d = int(text[8:10])
    if d <= 28:
        return True
    m = int(text[5:7])
    if d <= _MONTH_DAYS[m - 1]:
        return True
    if m != 2 or d != 29:
        return False
    y = int(text[:4])
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def hub_timestamp_ok(text: str) -> bool:
    """``True`` when ``text`` is a timestamp the hub accepts: ``HUB_TIMESTAMP``, on a day that exists."""
    if type(text) is not str and isinstance(text, str):
        text = str.__str__(text)  # its characters, not its overridden methods
    return _hub_ts(text) is not None and _real_day(text)


def _hub_plain(v: Any, depth: int) -> bool:
    """What the compiled writer writes itself under the hub's key rules (``KEYS_ALL``): JSON data as
    ``orjson.loads`` gives it, 64-bit ints, finite floats, every key an ASCII string the hub cannot refuse.
    ``depth``: where ``v`` sits (the root event is 1); only containers look at it."""
    t = type(v)
    if t is str or v is None or t is bool:
        return True
    if t is int:
        return _I64_MIN <= v <= _I64_MAX
    if t is float:  # beyond 2**63: what orjson.loads makes of an integer too large for it (the hub looks again)
        return math.isfinite(v) and -_TWO_63 < v < _TWO_63
    if t is datetime:
        return v.tzinfo is None and v.year >= 1000
    if t is dict:
        if depth >= _MAX_NESTING:
            return False
        for k, x in v.items():
            if type(k) is not str:
                return False
            if k and (not k.isascii() or len(k) > 255 or k[0] == "$" or "." in k
                      or (depth == 1 and (k[:3].lower() == "tp_" or k.lower() == "_id"))):
                return False
            if not _hub_plain(x, depth + 1):
                return False
        return True
    if t is list or t is tuple:
        if depth >= _MAX_NESTING:
            return False
        return all(_hub_plain(x, depth + 1) for x in v)
    return False


_M64 = (1 << 64) - 1


def _siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein) of ``data`` under the 16-byte ``key``, as an unsigned 64-bit int."""
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:16], "little")
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = ((v1 << 13) | (v1 >> 51)) & _M64
            v1 ^= v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _M64
            v2 = (v2 + v3) & _M64
            v3 = ((v3 << 16) | (v3 >> 48)) & _M64
            v3 ^= v2
            v0 = (v0 + v3) & _M64
            v3 = ((v3 << 21) | (v3 >> 43)) & _M64
            v3 ^= v0
            v2 = (v2 + v1) & _M64
            v1 = ((v1 << 17) | (v1 >> 47)) & _M64
            v1 ^= v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _M64

    n = len(data)
    end = n - n % 8
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, end, 8)]
    words.append(((n & 0xFF) << 56) | int.from_bytes(data[end:], "little"))
    for m in words:
        v3 ^= m
        rounds(2)
        v0 ^= m
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def hub_id_hashes(key: bytes, cid: int, ids: List[str]) -> List[int]:
    """The hub's keyed id hashes: for each id of the list ``ids``, SipHash-2-4 under the 16-byte ``key`` of
    ``cid`` (8 bytes, little-endian two's complement) followed by the id's UTF-8 bytes, as a signed 64-bit int."""
    if type(key) is not bytes or len(key) != 16:
        raise ValueError("the id hash key must be 16 bytes")
    if type(ids) is not list:
        raise TypeError("ids must be a list")
    prefix = cid.to_bytes(8, "little", signed=True)
    out = []
    for eid in ids:
        if type(eid) is not str:
            raise TypeError(f"an event id must be a str, not {type(eid).__name__}")
        h = _siphash24(key, prefix + eid.encode())
        out.append(h - (1 << 64) if h >> 63 else h)
    return out


def hub_index_keys(hashes: List[int], shift: int, bits: int) -> str:
    """The hub's index keys of ``hashes`` (signed 64-bit ints): ``(h >> shift) & (2**bits - 1)`` for each, in
    ascending order, as the text of a JSON array."""
    if type(hashes) is not list:
        raise TypeError("hashes must be a list")
    if not (0 <= shift and 1 <= bits <= 63 and shift + bits <= 64):
        raise ValueError("shift and bits must select 1 to 63 bits of a 64-bit hash")
    mask = (1 << bits) - 1
    keys = []
    for h in hashes:
        if type(h) is not int:
            raise TypeError(f"a hash must be an int, not {type(h).__name__}")
        if not -(1 << 63) <= h < 1 << 63:
            raise OverflowError("a hash must be a signed 64-bit int")
        keys.append((h >> shift) & mask)
    keys.sort()
    return orjson.dumps(keys).decode()


_KF_FIRST_CAPACITY = 1 << 20
_KF_BITS_PER_KEY = 16
_KF_M64 = (1 << 64) - 1
_KF_KEY_END = 10 ** 18
_KF_BAD = "not a JSON array of index keys (non-negative ints)"


def _kf_mix(x: int) -> int:
    """splitmix64's finalizer."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _KF_M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _KF_M64
    return x ^ (x >> 31)


def _kf_hash(key: int) -> Tuple[int, int]:
    """A key's mix (whose low bits pick its block) and its bit in each word of the block (6 bits each)."""
    m = _kf_mix(key)
    return m, _kf_mix(m ^ 0x9E3779B97F4A7C15)


def _kf_base(t: array, m: int) -> int:
    """The first word of the block of table ``t`` (8-word blocks, a power of two of them) for mix ``m``."""
    return (m & (len(t) // 8 - 1)) * 8


def _kf_keys(keys_json: str) -> List[int]:
    if type(keys_json) is not str:
        raise TypeError("keys_json must be a str")
    try:
        keys = orjson.loads(keys_json)
    except orjson.JSONDecodeError:
        raise ValueError(_KF_BAD) from None
    if type(keys) is not list or any(type(k) is not int or k < 0 for k in keys):
        raise ValueError(_KF_BAD)
    if any(k >= _KF_KEY_END for k in keys):
        raise ValueError("an index key must be an int from 0 to 10**18 - 1")
    return keys


class HubKeyFilter:
    """The compiled core's ``HubKeyFilter`` (see ``_core.pyi``), bit for bit: a split-block Bloom filter over
    the hub's index keys, in a chain of tables of 64-bit words, eight to a block."""

    def __init__(self, first_capacity: int = _KF_FIRST_CAPACITY) -> None:
        if first_capacity < 32 or first_capacity & (first_capacity - 1):
            raise ValueError("first_capacity must be a power of two, at least 32")
        self._tables: List[array] = []
        self._capacity: List[int] = []
        self.keys = 0
        self._in_last = 0
        self._lock = threading.Lock()  # the compiled class holds the GIL throughout each call
        self._grow(first_capacity)

    def _grow(self, capacity: int) -> None:
        self._tables.append(array("Q", bytes(capacity * _KF_BITS_PER_KEY // 8)))
        self._capacity.append(capacity)
        self._in_last = 0

    @property
    def tables(self) -> int:
        return len(self._tables)

    @property
    def nbytes(self) -> int:
        return sum(len(t) * 8 for t in self._tables)

    def _maybe(self, key: int) -> bool:
        m, bits = _kf_hash(key)
        for t in self._tables:
            base = _kf_base(t, m)
            if all(t[base + i] >> ((bits >> (6 * i)) & 63) & 1 for i in range(8)):
                return True
        return False

    def __contains__(self, key: object) -> bool:
        if type(key) is not int or not 0 <= key < _KF_KEY_END:
            return False
        with self._lock:
            return self._maybe(key)

    def add(self, keys_json: str) -> int:
        keys = _kf_keys(keys_json)
        with self._lock:
            for key in keys:
                self._set(key)
        return keys[-1] if keys else -1

    def _set(self, key: int) -> None:
        if self._in_last >= self._capacity[-1]:
            self._grow(2 * self._capacity[-1])
        m, bits = _kf_hash(key)
        t = self._tables[-1]
        base = _kf_base(t, m)
        for i in range(8):
            t[base + i] |= 1 << ((bits >> (6 * i)) & 63)
        self._in_last += 1
        self.keys += 1

    def split(self, keys_json: str) -> Tuple[str, str]:
        return self._split(keys_json, False)

    def split_add(self, keys_json: str) -> Tuple[str, str]:
        return self._split(keys_json, True)

    def _split(self, keys_json: str, add: bool) -> Tuple[str, str]:
        keys = _kf_keys(keys_json)
        new: List[int] = []
        maybe: List[int] = []
        with self._lock:
            for key in keys:  # in order: with ``add`` a key may be seen by the ones after it
                (maybe if self._maybe(key) else new).append(key)
                if add:
                    self._set(key)
        if not maybe:
            return keys_json, "[]"
        return orjson.dumps(new).decode(), orjson.dumps(maybe).decode()


class HubKeyLog:
    """The compiled core's ``HubKeyLog`` (see ``_core.pyi``): the keys of the hub's key log and the rid of the
    chunk that logged each, in a dict."""

    def __init__(self) -> None:
        self._refs: Dict[int, int] = {}
        self._lock = threading.Lock()  # the compiled class holds the GIL throughout each call

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def get(self, key: object) -> Optional[int]:
        if type(key) is not int or not 0 <= key < _KF_KEY_END:
            return None
        return self._refs.get(key)

    def add(self, keys_json: str, ref: int) -> int:
        keys = _kf_keys(keys_json)
        ref = _kl_ref(ref)
        with self._lock:
            held = len(self._refs)
            for key in keys:
                self._refs.setdefault(key, ref)
            return len(self._refs) - held

    def absent(self, keys_json: str) -> str:
        keys = _kf_keys(keys_json)
        with self._lock:
            rest = [k for k in keys if k not in self._refs]
        return keys_json if len(rest) == len(keys) else orjson.dumps(rest).decode()

    def clear(self) -> None:
        with self._lock:
            self._refs.clear()


def _kl_ref(ref: object) -> int:
    if type(ref) is not int:
        raise TypeError("ref must be an int")
    if not 0 <= ref < 1 << 63:
        raise ValueError("ref must be from 0 to 2**63 - 1")
    return ref


def hub_connect_bulk(events: List[Any], max_event_bytes: int) -> Optional[Tuple[List[str], List[bytes]]]:
    """``(ids, bodies)`` when every event is a dict with a valid string ``id`` (1 to 255 characters, no NUL,
    unique in ``events``) and a ``timestamp`` the hub accepts, holds no key the hub might refuse at any depth and
    is at most ``max_event_bytes`` once written; ``None`` otherwise (the hub's exact path decides and says
    why). ``bodies[i]`` is ``orjson.dumps(events[i])``."""
    ids: List[str] = []
    bodies: List[bytes] = []
    for ev in events:
        if type(ev) is not dict:
            return None
        eid = ev.get("id")
        if type(eid) is not str or not 0 < len(eid) <= 255 or "\x00" in eid:
            return None
        ts = ev.get("timestamp")
        if type(ts) is not str or not ts.isascii() or not hub_timestamp_ok(ts):
            return None
        if not _hub_plain(ev, 1):
            return None
        try:
            body = orjson.dumps(ev)
        except orjson.JSONEncodeError:  # a lone surrogate
            return None
        if len(body) > max_event_bytes:
            return None
        ids.append(eid)
        bodies.append(body)
    if len(set(ids)) != len(ids):
        return None
    return ids, bodies


#: What ``hub_connect_scan`` leaves to the parse path besides what the bulk path does: containers nested this
#: deep, objects of more members (the compiled scan compares names pairwise), integers of more digits.
_SCAN_MAX_LEVEL = 32
_SCAN_MAX_KEYS = 64
_SCAN_INT_BOUND = 10 ** 18
_SCAN_WS = b" \t\n\r"


def _scan_plain(v: Any, level: int) -> bool:
    t = type(v)
    if t is dict:
        if level >= min(_SCAN_MAX_LEVEL, MAX_DEPTH) or len(v) > _SCAN_MAX_KEYS:
            return False
        return all(_scan_plain(x, level + 1) for x in v.values())
    if t is list:
        if level >= min(_SCAN_MAX_LEVEL, MAX_DEPTH):
            return False
        return all(_scan_plain(x, level + 1) for x in v)
    if t is int:
        return -_SCAN_INT_BOUND < v < _SCAN_INT_BOUND
    return True


def hub_connect_scan(raw: bytes, max_event_bytes: int) -> Optional[List[Tuple[str, List[str], List[bytes]]]]:
    """A Connect batch body in the form the hub's scan takes, as ``[(collection, ids, bodies), ...]`` in request
    order: ``hub_connect_bulk`` takes every collection, each event's bytes in ``raw`` are its ``bodies`` entry
    (compact, as orjson writes it), whitespace only around the body's own braces, brackets, colons and commas, no
    backslash anywhere, no collection twice, containers nested less than 32 deep, objects of at most 64 members,
    integers of at most 18 digits. ``None`` otherwise. The compiled core reads the bytes without parsing them
    into objects; this twin parses, runs the bulk path and compares."""
    if type(raw) is not bytes:
        raise TypeError(f"the body must be bytes, not {type(raw).__name__}")
    if type(max_event_bytes) is not int:
        raise TypeError(f"max_event_bytes must be an int, not {type(max_event_bytes).__name__}")
    if b"\\" in raw:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    n = len(raw)

    def skip(i: int) -> int:
        while i < n and raw[i] in _SCAN_WS:
            i += 1
        return i

    def take(i: int, text: bytes) -> int:  # the index after ``text`` at i, or -1
        return i + len(text) if raw.startswith(text, i) else -1

    out: List[Tuple[str, List[str], List[bytes]]] = []
    i = take(skip(0), b"{")
    if i < 0:
        return None
    for name, events in doc.items():
        if type(events) is not list or not all(type(ev) is dict and _scan_plain(ev, 1) for ev in events):
            return None
        got = hub_connect_bulk(events, max_event_bytes)
        if got is None:
            return None
        if out:
            i = take(skip(i), b",")
        for text in (orjson.dumps(name), b":", b"["):
            i = take(skip(i), text) if i >= 0 else -1
        for k, body in enumerate(got[1]):
            if k and i >= 0:
                i = take(skip(i), b",")
            i = take(skip(i), body) if i >= 0 else -1
        i = take(skip(i), b"]") if i >= 0 else -1
        if i < 0:
            return None
        out.append((name, got[0], got[1]))
    i = take(skip(i), b"}")
    return out if i >= 0 and skip(i) == n else None
