"""Validation and stamping rules of every dialect, with the specs' exact messages, on both cores."""

from __future__ import annotations

import datetime as dt
import enum
import json
import pickle
import uuid

import orjson
import pytest

from eventpush.dialects import BARCHART, CONNECT, CONNECT_RUBY, JSON_ARRAY, NDJSON, Dialect
from eventpush._core_py import MAX_DEPTH
from eventpush.errors import EventError, EventTooLargeError, EventTypeError, EventValidationError

from core_support import FIXED_MICROS, PatternRandom

TP = "Property names cannot start with thereserved prefix 'tp_'"
ID = "Top level properties cannot be named '_id'"
PERIOD = "Property names cannot contain a period (.)"
DOLLAR = "Property names cannot start with $"
LONG = "Property names cannot exceed 255 characters"
TIMESTAMP = "timestamp property must be a datetime"
NOT_DICT = "Event must be a dict object"
RB_TP = "The following properties use the reserved prefix tp_:"
BC = "An attempt to serialize data into client failed, the data structure is invalid."
TOO_LARGE = "Maximum event size of 64kb exceeded."


def bc_field(name: str) -> str:
    return f'The "{name}" field cannot be interpreted.'


def raises(enc, event, exc_type, collection=None):
    with pytest.raises(exc_type) as info:
        enc.encode(event, collection)
    return info.value


# --------------------------------------------------------------------------------------------------------------
# connect-python rules (spec/connect.md §2.3)


