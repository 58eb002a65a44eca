"""Regression tests for the differential review of the encoder core (both cores, crash cases in a subprocess).

Each class names the defect it covers: Python code run while the Ruby-style rules convert a dict (01/02), the depth
guard for tuples that orjson does not count (03), dict subclasses stamped and read (01, 04, 06, 07), mapping tags
for framings without collections (05), arguments typed in C (08), a released twin Batch (09), and out-of-range
aware datetimes, float subclasses and surrogate keys (10).
"""

from __future__ import annotations

import collections
import datetime as dt
import fractions
import json
import math
import os
import subprocess
import sys
import threading
from types import ModuleType
from typing import Any, List

import pytest

from eventpush._core_py import MAX_DEPTH, MSG_DATE_RANGE, MSG_DEPTH
from eventpush.dialects import BARCHART, CONNECT, CONNECT_RUBY, JSON_ARRAY, NDJSON
from eventpush.errors import EventTypeError, EventValidationError

BC = "An attempt to serialize data into client failed, the data structure is invalid."
BC_OK = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": []}
PLUS5 = dt.timezone(dt.timedelta(hours=5))
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__import__("eventpush").__file__)))


def run_child(core: ModuleType, code: str) -> List[Any]:
    """Run ``code`` in a fresh interpreter with ``core`` importable as ``core``; its stdout lines, JSON-decoded.
    A crash (a signal, heap corruption) fails the test instead of killing the test run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    prelude = f"import importlib, json, sys\ncore = importlib.import_module({core.__name__!r})\n"
    p = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"child exited with {p.returncode}: {p.stderr[-2000:]}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - the outcome is the point
        return ("raised", type(exc).__name__, getattr(exc, "message", str(exc)), getattr(exc, "field", None),
                getattr(exc, "index", None))


# --------------------------------------------------------------------------------------------------------------
# 01/02: Connect-Ruby conversion runs Python code that changes the event


_MUTATE_CHILD = r"""
import datetime as dt
from eventpush.dialects import CONNECT_RUBY

class Clearing(dt.tzinfo):
    '''utcoffset() empties the dict that holds the value (and drops the only reference to its key).'''
    def __init__(self):
        self.target = None
    def utcoffset(self, d):
        if self.target is not None:
            t, self.target = self.target, None
            t.clear()
            junk = ["".join(["z", str(i % 10), "q"]) for i in range(2000)]  # reuse the freed memory
        return dt.timedelta(0)

class Evil(dt.datetime):
    '''A datetime subclass whose tzinfo property empties the event (the reviewer's case).'''
    holder = None
    @property
    def tzinfo(self):
        if Evil.holder is not None:
            h, Evil.holder = Evil.holder, None
            h.clear()
        return None

def show(fn):
    try:
        r = ["ok", fn().decode()]
    except Exception as e:
        r = ["raised", type(e).__name__, str(e)]
    print(json.dumps(r))

enc = core.Encoder(CONNECT_RUBY, clock=lambda: 1438387200_123456, urandom=lambda n: bytes(n))
for trial in range(3):
    tz = Clearing()
    ev = {"".join(["ke", "y"]): dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=tz), "b": 1}
    tz.target = ev
    show(lambda: enc.encode(ev, "c"))
    tz = Clearing()
    inner = {"".join(["in", "ner"]): dt.datetime(2020, 1, 2, tzinfo=tz), "x": 2}
    ev = {"n": inner, "b": 1}
    tz.target = inner
    show(lambda: enc.encode(ev, "c"))
    ev = {"".join(["ke", "y"]): Evil(2020, 1, 2, 3, 4, 5)}
    Evil.holder = ev
    show(lambda: enc.encode(ev, "c"))
