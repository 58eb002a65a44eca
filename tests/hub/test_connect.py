"""The Connect API of the hub (spec/connect.md §1, §2.1), driven over HTTP against a real uvicorn process."""

from __future__ import annotations

import re
import json
import sqlite3
import sys
import uuid
from urllib.parse import quote

import orjson
import pytest

from eventpush.hub.connect import MAX_DEPTH
from hub_support import AUTH, KEY, PROJECT

TP_BODY = {"errorMessage": "Property names starting with tp_ are reserved and cannot be set."}
TOO_LARGE_BODY = {"errorMessage": "Maximum event size of 64kb exceeded."}
UNAUTH_BODY = {"errorMessage": "Unauthorised. Please check your Project Id and API Key"}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def coll() -> str:
    return "c-" + uuid.uuid4().hex[:10]


def bare(events):
    """Events without the server-stamped timestamp."""
    return [{k: v for k, v in e.items() if k != "timestamp"} for e in events]


def stored(hub, collection, project=PROJECT):
    with sqlite3.connect(hub.db) as conn:
        return [
            orjson.loads(r[0])
            for r in conn.execute(
                "SELECT e.body FROM events e JOIN collections c ON c.cid = e.cid "
                "WHERE c.api = 'connect' AND c.project = ? AND c.name = ? ORDER BY e.seq",
                (project, collection),
            )
        ]


# ---------------------------------------------------------------- single events

def test_single_event_stored_with_empty_200(hub):
    c = coll()
    r = hub.post(f"/connect/events/{c}", {"id": "e1", "timestamp": "2015-02-05T14:55:56.587Z", "amount": 1.5})
    assert r.status == 200 and r.body == b""
    assert r.headers["content-type"] == "application/json"
    # stored exactly as received, compact, key order kept
    assert stored(hub, c) == [{"id": "e1", "timestamp": "2015-02-05T14:55:56.587Z", "amount": 1.5}]
    with sqlite3.connect(hub.db) as conn:
        raw = conn.execute("SELECT body FROM events WHERE eid = 'e1'").fetchone()[0]
    assert raw == '{"id":"e1","timestamp":"2015-02-05T14:55:56.587Z","amount":1.5}'


def test_server_stamps_missing_id_and_timestamp(hub):
    c = coll()
    assert hub.post(f"/connect/events/{c}", {"a": 1}).status == 200
    assert hub.post(f"/connect/events/{c}", {"a": 2, "id": None, "timestamp": None}).status == 200
    first, second = stored(hub, c)
    for ev in (first, second):
        assert uuid.UUID(ev["id"]).version == 4
        assert ISO.match(ev["timestamp"])
    assert list(first) == ["a", "id", "timestamp"]  # appended, like connect-python
    assert list(second) == ["a", "id", "timestamp"]  # nulls replaced in place


def test_duplicate_single_event_409(hub):
    c = coll()
    assert hub.post(f"/connect/events/{c}", {"id": "dup", "n": 1}).status == 200
    r = hub.post(f"/connect/events/{c}", {"id": "dup", "n": 2})
    assert r.status == 409
    assert "dup" in r.json()["errorMessage"]
    assert bare(stored(hub, c)) == [{"id": "dup", "n": 1}]  # the first one stays
    # same id, other collection or other project: not a duplicate
    assert hub.post(f"/connect/events/{c}-other", {"id": "dup"}).status == 200
    other = {"X-Project-Id": "proj-2", "X-Api-Key": "key-2", "Content-Type": "application/json"}
    assert hub.post(f"/connect/events/{c}", {"id": "dup"}, headers=other).status == 200


@pytest.mark.parametrize("key", ["tp_secret", "TP_x", "Tp_", "tp_"])
def test_tp_prefix_400(hub, key):
    c = coll()
    r = hub.post(f"/connect/events/{c}", {key: 1, "ok": 2})
    assert (r.status, r.json()) == (400, TP_BODY)
    assert stored(hub, c) == []


def test_nested_tp_allowed_and_tp_inside_name_allowed(hub):
    c = coll()
    assert hub.post(f"/connect/events/{c}", {"obj": {"tp_inner": 1}, "http_status": 200, "setup_x": 1}).status == 200


