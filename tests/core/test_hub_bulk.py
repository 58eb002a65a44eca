"""The hub's bulk path in the encoder core: ``hub_connect_bulk`` and ``hub_timestamp_ok``, on both implementations.

Its contract: when it takes a collection, the ids and bodies are exactly what the hub's exact, event-by-event path
(``eventpush.hub.connect``) would have produced for it; when anything might be refused it returns ``None`` and the
exact path decides. Plain batches must be taken (that is the point of it). The compiled core and the twin must
agree on every input, taken or not.
"""

from __future__ import annotations

import calendar
import itertools
from typing import Any, List

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventpush import _core_py
from eventpush.hub import connect as hub

from core_support import CORE_C, MAX, TS, plain


SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def exact(events: List[Any]) -> Any:
    """What the hub's exact path makes of a collection whose every event has its id and timestamp: ``(ids,
    bodies)`` when every event is accepted as new, else ``None``."""
    ids, bodies = [], []
    for ev in events:
        if hub.validate_event(ev) is not None:
            return None
        eid, body, err = hub.stamp_and_encode(dict(ev), TS)
        if err is not None or eid in ids:
            return None
        ids.append(eid)
        bodies.append(body)
    return ids, bodies


def check(core: Any, events: List[Any], max_bytes: int = MAX) -> Any:
    got = core.hub_connect_bulk(events, max_bytes)
    if got is not None:
        ids, bodies = got
        assert (ids, bodies) == exact(events)
        assert all(len(b) <= max_bytes for b in bodies)
    if CORE_C is not None:
        assert CORE_C.hub_connect_bulk(events, max_bytes) == _core_py.hub_connect_bulk(events, max_bytes)
    return got


# --------------------------------------------------------------------------------------------------------------
# Timestamps


def _timestamps() -> List[str]:
    out = []
    for mo, d, h, mi in itertools.product(["00", "01", "09", "10", "12", "13", "1", "1a"],
                                          ["00", "01", "09", "19", "29", "30", "31", "32", "3"],
                                          ["00", "09", "19", "20", "23", "24", "2"], ["00", "59", "60", "5"]):
        out.append(f"2026-{mo}-{d}T{h}:{mi}")
    tails = ["", ":00", ":59", ":60", ":61", ":6", ":00.", ":00.1", ":00.123456789", ":00.1234567890", ":00.12a",
             ".5", ":00Z", "Z", "ZZ", "z", ":00+05:30", ":00-0530", "+23:59", "+24:00", "-00:60", "+05:3", "+0530",
             "+05::30", "+5:30", "+05:30Z", " ", "\n", ":00.000Z\n", "+05", "+05:"]
    for tail in tails:
        out.append("2026-01-01T00:00" + tail)
    out += ["", "2026", "2026-01-01", "2026-01-01 00:00", "2026-01-01t00:00", "20260101T0000", "2026-01-01T00:00:00",
            "٢٠٢٦-01-01T00:00", "2026-01-01T00:00:00.000Zé", TS, "0000-01-01T00:00"]
    # days that do not exist in their month
    for y, m, d in itertools.product(["2015", "2016", "1900", "2000", "0000", "2400"], ["02", "04", "06", "09", "11",
                                                                                    "01", "12"], ["28", "29", "30", "31"]):
        out.append(f"{y}-{m}-{d}T12:00:00Z")
    return out


def _hub_accepts(text: str) -> bool:
    """The reference: the hub's pattern, on a day of the proleptic Gregorian calendar."""
    if hub.HUB_TIMESTAMP.match(text) is None:
        return False
    y, m, d = int(text[:4]), int(text[5:7]), int(text[8:10])
    days = [31, 29 if calendar.isleap(y) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]
    return d <= days


def test_days_that_do_not_exist_are_refused(core):
    assert core.hub_timestamp_ok("2016-02-29T00:00:00Z") and core.hub_timestamp_ok("2000-02-29T00:00")
    for text in ("2015-02-29T00:00:00Z", "1900-02-29T00:00", "2015-02-30T00:00", "2015-04-31T12:00:00Z"):
        assert not core.hub_timestamp_ok(text), text


@pytest.mark.parametrize("text", _timestamps())
def test_timestamp_rule_matches_the_hub_regex(core, text):
    assert core.hub_timestamp_ok(text) is _hub_accepts(text)


@SETTINGS
@given(st.text(alphabet="0123456789-T:.Z+z ", max_size=32))
def test_timestamp_rule_on_random_text(text):
    want = _hub_accepts(text)
    assert _core_py.hub_timestamp_ok(text) is want
    if CORE_C is not None:
        assert CORE_C.hub_timestamp_ok(text) is want


