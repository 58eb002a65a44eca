"""Differential property tests: the compiled core and the twin give byte-identical batches and errors.

For generated events (hypothesis), both implementations get the same clock and random source; their bodies,
spans, groups, tags, errors and the stamped input dicts must be identical, and every body must parse with
``json.loads`` back to the events the rules promise.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from typing import Any, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventpush import _core_py
from eventpush._envflags import env_flag
from eventpush.dialects import BARCHART, CONNECT, CONNECT_RUBY, JSON_ARRAY, NDJSON, Dialect

from core_support import PatternRandom

_PURE = env_flag("EVENTPUSH_PURE")
if _PURE:
    _core_c = None
else:
    # a normal build must have the compiled core: an ImportError here fails the run instead of skipping
    from eventpush import _core as _core_c

pytestmark = [
    pytest.mark.c_extension,
    pytest.mark.skipif(_PURE, reason="EVENTPUSH_PURE is set: this leg tests the twin only"),
]

SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
START = 1438387200_123456

# --------------------------------------------------------------------------------------------------------------
# Strategies

UTC = dt.timezone.utc
tzs = st.sampled_from([None, None, UTC, dt.timezone(dt.timedelta(hours=-5)),
                       dt.timezone(dt.timedelta(hours=5, minutes=30, seconds=15))])
datetimes = st.builds(
    lambda d, tz: d.replace(tzinfo=tz),
    st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2200, 1, 1)),
    tzs,
)
keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["id", "timestamp", "tp_x", "TP_y", "_id", "a.b", "$x", "k" * 256, "x" * 255, "İtp_", "é"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=False, allow_infinity=False),
    # the Connect writer's float paths: short decimals, the 1e-5 and 1e15/1e16 notation boundaries, subnormals
    st.sampled_from([12.5, -1234.25, 0.1, 0.0001, 9.5e-05, 1.5e-05, 1e-05, -2.5e-06, 1e15, 999999999999999.9,
                     1e16, 1.5e16, 123456789012345678.0, 5e-324, -0.0, 0.0, 1.7976931348623157e308]),
    st.decimals(places=3, min_value=-10**6, max_value=10**6, allow_nan=False).map(float),
    st.text(max_size=20),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x30), max_size=6),
    datetimes,
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(1200, 1, 1)),
    st.dates(min_value=dt.date(1, 1, 1)),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)
events = st.one_of(st.dictionaries(keys, values, max_size=6), values)
collections = st.sampled_from(["a", "b", 'q"uote', "é"])

codes = BARCHART.codes
bc_values = {
    "customer": st.one_of(st.sampled_from(sorted(codes["customer"])), st.sampled_from(["Barchart", None, 1])),
    "product": st.one_of(st.sampled_from(sorted(codes["product"])), st.just("alert")),
    "type": st.one_of(st.sampled_from(sorted(codes["type"])), st.just("NOPE")),
    "version": st.one_of(st.none(), st.text(max_size=10), st.integers()),
    "timestamp": st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(), st.floats(),
                           datetimes, st.text(max_size=3)),
    "context": st.one_of(st.lists(st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans()),
                                  max_size=6),
                         st.lists(values, max_size=3), st.text(max_size=2)),
}
bc_events = st.one_of(
    st.fixed_dictionaries(
        {k: v for k, v in bc_values.items() if k != "version"},
        optional={"version": bc_values["version"], "extra": values},
    ),
    st.fixed_dictionaries({k: v for k, v in bc_values.items() if k in ("customer", "product", "type")},
                          optional={"timestamp": bc_values["timestamp"], "context": bc_values["context"]}),
    values,
)

# --------------------------------------------------------------------------------------------------------------
# Running both


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        self.now += 1_234_567
        return self.now


def _batch_view(b) -> Any:
    return (b.body(), [b.span(i) for i in range(b.count)], b.groups(), b.tags(),
            [b.collection(i) for i in range(b.count)], b.count, b.nbytes, bytes(memoryview(b)))


def _error_view(e) -> Any:
    return (type(e), e.message, e.index, e.collection, e.field, e.errors)


def _run(core, dialect, items, mode, limits) -> Any:
    enc = core.Encoder(dialect, clock=Clock(), urandom=PatternRandom(), **limits)
    items = copy.deepcopy(items)
    out: List[Any] = []
    if mode == "batch":
        batches, errors = enc.encode_batch(items)
        out.append(([_batch_view(b) for b in batches], [_error_view(e) for e in errors]))
        for b in batches:
            if b.count > 1:
                out.append(_batch_view(b.subset(list(range(b.count))[::-2])))
    else:
        for name, event in items:
            try:
                sealed = enc.add(event, name, tag=repr(name))
                out.append(("ok", _batch_view(sealed) if sealed is not None else None, enc.pending, enc.pending_bytes))
            except Exception as exc:  # noqa: BLE001 - compared, both sides
                out.append(("error", _error_view(exc) if hasattr(exc, "index") else (type(exc), str(exc))))
            try:
                out.append(("single", enc.encode(copy.deepcopy(event))))
            except Exception as exc:  # noqa: BLE001
                out.append(("error", _error_view(exc) if hasattr(exc, "index") else (type(exc), str(exc))))
        last = enc.seal()
        out.append(_batch_view(last) if last is not None else None)
    out.append(("inputs", repr(items)))
    return out


def assert_same(dialect, items, mode="batch", **limits):
    got_c = _run(_core_c, dialect, items, mode, limits)
    got_py = _run(_core_py, dialect, items, mode, limits)
    assert got_c == got_py
    return got_py


limits = st.fixed_dictionaries({}, optional={"max_batch_events": st.integers(1, 6),
                                             "max_batch_bytes": st.integers(1, 600)})


# --------------------------------------------------------------------------------------------------------------
# json.loads round trip: what each dialect promises


def _iso_py(v):
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k) if isinstance(k, int) else k: _iso_py(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_iso_py(x) for x in v]
    return v


def _z_rb(v):
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = (v - v.utcoffset()).replace(tzinfo=None)
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"
    if isinstance(v, dt.date):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T00:00:00Z"
    if isinstance(v, dict):
        return {k: _z_rb(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_z_rb(x) for x in v]
    return v


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _close(a, b) -> bool:
    """Equality that tolerates float text round trips (orjson writes the shortest repr)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _check_round_trip(core, dialect, event_list, expect):
    enc = core.Encoder(dialect, clock=Clock(), urandom=PatternRandom(), max_batch_events=None,
                       max_batch_bytes=None)
    work = copy.deepcopy(event_list)
    batches, errors = enc.encode_batch(work, "c" if dialect.needs_collection else None)
    bad = {e.index for e in errors}
    good = [expect(e) for i, e in enumerate(work) if i not in bad]
    if not good:
        assert batches == []
        return
    (batch,) = batches
    body = batch.body()
    if dialect.framing == "ndjson":
        got = [json.loads(line) for line in body.split(b"\n")[:-1]]
    else:
        parsed = json.loads(body)
        got = parsed["c"] if dialect.framing == "collections" else parsed["events"] if dialect.framing == "events" else parsed
    assert _close(got, good)
    for i in range(batch.count):
        assert _close(json.loads(batch.event(i)), good[i])