@pytest.mark.parametrize("key", ["_id", "_ID"])
def test_underscore_id_400(hub, key):
    r = hub.post(f"/connect/events/{coll()}", {key: "x"})
    assert r.status == 400
    assert r.json() == {"errorMessage": "Property name _id is reserved and cannot be set."}


def test_period_and_long_names_422(hub):
    c = coll()
    long_key = "k" * 256
    r = hub.post(f"/connect/events/{c}", {"a.b": 1, "nested": {"c.d": 2, "list": [{"e.f": 3}]}, long_key: 4})
    assert r.status == 422
    errors = r.json()["errors"]
    fields = [e["field"] for e in errors]
    assert fields == ["a.b", "c.d", "e.f", long_key]
    assert errors[0]["description"] == "Property names cannot contain a period (.)"
    assert errors[3]["description"] == "Property names cannot exceed 255 characters"
    assert hub.post(f"/connect/events/{c}", {"k" * 255: 1}).status == 200


@pytest.mark.parametrize(
    "ts",
    ["yesterday", "2015-13-01T00:00:00Z", "2015-02-05", "2015-02-05T25:00:00Z", 1423148156587, True, {"a": 1}, "",
     "2015-02-29T00:00:00Z", "2015-02-30T00:00:00Z", "2015-04-31T12:00:00Z"],
)
def test_invalid_timestamp_422(hub, ts):
    r = hub.post(f"/connect/events/{coll()}", {"timestamp": ts})
    assert r.status == 422
    assert r.json()["errors"][0]["field"] == "timestamp"
    # in a batch (the bulk path), the event is refused alone
    c = coll()
    r = hub.post("/connect/events", {c: [{"id": "a", "timestamp": "2016-02-29T00:00:00Z"}, {"id": "b", "timestamp": ts}]})
    assert [i["success"] for i in r.json()[c]] == [True, False]


@pytest.mark.parametrize(
    "ts",
    ["2015-02-05T14:55:56.587Z", "2015-07-01T04:07:57Z", "2015-09-30T06:02:04.602000", "2015-09-30T06:02:04",
     "2015-09-30T06:02:04+00:00", "2015-09-30T06:02:04.1-0530"],
)
def test_valid_timestamps_kept_as_sent(hub, ts):
    c = coll()
    assert hub.post(f"/connect/events/{c}", {"timestamp": ts}).status == 200
    assert stored(hub, c)[0]["timestamp"] == ts


@pytest.mark.parametrize("eid", [5, "", "x" * 256, ["a"]])
def test_invalid_id_422(hub, eid):
    r = hub.post(f"/connect/events/{coll()}", {"id": eid})
    assert r.status == 422 and r.json()["errors"][0]["field"] == "id"


def test_event_over_64kb_413(hub):
    c = coll()
    base = {"id": "big", "timestamp": "2015-02-05T14:55:56.587Z", "pad": ""}
    overhead = len(orjson.dumps(base))
    exact = dict(base, pad="x" * (65536 - overhead))
    assert len(orjson.dumps(exact)) == 65536
    assert hub.post(f"/connect/events/{c}", exact).status == 200
    over = dict(base, id="big2", pad="x" * (65537 - overhead))
    r = hub.post(f"/connect/events/{c}", over)
    assert (r.status, r.json()) == (413, TOO_LARGE_BODY)
    assert [e["id"] for e in stored(hub, c)] == ["big"]


def test_not_an_object_400(hub):
    for body in (b"[1,2]", b'"text"', b"42", b"null"):
        r = hub.post(f"/connect/events/{coll()}", body)
        assert r.status == 400 and "JSON object" in r.json()["errorMessage"]