"""


class TestRubyConversionRunsPythonCode:
    def test_dict_emptied_during_conversion(self, core):
        lines = run_child(core, _MUTATE_CHILD)
        changed = ["raised", "RuntimeError", "dictionary changed size during iteration"]
        evil = ["ok", '{"id":"00000000-0000-4000-8000-000000000000","timestamp":"2015-08-01T00:00:00Z",'
                      '"key":"2020-01-02T03:04:05Z"}']
        assert lines == [changed, changed, evil] * 3

    @pytest.mark.parametrize("change, want", [
        (lambda t: (t.pop("b"), t.__setitem__("c", 3)), ("ok", ["id", "timestamp", "a", "c"])),
        (lambda t: (t.pop("a"), t.__setitem__("c", 3)),
         ("raised", "RuntimeError", "dictionary keys changed during iteration")),
        (lambda t: t.__setitem__("c", 3), ("raised", "RuntimeError", "dictionary changed size during iteration")),
    ])
    def test_keys_changed_during_conversion(self, make, change, want):
        # the dict iterator's own checks, as the twin's ``for k, v in event.items()`` meets them
        class Change(dt.tzinfo):
            def __init__(self, target):
                self.target = target

            def utcoffset(self, d):
                if self.target is not None:
                    t, self.target = self.target, None
                    change(t)
                return dt.timedelta(0)

        for nested in (False, True):
            inner: dict = {}
            inner["a"] = dt.datetime(2020, 1, 1, tzinfo=Change(inner))
            inner["b"] = 2
            ev = {"n": inner} if nested else inner
            try:
                body = json.loads(make(CONNECT_RUBY).encode(ev, "c"))
                got: Any = ("ok", list(body["n"] if nested else body))
            except RuntimeError as exc:
                got = ("raised", "RuntimeError", str(exc))
            if nested and want[0] == "ok":
                assert got == ("ok", want[1][2:])
            else:
                assert got == want


# --------------------------------------------------------------------------------------------------------------
# 03: the depth guard (orjson 3.13 does not count tuples; deep enough they corrupt its heap)


_DEPTH_CHILD = r"""
from eventpush.dialects import BARCHART, CONNECT, CONNECT_RUBY, JSON_ARRAY, NDJSON
from eventpush.errors import EventError
D = {"connect": CONNECT, "ruby": CONNECT_RUBY, "ndjson": NDJSON, "array": JSON_ARRAY, "barchart": BARCHART}

class L(list):
    pass

def nest(kind, n):
    v = 1
    for i in range(n):
        if kind == "tuple":
            v = (v,)
        elif kind == "mixed":
            v = ({"k": v}, [v], (v,))[i % 3] if i % 3 != 1 else [v]
            v = {"k": v} if i % 3 == 0 else (v,) if i % 3 == 2 else v
        elif kind == "lsub":
            v = L([v]) if i % 2 else (v,)
        else:
            v = [v]
    return v