class TestConnectPy:
    def test_stamps_id_and_timestamp_into_callers_dict(self, make, clock):
        enc = make(CONNECT)
        event = {"b": 1, "a": 2}
        body = enc.encode(event, "c")
        assert list(event) == ["b", "a", "id", "timestamp"]
        assert event["timestamp"] == dt.datetime(2015, 8, 1, 0, 0, 0, 123456)
        assert event["timestamp"].tzinfo is None
        u = uuid.UUID(event["id"])
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == event["id"]
        assert clock.calls == 1
        assert json.loads(body) == {"b": 1, "a": 2, "id": event["id"], "timestamp": "2015-08-01T00:00:00.123456"}
        assert body.startswith(b'{"b":1,"a":2,"id":"')

    def test_supplied_values_are_kept_and_clock_not_called(self, make, clock, urandom):
        enc = make(CONNECT)
        ts = dt.datetime(2015, 8, 1)
        event = {"id": None, "timestamp": ts}
        assert enc.encode(event) == b'{"id":null,"timestamp":"2015-08-01T00:00:00"}'
        assert clock.calls == 0 and urandom.requests == []
        assert event == {"id": None, "timestamp": ts}

    def test_isoformat_everywhere(self, make):
        enc = make(CONNECT)
        utc = dt.timezone.utc
        odd = dt.timezone(dt.timedelta(hours=5, minutes=30, seconds=15))
        event = {
            "id": "x",
            "timestamp": dt.datetime(2015, 8, 1, 1, 2, 3, 4, tzinfo=utc),
            "nested": {"when": dt.datetime(2015, 8, 1), "day": dt.date(2015, 8, 1), "t": dt.time(1, 2, 3)},
            "list": [dt.datetime(2015, 8, 1, 12), {"deep": [dt.date(999, 1, 2)]}],
            "odd": dt.datetime(2015, 8, 1, tzinfo=odd),
            "aware_time": dt.time(1, 2, tzinfo=utc),
        }
        got = json.loads(enc.encode(event))
        assert got["timestamp"] == "2015-08-01T01:02:03.000004+00:00"
        assert got["nested"] == {"when": "2015-08-01T00:00:00", "day": "2015-08-01", "t": "01:02:03"}
        assert got["list"] == ["2015-08-01T12:00:00", {"deep": ["0999-01-02"]}]
        assert got["odd"] == "2015-08-01T00:00:00+05:30:15"  # orjson alone would write +05:30
        assert got["aware_time"] == "01:02:00+00:00"  # orjson alone refuses it

    def test_other_isoformat_objects(self, make):
        class Stamp:
            def isoformat(self):
                return "custom-iso"

        class SubDT(dt.datetime):
            pass

        enc = make(CONNECT)
        got = json.loads(enc.encode({"a": Stamp(), "b": [SubDT(2015, 1, 2)], "timestamp": SubDT(2015, 1, 1)}))
        assert got["a"] == "custom-iso" and got["b"] == ["2015-01-02T00:00:00"]
        assert got["timestamp"] == "2015-01-01T00:00:00"

    def test_non_str_keys_accepted(self, make):
        enc = make(CONNECT)
        assert json.loads(enc.encode({1: "some data", "id": "i", "timestamp": dt.datetime(2015, 1, 1)})) == {
            "1": "some data",
            "id": "i",
            "timestamp": "2015-01-01T00:00:00",
        }

    @pytest.mark.parametrize(
        "key, message",
        [("tp_x", TP), ("TP_x", TP), ("Tp_", TP), ("_id", ID), ("_ID", ID), ("a.b", PERIOD), ("$x", DOLLAR),
         ("k" * 256, LONG)],
    )
    def test_top_level_messages(self, make, key, message):
        exc = raises(make(CONNECT), {key: 1}, EventValidationError, "col")
        assert exc.message == message and exc.errors == {key: message} and exc.field == key
        assert exc.index == 0 and exc.collection == "col"
        assert isinstance(exc, ValueError)

    def test_allowed_names(self, make):
        enc = make(CONNECT)
        event = {"k" * 255: 1, "x_tp_": 2, "nested": {"tp_x": 3, "_id": 4}, "a$": 5, "id_": 6, "ttp_": 7}
        assert json.loads(enc.encode(event))["nested"] == {"tp_x": 3, "_id": 4}

    def test_nested_rules_dicts_only(self, make):
        enc = make(CONNECT)
        exc = raises(enc, {"p": {"q": {"first.name": 1, "$d": 2, "L" * 300: 3}}}, EventValidationError)
        assert exc.errors == {"first.name": PERIOD, "$d": DOLLAR, "L" * 300: LONG}
        assert exc.message == PERIOD and exc.field == "first.name"
        # lists are not entered for key rules
        assert json.loads(enc.encode({"p": [{"first.name": 1}], "id": 1, "timestamp": dt.datetime(2015, 1, 1)}))

    def test_elif_chain(self, make):
        exc = raises(make(CONNECT), {"n": {"$a.b" + "x" * 300: 1}}, EventValidationError)
        assert list(exc.errors.values()) == [PERIOD]

    def test_all_errors_collected_and_leaf_keyed(self, make):
        event = {"tp_a": 1, "_id": 2, "b": {"c.d": 1, "e": {"c.d": 2, "$f": 3}}, "timestamp": "2015-08-01"}
        exc = raises(make(CONNECT), event, EventValidationError)
        assert exc.errors == {"tp_a": TP, "_id": ID, "c.d": PERIOD, "$f": DOLLAR, "timestamp": TIMESTAMP}
        assert exc.field == "tp_a" and exc.message == TP

    def test_top_level_key_with_two_problems(self, make):
        exc = raises(make(CONNECT), {"tp_.x": 1}, EventValidationError)
        assert exc.errors == {"tp_.x": PERIOD}  # the later rule overwrites, as the original dict does
        assert exc.message == PERIOD

    @pytest.mark.parametrize("value", ["2015-08-01T00:00:00", dt.date(2015, 8, 1), 1438387200, None])
    def test_timestamp_must_be_a_datetime(self, make, value):
        exc = raises(make(CONNECT), {"timestamp": value}, EventValidationError)
        assert exc.errors == {"timestamp": TIMESTAMP} and exc.field == "timestamp" and exc.message == TIMESTAMP

    def test_timestamp_duck_typed(self, make):
        class HasDate:
            def date(self):
                return None

            def isoformat(self):
                return "duck"

        assert json.loads(make(CONNECT).encode({"timestamp": HasDate(), "id": 1}))["timestamp"] == "duck"

    @pytest.mark.parametrize("event", [[1], "x", 3, None, ({"a": 1},)])
    def test_not_a_dict(self, make, event):
        exc = raises(make(CONNECT), event, EventTypeError)
        assert exc.message == NOT_DICT and exc.field is None and isinstance(exc, TypeError)

    def test_stamps_even_when_invalid(self, make):
        event = {"tp_x": 1}
        raises(make(CONNECT), event, EventValidationError)
        assert list(event) == ["tp_x", "id", "timestamp"]

    def test_too_large(self, make):
        enc = make(CONNECT)
        exc = raises(enc, {"x": "a" * 70000}, EventTooLargeError, "big")
        assert exc.message == TOO_LARGE and exc.collection == "big" and exc.index == 0
        assert isinstance(exc, EventValidationError)
        # the limit is on the encoded event: exactly 65,536 bytes passes, one more does not
        base = len(enc.encode({"x": "", "id": "i", "timestamp": dt.datetime(2015, 1, 1)}))
        fits = {"x": "a" * (65536 - base), "id": "i", "timestamp": dt.datetime(2015, 1, 1)}
        assert len(enc.encode(fits)) == 65536
        fits["x"] += "a"
        raises(enc, fits, EventTooLargeError)