def test_deep_nesting_400(hub):
    c = coll()
    deep = 1
    for _ in range(300):
        deep = {"d": deep}
    body = orjson.dumps({"x": 1})[:-1] + b',"deep":' + b'{"d":' * 300 + b"1" + b"}" * 300 + b"}"
    r = hub.post(f"/connect/events/{c}", body)
    assert r.status == 400 and "depth" in r.json()["errorMessage"]
    def nested(levels):  # levels containers, the root object included
        return b'{"deep":' + b"[" * (levels - 1) + b"1" + b"]" * (levels - 1) + b"}"

    # MAX_DEPTH: 254 (what orjson writes back), or 100 with an orjson before 3.11.6
    assert hub.post(f"/connect/events/{c}", nested(MAX_DEPTH)).status == 200
    r = hub.post(f"/connect/events/{c}", nested(MAX_DEPTH + 1))
    assert r.status == 400 and r.json()["errorMessage"] == f"Event nesting exceeds the maximum depth of {MAX_DEPTH}."


# ---------------------------------------------------------------- authentication

@pytest.mark.parametrize(
    "headers",
    [
        {"X-Project-Id": PROJECT, "X-Api-Key": "wrong"},
        {"X-Project-Id": "nope", "X-Api-Key": KEY},
        {"X-Api-Key": KEY},
        {"X-Project-Id": PROJECT},
        {},
        {"X-Project-Id": "proj-2", "X-Api-Key": KEY},  # a key of another project
    ],
)
def test_bad_credentials_401(hub, headers):
    c = coll()
    for path, body in ((f"/connect/events/{c}", {"a": 1}), ("/connect/events", {c: [{"a": 1}]})):
        r = hub.post(path, body, headers=dict(headers, **{"Content-Type": "application/json"}))
        assert (r.status, r.json()) == (401, UNAUTH_BODY)
    assert hub.get(f"/connect/events/{c}", headers=headers).status == 401
    assert stored(hub, c) == []


def test_header_names_case_insensitive_and_second_key(hub):
    c = coll()
    headers = {"x-project-id": PROJECT, "X-API-KEY": "master-key", "content-type": "application/json"}
    assert hub.post(f"/connect/events/{c}", {"a": 1}, headers=headers).status == 200


# ---------------------------------------------------------------- batches

def test_batch_results_in_request_order(hub):
    c1, c2 = coll(), coll()
    assert hub.post(f"/connect/events/{c1}", {"id": "old"}).status == 200
    batch = {
        c1: [
            {"id": "a"},
            {"id": "old"},  # already stored
            {"tp_x": 1},
            {"id": "a"},  # duplicate within the batch
            {"a.b": 1, "timestamp": "nope"},
            {"n": 5},  # server id
            "not an object",
            {"id": "big", "pad": "x" * 70000},
        ],
        c2: [{"id": "a"}, {"id": "b"}],
    }
    r = hub.post("/connect/events", batch)
    assert r.status == 200
    res = r.json()
    assert list(res) == [c1, c2]
    ok = {"success": True, "duplicate": False}
    r1 = res[c1]
    assert r1[0] == ok
    assert r1[1]["success"] is False and r1[1]["duplicate"] is True and r1[1]["message"]
    assert r1[2] == {"success": False, "duplicate": False, "message": TP_BODY["errorMessage"]}
    assert r1[3]["duplicate"] is True and r1[3]["success"] is False
    assert r1[4]["success"] is False and r1[4]["duplicate"] is False
    assert "a.b: Property names cannot contain a period (.)" in r1[4]["message"]
    assert "timestamp:" in r1[4]["message"]
    assert r1[5] == ok
    assert r1[6] == {"success": False, "duplicate": False, "message": "An event must be a JSON object."}
    assert r1[7] == {"success": False, "duplicate": False, "message": TOO_LARGE_BODY["errorMessage"]}
    assert res[c2] == [ok, ok]
    ids = [e["id"] for e in stored(hub, c1)]
    assert ids[:2] == ["old", "a"] and len(ids) == 3 and uuid.UUID(ids[2])
    assert [e["id"] for e in stored(hub, c2)] == ["a", "b"]


def test_batch_fast_path_and_duplicates_across_requests(hub):
    c = coll()
    events = [{"id": f"e{i}", "timestamp": "2015-02-05T14:55:56.587Z", "v": i * 0.5} for i in range(1000)]
    r = hub.post("/connect/events", {c: events})
    assert r.status == 200 and r.json()[c] == [{"success": True, "duplicate": False}] * 1000
    # replay half of it plus new ones: exactly the replayed ones are duplicates
    again = events[500:] + [{"id": f"n{i}", "timestamp": "2015-02-05T14:55:56.587Z"} for i in range(500)]
    res = hub.post("/connect/events", {c: again}).json()[c]
    assert [x["duplicate"] for x in res] == [True] * 500 + [False] * 500
    assert [x["success"] for x in res] == [False] * 500 + [True] * 500
    assert len(stored(hub, c)) == 1500


