"""``hub_connect_scan``: the hub's bulk path for a whole Connect batch body, read from its bytes, on both cores.

Its contract: when it takes a body, the result is what parsing the body and running ``hub_connect_bulk`` on each
collection gives (so the hub answers and stores exactly as on its parse path); otherwise ``None`` and the hub
parses. The compiled core reads the bytes without making objects of them, the twin parses and compares: both must
take and decline the same bodies, and the usual body (compact events with an id and a timestamp) must be taken.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventpush import _core_py
from eventpush.hub import connect as hub

from core_support import CORE_C, MAX, TS, plain


SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def parsed(raw: bytes, max_bytes: int = MAX) -> Optional[list]:
    """The parse path's view of a body the scan took: each collection through ``hub_connect_bulk``."""
    doc = orjson.loads(raw)
    out = []
    for name, events in doc.items():
        got = _core_py.hub_connect_bulk(events, max_bytes)
        assert got is not None
        out.append((name, got[0], got[1]))
    return out


def check(core: Any, raw: bytes, max_bytes: int = MAX) -> Optional[list]:
    """The scan of ``raw`` on ``core``, checked against the parse path, and against the other core."""
    got = core.hub_connect_scan(raw, max_bytes)
    if got is not None:
        assert got == parsed(raw, max_bytes)
        for _, _, bodies in got:
            assert all(type(b) is bytes and len(b) <= max_bytes for b in bodies)
    if CORE_C is not None:
        assert CORE_C.hub_connect_scan(raw, max_bytes) == _core_py.hub_connect_scan(raw, max_bytes)
    return got