# --------------------------------------------------------------------------------------------------------------
# Ruby-gem rules (spec/connect.md §2.4)


class TestConnectRuby:
    def test_id_and_timestamp_lead(self, make, clock):
        enc = make(CONNECT_RUBY)
        event = {"b": 1, "a": {"x": 2}}
        body = enc.encode(event, "c")
        assert event == {"b": 1, "a": {"x": 2}}  # the caller's dict is untouched
        assert body.startswith(b'{"id":"') and clock.calls == 1
        got = json.loads(body)
        assert list(got) == ["id", "timestamp", "b", "a"]
        assert got["timestamp"] == "2015-08-01T00:00:00Z"
        assert uuid.UUID(got["id"]).version == 4

    def test_user_values_win_in_place(self, make, clock, urandom):
        got = json.loads(make(CONNECT_RUBY).encode({"x": 1, "timestamp": "2015-07-01T04:07:57Z", "id": "mine"}))
        assert list(got.items()) == [("id", "mine"), ("timestamp", "2015-07-01T04:07:57Z"), ("x", 1)]
        assert clock.calls == 0 and urandom.requests == []

    def test_dates_converted_everywhere(self, make):
        plus2 = dt.timezone(dt.timedelta(hours=2))
        event = {
            "timestamp": dt.datetime(2015, 8, 1, 1, 30, 5, 999999, tzinfo=plus2),
            "naive": dt.datetime(2015, 8, 1, 3, 4, 5, 6),
            "day": dt.date(2015, 1, 31),
            "list": [dt.date(2015, 1, 1), {"d": dt.datetime(2000, 1, 1)}, (1, dt.date(2001, 2, 3))],
        }
        got = json.loads(make(CONNECT_RUBY).encode(event))
        assert got["timestamp"] == "2015-07-31T23:30:05Z"
        assert got["naive"] == "2015-08-01T03:04:05Z"
        assert got["day"] == "2015-01-31T00:00:00Z"
        assert got["list"] == ["2015-01-01T00:00:00Z", {"d": "2000-01-01T00:00:00Z"}, [1, "2001-02-03T00:00:00Z"]]
        assert isinstance(event["day"], dt.date)  # not converted in the caller's dict

    def test_reserved_prefix_message(self, make):
        exc = raises(make(CONNECT_RUBY), {"ok": 1, "tp_a": 1, "TP_b": 2, "nested": {"tp_c": 3}}, EventValidationError)
        message = RB_TP + "\n->tp_a\n->TP_b"
        assert exc.message == message and exc.errors == {"tp_a": message, "TP_b": message}
        assert exc.field == "tp_a"

    def test_anchored_prefix(self, make):
        got = json.loads(make(CONNECT_RUBY).encode({"http_status": 1, "setup_x": 2, "a.b": 3}))
        assert got["http_status"] == 1 and got["setup_x"] == 2 and got["a.b"] == 3

    def test_not_a_dict(self, make):
        assert raises(make(CONNECT_RUBY), [1], EventTypeError).message == NOT_DICT

    def test_too_large(self, make):
        assert raises(make(CONNECT_RUBY), {"x": "a" * 66000}, EventTooLargeError).message == TOO_LARGE


# --------------------------------------------------------------------------------------------------------------
# Barchart rules (spec/barchart.md §2, §3 steps 3–4)


class Customer(enum.Enum):
    BARCHART = "Barchart"

    @property
    def code(self):
        return "BARCHART"


class Product(enum.Enum):
    ALERT = "x"

    @property
    def code(self):
        return "ALERT"


def bc_event(**kw):
    event = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1438387200000,
             "context": ["u1", "a1", "AAPL"]}
    event.update(kw)
    return event