def test_scanned_and_parsed_bodies_are_answered_and_stored_alike(hub):
    """A compact body (the compiled core reads it from its bytes) and the same events with spaces inside them
    (parsed into objects first, on either core) get the same results and leave the same stored bytes, duplicates
    and repeated ids included."""
    ts = "2015-02-05T14:55:56.587Z"
    events = [{"id": f"e{i}", "timestamp": ts, "v": i * 0.25, "s": "\u00e9\u65e5", "l": [1, {"n": None}]}
              for i in range(300)]
    events.append(dict(events[3]))  # the same id again in the request: a duplicate
    c1, c2 = coll(), coll()
    answers = []
    for c, raw in ((c1, orjson.dumps({c1: events})), (c2, json.dumps({c2: events}, ensure_ascii=False).encode())):
        first = hub.post("/connect/events", raw)
        again = hub.post("/connect/events", raw.replace(b'"e1"', b'"n1"'))  # all duplicates but one
        assert first.status == again.status == 200
        answers.append((first.json()[c], again.json()[c]))
    assert answers[0] == answers[1]
    first, again = answers[0]
    assert first == [{"success": True, "duplicate": False}] * 300 + [
        {"success": False, "duplicate": True, "message": first[300]["message"]}]
    assert [x["success"] for x in again] == [False, True] + [False] * 299
    assert raw_stored(hub, c1) == raw_stored(hub, c2) == [orjson.dumps(e).decode() for e in events[:300]] + [
        orjson.dumps(dict(events[1], id="n1")).decode()]


def raw_stored(hub, collection):
    with sqlite3.connect(hub.db) as conn:
        return [r[0] for r in conn.execute(
            "SELECT e.body FROM events e JOIN collections c ON c.cid = e.cid WHERE c.name = ? ORDER BY e.seq",
            (collection,))]


# orjson.loads gives every integer outside -2**63 .. 2**64-1 as a rounded float; the hub keeps them exact
BIG = (b'"big":123456789012345678901234567890,"edges":[18446744073709551615,18446744073709551616,'
       b'-9223372036854775808,-9223372036854775809],"deep":{"l":[{"n":-100000000000000000000000}]},'
       b'"f":1e+19,"s":"12345678901234567890123"')
# stored as orjson writes the float: 1e+19 (orjson before 3.11.7, the newest on Python 3.9: 1e19)
BIG_STORED = BIG.replace(b"1e+19", orjson.dumps(1e19)).decode()


def test_integers_beyond_64_bits_are_stored_exactly(hub):
    c = coll()
    ts = b'"timestamp":"2015-02-05T14:55:56.587Z"'
    # single event
    r = hub.post(f"/connect/events/{c}", b'{"id":"s",' + ts + b"," + BIG + b"}")
    assert r.status == 200, r.body
    # a batch: both collections of it, one of them with an event the server stamps (the exact path anyway)
    c2 = coll()
    body = (b'{"' + c.encode() + b'":[{"id":"b1",' + ts + b',"n":1},{"id":"b2",' + ts + b"," + BIG + b"}],"
            + b'"' + c2.encode() + b'":[{"n":2,' + BIG + b"}]}")
    r = hub.post("/connect/events", body)
    assert r.status == 200, r.body
    assert all(item["success"] for items in r.json().values() for item in items)
    rows = raw_stored(hub, c)
    assert rows == ['{"id":"s",' + ts.decode() + "," + BIG_STORED + "}",
                    '{"id":"b1",' + ts.decode() + ',"n":1}',
                    '{"id":"b2",' + ts.decode() + "," + BIG_STORED + "}"]
    (row,) = raw_stored(hub, c2)
    assert row.startswith('{"n":2,' + BIG_STORED + ',"id":"')
    # GET returns the stored text
    got = hub.get(f"/connect/events/{c}?limit=1").body
    assert got == b'{"results":[{"id":"b2",' + ts + b"," + BIG_STORED.encode() + b"}]}"


