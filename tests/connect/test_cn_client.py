"""ConnectClient against the real hub and, for exact bytes and forced statuses, the recording server."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time

import orjson
import pytest

from eventpush.connect import (
    ClosedError,
    ConnectClient,
    PushBatchResponse,
    PushResponse,
    Respsonse,
)
from eventpush.errors import ConnectError, TransportError
from eventpush.transport import Retry

PROJECT, KEY = "proj-c", "key-c"  # as configured on the hub fixture (conftest.py)

FAST_RETRY = Retry(attempts=3, backoff=0.01, backoff_max=0.02)
UNAUTH = "Unauthorised. Please check your Project Id and API Key"


@pytest.fixture
def hclient(hub, use_core):
    c = ConnectClient(PROJECT, KEY, base_url=hub.base)
    yield c
    c.close()


def test_constructor_signature_and_defaults():
    c = ConnectClient("p", "k")
    try:
        assert c._api._base_url == "https://api.getconnect.io"
        assert c._api._post_timeout == 60 and c._api._get_timeout == 60
        assert c._executor._max_workers == 2
        assert c._api._session.timeout.read == 60 and c._api._session.timeout.connect == 60
    finally:
        c.close()
    c = ConnectClient("p", "k", "http://127.0.0.1:9/x", 5, 7, 3)
    try:
        assert (c._api._base_url, c._api._get_timeout, c._api._post_timeout) == ("http://127.0.0.1:9/x", 5, 7)
        assert c._executor._max_workers == 3 and c._api._session.timeout.read == 7
    finally:
        c.close()


def test_wire_single_and_batch_headers_paths(use_core, recorder):
    recorder.default = (200, {"Content-Type": "application/json"}, b"")
    with ConnectClient("my-proj", "my-key", base_url=recorder.base) as c:
        r = c.push_event("a b/c?d", {"x": 1}).result(5)
        recorder.default = (200, {"Content-Type": "application/json"}, b'{"plain":[{"success":true}]}')
        c.push_events({"plain": [{"y": 2}]}).result(5)
    single, batch = recorder.requests
    assert single.path == "/api/events/a%20b%2Fc%3Fd"
    assert batch.path == "/api/events"
    for req in (single, batch):
        assert req.headers["x-project-id"] == "my-proj"
        assert req.headers["x-api-key"] == "my-key"
        assert req.headers["content-type"] == "application/json"
        assert "content-encoding" not in req.headers  # no gzip
    assert single.json()["x"] == 1 and r.event == single.json()
    assert list(batch.json()) == ["plain"] and batch.json()["plain"][0]["y"] == 2


def test_single_push_200_stored(hclient, hub, coll):
    fut = hclient.push_event(coll, {"product": "Something", "cost": 2.01})
    assert isinstance(fut, cf.Future)
    r = fut.result(10)
    assert isinstance(r, PushResponse) and isinstance(r, Respsonse)
    assert (r.http_status_code, r.success, r.error_message, r.duplicate) == (200, True, None, False)
    stored = hub.events(coll)
    assert len(stored) == 1 and stored[0] == r.event and stored[0]["cost"] == 2.01


def test_collection_percent_encoded_against_hub(hclient, hub, coll):
    name = coll + " odd name/with?chars&%"
    assert hclient.push_event(name, {"a": 1}).result(10).success
    assert [e["a"] for e in hub.events(name)] == [1]


def test_409_duplicate_without_retry(hclient, coll):
    assert hclient.push_event(coll, {"id": "dup-1"}).result(10).success
    r = hclient.push_event(coll, {"id": "dup-1"}).result(10)
    assert (r.http_status_code, r.success, r.duplicate) == (409, False, True)
    assert "Duplicate" in r.error_message


def test_401_fixed_message(hub, use_core, coll):
    with ConnectClient(PROJECT, "wrong", base_url=hub.base) as c:
        r = c.push_event(coll, {"a": 1}).result(10)
        assert (r.http_status_code, r.success, r.error_message) == (401, False, UNAUTH)
        b = c.push_events({coll: [{"a": 1}]}).result(10)
        assert (b.http_status_code, b.success, b.error_message, b.results) == (401, False, UNAUTH, {})
    assert hub.events(coll) == []


def test_422_errors_list_and_400_from_hub(hclient, coll):
    r = hclient.push_event(coll, {"id": 12345}).result(10)  # the hub wants a string id
    assert r.http_status_code == 422 and r.success is False
    assert r.error_message == [{"field": "id", "description": "id must be a non-empty string of at most 255 characters"}]


def test_batch_results_in_order_with_duplicate_and_rejection(hclient, hub, coll):
    other = coll + "-o"
    assert hclient.push_event(coll, {"id": "seen"}).result(10).success
    b = hclient.push_events({coll: [{"n": 0}, {"id": "seen"}, {"n": 2, "id": 7}], other: [{"m": 1}]}).result(10)
    assert isinstance(b, PushBatchResponse)
    assert (b.http_status_code, b.success, b.error_message) == (200, True, None)
    assert type(b.results) is dict and list(b.results) == [coll, other]
    r0, r1, r2 = b.results[coll]
    assert (r0.success, r0.duplicate, r0.http_status_code, r0.error_message) == (True, False, None, None)
    assert (r1.success, r1.duplicate) == (False, True) and "Duplicate" in r1.error_message
    assert r2.success is False and r2.duplicate is False and "id" in r2.error_message
    assert r0.event["n"] == 0 and r2.event["n"] == 2
    assert b.results[other][0].success and b.results[other][0].event["m"] == 1
    assert [e.get("n") for e in hub.events(coll)] == [None, 0]


def _stored_exact(hub, coll):
    """The collection's stored events, parsed so that integers beyond 64 bits stay exact (orjson rounds them)."""
    status, body = hub.request("GET", f"/connect/events/{coll}?limit=100", headers={"X-Project-Id": PROJECT,
                                                                                    "X-Api-Key": KEY})
    assert status == 200, body
    return list(reversed(json.loads(body)["results"]))