# --------------------------------------------------------------------------------------------------------------
# The tests


class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict):
    pass


@pytest.mark.parametrize("value", [
    "plain", "é ü 中文 😀", 'q"uote\\back', "\x00\x01\x1f\x7f\n\r\t\b\f", "\ud800", "", _Str("sub"),
    0, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, _Int(3), True, False, None,
    [1, [2, [3, {"a": (4, 5)}]]], (), {}, {"nested": {"deep": {"x": 1.5}}}, _Dict(a=1),
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999), dt.datetime(2024, 1, 1), dt.datetime(999, 12, 31, 1, 2, 3, 4),
    dt.datetime(2024, 1, 1, tzinfo=UTC), dt.date(2024, 1, 2), dt.time(1, 2, 3, 50000),
    float("nan"), float("inf"), -float("inf"),
], ids=repr)
def test_connect_writer_values(value):
    """Each kind of value the Connect writer handles (or hands on to orjson), as a value and nested in a list and
    a dict: the compiled core and the twin give the same bytes and errors."""
    events = [{"v": value}, {"l": [value, value]}, {"d": {"k": value}}, {"é": value}, {1: value, "v": value}]
    assert_same(CONNECT, events)
    assert_same(CONNECT, [("c", e) for e in events], "add")


def test_connect_writer_floats_sweep():
    """Floats across every binary exponent and the decimal notation boundaries: byte-identical to the twin (which
    is orjson's own formatting)."""
    import random
    import struct

    rnd = random.Random(7)
    values = [float(f"{m}e{e}") for e in range(-320, 309) for m in (1, 1.5, 9.999999999999999, 2.0000000000000004)]
    values += [struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0] for _ in range(20_000)]
    values += [round(rnd.uniform(-1e6, 1e6), rnd.randint(0, 8)) for _ in range(20_000)]
    values += [rnd.random() * 10 ** rnd.randint(-8, 17) for _ in range(20_000)]
    values = [v for v in values if math.isfinite(v)]
    events = [{"f": values[i:i + 50]} for i in range(0, len(values), 50)]
    enc_c = _core_c.Encoder(CONNECT, clock=Clock(), urandom=PatternRandom(), max_batch_events=None,
                            max_batch_bytes=None)
    enc_py = _core_py.Encoder(CONNECT, clock=Clock(), urandom=PatternRandom(), max_batch_events=None,
                              max_batch_bytes=None)
    (bc,), errs_c = enc_c.encode_batch(copy.deepcopy(events), "c")
    (bp,), errs_py = enc_py.encode_batch(copy.deepcopy(events), "c")
    assert errs_c == errs_py == []
    assert bc.body() == bp.body()
    assert [x for e in json.loads(bc.body())["c"] for x in e["f"]] == values