def event(name, v):
    if name == "barchart":
        return {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": [v]}
    return {"v": v}

for name, dialect in D.items():
    for kind, n in (("tuple", 252), ("tuple", 253), ("tuple", 254), ("tuple", 300), ("tuple", 3000),
                    ("mixed", 3000), ("lsub", 3000), ("list", 300)):
        enc = core.Encoder(dialect, clock=lambda: 0, urandom=lambda k: bytes(k))
        try:
            out = enc.encode(event(name, nest(kind, n)), "c")
            r = ["ok", len(out)]
        except EventError as e:
            r = ["raised", type(e).__name__, e.message, len(e.field or ""), e.index]
        print(json.dumps([name, kind, n] + r))
    # encode_batch keeps the good events and names the bad one
    enc = core.Encoder(dialect, clock=lambda: 0, urandom=lambda k: bytes(k))
    batches, errors = enc.encode_batch([event(name, 1), event(name, nest("tuple", 5000)), event(name, 2)], "c")
    print(json.dumps([name, "batch", sum(b.count for b in batches), [(type(e).__name__, e.index, e.message)
                                                                     for e in errors]]))
"""


class TestDepthGuard:
    def test_deep_tuples_are_refused_in_every_dialect(self, core):
        lines = run_child(core, _DEPTH_CHILD)
        by = {tuple(line[:3]): line[3:] for line in lines}
        for name in ("connect", "ruby", "ndjson", "array", "barchart"):
            # the event dict is depth 1; the Barchart context list adds one more
            extra = 1 if name == "barchart" else 0
            for n in (252, 253, 254):
                got = by[(name, "tuple", n)]
                if n + 1 + extra < MAX_DEPTH:
                    assert got[0] == "ok", (name, n, got)
                else:
                    assert got[:3] == ["raised", "EventTypeError", MSG_DEPTH], (name, n, got)
            for kind, n in (("tuple", 300), ("tuple", 3000), ("mixed", 3000), ("lsub", 3000), ("list", 300)):
                got = by[(name, kind, n)]
                assert got[:3] == ["raised", "EventTypeError", MSG_DEPTH], (name, kind, n, got)
                assert got[3] > 0 and got[4] == 0  # a field (the path to the container), index 0
            assert by[(name, "batch", 0)] if False else True
        batches = {line[0]: line[2:] for line in lines if line[1] == "batch"}
        for name in ("connect", "ruby", "ndjson", "array", "barchart"):
            assert batches[name] == [2, [["EventTypeError", 1, MSG_DEPTH]]], name

    def test_same_field_as_a_list_that_deep(self, core, make):
        for dialect in (CONNECT, CONNECT_RUBY, NDJSON):
            t: Any = 1
            lst: Any = 1
            for _ in range(MAX_DEPTH + 5):
                t, lst = (t,), [lst]
            with pytest.raises(EventTypeError) as a:
                make(dialect).encode({"a": {"b": t}}, "c")
            with pytest.raises(EventTypeError) as b:
                make(dialect).encode({"a": {"b": lst}}, "c")
            assert (a.value.message, a.value.field) == (b.value.message, b.value.field) == (
                MSG_DEPTH, "a.b" + "[0]" * (MAX_DEPTH - 3))

    def test_a_problem_before_the_deep_tuple_is_named_first(self, make):
        t: Any = 1
        for _ in range(MAX_DEPTH + 5):
            t = (t,)
        with pytest.raises(EventTypeError) as info:
            make(NDJSON).encode({"a": object(), "b": t})
        assert info.value.field == "a"

    def test_dumps_exact_is_guarded(self, core):
        code = (
            "from eventpush._core_py import dumps_exact\n"
            "t = 1\n"
            "for _ in range(3000):\n"
            "    t = (t,)\n"
            "try:\n"
            "    print(json.dumps(['ok', len(dumps_exact({'t': t}))]))\n"
            "except Exception as e:\n"
            "    print(json.dumps(['raised', type(e).__name__, e.message]))\n"
        )
        assert run_child(core, code) == [["raised", "EventTypeError", MSG_DEPTH]]


# --------------------------------------------------------------------------------------------------------------
# 01/03 (stamping), 04 (Ruby order), 06 (key errors), 07 (overridden methods): dict and str subclasses


class Key:
    """Hashes like ``name``; its first comparison once armed raises."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, -(10**9)

    def arm(self) -> "Key":
        self.calls = 0
        return self

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("comparison failed")
        return False


class TestDictSubclasses:
    def test_ordereddict_is_stamped_through_its_setitem(self, make):
        od = collections.OrderedDict(a=1)
        body = make(CONNECT).encode(od, "c")
        assert list(od) == ["a", "id", "timestamp"] and len(od) == 3
        assert [k for k, _ in (od.popitem(last=False) for _ in range(3))] == ["a", "id", "timestamp"]
        assert list(json.loads(body)) == ["a", "id", "timestamp"]

    def test_subclass_setitem_is_called(self, make):
        class Frozen(dict):
            def __setitem__(self, k, v):
                raise TypeError("read-only event")

        with pytest.raises(TypeError, match="read-only event"):
            make(CONNECT).encode(Frozen(a=1), "c")

        class Recording(dict):
            def __setitem__(self, k, v):
                self.setdefault("_log", []).append(k) if k != "_log" else None
                dict.__setitem__(self, k, v)

        ev = Recording(a=1)
        make(CONNECT).encode(ev, "c")
        assert ev["_log"] == ["id", "timestamp"]

    def test_ruby_follows_a_subclass_items(self, make):
        od = collections.OrderedDict(a=1, b=2)
        od.move_to_end("a")

        class Public(dict):
            def items(self):
                return [(k, v) for k, v in dict.items(self) if not k.startswith("_")]

        enc = make(CONNECT_RUBY)
        assert json.loads(enc.encode(od, "c"))
        assert list(json.loads(enc.encode(od, "c")))[2:] == ["b", "a"]
        assert list(json.loads(enc.encode({"n": od}, "c"))["n"]) == ["b", "a"]
        assert list(json.loads(enc.encode(Public(a=1, _secret=2), "c")))[2:] == ["a"]
        assert json.loads(enc.encode({"n": Public(a=1, _secret=2)}, "c"))["n"] == {"a": 1}

    @pytest.mark.parametrize("dialect, name", [(CONNECT, "timestamp"), (CONNECT, "id"), (CONNECT_RUBY, "id"),
                                               (CONNECT_RUBY, "timestamp"), (BARCHART, "customer"),
                                               (BARCHART, "context")])
    def test_lookup_errors_propagate(self, make, dialect, name):
        key = Key(name)
        ev: dict = {key: 1}  # first: a lookup of ``name`` compares with it before finding the real key
        if dialect is BARCHART:
            ev.update(BC_OK)
        key.arm()
        with pytest.raises(ValueError, match="comparison failed"):
            make(dialect).encode(ev, "c")

    def test_rules_read_the_storage_of_a_dict_subclass(self, make):
        class Stamped(dict):
            def __getitem__(self, k):
                return dt.datetime(2020, 1, 1) if k == "timestamp" else dict.__getitem__(self, k)

            def __contains__(self, k):
                return k != "id" and dict.__contains__(self, k)

            def get(self, k, default=None):
                return "nope"

        with pytest.raises(EventValidationError) as info:
            make(CONNECT).encode(Stamped(a=1, timestamp="2020-01-01", id="x"), "c")
        assert info.value.field == "timestamp"
        ev = Stamped(a=1, timestamp=dt.datetime(2020, 1, 1), id="x")
        assert json.loads(make(CONNECT).encode(ev, "c"))["id"] == "x"
        body = json.loads(make(CONNECT_RUBY).encode(Stamped(id="x", timestamp="t"), "c"))
        assert body == {"id": "x", "timestamp": "t"}
        assert json.loads(make(BARCHART).encode(Stamped(BC_OK)))["customer"] == "BARCHART"

    def test_rules_read_the_characters_of_a_str_subclass(self, make):
        class Lower(str):
            def lower(self):
                return "tp_" + str.lower(self)

        class Starts(str):
            def startswith(self, *a):
                return True

        class Long(str):
            def __len__(self):
                return 1000

        class Dotless(str):
            def __contains__(self, x):
                return False

        for ev in ({Lower("abc"): 1}, {"n": {Starts("abc"): 1}}, {"n": {Long("abc"): 1}}):
            assert json.loads(make(CONNECT).encode(ev, "c"))
        with pytest.raises(EventValidationError) as info:
            make(CONNECT).encode({"n": {Dotless("a.b"): 1}}, "c")
        assert info.value.message == "Property names cannot contain a period (.)"
        with pytest.raises(EventValidationError):
            make(CONNECT).encode({Lower("TP_x"): 1}, "c")
        # the Ruby rules: no reserved prefix in the characters; the key type is refused when written
        with pytest.raises(EventTypeError) as info:
            make(CONNECT_RUBY).encode({Lower("abc"): 1}, "c")
        assert info.value.field == "abc"
        with pytest.raises(EventValidationError):
            make(CONNECT_RUBY).encode({Starts("tp_x"): 1}, "c")

    def test_barchart_codes_are_their_characters(self, make):
        class Liar(str):
            def __eq__(self, other):
                return True

            __hash__ = str.__hash__

        assert json.loads(make(BARCHART).encode(dict(BC_OK, customer=Liar("BARCHART"))))["customer"] == "BARCHART"
        with pytest.raises(EventValidationError):
            make(BARCHART).encode(dict(BC_OK, customer=Liar("NOPE")))

    def test_datetime_subclass_is_written_with_its_isoformat(self, make):
        class Iso(dt.datetime):
            def isoformat(self, *a):
                return "custom"

        assert json.loads(make(CONNECT).encode({"t": Iso(2020, 1, 1)}, "c"))["t"] == "custom"


# --------------------------------------------------------------------------------------------------------------
# 05: encode_batch with a mapping, framings without collections


class TestMappingTags:
    @pytest.mark.parametrize("dialect, ok", [(BARCHART, BC_OK), (NDJSON, {"a": 1}), (JSON_ARRAY, {"a": 1})])
    def test_tags_name_the_mapping_key(self, make, released, dialect, ok):
        (batch,), errors = make(dialect).encode_batch({"web": [ok, ok], "app": [ok]})
        released.append(batch)
        assert not errors
        assert batch.tags() == [("web", 0), ("web", 1), ("app", 0)]
        assert [batch.tag(i) for i in range(3)] == batch.tags()
        assert [batch.collection(i) for i in range(3)] == [None, None, None]
        sub = batch.subset([2, 0])
        released.append(sub)
        assert sub.tags() == [("app", 0), ("web", 0)]

    def test_split_batches_keep_the_tags(self, make, released):
        batches, _ = make(NDJSON, max_batch_events=2).encode_batch({"web": [{"a": 1}] * 3, "app": [{"b": 1}]})
        released.extend(batches)
        assert [b.tags() for b in batches] == [[("web", 0), ("web", 1)], [("web", 2), ("app", 0)]]


# --------------------------------------------------------------------------------------------------------------
# 08: arguments the compiled core takes as C types


class TestArguments:
    def test_huge_batch_limits(self, make, released):
        enc = make(NDJSON, max_batch_events=2**63, max_batch_bytes=10**20)
        assert enc.add({"a": 1}) is None
        released.append(enc.seal())
        with pytest.raises(ValueError):
            make(NDJSON, max_batch_events=0)

    def test_hub_timestamp_ok(self, core):
        class S(str):
            def __getitem__(self, i):
                return "99"

        assert core.hub_timestamp_ok(S("2020-01-01T00:00")) is True
        assert core.hub_timestamp_ok(S("2020-02-30T00:00")) is False
        for bad in (None, b"2020-01-01T00:00", 5):
            with pytest.raises(TypeError):
                core.hub_timestamp_ok(bad)

    def test_hub_connect_bulk_arguments(self, core):
        def ev():
            return {"id": "a", "timestamp": "2020-01-01T00:00"}

        want = (["a"], [b'{"id":"a","timestamp":"2020-01-01T00:00"}'])

        class L(list):
            pass

        for events in ((ev(),), L([ev()]), iter([ev()]), (e for e in [ev()])):
            assert core.hub_connect_bulk(events, 1000) == want
        for limit in (1000.0, 2**63, 10**30, math.inf, fractions.Fraction(1000)):
            assert core.hub_connect_bulk([ev()], limit) == want
        for limit in (10, 10.5, -(2**70), -math.inf):
            assert core.hub_connect_bulk([ev()], limit) is None
        assert core.hub_connect_bulk([], None) == ([], [])
        with pytest.raises(TypeError):
            core.hub_connect_bulk([ev()], None)
        with pytest.raises(TypeError):
            core.hub_connect_bulk(None, 1000)
        # a bad event stops the walk: the rest of an iterator is not read
        it = iter([{"id": 1}, ev()])
        assert core.hub_connect_bulk(it, 1000) is None
        assert next(it) == ev()

    @pytest.mark.parametrize("limit, buffered, room", [
        (math.inf, 10**6, False), (2**63, 10**6, False), (10.0, 9, False), (10.0, 10, True), (2.5, 2, False),
        (2.5, 3, True), (-math.inf, 0, True), (-(2**70), 0, True), (math.nan, 5, False),
        (fractions.Fraction(5, 2), 3, True), (fractions.Fraction(5, 2), 2, False), (-1, 0, True), (True, 1, True),
    ])
    def test_batcher_limit_any_number(self, core, make, limit, buffered, room):
        calls = []

        class B(core.BatcherBase):  # type: ignore[name-defined,misc]
            def _make_room(self):
                calls.append(self._buffered)

        class Work:
            def notify(self):
                pass

        b = B()
        b._lock = threading.Lock()
        b._encoder = make(NDJSON)
        b._ready = []
        b._work = Work()
        b._buffered = buffered
        b._limit = limit
        assert b._limit is limit
        b.push({"a": 1})
        assert calls == ([buffered] if room else [])
        assert b._buffered == buffered + 1


# --------------------------------------------------------------------------------------------------------------
# 09: a released batch serves no body


class TestReleasedBatch:
    def test_bytes_of_a_released_batch(self, make):
        (b,), _ = make(NDJSON).encode_batch([{"a": 1}, {"b": 2}])
        assert bytes(b) == b.body() == b'{"a":1}\n{"b":2}\n'
        b.release()
        assert bytes(b) == b.body() == b"" and b.count == 0 and b.nbytes == 0

    def test_memoryview_of_a_released_batch(self, core, make):
        if core.__name__.endswith("_core_py") and sys.version_info < (3, 12):
            pytest.skip("before Python 3.12 a bytes subclass cannot choose what its buffer shows (PEP 688)")
        (b,), _ = make(NDJSON).encode_batch([{"a": 1}])
        with memoryview(b) as m:
            assert bytes(m) == b'{"a":1}\n'
        b.release()
        with memoryview(b) as m:
            assert bytes(m) == b""


# --------------------------------------------------------------------------------------------------------------
# 10: aware datetimes out of range, float subclasses, surrogate keys


class F(float):
    pass


class TestFieldsOfBadValues:
    def test_ruby_aware_datetime_out_of_range(self, make, released):
        enc = make(CONNECT_RUBY)
        bad = dt.datetime(1, 1, 1, tzinfo=PLUS5)
        batches, errors = enc.encode_batch([{"ok": 1}, {"t": bad}, {"a": {"b": [1, bad]}}, {"ok": 2}], "c")
        released.extend(batches)
        assert sum(b.count for b in batches) == 2
        assert [(type(e), e.index, e.field, e.message, e.collection) for e in errors] == [
            (EventValidationError, 1, "t", MSG_DATE_RANGE, "c"),
            (EventValidationError, 2, "a.b[1]", MSG_DATE_RANGE, "c"),
        ]
        assert errors[0].errors == {"t": MSG_DATE_RANGE}
        late = dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(-dt.timedelta(hours=5)))
        with pytest.raises(EventValidationError) as info:
            enc.encode({"x": (late,)}, "c")
        assert info.value.field == "x[0]"

    def test_barchart_aware_datetime_out_of_range(self, make, released):
        bad = dict(BC_OK, timestamp=dt.datetime(1, 1, 1, tzinfo=PLUS5))
        batches, errors = make(BARCHART).encode_batch([BC_OK, bad, BC_OK])
        released.extend(batches)
        assert sum(b.count for b in batches) == 2
        assert [(type(e), e.index, e.field, e.message) for e in errors] == [(EventValidationError, 1, "timestamp", BC)]
        assert errors[0].errors == {"timestamp": 'The "timestamp" field cannot be interpreted.'}

    @pytest.mark.parametrize("dialect", [CONNECT, CONNECT_RUBY, NDJSON])
    def test_float_subclass_names_its_field(self, make, dialect):
        with pytest.raises(EventTypeError) as info:
            make(dialect).encode({"n": {"v": F(1.5)}}, "c")
        assert info.value.field == "n.v"
        assert info.value.message == "Type is not JSON serializable: F"
        with pytest.raises(EventTypeError) as info:
            make(dialect).encode({"n": [1, F("nan")]}, "c")
        assert info.value.field == "n[1]"

    @pytest.mark.parametrize("dialect", [CONNECT, CONNECT_RUBY, NDJSON])
    def test_surrogate_key_names_its_field(self, make, dialect):
        with pytest.raises(EventTypeError) as info:
            make(dialect).encode({"n": {"k\ud800": 1}}, "c")
        assert info.value.field == "n.k\ud800"
        assert info.value.message == "str is not valid UTF-8: surrogates not allowed"