def test_integer_beyond_64_bits_in_a_body_too_deep_to_check_is_400(hub):
    # orjson parses 1,020 levels; Python's parser, which keeps the integer exact, stops near its recursion limit
    deep = b"[" * 1020 + b"]" * 1020
    c = coll()
    r = hub.post("/connect/events", b'{"' + c.encode() + b'":[{"v":123456789012345678901234567890,"d":' + deep + b"}]}")
    if sys.version_info < (3, 12):
        assert r.status == 400
        assert r.json() == {"errorMessage": "The request body holds an integer beyond 64 bits and nests too deeply "
                                            "to store it exactly."}
    else:  # from 3.12 Python's parser reads it all: the event itself is then refused for its depth
        assert r.status == 200
        assert r.json() == {c: [{"success": False, "duplicate": False,
                                 "message": f"Event nesting exceeds the maximum depth of {MAX_DEPTH}."}]}
    assert raw_stored(hub, c) == [] and hub.get("/health").status == 200


def test_a_long_digit_run_in_a_string_changes_nothing(hub):
    c = coll()
    ev = {"id": "x", "timestamp": "2015-02-05T14:55:56.587Z", "phone": "0" * 40, "f": 1e300, "n": 2**64 - 1}
    r = hub.post("/connect/events", {c: [ev]})
    assert r.status == 200 and r.json()[c][0]["success"] is True
    assert raw_stored(hub, c) == [orjson.dumps(ev).decode()]


def test_a_collection_named_twice_in_a_batch_is_400(hub):
    """JSON parsers keep the last of two equal keys: the first array's events would vanish without a result."""
    c = coll()
    body = b'{"' + c.encode() + b'":[{"id":"k1"},{"id":"k2"}], "other":[{"' + c.encode() + b'":1}], "' + \
        c.encode() + b'" :[{"id":"k3"}]}'
    r = hub.post("/connect/events", body)
    assert r.status == 400 and r.json() == {
        "errorMessage": f"Collection {c!r} appears twice in the batch; send its events in one array."}
    assert raw_stored(hub, c) == []
    # the same name as a key inside the events is fine
    r = hub.post("/connect/events", b'{"' + c.encode() + b'":[{"id":"k4","' + c.encode() + b'":{"' + c.encode() + b'":1}}]}')
    assert r.status == 200 and r.json()[c][0]["success"] is True


def esc(name: str) -> bytes:
    """``name`` as a JSON string with every character written as a \\uXXXX escape."""
    return b'"' + "".join("\\u%04x" % ord(ch) for ch in name).encode() + b'"'


def named_twice(name):
    return {"errorMessage": f"Collection {name!r} appears twice in the batch; send its events in one array."}


def nothing_stored(hub, *names):
    """Neither the storage nor GET /connect/events/{name} holds anything under these names."""
    for name in names:
        assert raw_stored(hub, name) == [], name
        r = hub.get("/connect/events/" + quote(name, safe=""))
        assert r.status == 200 and r.json() == {"results": []}, name


@pytest.mark.parametrize("spellings", [
    pytest.param(lambda c: (b'"' + c + b'"', esc(c.decode())), id="unicode-escape"),
    pytest.param(lambda c: (b'"' + c + b'/x"', b'"' + c + b'\\/x"'), id="solidus-escape"),
    pytest.param(lambda c: (b'"' + c + b'/x"', b'"' + c.replace(b"-", b"\\u002D") + b'/x"'), id="upper-hex"),
    pytest.param(lambda c: (b'"\\u0063' + c[1:] + b'\\/x"', b'"' + c.replace(b"-", b"\\u002d") + b'\\u002fx"'),
                 id="two-different-escapes"),
    pytest.param(lambda c: (b'"' + c + b'"', esc(c.decode()), b'"\\u0063' + c[1:] + b'"'), id="three-times"),
])
def test_a_collection_named_twice_with_escapes_is_400(hub, spellings):
    """Escapes spell a name differently, not another name: the parser still keeps only the last array, so the
    batch is refused exactly as with the plain spelling, naming the collection decoded."""
    c, other = coll(), coll()
    keys = spellings(c.encode())
    name = orjson.loads(keys[0])
    assert {orjson.loads(k) for k in keys} == {name} and len(set(keys)) == len(keys)
    members = [k + b':[{"id":"k%d","n":%d}]' % (i, i) for i, k in enumerate(keys)]
    body = b"{" + members[0] + b',"' + other.encode() + b'":[{"id":"o1"}],' + b",".join(members[1:]) + b"}"
    assert list(orjson.loads(body)) == [name, other]  # what a JSON parser makes of it: one array under `name`
    r = hub.post("/connect/events", body)
    assert r.status == 400 and r.json() == named_twice(name)
    nothing_stored(hub, name, other)