def body(batch: dict) -> bytes:
    try:
        return orjson.dumps(batch)
    except TypeError:  # an int beyond 64 bits: Python's json writes it (compact, like orjson)
        return json.dumps(batch, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------------------------
# Bodies it must take


def test_the_usual_body_is_taken(core):
    raw = body({"clicks": [plain(i) for i in range(500)], "views": [plain(i) for i in range(3)], "none": []})
    got = check(core, raw)
    assert [g[0] for g in got] == ["clicks", "views", "none"]
    assert got[0][1] == [f"id-{i}" for i in range(500)]
    assert got[0][2][7] == orjson.dumps(plain(7))
    assert got[2] == ("none", [], [])


@pytest.mark.parametrize("raw", [
    b'{}', b' {} ', b'\n{\t}\r\n', b'{"a":[]}', b'{ "a" : [ ] }',
    b'{ "a" :\n[ {"id":"1","timestamp":"2026-01-01T00:00"} ,\n{"id":"2","timestamp":"2026-01-01T00:00"} ] ,"b":[]}\n',
])
def test_whitespace_between_the_body_own_tokens_is_taken(core, raw):
    assert check(core, raw) is not None


@pytest.mark.parametrize("value", [
    0, -1, 7, 999_999_999_999_999_999, -999_999_999_999_999_999, 12.5, -0.0, 0.0, 1.0, 100.0, 0.1, 0.00001, 1e-7,
    1.5e-05, 1e16, 9.2e18, 5e-324, 2.0 ** 62, 123456789.123, 0.30000000000000004, True, False, None,
    "", "é", "日本語", "\U0001f600", "\u2028\x7f", "a/b", [], {}, [[[]]], {"a": {"b": [1, {"c": None}]}},
    {"": 1}, {"_id": 1, "tp_x": 2}, "x" * 5000,
])
def test_json_values_are_taken_as_orjson_writes_them(core, value):
    raw = body({"c": [plain(0, v=value)]})
    got = check(core, raw)
    assert got is not None and got[0][2] == [orjson.dumps(plain(0, v=value))]


def test_non_ascii_ids_and_names(core):
    ev = plain(0, id="é" * 255)
    got = check(core, body({"日本": [ev]}))
    assert got == [("日本", ["é" * 255], [orjson.dumps(ev)])]


# --------------------------------------------------------------------------------------------------------------
# Bodies it declines (the parse path decides, and says why where something is wrong)


EV = '{"id":"1","timestamp":"2026-01-01T00:00"'


@pytest.mark.parametrize("raw", [
    b'', b' ', b'[]', b'"x"', b'{', b'{"a":[]', b'{"a":[]}x', b'{"a":[]},', b'{"a":{}}', b'{"a":[1]}', b'{"a":[[]]}',
    b'{"a":[null]}', b'{"a":[],"a":[]}', b'{"a":[],"b":[],"a":[]}', b'\xef\xbb\xbf{}', b'{"a":[]}\x00',
    # an event that is not compact, or not as orjson writes it back
    (EV + ' }').encode(), (EV + ',"v": 1}').encode(), (EV + ',"v":1.50}').encode(), (EV + ',"v":1E5}').encode(),
    (EV + ',"v":-0}').encode(), (EV + ',"v":1e2}').encode(), (EV + ',"v":0.1e1}').encode(),
    (EV + ',"v":01}').encode(), (EV + ',"v":1.}').encode(), (EV + ',"v":.5}').encode(), (EV + ',"v":+1}').encode(),
    (EV + ',"v":"\\n"}').encode(), (EV + ',"v":"\\u00e9"}').encode(), (EV + ',"v":"a\\/b"}').encode(),
    (EV + ',"v":tru}').encode(), (EV + ',"v":nul}').encode(), (EV + ',"v":[1,]}').encode(), (EV + ',}').encode(),
    (EV + ',"v":1,"v":1}').encode(), (EV + ',"id":"1"}').encode(),
    # numbers beyond what the bulk path writes itself
    (EV + ',"v":1000000000000000000}').encode(), (EV + ',"v":18446744073709551615}').encode(),
    (EV + ',"v":9.3e18}').encode(), (EV + ',"v":1e400}').encode(),
    # strings that are not valid UTF-8 or hold raw control characters
    (EV + ',"v":"\xc3"}').encode("latin-1"), (EV + ',"v":"\xed\xa0\x80"}').encode("latin-1"),
    (EV + ',"v":"\xc0\xaf"}').encode("latin-1"), (EV + ',"v":"\xf4\x90\x80\x80"}').encode("latin-1"),
    (EV + ',"v":"a\tb"}').encode(), (EV + ',"v":"\x00"}').encode(),
    # what the hub validates event by event: ids, timestamps, keys
    b'{"a":[{"timestamp":"2026-01-01T00:00"}]}', b'{"a":[{"id":"1"}]}',
    b'{"a":[{"id":1,"timestamp":"2026-01-01T00:00"}]}',
    b'{"a":[{"id":"","timestamp":"2026-01-01T00:00"}]}', b'{"a":[{"id":"1","timestamp":"2026-02-30T00:00"}]}',
    (EV + ',"a.b":1}').encode(), (EV + ',"$a":1}').encode(), (EV + ',"tp_a":1}').encode(), (EV + ',"_ID":1}').encode(),
    (EV + ',"x":{"a.b":1}}').encode(), (EV + ',"x":[{"$a":1}]}').encode(), (EV + ',"\xc3\xa9":1}').encode("latin-1"),
    ('{"a":[' + EV + '},' + EV + '}]}').encode(),  # the same id twice in a collection
])
def test_declined(core, raw):
    assert check(core, raw) is None


def test_long_ids_and_keys_are_declined(core):
    assert check(core, body({"c": [plain(0, id="x" * 256)]})) is None
    assert check(core, body({"c": [plain(0, **{"k" * 256: 1})]})) is None
    assert check(core, body({"c": [plain(0, **{"k" * 255: 1})]})) is not None


def test_nesting_and_member_limits(core):
    deep: Any = 1
    for _ in range(30):  # the event is level 1, the value's containers 2..31
        deep = [deep]
    assert check(core, body({"c": [plain(0, v=deep)]})) is not None
    assert check(core, body({"c": [plain(0, v=[deep])]})) is None
    wide = {f"k{i}": i for i in range(64)}
    assert check(core, body({"c": [plain(0, v=wide)]})) is not None
    wide["k64"] = 64
    assert check(core, body({"c": [plain(0, v=wide)]})) is None


def test_event_size_limit(core):
    raw = body({"c": [plain(0)]})
    size = len(orjson.dumps(plain(0)))
    assert check(core, raw, size) is not None
    assert check(core, raw, size - 1) is None
    assert check(core, raw, -1) is None
    assert check(core, raw, 1 << 80) is not None


def test_arguments(core):
    with pytest.raises(TypeError):
        core.hub_connect_scan(bytearray(b"{}"), MAX)
    with pytest.raises(TypeError):
        core.hub_connect_scan("{}", MAX)
    with pytest.raises(TypeError):
        core.hub_connect_scan(b"{}", 1.5)


# --------------------------------------------------------------------------------------------------------------
# Random bodies: both cores agree, and what they take is the parse path's result


_KEYS = st.sampled_from(["a", "b", "user", "props", "", "x.y", "$k", "tp_a", "_id", "é", "id", "timestamp", "v"])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.integers(-(10 ** 18), 10 ** 18),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.decimals(places=3, min_value=-10 ** 6, max_value=10 ** 6).map(float),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
                       max_leaves=8)