def test_integers_beyond_64_bits_sent_exactly(hclient, hub, coll):
    """connect-python sends any int (json.dumps); orjson alone refuses those beyond 64 bits. (None of these values
    is a float exactly, so a rounded float would not compare equal.)"""
    n, neg, m, x = 2**64 + 1, -(10**30) + 1, 2**70 + 1, 10**25 + 1
    inner = [1, m]
    event = {"n": n, "neg": neg, "l": inner}
    r = hclient.push_event(coll, event).result(10)
    assert r.success and (r.event["n"], r.event["neg"], r.event["l"]) == (n, neg, [1, m])
    b = hclient.push_events({coll: [{"i": 1, "x": x}, {"i": 2}]}).result(10)
    assert b.success and [item.success for item in b.results[coll]] == [True, True]
    assert b.results[coll][0].event["x"] == x
    stored = _stored_exact(hub, coll)
    assert [(e.get("n"), e.get("neg"), e.get("l"), e.get("x")) for e in stored] == [
        (n, neg, [1, m], None), (None, None, None, x), (None, None, None, None)]
    assert event["l"] is inner and inner == [1, m]  # the caller's list is left as it was


def test_split_over_5000_merged_in_request_order(hclient, hub, coll):
    other = coll + "-b"
    events = {coll: [{"i": i} for i in range(6200)], other: [{"j": j} for j in range(30)]}
    b = hclient.push_events(events).result(60)
    assert b.success and b.http_status_code == 200
    assert [r.event["i"] for r in b.results[coll]] == list(range(6200))
    assert all(r.success for r in b.results[coll]) and len(b.results[other]) == 30
    stored = hub.events(coll)
    assert sorted(e["i"] for e in stored) == list(range(6200))


def test_split_batch_first_non_200_status(use_core, recorder):
    def answer(req):
        doc = req.json()
        return 200, {"Content-Type": "application/json"}, orjson.dumps(
            {k: [{"success": True}] * len(v) for k, v in doc.items()})
    recorder.script = [answer, (500, {"Content-Type": "application/json"},
                                b'{"errorMessage":"An error occurred while processing your request"}')]
    recorder.default = answer
    with ConnectClient("p", "k", base_url=recorder.base, retry=Retry.NONE) as c:
        b = c.push_events({"c": [{"i": i} for i in range(5001)]}).result(30)
    assert [len(r.json()["c"]) for r in recorder.requests] == [5000, 1]
    assert b.http_status_code == 500 and b.success is False
    assert b.error_message == "An error occurred while processing your request"
    res = b.results["c"]
    assert len(res) == 5001 and all(r.success for r in res[:5000]) and res[5000].success is False


