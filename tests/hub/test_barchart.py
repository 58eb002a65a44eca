"""The Barchart API of the hub (spec/barchart.md §1, §2), over HTTP against a real uvicorn process."""

from __future__ import annotations

import sqlite3
import uuid

import orjson
import pytest

from eventpush import _barchart_data as data

EVENT = {
    "customer": "BARCHART",
    "product": "WATCHLIST",
    "type": "WATCHLIST-SYMBOL-ADDED",
    "timestamp": 1599482731026,
    "context": ["user-123", "watchlist-456", "AAPL"],
}
JSON = {"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json"}


def post(hub, events, path="/barchart/events", headers=JSON):
    return hub.request("POST", path, {"events": events} if not isinstance(events, bytes) else events, headers)


def stored(hub):
    with sqlite3.connect(hub.db) as conn:
        return [
            (r[0], orjson.loads(r[1]))
            for r in conn.execute(
                "SELECT e.eid, e.body FROM events e JOIN collections c ON c.cid = e.cid "
                "WHERE c.api = 'barchart' ORDER BY e.seq"
            )
        ]


def test_created_events_with_batch_and_sequence(hub):
    events = [EVENT, dict(EVENT, version="1.2.3", context=["u", "w", "MSFT"]), dict(EVENT, extra="dropped")]
    r = post(hub, events)
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    created = r.json()
    batch = created[0]["batch"]
    assert uuid.UUID(batch).version == 4
    assert [e["sequence"] for e in created] == [0, 1, 2]
    assert all(e["batch"] == batch for e in created)
    assert created[0] == dict(EVENT, batch=batch, sequence=0)
    # EventSchema order: customer, product, type, version, timestamp, context (+ batch, sequence)
    assert list(created[1]) == ["customer", "product", "type", "version", "timestamp", "context", "batch", "sequence"]
    assert "extra" not in created[2]
    rows = [row for row in stored(hub) if row[1]["batch"] == batch]
    assert [eid for eid, _ in rows] == [f"{batch}/0", f"{batch}/1", f"{batch}/2"]
    assert [body for _, body in rows] == created
    # a second request gets a new batch id
    assert post(hub, [EVENT]).json()[0]["batch"] != batch


def test_empty_events_and_integral_float_timestamp(hub):
    assert post(hub, []).json() == []
    r = post(hub, [dict(EVENT, timestamp=1599482731026.0)])
    assert r.status == 200 and r.json()[0]["timestamp"] == 1599482731026
    assert isinstance(r.json()[0]["timestamp"], int)


def _malformed(fields):
    return [
        {
            "value": {"code": "REQUEST_INPUT_MALFORMED", "message": "An attempt to accept new events failed, events[0] is invalid."},
            "children": [
                {"value": {"code": "REQUEST_PARAMETER_MALFORMED", "message": f'The "{f}" field cannot be interpreted.'},
                 "children": []}
                for f in fields
            ],
        }
    ]


@pytest.mark.parametrize(
    "change, fields",
    [
        ({"timestamp": "yesterday"}, ["timestamp"]),
        ({"timestamp": 1.5}, ["timestamp"]),
        ({"timestamp": True}, ["timestamp"]),
        ({"customer": "barchart"}, ["customer"]),  # codes are case-sensitive
        ({"product": "NOPE"}, ["product"]),
        ({"type": "WATCHLIST_SYMBOL_ADDED"}, ["type"]),  # member name, not the code
        ({"context": "AAPL"}, ["context"]),
        ({"version": 5}, ["version"]),
        ({"customer": None, "timestamp": None}, ["customer", "timestamp"]),
    ],
)
def test_invalid_event_400_failure_reason(hub, change, fields):
    r = post(hub, [dict(EVENT, **change)])
    assert r.status == 400
    assert r.json() == _malformed(fields)


def test_one_invalid_event_rejects_request_and_names_index(hub):
    before = len(stored(hub))
    r = post(hub, [EVENT, dict(EVENT, timestamp="x"), EVENT, "nope"])
    assert r.status == 400
    reasons = r.json()
    assert [x["value"]["message"] for x in reasons] == [
        "An attempt to accept new events failed, events[1] is invalid.",
        "An attempt to accept new events failed, events[3] is invalid.",
    ]
    assert len(stored(hub)) == before  # nothing of the request stored


@pytest.mark.parametrize("body", [b'{"event": []}', b"[]", b'{"events": {}}', b"{", b""])
def test_bad_request_body_400(hub, body):
    r = post(hub, body)
    assert r.status == 400
    (root,) = r.json()
    assert root["value"]["code"] == "REQUEST_INPUT_MALFORMED"


def _named_twice(name):
    return [{
        "value": {"code": "REQUEST_INPUT_MALFORMED",
                  "message": f"The request body holds the field {name!r} more than once; send all events in one "
                             '"events" array.'},
        "children": [{"value": {"code": "REQUEST_PARAMETER_MALFORMED",
                                "message": f'The "{name}" field cannot be interpreted.'}, "children": []}],
    }]