_IDS = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=4), st.integers(0, 3))
_TIMESTAMPS = st.sampled_from([TS, "2026-01-01T00:00", "2026-02-30T00:00", "x", 5])


@st.composite
def events(draw: Any) -> dict:
    ev: dict = {}
    if draw(st.integers(0, 9)):
        ev["id"] = draw(_IDS)
    if draw(st.integers(0, 9)):
        ev["timestamp"] = draw(_TIMESTAMPS)
    ev.update(draw(st.dictionaries(_KEYS, _VALUES, max_size=4)))
    return ev


_BATCHES = st.dictionaries(st.sampled_from(["c", "d", "日本", ""]), st.lists(events(), max_size=4), max_size=3)


@SETTINGS
@given(_BATCHES)
def test_random_compact_bodies(batch):
    raw = body(batch)
    for core in ([CORE_C] if CORE_C is not None else []) + [_core_py]:
        check(core, raw)


@SETTINGS
@given(_BATCHES, st.lists(st.tuples(st.integers(0, 10 ** 6), st.sampled_from(
    [b" ", b"\n", b",", b"\\", b"0", b"-", b".", b"e", b'"', b"}", b"]", b"\xc3", b"\xa9", b""])), max_size=3))
def test_random_bodies_changed_here_and_there(batch, edits: List[Any]):
    raw = body(batch)
    for pos, text in edits:  # insert a byte, or (b"") delete one
        pos %= len(raw) + 1
        raw = raw[:pos] + text + raw[pos + (0 if text else 1):]
    for core in ([CORE_C] if CORE_C is not None else []) + [_core_py]:
        check(core, raw)


@SETTINGS
@given(st.lists(_VALUES, min_size=1, max_size=5), st.lists(st.sampled_from([b"", b" ", b"\n", b"\r\n\t "]),
                                                           min_size=12, max_size=12))
def test_plain_values_with_outer_whitespace_are_taken(values, ws):
    """Events of plain keys (and any JSON value without a backslash once written): taken, with any whitespace
    between the body's own tokens."""
    evs = [plain(i, v=v) for i, v in enumerate(values)]
    if not all(_core_py._scan_plain(e, 1) and _core_py._hub_plain(e, 1) for e in evs):
        return
    parts = [orjson.dumps(e) for e in evs]
    if any(b"\\" in p for p in parts):
        return
    raw = (ws[0] + b"{" + ws[1] + b'"c"' + ws[2] + b":" + ws[3] + b"[" + ws[4]
           + (ws[5] + b"," + ws[6]).join(parts) + ws[7] + b"]" + ws[8] + b"}" + ws[9])
    for core in ([CORE_C] if CORE_C is not None else []) + [_core_py]:
        assert check(core, raw) == [("c", [e["id"] for e in evs], parts)]


def test_the_hub_scans_bytes_only():
    """uvicorn on h11 may hand the body over as a bytearray: the hub then parses it (the scan takes bytes)."""
    raw = body({"c": [plain(0)]})
    assert hub.scan_batch(bytearray(raw)) is None
    got = hub.scan_batch(raw)
    if CORE_C is None or hub._scan is None:
        assert got is None  # the twin's hub parses every body
    else:
        assert got == [("c", ["id-0"], [orjson.dumps(plain(0))], [0], [None])]