class TestBarchart:
    def test_schema_order_and_extra_keys_dropped(self, make):
        event = {"context": ["a"], "extra": 1, "timestamp": 5, "version": "5.6", "type": "ALERT-CREATED",
                 "product": "ALERT", "customer": "TGAM"}
        assert make(BARCHART).encode(event) == (
            b'{"customer":"TGAM","product":"ALERT","type":"ALERT-CREATED","version":"5.6","timestamp":5,'
            b'"context":["a"]}'
        )

    def test_version_optional(self, make):
        enc = make(BARCHART)
        assert b"version" not in enc.encode(bc_event())
        assert b"version" not in enc.encode(bc_event(version=None))

    def test_enum_members_and_datetime(self, make):
        got = json.loads(make(BARCHART).encode(bc_event(customer=Customer.BARCHART, product=Product.ALERT,
                                                         timestamp=dt.datetime(2015, 8, 1, 0, 0, 0, 999999))))
        assert got["customer"] == "BARCHART" and got["product"] == "ALERT"
        assert got["timestamp"] == 1438387200999
        aware = dt.datetime(2015, 8, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        assert json.loads(make(BARCHART).encode(bc_event(timestamp=aware)))["timestamp"] == 1438387200000

    def test_context_as_given(self, make):
        ctx = ["a\n\"\\é\u2028\x01", 1, -2, None, True, False, 1.5, {"k": [1]}, 2**63, ""]
        body = make(BARCHART).encode(bc_event(context=ctx))
        assert body.endswith(b'"context":' + orjson.dumps(ctx) + b"}")
        assert json.loads(body)["context"] == ctx

    @pytest.mark.parametrize(
        "changes, bad",
        [
            ({"customer": "Barchart"}, ["customer"]),  # the description is not the code
            ({"customer": None}, ["customer"]),
            ({"product": "alert"}, ["product"]),  # case-sensitive
            ({"type": "NOPE"}, ["type"]),
            ({"version": 5}, ["version"]),
            ({"timestamp": True}, ["timestamp"]),
            ({"timestamp": 1.5}, ["timestamp"]),
            ({"timestamp": "1438387200000"}, ["timestamp"]),
            ({"timestamp": dt.date(2015, 8, 1)}, ["timestamp"]),
            # nanoseconds where milliseconds were meant: outside JavaScript's Date range (the server refuses it)
            ({"timestamp": 1796302727785650299}, ["timestamp"]),
            ({"timestamp": 8_640_000_000_000_001}, ["timestamp"]),
            ({"timestamp": -8_640_000_000_000_001}, ["timestamp"]),
            ({"timestamp": 2**70}, ["timestamp"]),
            ({"context": ("a",)}, ["context"]),
            ({"context": "a"}, ["context"]),
            ({"customer": 1, "context": None, "version": [], "type": None}, ["customer", "type", "version", "context"]),
        ],
    )
    def test_bad_fields(self, make, changes, bad):
        exc = raises(make(BARCHART), bc_event(**changes), EventValidationError)
        assert exc.message == BC
        assert exc.errors == {name: bc_field(name) for name in bad}
        assert list(exc.errors) == bad and exc.field == bad[0]

    def test_timestamp_range_is_javascripts(self, make):
        enc = make(BARCHART)
        for ts in (8_640_000_000_000_000, -8_640_000_000_000_000, 0, -1):
            assert json.loads(enc.encode(bc_event(timestamp=ts)))["timestamp"] == ts

    def test_missing_fields(self, make):
        exc = raises(make(BARCHART), {}, EventValidationError)
        assert list(exc.errors) == ["customer", "product", "type", "timestamp", "context"]

    def test_not_a_dict(self, make):
        assert raises(make(BARCHART), ["x"], EventTypeError).message == NOT_DICT

    def test_context_nan(self, make):
        exc = raises(make(BARCHART), bc_event(context=["a", float("nan")]), EventTypeError)
        assert exc.field == "context[1]"

    def test_version_surrogate(self, make):
        exc = raises(make(BARCHART), bc_event(version="\ud800"), EventTypeError)
        assert exc.field == "version"


# --------------------------------------------------------------------------------------------------------------
# Serialization errors (every rule)

ALL = [CONNECT, CONNECT_RUBY, NDJSON, JSON_ARRAY]


def deep(n):
    root = {}
    node = root
    for _ in range(n - 1):
        node["a"] = {}
        node = node["a"]
    return root


class TestSerializationErrors:
    @pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
    @pytest.mark.parametrize(
        "event, field",
        [
            ({"a": {"b": [1, {"c": float("nan")}]}}, "a.b[1].c"),
            ({"a": float("inf")}, "a"),
            ({"a": [float("-inf")]}, "a[0]"),
            ({"x": {1, 2}}, "x"),
            ({"x": [object()]}, "x[0]"),
            ({"x": "\udc00"}, "x"),
        ],
    )
    def test_named_field(self, make, dialect, event, field):
        exc = raises(make(dialect), event, EventTypeError)
        assert exc.field == field and exc.index == 0

    @pytest.mark.parametrize("dialect", [CONNECT_RUBY, NDJSON], ids=lambda d: d.name)
    def test_non_str_key(self, make, dialect):
        exc = raises(make(dialect), {"a": {1: "x"}}, EventTypeError)
        assert exc.field == "a.1"

    def test_unsupported_key_connect(self, make):
        exc = raises(make(CONNECT), {"a": {(1, 2): "x"}}, EventTypeError)
        assert exc.field == "a.(1, 2)"

    @pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
    def test_depth(self, make, dialect):
        enc = make(dialect)
        limit = MAX_DEPTH - 1  # 254 (orjson's own limit), or 100 with an orjson that cannot write deeper safely
        assert enc.encode(deep(limit))
        exc = raises(enc, deep(300), EventTypeError)
        assert exc.field == ".".join(["a"] * limit)
        assert raises(enc, deep(limit + 1), EventTypeError).field == exc.field

    def test_none_rules_any_json_value(self, make):
        enc = make(NDJSON)
        for value in ([1, "x"], "s", 3, None, 1.5, {"a": None}):
            assert json.loads(enc.encode(value)) == value

    def test_nan_in_list_event(self, make):
        assert raises(make(JSON_ARRAY), [1, float("nan")], EventTypeError).field == "[1]"

    def test_errors_pickle(self, make):
        exc = raises(make(CONNECT), {"tp_x": 1}, EventValidationError, "c")
        again = pickle.loads(pickle.dumps(exc))
        assert again == exc and again.errors == exc.errors


class _BigInt(int):
    def __repr__(self):
        return "not the digits"


class TestIntegersBeyond64Bits:
    """orjson writes 64-bit integers only; connect-python (json.dumps), the Ruby gem and plain JSON write any
    integer with all its digits, and so does every dialect but Barchart (the original client's JavaScript numbers
    cannot hold one)."""

    VALUES = [2**64, -(2**63) - 1, 10**30, -(10**40), _BigInt(2**70)]

    @pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
    def test_written_with_all_their_digits(self, make, dialect):
        enc = make(dialect)
        inner = [1, 2**65, (3, -(2**64))]
        nested = {"k": 10**25, "l": inner}
        event = {"id": "e1", "timestamp": dt.datetime(2015, 8, 1), "big": 2**64, "nested": nested, "ok": 2**64 - 1}
        body = enc.encode(event, "c")
        digits = body.decode()
        for v in (2**64, 2**65, -(2**64), 10**25, 2**64 - 1):
            assert str(v) in digits
        got = json.loads(body)
        assert got["big"] == 2**64 and got["ok"] == 2**64 - 1
        assert got["nested"] == {"k": 10**25, "l": [1, 2**65, [3, -(2**64)]]}
        # the caller's containers are not replaced or changed
        assert event["nested"] is nested and nested["l"] is inner and inner == [1, 2**65, (3, -(2**64))]

    @pytest.mark.parametrize("value", VALUES, ids=repr)
    @pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
    def test_each_value_as_json_dumps_writes_it(self, make, dialect, value):
        body = make(dialect).encode({"id": "e1", "timestamp": dt.datetime(2015, 8, 1), "v": value, "l": [value]}, "c")
        assert body.endswith(b',"v":' + int.__repr__(value).encode() + b',"l":[' + int.__repr__(value).encode() + b"]}")

    @pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
    def test_batches(self, make, dialect):
        enc = make(dialect)
        events = [{"id": f"e{i}", "timestamp": dt.datetime(2015, 8, 1), "n": 2**64 + i} for i in range(3)]
        batches, errors = enc.encode_batch(events, "c")
        assert not errors
        assert [json.loads(batches[0].event(i))["n"] for i in range(3)] == [2**64, 2**64 + 1, 2**64 + 2]

    @pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
    def test_other_problems_still_named(self, make, dialect):
        exc = raises(make(dialect), {"id": "e1", "timestamp": dt.datetime(2015, 8, 1), "big": 2**70, "x": {"f": float("nan")}},
                     EventTypeError, "c")
        assert exc.field == "x.f"

    @pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
    def test_too_many_digits_to_write(self, make, dialect):
        exc = raises(make(dialect), {"id": "e1", "timestamp": dt.datetime(2015, 8, 1), "x": [10**5000]}, EventTypeError, "c")
        assert exc.field == "x[0]" and "64-bit" in exc.message

    # (a timestamp that large is outside JavaScript's Date range: a validation error of the field, see TestBarchart)
    @pytest.mark.parametrize("changes, field", [
        ({"context": ["u1", 2**64]}, "context[1]"),
    ])
    def test_barchart_refuses_them(self, make, changes, field):
        exc = raises(make(BARCHART), bc_event(**changes), EventTypeError)
        assert exc.field == field and exc.message == "Integer exceeds 64-bit range"


# --------------------------------------------------------------------------------------------------------------
# Collections


class TestCollections:
    @pytest.mark.parametrize("collection", [None, 5, b"c"])
    def test_add_needs_a_str_collection(self, make, collection):
        enc = make(CONNECT)
        with pytest.raises(EventTypeError) as info:
            enc.add({"x": 1}, collection)
        assert info.value.index == 0 and enc.pending == 0

    def test_encode_without_collection(self, make):
        assert make(CONNECT).encode({"x": 1, "id": 1, "timestamp": dt.datetime(2015, 1, 1)})

    def test_collection_escaped(self, make):
        enc = make(CONNECT)
        enc.add({"x": 1, "id": 1, "timestamp": dt.datetime(2015, 1, 1)}, 'we"ird\n/é')
        body = enc.seal().body()
        assert body.startswith(b'{"we\\"ird\\n/\xc3\xa9":[')
        assert list(json.loads(body)) == ['we"ird\n/é']

    def test_other_dialects_ignore_the_collection(self, make):
        enc = make(NDJSON)
        enc.add(1, "ignored")
        batch = enc.seal()
        assert batch.collection(0) is None and batch.groups() == [(None, 0, 1)]


def test_custom_dialect_limits(make):
    dialect = Dialect(name="tiny", rules="none", framing="array", max_event_bytes=5, too_large_message="too big!")
    enc = make(dialect)
    assert enc.encode("abc") == b'"abc"'
    exc = raises(enc, "abcd", EventTooLargeError)
    assert exc.message == "too big!"


def test_error_str_names_event_and_field(make):
    exc = raises(make(CONNECT), {"a": [float("nan")]}, EventTypeError, "coll")
    assert str(exc).startswith("collection 'coll', event 0, field 'a[0]': ")
    assert isinstance(exc, EventError)


def test_clock_and_random_used_in_order(make, clock, urandom):
    enc = make(CONNECT)
    events = [{"n": i} for i in range(300)]
    for e in events:
        enc.encode(e)
    assert clock.calls == 300
    assert urandom.requests == [4096, 4096]  # 256 ids per 4 KiB pool
    expected = PatternRandomIds(300)
    assert [e["id"] for e in events] == expected


def PatternRandomIds(n):
    rnd = PatternRandom()
    pool = b"".join(rnd(4096) for _ in range((n * 16) // 4096 + 1))
    out = []
    for i in range(n):
        b = bytearray(pool[i * 16 : i * 16 + 16])
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        out.append(str(uuid.UUID(bytes=bytes(b))))
    return out


def test_default_clock_is_now(core):
    import time

    enc = core.Encoder(CONNECT)
    event = {}
    before = dt.datetime.fromtimestamp(time.time(), dt.timezone.utc).replace(tzinfo=None)
    enc.encode(event)
    after = dt.datetime.fromtimestamp(time.time(), dt.timezone.utc).replace(tzinfo=None)
    assert before - dt.timedelta(seconds=1) <= event["timestamp"] <= after + dt.timedelta(seconds=1)


def test_fixed_micros_constant():
    assert dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=FIXED_MICROS) == dt.datetime(2015, 8, 1, 0, 0, 0, 123456)