@SETTINGS
@given(st.integers(0, len(TS) - 1), st.sampled_from("0123456789-T:.Z+"))
def test_timestamp_rule_one_character_changed(pos, ch):
    text = TS[:pos] + ch + TS[pos + 1:]
    want = _hub_accepts(text)
    assert _core_py.hub_timestamp_ok(text) is want
    if CORE_C is not None:
        assert CORE_C.hub_timestamp_ok(text) is want


# --------------------------------------------------------------------------------------------------------------
# Taken, and the same as the exact path


def test_plain_batches_are_taken(core):
    events = [plain(i) for i in range(500)]
    events[7]["nested"] = {"tp_ok": 1, "_id": 2, "deep": [{"x": {"y": [None, True, False, -1, 9e18, "é\n\"\\"]}}]}
    events[8]["timestamp"] = "2015-02-05T14:55:56.587+05:30"
    events[9]["id"] = "é" * 255
    got = check(core, events)
    assert got is not None and got[0] == [ev["id"] for ev in events]


def test_nested_reserved_names_are_allowed(core):
    # the hub refuses tp_ and _id at the root only (spec/connect.md §2.1), like its exact path
    assert check(core, [plain(0, meta={"tp_x": 1, "_ID": {"tp_": []}})]) is not None


@pytest.mark.parametrize("key", ["tp_x", "_id", "ok", "$a", "a.b", 'q"k', "k" * 45], ids=repr)
def test_a_key_seen_nested_is_judged_again_at_the_root(core, key):
    # the compiled writer remembers each key object it has written: a key taken below the root earlier in the same
    # batch (or an earlier one) must still be judged by the root's rules
    # (check() holds a taken batch to the exact path's result, and the compiled core to the twin)
    nested = plain(0, meta={key: 1})
    root = plain(1, **{key: 1})
    for events in ([nested], [nested, root], [root, nested], [nested]):
        check(core, events)
    if key in ("tp_x", "_id"):
        assert check(core, [nested]) is not None and check(core, [nested, root]) is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda evs: evs.__setitem__(3, [1]), id="not-a-dict"),
        pytest.param(lambda evs: evs[3].pop("id"), id="no-id"),
        pytest.param(lambda evs: evs[3].__setitem__("id", 5), id="int-id"),
        pytest.param(lambda evs: evs[3].__setitem__("id", ""), id="empty-id"),
        pytest.param(lambda evs: evs[3].__setitem__("id", "x" * 256), id="long-id"),
        pytest.param(lambda evs: evs[3].__setitem__("id", "a\x00b"), id="nul-id"),
        pytest.param(lambda evs: evs[3].__setitem__("id", evs[1]["id"]), id="repeated-id"),
        pytest.param(lambda evs: evs[3].pop("timestamp"), id="no-timestamp"),
        pytest.param(lambda evs: evs[3].__setitem__("timestamp", "yesterday"), id="bad-timestamp"),
        pytest.param(lambda evs: evs[3].__setitem__("timestamp", 1438387200), id="int-timestamp"),
        pytest.param(lambda evs: evs[3].__setitem__("tp_x", 1), id="root-tp"),
        pytest.param(lambda evs: evs[3].__setitem__("TP_x", 1), id="root-TP"),
        pytest.param(lambda evs: evs[3].__setitem__("_Id", 1), id="root-_id"),
        pytest.param(lambda evs: evs[3].__setitem__("a.b", 1), id="root-period"),
        pytest.param(lambda evs: evs[3]["props"].__setitem__("a.b", 1), id="nested-period"),
        pytest.param(lambda evs: evs[3]["props"]["ab"].append({"a.b": 1}), id="period-in-list"),
        pytest.param(lambda evs: evs[3]["props"].__setitem__("k" * 256, 1), id="long-key"),
        pytest.param(lambda evs: evs[3].__setitem__("$x", 1), id="dollar-key"),
        pytest.param(lambda evs: evs[3].__setitem__("é", 1), id="non-ascii-key"),
        pytest.param(lambda evs: evs[3].__setitem__("big", 2**63), id="int-over-64-bits"),
        # what orjson.loads makes of an integer beyond 64 bits: the exact path parses the body again
        pytest.param(lambda evs: evs[3].__setitem__("f", float(2**64)), id="float-from-big-int"),
        pytest.param(lambda evs: evs[3]["props"]["ab"].append(-float(2**63)), id="negative-float-from-big-int"),
        pytest.param(lambda evs: evs[3].__setitem__("s", "\ud800"), id="lone-surrogate"),
        pytest.param(lambda evs: evs[3].__setitem__("f", float("nan")), id="nan"),
        pytest.param(lambda evs: evs[3].__setitem__("big", "x" * MAX), id="too-large"),
        pytest.param(lambda evs: evs[3].__setitem__("o", object()), id="not-json"),
    ],
)
def test_anything_the_exact_path_must_judge_is_left_to_it(core, change):
    events = [plain(i) for i in range(6)]
    change(events)
    assert check(core, events) is None