def test_escapes_inside_events_without_a_repeated_collection_are_stored(hub):
    """Escapes in values and in the events' own keys, even keys that decode to a collection name, and escaped
    collection names that are all different: a normal batch."""
    c, d = coll(), coll()
    ce, de = c.encode(), d.encode()
    body = (b'{' + esc(c) + b':['
            b'{"id":"e1","p":"a\\/b","q":"caf\\u00e9 \\"x\\" \\\\ \\n","' + ce + b'":1,' + esc(c) + b':{"\\u0069d":2}},'
            b'{"id":"e2","' + ce + b'\\/x":["\\ud83d\\ude00","\\"' + ce + b'\\":[]"],"\\u0074s":"\\t"}],'
            b'"' + de + b'":[{"id":"e3","r":"\\\\\\"' + ce + b'\\":","s":"' + ce + b'"}],'
            b'"' + ce + b'\\/x":[{"id":"e4"}],'
            b'"\\u0078":[]}')
    doc = orjson.loads(body)
    assert list(doc) == [c, d, c + "/x", "x"]
    r = hub.post("/connect/events", body)
    assert r.status == 200, r
    ok = {"success": True, "duplicate": False}
    assert r.json() == {c: [ok, ok], d: [ok], c + "/x": [ok], "x": []}
    for name in (c, d, c + "/x"):
        assert bare(stored(hub, name)) == doc[name]


def test_a_collection_named_twice_in_a_body_deeper_than_pythons_parser_is_400(hub):
    """orjson parses 1,024 levels, Python's json fewer before 3.12 (it raised RecursionError, and the batch went
    through without the first array)."""
    c = coll()
    deep = b"[" * 1000 + b"]" * 1000
    for second in (b'"' + c.encode() + b'"', esc(c)):
        body = b'{"' + c.encode() + b'":[{"id":"k1"}],' + second + b':[{"id":"k2","d":' + deep + b"}]}"
        r = hub.post("/connect/events", body)
        assert r.status == 400 and r.json() == named_twice(c)
        nothing_stored(hub, c)


def test_batch_of_5000_ok_and_5001_is_413(hub):
    c = coll()
    events = [{"id": str(i)} for i in range(5000)]
    r = hub.post("/connect/events", {c: events[:2500], c + "b": events[2500:]})
    assert r.status == 200 and len(r.json()[c]) == 2500
    r = hub.post("/connect/events", {c + "x": events[:2501], c + "y": events[:2500]})
    assert r.status == 413
    assert "5000" in r.json()["errorMessage"] and "5001" in r.json()["errorMessage"]
    assert stored(hub, c + "x") == []


@pytest.mark.parametrize("body", [b"[]", b'{"c": {"id": 1}}', b'{"c": 5}', b'"x"', b'{"c": [], "d": null}'])
def test_batch_badly_formed_400(hub, body):
    r = hub.post("/connect/events", body)
    assert r.status == 400
    assert "mapping each collection name" in r.json()["errorMessage"]


def test_batch_empty_and_trailing_slash(hub):
    c = coll()
    assert hub.post("/connect/events", {}).json() == {}
    r = hub.post("/connect/events/", {c: [], c + "2": [{"id": "x"}]})
    assert r.json() == {c: [], c + "2": [{"success": True, "duplicate": False}]}


