"""connect-python event processing through the face, on both encoder cores (spec §2.3, checklist lines 6–10)."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

from eventpush import errors
from eventpush.connect import ConnectClient, Event, EventTooLargeError, InvalidEventError

MSG_TP = "Property names cannot start with thereserved prefix 'tp_'"
MSG_ID = "Top level properties cannot be named '_id'"
MSG_DOT = "Property names cannot contain a period (.)"
MSG_DOLLAR = "Property names cannot start with $"
MSG_LONG = "Property names cannot exceed 255 characters"
MSG_TS = "timestamp property must be a datetime"


@pytest.fixture
def client(use_core, recorder):
    c = ConnectClient("p", "k", base_url=recorder.base)
    yield c
    c.close()


def _exc(fut):
    exc = fut.exception(timeout=5)
    assert exc is not None
    return exc


def test_non_dict_event_is_failed_future(client, recorder):
    for bad in (1, "x", ["a"], None):
        fut = client.push_event("c", bad)
        assert fut.done()
        exc = _exc(fut)
        assert type(exc) is InvalidEventError
        assert exc.args[0] == "Event must be a dict object"
    assert recorder.requests == []


def test_non_list_batch_values_and_non_dict_batch(client, recorder):
    for bad in ([{"a": 1}], "x", None, 3):
        exc = _exc(client.push_events(bad))
        assert isinstance(exc, InvalidEventError) and exc.args[0] == "Events must be a list of dict objects"
    for bad in ({"c": {"a": 1}}, {"c": ({"a": 1},)}, {"ok": [{"a": 1}], "c": "str"}):
        exc = _exc(client.push_events(bad))
        assert exc.args[0] == "Events must be a list of dict objects"
    # an invalid event before the first non-list collection is reported first, as in the original
    exc = _exc(client.push_events({"a": [{"tp_x": 1}], "b": "nope"}))
    assert exc.args[0] == {"tp_x": MSG_TP}
    assert recorder.requests == []


def test_exact_messages_and_leaf_keys(client):
    ev = {
        "tp_a": 1, "TP_B": 2, "_ID": 3, "a.b": 4, "$c": 5, "k" * 256: 6,
        "nested": {"x.y": 1, "$z": 2, "tp_ok": 3, "deeper": {"q" * 300: 1, "first.name": 2}},
        "lst": [{"in.list": 1, "$no": 2}],  # lists are not entered
        7: "non-str key skipped",
    }
    exc = _exc(client.push_event("c", ev))
    assert isinstance(exc, InvalidEventError)
    assert exc.args[0] == {
        "tp_a": MSG_TP, "TP_B": MSG_TP, "_ID": MSG_ID, "a.b": MSG_DOT, "$c": MSG_DOLLAR, "k" * 256: MSG_LONG,
        "x.y": MSG_DOT, "$z": MSG_DOLLAR, "q" * 300: MSG_LONG, "first.name": MSG_DOT,
    }
    assert exc.errors == exc.args[0]
    assert exc.index == 0 and exc.collection == "c"


def test_elif_order_one_message_per_key(client):
    exc = _exc(client.push_event("c", {"$a.b" + "x" * 300: 1}))
    assert list(exc.args[0].values()) == [MSG_DOT]
    exc = _exc(client.push_event("c", {"$" + "x" * 300: 1}))
    assert list(exc.args[0].values()) == [MSG_DOLLAR]


def test_timestamp_must_be_datetime(client):
    for ts in ("2015-01-01T00:00:00", dt.date(2015, 1, 1), 12):
        exc = _exc(client.push_event("c", {"timestamp": ts}))
        assert exc.args[0] == {"timestamp": MSG_TS}


def test_stamping_mutates_callers_dict_and_key_order(client, recorder):
    d = {"b": 1, "a": 2}
    resp = client.push_event("c", d).result(5)
    assert list(d) == ["b", "a", "id", "timestamp"]
    assert isinstance(d["id"], str) and len(d["id"]) == 36
    assert isinstance(d["timestamp"], dt.datetime) and d["timestamp"].tzinfo is None
    assert abs((dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - d["timestamp"]).total_seconds()) < 60
    sent = recorder.requests[0].json()
    assert list(sent) == ["b", "a", "id", "timestamp"]
    assert sent["id"] == d["id"] and sent["timestamp"] == d["timestamp"].isoformat()
    # the body is a copy: datetimes converted there, not in the caller's dict
    assert resp.event == sent and resp.event is not d


def test_supplied_id_and_timestamp_kept_even_none(client, recorder):
    d = {"id": None, "timestamp": dt.datetime(2015, 8, 1), "x": 1}
    client.push_event("c", d).result(5)
    assert recorder.requests[0].json() == {"id": None, "timestamp": "2015-08-01T00:00:00", "x": 1}
    assert d == {"id": None, "timestamp": dt.datetime(2015, 8, 1), "x": 1}


def test_datetimes_naive_aware_nested_and_in_lists(client, recorder):
    utc = dt.timezone.utc
    d = {
        "naive": dt.datetime(2015, 8, 1, 1, 2, 3, 500), "aware": dt.datetime(2015, 8, 1, tzinfo=utc),
        "day": dt.date(2015, 8, 1), "n": {"when": dt.datetime(2015, 8, 1)},
        "lst": [dt.datetime(2015, 8, 1), {"x": dt.datetime(2015, 8, 2)}], "timestamp": dt.datetime(2015, 8, 1),
    }
    client.push_event("c", d).result(5)
    sent = recorder.requests[0].json()
    assert sent["naive"] == "2015-08-01T01:02:03.000500"
    assert sent["aware"] == "2015-08-01T00:00:00+00:00"
    assert sent["day"] == "2015-08-01"
    assert sent["n"] == {"when": "2015-08-01T00:00:00"}
    assert sent["lst"] == ["2015-08-01T00:00:00", {"x": "2015-08-02T00:00:00"}]


def test_unserializable_value_is_type_error_naming_field(client, recorder):
    exc = _exc(client.push_event("c", {"a": {"b": object()}}))
    assert isinstance(exc, TypeError) and isinstance(exc, errors.EventTypeError)
    assert exc.field and "a" in exc.field
    exc = _exc(client.push_events({"c": [{"ok": 1}, {"bad": {1, 2}}]}))
    assert isinstance(exc, TypeError) and exc.index == 1 and exc.collection == "c"
    assert recorder.requests == []


def test_oversize_event_refused_before_sending(client, recorder):
    exc = _exc(client.push_event("c", {"x": "a" * 70000}))
    assert isinstance(exc, EventTooLargeError) and isinstance(exc, InvalidEventError)
    assert isinstance(exc, errors.EventTooLargeError)
    assert exc.args[0] == "Maximum event size of 64kb exceeded."
    assert recorder.requests == []


def test_batch_first_error_names_event(client, recorder):
    exc = _exc(client.push_events({"a": [{"ok": 1}], "b": [{"ok": 2}, {"x.y": 1}, {"$z": 1}]}))
    assert exc.args[0] == {"x.y": MSG_DOT}
    assert exc.index == 1 and exc.collection == "b"
    assert "collection 'b'" in str(exc) and "event 1" in str(exc)
    assert recorder.requests == []


def test_invalid_event_error_pickles():
    for e in (InvalidEventError("Event must be a dict object"),
              InvalidEventError({"a.b": MSG_DOT}, index=2, collection="c", field="a.b"),
              EventTooLargeError("Maximum event size of 64kb exceeded.", index=0, collection="c")):
        e2 = pickle.loads(pickle.dumps(e))
        assert type(e2) is type(e) and e2.args == e.args and e2.index == e.index and e2.collection == e.collection


def test_event_class(use_core):
    d = {"name": "x", "when": dt.datetime(2015, 8, 1)}
    e = Event("coll", d)
    assert e.collection_name == "coll" and e.error is None
    assert e.body["when"] == "2015-08-01T00:00:00" and "id" in d and "timestamp" in d
    assert e.body is not d
    with pytest.raises(InvalidEventError) as ei:
        Event("coll", {"tp_x": 1})
    assert ei.value.args[0] == {"tp_x": MSG_TP}
    with pytest.raises(InvalidEventError):
        Event("coll", [1])
    # _process relies on the timestamp already written into the dict (original test 27)
    d2 = {"a": dt.datetime(2015, 8, 1)}
    e2 = Event("coll", d2)
    assert e2._process(d2)["a"] == "2015-08-01T00:00:00"
    errs = {}
    data, errs = e2._validate_and_process_nested({"first.name": 1, "n": {"$x": dt.datetime(2015, 8, 1)}}, errs)
    assert errs == {"first.name": MSG_DOT, "$x": MSG_DOLLAR} and data["n"]["$x"] == "2015-08-01T00:00:00"
    assert "some data" in Event("c", {1: "some data"}).body.values()  # non-str keys are skipped, not refused


def test_refused_batch_stamps_only_up_to_the_first_invalid_event(client, recorder):
    # the original builds Event after Event and stops at the first that raises: the dicts after it stay as given
    ok, bad, after, own_id, other = {"x": 1}, {"tp_x": 1}, {"y": 2}, {"id": "mine", "z": 1}, {"z": 3}
    shared = {"s": 1}  # also before the failing event: stamped there, and keeps it
    late_ts = {"w": 1, "timestamp": dt.datetime(2015, 8, 1)}
    exc = _exc(client.push_events({"c": [ok, shared, bad, after, shared, after, own_id], "d": [other, late_ts]}))
    assert exc.args[0] == {"tp_x": MSG_TP} and (exc.collection, exc.index) == ("c", 2)
    assert list(ok) == ["x", "id", "timestamp"] and list(bad) == ["tp_x", "id", "timestamp"]
    assert list(shared) == ["s", "id", "timestamp"]
    assert after == {"y": 2} and own_id == {"id": "mine", "z": 1} and other == {"z": 3}
    assert late_ts == {"w": 1, "timestamp": dt.datetime(2015, 8, 1)}
    # the same in a later collection, with an unserializable value, and ahead of a value that is no list
    first, bad2, later = {"a": 1}, {"b": {1, 2}}, {"c": 1}
    exc = _exc(client.push_events({"a": [{"p": 1}], "b": [first, bad2, later], "z": [{"q": 1}]}))
    assert isinstance(exc, TypeError) and (exc.collection, exc.index) == ("b", 1)
    assert "id" in first and "id" in bad2 and later == {"c": 1}
    first, bad3, later, nl = {"a": 1}, {"$b": 1}, {"c": 1}, {"d": 1}
    exc = _exc(client.push_events({"a": [first, bad3, later], "b": [nl], "c": "not a list"}))
    assert exc.args[0] == {"$b": MSG_DOLLAR} and later == {"c": 1} and nl == {"d": 1}
    assert recorder.requests == []
    # a valid batch is stamped all through, as before
    evs = [{"i": i} for i in range(3)]
    client.push_events({"c": evs}).result(5)
    assert all(list(e) == ["i", "id", "timestamp"] for e in evs)
    assert [e["id"] for e in recorder.requests[0].json()["c"]] == [e["id"] for e in evs]


def test_event_body_changed_in_place_is_sent(use_core, recorder):
    from eventpush.connect import ConnectApi

    api = ConnectApi("p", "k", base_url=recorder.base)
    try:
        untouched = Event("c", {"a": 1})
        r = api.post_event(untouched)
        assert recorder.requests[-1].body == untouched._encoded  # nobody looked at body: the bytes from the start
        assert r.event == recorder.requests[-1].json()
        e = Event("c", {"a": 1, "n": {"k": 1}})
        e.body["enriched"] = True  # the original sends json.dumps(event.body)
        e.body["n"]["k"] = 2
        r = api.post_event(e)
        sent = recorder.requests[-1].json()
        assert sent["enriched"] is True and sent["n"] == {"k": 2} and sent["id"] == e.body["id"]
        assert r.event == sent
        e.body = {"replaced": 1}
        api.post_event(e)
        assert recorder.requests[-1].json() == {"replaced": 1}
    finally:
        api.close()