def test_floats_below_two_to_the_63_are_taken(core):
    below = float(2**63 - 1024)  # the largest double under 2**63
    assert below < 2**63
    events = [plain(0, f=below), plain(1, f=-below), plain(2, f=1.5e-300)]
    assert check(core, events) == ([ev["id"] for ev in events], [orjson.dumps(ev) for ev in events])


def _nest(depth: int) -> Any:
    v: Any = 1
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


@pytest.mark.parametrize("below, taken", [(3, True), (2, True), (1, False)])
def test_nesting_limit(core, below, taken):
    # the root is depth 1: a value nested `depth` containers below it sits at depth + 1; orjson stops at
    # MAX_DEPTH (255; 101 with an orjson that cannot write deeper safely)
    depth = _core_py.MAX_DEPTH - below
    assert (check(core, [plain(0, deep=_nest(depth))]) is not None) is taken


def test_size_limit_is_inclusive(core):
    ev = plain(0)
    size = len(orjson.dumps(ev))
    assert check(core, [ev], size) is not None
    assert check(core, [ev], size - 1) is None


# --------------------------------------------------------------------------------------------------------------
# Generated batches: whatever is taken is exactly right, and both implementations agree

json_keys = st.one_of(st.text(max_size=6), st.sampled_from(["tp_x", "TP_", "_id", "_ID", "a.b", "$x", "k" * 256, "é"]))
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([12.5, 0.1, 1e16, 5e-324, -0.0, 1e-05]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(json_keys, inner, max_size=3)),
    max_leaves=10,
)
stamps = st.one_of(st.just(TS), st.sampled_from(["2026-02-30T23:59:60.123456789-23:59", "2026-1-01T00:00", "x"]))
ids = st.one_of(st.text(min_size=1, max_size=8), st.sampled_from(["", "x" * 256, "a\x00"]), st.integers(0, 9))
json_events = st.one_of(
    st.builds(lambda i, t, extra: {"id": i, "timestamp": t, **extra}, ids, stamps,
              st.dictionaries(json_keys, json_values, max_size=4)),
    st.builds(lambda extra: extra, st.dictionaries(json_keys, json_values, max_size=4)),
    json_values,
)


@SETTINGS
@given(st.lists(json_events, min_size=1, max_size=6))
def test_generated_batches(events):
    # as the hub gets them: parsed from JSON
    events = orjson.loads(orjson.dumps(events))
    check(_core_py, events)
    if CORE_C is not None:
        check(CORE_C, events)


plain_values = st.recursive(
    json_scalars,
    # nested tp_ / _id keys are allowed (the hub refuses them at the root only)
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "", "tp_x", "_id", "x" * 255]), inner, max_size=3)),
    max_leaves=10,
)


@SETTINGS
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "user", "n"]), plain_values, max_size=4),
                min_size=1, max_size=6))
def test_generated_plain_batches_are_taken(extras):
    events = [{"id": f"e{i}", "timestamp": TS, **{k: v for k, v in extra.items()}} for i, extra in enumerate(extras)]
    events = orjson.loads(orjson.dumps(events))
    # every key is acceptable here and nesting is shallow: only an int past 64 bits, or a float of 2**63 or more
    # in size (what orjson makes of a larger int), is left to the exact path
    fits = all(-(2**63) <= v < 2**63 for v in _numbers(events, int)) and all(
        abs(v) < 2.0**63 for v in _numbers(events, float))
    got = check(_core_py, events)
    assert (got is not None) is fits
    if CORE_C is not None:
        assert (check(CORE_C, events) is not None) is fits


def _numbers(v: Any, kind: type) -> List[Any]:
    if type(v) is kind:
        return [v]
    if isinstance(v, dict):
        return [i for x in v.values() for i in _numbers(x, kind)]
    if isinstance(v, list):
        return [i for x in v for i in _numbers(x, kind)]
    return []