@pytest.mark.parametrize("second", [b'"events"', b'"\\u0065vents"', b'"ev\\u0065nts"',
                                    b'"\\u0065\\u0076\\u0065\\u006E\\u0074\\u0073"'],
                         ids=["plain", "unicode-escape", "escape-inside", "all-escaped"])
def test_events_named_twice_400(hub, second):
    """A JSON parser keeps only the last "events" array: the events of the first would be neither stored nor
    refused. The request is refused (FailureReason, nothing stored), whatever spelling repeats the name."""
    before = stored(hub)
    marker = uuid.uuid4().hex
    first = orjson.dumps([dict(EVENT, context=["u", "w", marker + "-1"])])
    last = orjson.dumps([dict(EVENT, context=["u", "w", marker + "-2"])])
    body = b'{"events":' + first + b", " + second + b" : " + last + b"}"
    assert list(orjson.loads(body)) == ["events"]
    r = post(hub, body)
    assert r.status == 400 and r.json() == _named_twice("events")
    assert stored(hub) == before
    # three times, the other top-level fields ignored as usual
    r = post(hub, b'{"events":' + first + b',"x":1,' + second + b":" + last + b',"events":' + last + b"}")
    assert r.status == 400 and r.json() == _named_twice("events")
    assert stored(hub) == before


def test_other_field_named_twice_400(hub):
    """Any repeated top-level name is refused the same way (the body is ambiguous JSON)."""
    before = stored(hub)
    r = post(hub, b'{"events":' + orjson.dumps([EVENT]) + b',"x":1,"\\u0078":2}')
    assert r.status == 400 and r.json() == _named_twice("x")
    assert stored(hub) == before


def test_escapes_inside_events_stored_decoded(hub):
    marker = uuid.uuid4().hex
    body = (b'{"\\u0065vents":[{"customer":"BARCHART","product":"WATCH\\u004cIST","type":"WATCHLIST-SYMBOL-ADDED",'
            b'"timestamp":1599482731026,"context":["u\\/1","w\\"2\\"","' + marker.encode() + b'\\u00e9"],'
            b'"\\u0065vents":"ignored","events":1}]}')
    r = post(hub, body)
    assert r.status == 200, r
    (created,) = r.json()
    assert created["product"] == "WATCHLIST" and created["context"] == ["u/1", 'w"2"', marker + "\u00e9"]
    assert [b for _, b in stored(hub) if b["context"][2] == marker + "\u00e9"] == [created]


def test_entitlements_code_and_all_codes_accepted(hub):
    events = [
        {"customer": "TGAM", "product": t["product"], "type": t["code"], "timestamp": 1, "context": []}
        for t in data.EVENT_TYPES
    ]
    r = post(hub, events)
    assert r.status == 200 and len(r.json()) == len(data.EVENT_TYPES) == 220


def test_wrong_content_type_and_method(hub):
    r = post(hub, [EVENT], headers={"Content-Type": "text/plain"})
    assert r.status == 415 and r.json()[0]["value"]["code"] == "REQUEST_INPUT_MALFORMED"
    r = post(hub, [EVENT], headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status == 415 and r.json()[0]["value"]["code"] == "REQUEST_INPUT_MALFORMED"
    assert "Content-Encoding 'gzip' is not supported" in r.body.decode()
    assert hub.request("GET", "/barchart/events").status == 405
    assert hub.request("GET", "/barchart/service/version").json()["service"]["name"] == "eventpush-hub"


def test_strict_context(hub_factory):
    hub = hub_factory("--strict-context")
    alert = {"customer": "TGAM", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1}
    good = dict(alert, context=["user-1", str(uuid.uuid4()), "AAPL"])
    assert post(hub, [good]).status == 200
    r = post(hub, [dict(alert, context=["", "not-a-uuid", "AAPL"])])
    assert r.status == 400
    children = r.json()[0]["children"]
    assert [c["value"]["message"].split(" field")[0] for c in children] == ['The "context[0]"', 'The "context[1]"']
    # BARCHART has no validator on ALERT-CREATED
    assert post(hub, [dict(alert, customer="BARCHART", context=["", "x"])]).status == 200
    # stringOptional transformer: a missing / falsy hostname becomes ""
    login = {"customer": "BARCHART", "product": "CMDTYVIEW", "type": "CMDTYVIEW-LOGIN", "timestamp": 1,
             "context": ["u", "s", "chrome"]}
    assert post(hub, [login]).json()[0]["context"] == ["u", "s", "chrome", ""]
    # the type must belong to the product
    r = post(hub, [dict(EVENT, product="ALERT")])
    assert r.status == 400 and "not an event type of product ALERT" in r.json()[0]["children"][0]["value"]["message"]
    # without --strict-context the same events pass (validators are opt-in)
    plain = hub_factory()
    assert post(plain, [dict(alert, context=["", "not-a-uuid"])]).status == 200
    assert post(plain, [dict(EVENT, product="ALERT")]).status == 200