# keys that connect-python refuses at the top level only, everywhere, or never; that need escaping; around the
# length the compiled writer remembers (44) and the one the rules refuse (255)
_MEMO_KEYS = ["tp_x", "TP_y", "_id", "_ID", "$a", "a.b", "ok", 'q"k', "b\\s", "c\x01", "k" * 44, "k" * 45, "x" * 255,
              "x" * 256, "é", ""]


@pytest.mark.parametrize("key", _MEMO_KEYS, ids=repr)
def test_connect_writer_key_seen_at_another_depth(key):
    """The compiled writer remembers each key object it has written (its text and how the rules judge it at the top
    level and below). The same key object met first below, then at the top, in a list, or under no key rules at
    all, is judged as if it were new: same bytes and errors as the twin, in either order."""
    placements = [lambda k: {"n": {k: 1}}, lambda k: {k: 1}, lambda k: {"l": [{k: 1}]},
                  lambda k: {"n": {"m": {k: [k]}}}]
    for order in (placements, placements[::-1], placements[1:] + placements[:1]):
        assert_same(CONNECT, [make(key) for make in order])
        assert_same(CONNECT, [("c", make(key)) for make in order], "add")


def test_connect_writer_many_keys_evict_each_other():
    """More distinct keys than the compiled writer remembers, built at run time (new objects, equal texts, slots
    shared and reused), each one valid at one depth and refused at another: same bytes and errors as the twin."""
    events = []
    for i in range(3000):
        key = ("tp_" if i % 3 == 0 else "k") + str(i)
        events.append({"n": {key: i}})
        events.append({key: i})
        events.append({("tp_" + str(i))[:]: {"$" + str(i): 1}})
    assert_same(CONNECT, events)
    assert_same(CONNECT, events[::-1])