def test_500_then_success_is_retried(use_core, recorder):
    recorder.reply(500, {"errorMessage": "An error occurred while processing your request"})
    with ConnectClient("p", "k", base_url=recorder.base, retry=FAST_RETRY) as c:
        r = c.push_event("c", {"a": 1}).result(10)
    assert r.success and r.http_status_code == 200
    assert len(recorder.requests) == 2 and recorder.requests[0].body == recorder.requests[1].body


def test_500_without_retry_maps_error_message(use_core, recorder):
    recorder.default = (500, {"Content-Type": "application/json"},
                        b'{"errorMessage":"An error occurred while processing your request"}')
    with ConnectClient("p", "k", base_url=recorder.base, retry=FAST_RETRY) as c:
        r = c.push_event("c", {"a": 1}).result(10)
        b = c.push_events({"c": [{"a": 1}]}).result(10)
    assert (r.http_status_code, r.success, r.error_message) == (
        500, False, "An error occurred while processing your request")
    assert (b.http_status_code, b.success, b.results) == (500, False, {})
    assert b.error_message == "An error occurred while processing your request"
    assert len(recorder.requests) == 6  # 3 attempts each


def test_409_after_retry_is_duplicate_success(use_core, recorder):
    recorder.reply(503, b"busy", "text/plain")
    recorder.reply(409, {"errorMessage": "Duplicate"})
    recorder.reply(502, b"", None)
    recorder.reply(200, {"c": [{"success": False, "duplicate": True, "message": "Duplicate"},
                               {"success": True}]})
    with ConnectClient("p", "k", base_url=recorder.base, retry=FAST_RETRY) as c:
        r = c.push_event("c", {"a": 1}).result(10)
        b = c.push_events({"c": [{"a": 1}, {"b": 2}]}).result(10)
    assert (r.success, r.duplicate, r.http_status_code) == (True, True, 409)
    first, second = b.results["c"]
    assert (first.success, first.duplicate) == (True, True)
    assert (second.success, second.duplicate) == (True, False)


def test_413_and_non_json_bodies(use_core, recorder):
    recorder.reply(413, {"errorMessage": "Maximum event size of 64kb exceeded."})
    recorder.reply(502, b"<html>bad gateway</html>", "text/html")
    recorder.reply(200, b"<html>proxy</html>", "text/html")
    recorder.reply(400, {"errorMessage": "Property names starting with tp_ are reserved and cannot be set."})
    with ConnectClient("p", "k", base_url=recorder.base, retry=Retry.NONE) as c:
        r = c.push_event("c", {"a": 1}).result(10)
        b = c.push_events({"c": [{"a": 1}]}).result(10)
        b2 = c.push_events({"c": [{"a": 1}]}).result(10)
        r4 = c.push_event("c", {"a": 1}).result(10)
    assert (r.http_status_code, r.success, r.error_message) == (413, False, "Maximum event size of 64kb exceeded.")
    assert (b.http_status_code, b.success, b.results) == (502, False, {}) and "502" in b.error_message
    assert (b2.http_status_code, b2.success, b2.results) == (200, False, {}) and "200" in b2.error_message
    assert r4.http_status_code == 400 and r4.error_message.startswith("Property names starting with tp_")


def test_single_non_json_body_gives_none_message(use_core, recorder):
    recorder.reply(503, b"oops", "text/plain")
    with ConnectClient("p", "k", base_url=recorder.base, retry=Retry.NONE) as c:
        r = c.push_event("c", {"a": 1}).result(10)
    assert (r.http_status_code, r.success, r.error_message) == (503, False, None)


def test_transport_error_ends_in_future(use_core):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with ConnectClient("p", "k", base_url=f"http://127.0.0.1:{port}", retry=FAST_RETRY) as c:
        fut = c.push_event("c", {"a": 1})
        with pytest.raises(ConnectError):
            fut.result(10)
        assert isinstance(c.push_events({"c": [{"a": 1}]}).exception(10), TransportError)