def test_batch_bad_collection_name_400(hub):
    r = hub.post("/connect/events", {"": [{"a": 1}]})
    assert r.status == 400
    r = hub.post("/connect/events", {"x" * 256: [{"a": 1}]})
    assert r.status == 400


# ---------------------------------------------------------------- collection names in the path, GET

def test_collection_names_percent_encoded(hub):
    name = "a b/c?d é"
    from urllib.parse import quote

    assert hub.post("/connect/events/" + quote(name, safe=""), {"id": "1"}).status == 200
    assert bare(stored(hub, name)) == [{"id": "1"}]
    got = hub.get("/connect/events/" + quote(name, safe="")).json()
    assert bare(got["results"]) == [{"id": "1"}]
    # Python / JS / PHP clients concatenate unescaped: a raw '/' still names the same collection
    assert hub.post("/connect/events/x/y", {"id": "2"}).status == 200
    assert bare(stored(hub, "x/y")) == [{"id": "2"}]
    # the route's own segments may come percent-encoded too: the name is still read from the raw path
    assert hub.post("/connect/event%73/" + quote("p q", safe=""), {"id": "3"}).status == 200
    assert bare(stored(hub, "p q")) == [{"id": "3"}]
    for path in ("/connect/events/%FF", "/connect/event%73/%FF", "/%63onnect/events/a%C3"):
        r = hub.post(path, {"id": "4"})
        assert r.status == 400 and "not valid UTF-8" in r.json()["errorMessage"], path


def test_get_newest_first_with_limit(hub):
    c = coll()
    hub.post("/connect/events", {c: [{"id": str(i)} for i in range(10)]})
    got = hub.get(f"/connect/events/{c}?limit=3").json()["results"]
    assert [e["id"] for e in got] == ["9", "8", "7"]
    assert len(hub.get(f"/connect/events/{c}").json()["results"]) == 10
    assert hub.get(f"/connect/events/{coll()}").json() == {"results": []}
    for bad in ("0", "-1", "x", "10001", "%C2%B2", "%E2%91%A0", "9" * 5000):  # (², ①: isdigit() but not ints)
        r = hub.get(f"/connect/events/{c}?limit={bad}")
        assert r.status == 422 and r.json()["errors"][0]["field"] == "limit"
    # another project sees nothing
    other = {"X-Project-Id": "proj-2", "X-Api-Key": "key-2"}
    assert hub.get(f"/connect/events/{c}", headers=other).json() == {"results": []}


def test_long_get_replies_are_sent_a_page_at_a_time(hub):
    c = coll()
    for start in range(0, 1500, 500):
        assert hub.post("/connect/events", {c: [{"id": str(i), "pad": "p" * 100} for i in range(start, start + 500)]}
                        ).status == 200
    for limit, want in ((1000, 1000), (400, 400), (10_000, 1500), (200, 200), (150, 150)):
        r = hub.get(f"/connect/events/{c}?limit={limit}")
        assert r.status == 200
        assert [e["id"] for e in r.json()["results"]] == [str(i) for i in range(1499, 1499 - want, -1)], limit
        # over one page (200 events), the reply is streamed
        assert (r.headers.get("transfer-encoding") == "chunked") is (limit > 200 and want >= 200), limit
    other = coll()
    hub.post("/connect/events", {other: [{"id": str(i)} for i in range(200)]})
    assert len(hub.get(f"/connect/events/{other}?limit=5000").json()["results"]) == 200


# ---------------------------------------------------------------- request-level errors

def test_malformed_json_400(hub):
    for body in (b"{", b'{"a":}', b"{'a': 1}", b'{"a": NaN}', b"\xff\xfe{}", b'{"a": "\xc3\x28"}'):
        r = hub.post(f"/connect/events/{coll()}", body)
        assert r.status == 400, body
        assert r.json()["errorMessage"].startswith("The request body is not valid JSON")
    r = hub.post(f"/connect/events/{coll()}", b"")
    assert r.status == 400 and "empty" in r.json()["errorMessage"]