@SETTINGS
@given(st.lists(st.tuples(collections, events), max_size=8), limits)
def test_connect_py_add(items, lim):
    assert_same(CONNECT, items, "add", **lim)


@SETTINGS
@given(st.dictionaries(collections, st.lists(events, max_size=5), max_size=3), limits)
def test_connect_py_batch(mapping, lim):
    assert_same(CONNECT, mapping, "batch", **lim)


@SETTINGS
@given(st.lists(st.tuples(collections, events), max_size=8), limits)
def test_connect_rb_add(items, lim):
    assert_same(CONNECT_RUBY, items, "add", **lim)


@SETTINGS
@given(st.lists(bc_events, max_size=8), limits)
def test_barchart_batch(items, lim):
    assert_same(BARCHART, items, "batch", **lim)


@SETTINGS
@given(st.lists(st.tuples(st.none(), bc_events), max_size=6), limits)
def test_barchart_add(items, lim):
    assert_same(BARCHART, items, "add", **lim)


@SETTINGS
@given(st.lists(events, max_size=8), limits,
       st.sampled_from([NDJSON, JSON_ARRAY, Dialect(name="e", rules="none", framing="events")]))
def test_none_rules(items, lim, dialect):
    assert_same(dialect, items, "batch", **lim)


@SETTINGS
@given(st.lists(st.dictionaries(keys, values, max_size=5), max_size=6))
def test_round_trip_connect_py(items):
    def expect(e):
        return _iso_py(e)

    for core in (_core_c, _core_py):
        _check_round_trip(core, CONNECT, items, expect)


class _Any:
    """Equal to anything: stands for a stamped id or timestamp (checked separately)."""

    def __eq__(self, other: object) -> bool:
        return True


def _orjson_view(v):
    """``v`` as JSON data: what orjson writes, integers beyond 64 bits with all their digits (as json.dumps)."""
    import orjson

    def digits(x):
        if isinstance(x, int) and not isinstance(x, bool) and not -(2**63) <= x < 2**64:
            return orjson.Fragment(int.__repr__(x))
        if isinstance(x, dict):
            return {k: digits(y) for k, y in x.items()}
        if isinstance(x, (list, tuple)):
            return [digits(y) for y in x]
        return x

    return json.loads(orjson.dumps(digits(v)))


@SETTINGS
@given(st.lists(st.dictionaries(st.text(max_size=6), values, max_size=5), max_size=6))
def test_round_trip_connect_rb(items):
    def expect(e):
        conv = _orjson_view(_z_rb(e))  # other values are serialized by orjson as given
        out = {"id": conv.get("id", _Any()), "timestamp": conv.get("timestamp", _Any())}
        out.update(conv)
        return out

    for core in (_core_c, _core_py):
        _check_round_trip(core, CONNECT_RUBY, items, expect)
    enc = _core_py.Encoder(CONNECT_RUBY, clock=Clock())
    stamped = json.loads(enc.encode({}))
    assert stamped["timestamp"] == "2015-08-01T00:00:01Z" and len(stamped["id"]) == 36


@SETTINGS
@given(st.lists(bc_events, max_size=6))
def test_round_trip_barchart(items):
    def expect(e):
        out = {k: e[k] for k in ("customer", "product", "type")}
        if e.get("version") is not None:
            out["version"] = e["version"]
        ts = e["timestamp"]
        if isinstance(ts, dt.datetime):
            naive = ts if ts.tzinfo is None else (ts - ts.utcoffset()).replace(tzinfo=None)
            ts = (naive - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
        out["timestamp"] = ts
        out["context"] = _orjson_view(e["context"])  # elements are serialized by orjson as given
        return out

    for core in (_core_c, _core_py):
        _check_round_trip(core, BARCHART, items, expect)


@SETTINGS
@given(st.lists(values, max_size=6))
def test_round_trip_none(items):
    for core in (_core_c, _core_py):
        _check_round_trip(core, NDJSON, items, _orjson_view)