def test_close_and_closed_error(hub, use_core, coll):
    c = ConnectClient(PROJECT, KEY, base_url=hub.base)
    futs = [c.push_event(coll, {"i": i}) for i in range(50)]
    c.close()  # finishes what was queued
    assert all(f.done() and f.result().success for f in futs)
    with pytest.raises(ClosedError):
        c.push_event(coll, {"a": 1})
    with pytest.raises(RuntimeError):
        c.push_events({coll: [{"a": 1}]})
    c.close()
    assert len(hub.events(coll)) == 50


def test_concurrency_thousands_of_futures(hub, use_core, coll):
    n_threads, per_thread = 6, 400
    futs = []
    lock = threading.Lock()
    with ConnectClient(PROJECT, KEY, base_url=hub.base, max_workers=4) as c:
        def work(t):
            mine = []
            for i in range(per_thread):
                if i % 4 == 0:
                    mine.append(c.push_events({coll: [{"t": t, "i": i, "k": 0}, {"t": t, "i": i, "k": 1}]}))
                else:
                    mine.append(c.push_event(coll, {"t": t, "i": i}))
            with lock:
                futs.extend(mine)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done, not_done = cf.wait(futs, timeout=60)
    assert not not_done and len(futs) == n_threads * per_thread
    for f in futs:
        r = f.result()
        assert r.success, r.error_message
    expected = n_threads * per_thread + n_threads * per_thread // 4
    stored = hub.events(coll)
    assert len(stored) == expected
    assert len({e["id"] for e in stored}) == expected


def test_push_processed_events_and_post_events(hclient, hub, coll):
    from eventpush.connect import Event

    evs = [Event(coll, {"i": 1}), Event(coll, {"i": 2})]
    b = hclient._push_processed_events(evs)
    assert b.success and [r.event["i"] for r in b.results[coll]] == [1, 2]
    assert sorted(e["i"] for e in hub.events(coll)) == [1, 2]
    r = hclient._api.post_event(Event(coll, {"i": 3}))
    assert r.success and r.event["i"] == 3


def test_processed_events_keep_integers_beyond_64_bits(hclient, hub, coll):
    from eventpush.connect import Event

    y = 2**70 + 1  # not a float exactly
    e = Event(coll, {"i": 1, "y": y})
    assert e.body["y"] == y
    assert hclient._push_processed_events([e]).success
    e2 = Event(coll, {"i": 2})
    e2.body = {**e2.body, "z": -y}
    assert hclient._api.post_event(e2).success
    assert [(e.get("y"), e.get("z")) for e in _stored_exact(hub, coll)] == [(y, None), (None, -y)]


def test_build_response_semantics():
    from eventpush.connect import ConnectApi

    api = ConnectApi("p", "k", base_url="http://127.0.0.1:9")
    try:
        assert api._build_response(response_body={"errorMessage": "x"}, raw_event={}, status_code=401
                                   ).error_message == UNAUTH
        assert api._build_response(response_body={"errorMessage": "x"}, raw_event={}, status_code=400
                                   ).error_message == "x"
        errs = [{"field": "a", "description": "b"}]
        assert api._build_response(response_body={"errors": errs}, raw_event={}, status_code=422
                                   ).error_message == errs
        r = api._build_response(response_body=None, raw_event={"a": 1}, status_code=200)
        assert (r.success, r.error_message, r.event) == (True, None, {"a": 1})
        b = api._build_batch_response(response_body={"errorMessage": "boom"},
                                      events_by_collection={"c": [{"a": 1}]}, status_code=500)
        assert (b.error_message, b.results, b.success) == ("boom", {}, False)
        b = api._build_batch_response(
            response_body={"c": [{"success": True}, {"success": False, "message": "m", "duplicate": True}]},
            events_by_collection={"c": [{"a": 1}, {"a": 2}]}, status_code=200)
        r0, r1 = b.results["c"]
        assert (r0.http_status_code, r0.success, r0.error_message, r0.event) == (None, True, None, {"a": 1})
        assert (r1.success, r1.error_message, r1.event, r1.duplicate) == (False, "m", {"a": 2}, True)
        assert Respsonse(201, None).success is False and Respsonse(200, None).success is True
        assert Respsonse(500, None, success=True).success is True
    finally:
        api.close()