def test_wrong_content_type_415(hub):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"):
        r = hub.post(f"/connect/events/{coll()}", {"a": 1}, headers=dict(AUTH, **{"Content-Type": ctype}))
        assert r.status == 415, ctype
        assert "Content-Type" in r.json()["errorMessage"]
    for ctype in ("application/json; charset=utf-8", "application/json;charset=UTF-8", "application/vnd.x+json"):
        r = hub.post(f"/connect/events/{coll()}", {"a": 1}, headers=dict(AUTH, **{"Content-Type": ctype}))
        assert r.status == 200, ctype
    no_ctype = {k: v for k, v in AUTH.items() if k != "Content-Type"}
    assert hub.post(f"/connect/events/{coll()}", {"a": 1}, headers=no_ctype).status == 200


def test_compressed_body_415_and_nothing_stored(hub):
    """Neither API documents a compressed body: a Content-Encoding the hub would not undo is refused, so that a
    gzip body is not misread as malformed JSON, nor a plain body labelled gzip stored as if it had been undone."""
    import gzip

    c = coll()
    for body, coding in ((gzip.compress(b'{"id":"gz1"}'), "gzip"), (b'{"id":"gz2"}', "gzip"), (b'{"id":"br1"}', "br")):
        r = hub.post(f"/connect/events/{c}", body, headers=dict(AUTH, **{"Content-Encoding": coding}))
        assert r.status == 415 and f"Content-Encoding '{coding}' is not supported" in r.json()["errorMessage"]
    r = hub.post("/connect/events", {c: [{"id": "gz3"}]}, headers=dict(AUTH, **{"Content-Encoding": "deflate"}))
    assert r.status == 415
    assert hub.post(f"/connect/events/{c}", {"id": "id1"}, headers=dict(AUTH, **{"Content-Encoding": "identity"})).status == 200
    assert [e["id"] for e in hub.get(f"/connect/events/{c}").json()["results"]] == ["id1"]


def test_body_over_max_body_413(hub):
    # the module hub runs with --max-body 1 MiB
    big = b'{"pad":"' + b"x" * (1024 * 1024) + b'"}'
    r = hub.post(f"/connect/events/{coll()}", big)
    assert r.status == 413 and "maximum of 1048576 bytes" in r.json()["errorMessage"]
    assert hub.get("/health").status == 200


def test_not_found_and_method_not_allowed(hub):
    assert hub.get("/nope").status == 404
    assert hub.get("/connect/other").status == 404
    r = hub.request("DELETE", f"/connect/events/{coll()}", headers=AUTH)
    assert r.status == 405 and "not allowed" in r.json()["errorMessage"]
    assert r.headers["allow"] == "POST, GET, HEAD"  # a 405 says what is allowed (RFC 9110 §15.5.6)
    r = hub.request("GET", "/connect/events", headers=AUTH)
    assert r.status == 405 and r.headers["allow"] == "POST"
    assert hub.request("PUT", "/stats").headers["allow"] == "GET, HEAD"
    # HEAD wherever GET is allowed: the GET's status and headers, no body
    c = coll()
    assert hub.post(f"/connect/events/{c}", {"id": "h1"}).status == 200
    r = hub.request("HEAD", f"/connect/events/{c}", headers=AUTH)
    assert r.status == 200 and r.body == b"" and r.headers["content-type"] == "application/json"
    assert hub.request("HEAD", "/stats").status == 200
    assert hub.get("/push.js").status == 404 or hub.get("/push.js").headers["content-type"] == "application/javascript"


def test_odd_ids_are_deduplicated_exactly(hub):
    c = coll()
    ids = ['a"b', "é", "x\x00y", "\\u0041", "A", 'a"b']
    res = hub.post("/connect/events", {c: [{"id": i} for i in ids]}).json()[c]
    assert [r["duplicate"] for r in res] == [False, False, False, False, False, True]
    for i in ids[:5]:
        assert hub.post(f"/connect/events/{c}", {"id": i}).status == 409
    with sqlite3.connect(hub.db) as conn:
        eids = [json.loads(r[0])["id"] for r in conn.execute(
            "SELECT body FROM events e JOIN collections c ON c.cid = e.cid WHERE c.name = ? ORDER BY e.seq", (c,))]
    assert eids == ids[:5]
    assert [e["id"] for e in stored(hub, c)] == ids[:5]