def test_responses_pickle(hclient, coll):
    import pickle

    b = hclient.push_events({coll: [{"a": 1}]}).result(10)
    b2 = pickle.loads(pickle.dumps(b))
    assert b2.success and b2.results[coll][0].event["a"] == 1


def test_retryable_items_resent_alone(use_core, recorder):
    retry_msg = "An error occurred inserting the event please try again."
    recorder.reply(200, {"c": [{"success": True}, {"success": False, "message": retry_msg},
                               {"success": False, "message": "bad id"}],
                         "d": [{"success": False, "duplicate": False, "message": retry_msg}]})
    recorder.reply(200, {"c": [{"success": False, "duplicate": True, "message": "Duplicate"}],
                         "d": [{"success": False, "message": retry_msg}]})
    recorder.reply(200, {"d": [{"success": True}]})
    with ConnectClient("p", "k", base_url=recorder.base, retry=FAST_RETRY) as c:
        b = c.push_events({"c": [{"i": 0}, {"i": 1}, {"i": 2}], "d": [{"j": 0}]}).result(10)
    first, second, third = [r.json() for r in recorder.requests]
    assert [e["i"] for e in second["c"]] == [1] and [e["j"] for e in second["d"]] == [0]
    assert second["c"][0]["id"] == first["c"][1]["id"]  # the same bytes, never re-encoded
    assert list(third) == ["d"] and third["d"][0]["id"] == first["d"][0]["id"]
    r0, r1, r2 = b.results["c"]
    assert r0.success and (r1.success, r1.duplicate) == (True, True)
    assert (r2.success, r2.error_message) == (False, "bad id")  # a rejection is never re-sent
    assert b.results["d"][0].success and b.results["d"][0].event["j"] == 0


def test_processing_happens_in_callers_thread(use_core, recorder):
    import threading as th

    gate = th.Event()
    recorder.default = lambda req: (gate.wait(10), (200, {"Content-Type": "application/json"}, b""))[1]
    with ConnectClient("p", "k", base_url=recorder.base) as c:
        d = {"a": 1}
        fut = c.push_event("c", d)
        assert "id" in d and "timestamp" in d  # stamped before push_event returned, request still pending
        bad = c.push_events({"c": [{"tp_x": 1}]})
        assert bad.done() and isinstance(bad.exception(), Exception)
        gate.set()
        assert fut.result(10).success


def test_empty_batch_posts_empty_object(hclient):
    b = hclient.push_events({}).result(10)
    assert b.http_status_code == 200 and b.results == {}


def test_64kb_limit_matches_the_hub(hclient, hub, coll):
    # the largest event that fits: client and hub agree on 65,536 bytes of compact JSON
    probe = {"pad": "", "id": "x" * 36, "timestamp": __import__("datetime").datetime(2015, 8, 1, 0, 0, 0, 1)}
    base = len(orjson.dumps({"pad": "", "id": "x" * 36, "timestamp": "2015-08-01T00:00:00.000001"}))
    probe["pad"] = "p" * (65536 - base)
    r = hclient.push_event(coll, dict(probe)).result(10)
    assert r.success, r.error_message
    probe["pad"] += "p"
    probe["id"] = "y" * 36
    exc = hclient.push_event(coll, dict(probe)).exception(10)
    assert exc.args[0] == "Maximum event size of 64kb exceeded."
    assert len(hub.events(coll)) == 1


@pytest.mark.parametrize("ok", [{"success": True, "duplicate": False}, {"success": True}])
def test_all_stored_reply_recognised_from_bytes(use_core, recorder, ok):
    from eventpush.connect.api import _all_stored

    def answer(req):
        doc = req.json()
        return 200, {"Content-Type": "application/json"}, orjson.dumps({k: [ok] * len(v) for k, v in doc.items()})
    recorder.default = answer
    events = {"c": [{"i": i} for i in range(3)], "dé/x": [{"j": 1}]}
    with ConnectClient("p", "k", base_url=recorder.base) as c:
        b = c.push_events(events).result(10)
    assert [r.event["i"] for r in b.results["c"]] == [0, 1, 2] and b.results["dé/x"][0].event["j"] == 1
    assert all(r.success and not r.duplicate and r.error_message is None and r.http_status_code is None
               for rs in b.results.values() for r in rs)
    from eventpush import _impl
    from eventpush.dialects import CONNECT

    batch = _impl.core.Encoder(CONNECT).encode_batch({"c": [{"i": 1}, {"i": 2}]})[0][0]
    assert _all_stored(batch, b'{"c":[{"success":true},{"success":true}]}')
    assert not _all_stored(batch, b'{"c":[{"success":true},{"success":false}]}')
    assert not _all_stored(batch, b'{"c": [{"success":true},{"success":true}]}')  # parsed instead
    assert not _all_stored(batch, b'{"c":[{"success":true}]}')


def test_keep_alive_one_pooled_connection(use_core, recorder):
    with ConnectClient("p", "k", base_url=recorder.base, max_workers=1) as c:
        for i in range(5):
            c.push_event("c", {"i": i}).result(5)
        c.push_events({"c": [{"i": 9}]}).result(5)
    assert len(recorder.requests) == 6
    assert len({r.client for r in recorder.requests}) == 1  # every request on the same TCP connection


# -- close() from a callback, and pushes racing close() -------------------------------------------------------------

def test_close_from_a_done_callback_finishes_and_closes_the_pool(use_core, recorder):
    gate = threading.Event()

    def held(req):  # the first push holds the only worker until the callback is in place
        assert gate.wait(10)
        return 200, {"Content-Type": "application/json"}, b""

    recorder.script = [held]
    c = ConnectClient("p", "k", base_url=recorder.base, max_workers=1)
    futs = [c.push_event("c", {"i": i}) for i in range(10)]
    calls, raised = [], []

    def on_done(f):  # runs on the client's worker thread
        calls.append(f)
        try:
            c.close()
        except BaseException as exc:  # concurrent.futures would only log it
            raised.append(exc)

    last = futs[-1]
    assert not last.done()
    last.add_done_callback(on_done)
    gate.set()
    assert all(f.result(10).success for f in futs)
    c.close()  # waits for the close the callback began
    assert raised == [] and calls == [last]
    assert c.closed and c._api._session.closed
    assert sorted(r.json()["i"] for r in recorder.requests) == list(range(10))
    with pytest.raises(ClosedError):
        c.push_event("c", {"a": 1})


class _Held:
    """A value whose encoding waits: the push has passed its first closed check and is still encoding."""

    def __init__(self, entered, release):
        self.entered, self.release = entered, release

    def isoformat(self):
        self.entered.set()
        assert self.release.wait(10)
        return "2015-08-01T00:00:00"


@pytest.mark.parametrize("batch", [False, True], ids=["push_event", "push_events"])
def test_push_racing_close_raises_closed_error(use_core, recorder, batch):
    c = ConnectClient("p", "k", base_url=recorder.base)
    entered, release = threading.Event(), threading.Event()
    out = {}

    def pusher():
        event = {"when": _Held(entered, release)}
        try:
            out["r"] = c.push_events({"c": [event]}) if batch else c.push_event("c", event)
        except Exception as exc:  # recorded: the assertion below names it
            out["r"] = exc

    t = threading.Thread(target=pusher)
    t.start()
    assert entered.wait(10)
    c.close()  # nothing queued yet: the executor is shut down at once
    release.set()
    t.join(10)
    assert isinstance(out["r"], ClosedError), repr(out["r"])
    assert recorder.requests == []


def test_pushes_racing_close_from_many_threads(use_core, recorder):
    seen = []
    lock = threading.Lock()
    for _trial in range(20):
        c = ConnectClient("p", "k", base_url=recorder.base)
        futs = []
        started = threading.Barrier(5)

        def pusher():
            started.wait()
            while True:
                try:
                    f = c.push_event("c", {"n": 1})
                except Exception as exc:  # recorded: must be ClosedError
                    with lock:
                        seen.append(exc)
                    return
                with lock:
                    futs.append(f)

        threads = [threading.Thread(target=pusher) for _ in range(4)]
        for t in threads:
            t.start()
        started.wait()
        time.sleep(0.002)
        c.close()
        for t in threads:
            t.join(10)
        assert all(f.done() and f.result().success for f in futs)  # what was queued was sent
    assert len(seen) == 80 and {type(e) for e in seen} == {ClosedError}, {repr(e) for e in seen}
