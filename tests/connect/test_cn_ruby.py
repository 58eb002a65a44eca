"""The Ruby-style module API: configure / reset / push in sync, async and await modes (spec §4)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time

import orjson
import pytest

from eventpush import connect
from eventpush.connect import (
    AwaitableResponse,
    Configuration,
    DeferredResponse,
    EventDataValidationError,
    EventPushResponse,
    UnconfiguredError,
)
from eventpush.errors import ClosedError, ConnectError, EventTooLargeError, EventTypeError
from eventpush.transport import Retry, Transport

PROJECT, KEY = "proj-c", "key-c"
FAST_RETRY = Retry(attempts=2, backoff=0.01, backoff_max=0.02)


def _conf(config, base, mode="sync"):
    config.project_id = PROJECT
    config.api_key = KEY
    config.base_url = base
    config.mode = mode


def test_unconfigured_and_reset():
    connect.reset()
    with pytest.raises(UnconfiguredError) as ei:
        connect.push("c", {"a": 1})
    assert str(ei.value) == "Connect must configured before it can be used, please call Connect.configure"
    connect.configure(project_id="p", api_key="k")
    connect.reset()
    with pytest.raises(UnconfiguredError):
        connect.push("c", {"a": 1})


def test_configuration_defaults_and_alias():
    c = Configuration()
    assert (c.api_key, c.project_id, c.mode, c.base_url) == ("", "", "sync", "https://api.getconnect.io")
    c.async_ = True
    assert c.mode == "async" and c.async_ is True
    assert Configuration(async_=True).mode == "async"
    cfg = connect.configure(lambda conf: setattr(conf, "project_id", "x"), api_key="y", async_=True)
    assert (cfg.project_id, cfg.api_key, cfg.mode) == ("x", "y", "async")
    with pytest.raises(TypeError):
        connect.configure(nonsense=1)
    with pytest.raises(ValueError):
        connect.configure(mode="eventmachine")


def test_sync_single_list_and_batch_against_hub(hub, use_core, coll):
    connect.configure(lambda c: _conf(c, hub.base))
    other = coll + "-o"
    r = connect.push(coll, {"product": "Something", "cost": 2.01})
    assert isinstance(r, EventPushResponse)
    assert r.http_status_code == "200" and r.success is True
    # the hub types its empty 200 as JSON, so the event as sent is merged into data (spec §4.4)
    assert r.data["event"]["product"] == "Something" and list(r.data["event"])[:2] == ["id", "timestamp"]
    r2 = connect.push(coll, [{"name": "Something 1", "cost": 2.01}, {"name": "Something 2", "cost": 4.02}])
    assert r2.http_status_code == "200" and r2.success
    assert [item["success"] for item in r2.data[coll]] == [True, True]
    assert [item["event"]["name"] for item in r2.data[coll]] == ["Something 1", "Something 2"]
    r3 = connect.push({coll: [{"name": "Something 3"}], other: [{"name": "x"}, {"name": "y"}]})
    assert r3.success and len(r3.data[other]) == 2 and r3.data[other][1]["event"]["name"] == "y"
    stored = hub.events(coll)
    assert [e.get("name", e.get("product")) for e in stored] == ["Something", "Something 1", "Something 2",
                                                                  "Something 3"]
    assert list(stored[0])[:2] == ["id", "timestamp"]  # Ruby order: id and timestamp first


def test_integers_beyond_64_bits_sent_exactly(hub, use_core, coll):
    """The gem's JSON writes Bignums with all their digits; so does eventpush (orjson alone refuses them)."""
    n, neg, m = 2**64 + 1, -(10**30) - 1, 10**20 + 1  # none is a float exactly
    connect.configure(lambda c: _conf(c, hub.base))
    r = connect.push(coll, {"n": n, "l": [neg]})
    assert r.success and r.data["event"]["n"] == n and r.data["event"]["l"] == [neg]
    r2 = connect.push(coll, [{"m": m}])
    assert r2.success and r2.data[coll][0]["event"]["m"] == m
    status, body = hub.request("GET", f"/connect/events/{coll}?limit=10",
                               headers={"X-Project-Id": PROJECT, "X-Api-Key": KEY})
    assert status == 200
    stored = list(reversed(json.loads(body)["results"]))
    assert [(e.get("n"), e.get("l"), e.get("m")) for e in stored] == [(n, [neg], None), (None, None, m)]


@pytest.mark.parametrize("mode", ["sync", "async", "await"])
def test_empty_batches_are_posted_like_the_gem(hub, use_core, coll, mode):
    """push("c", []), push({"c": []}) and push({}) post the batch as it is and answer the server's reply."""
    connect.configure(lambda c: _conf(c, hub.base, mode))
    calls = [lambda: connect.push(coll, []), lambda: connect.push({coll: [], coll + "-b": []}),
             lambda: connect.push({})]
    expected = [{coll: []}, {coll: [], coll + "-b": []}, {}]
    for call, data in zip(calls, expected):
        out = call()
        if mode == "async":
            got, errors = [], []
            done = threading.Event()
            out.response_received(lambda r: (got.append(r), done.set())).error_occured(
                lambda e: (errors.append(e), done.set()))
            assert done.wait(10) and not errors
            (r,) = got
        elif mode == "await":
            r = asyncio.run(_await(out))
        else:
            r = out
        assert r.http_status_code == "200" and r.success is True and r.data == data
    assert hub.events(coll) == []


async def _await(aw):
    return await aw


def test_ruby_event_processing(use_core, recorder):
    connect.configure(lambda c: _conf(c, recorder.base))
    when = dt.datetime(2015, 7, 1, 4, 7, 57, 123456)
    connect.push("c", {"a": 1, "when": when, "day": dt.date(2015, 7, 1), "lst": [{"w": when}],
                       "http_status": 1, "setup_x": 2, "nested": {"tp_ok": 1}})
    connect.push("c", {"timestamp": "2015-01-01T00:00:00Z", "id": "mine", "z": 1})
    first, second = [r.json() for r in recorder.requests]
    assert list(first)[:2] == ["id", "timestamp"]
    assert first["when"] == "2015-07-01T04:07:57Z" and first["day"] == "2015-07-01T00:00:00Z"
    assert first["lst"] == [{"w": "2015-07-01T04:07:57Z"}]
    assert len(first["timestamp"]) == 20 and first["timestamp"].endswith("Z")
    assert second == {"id": "mine", "timestamp": "2015-01-01T00:00:00Z", "z": 1}
    req = recorder.requests[0]
    assert req.path == "/api/events/c"  # the base URL's path is honoured
    assert req.headers["accept"] == "application/json" and req.headers["content-type"] == "application/json"
    assert req.headers["x-project-id"] == PROJECT and req.headers["x-api-key"] == KEY


@pytest.mark.parametrize("mode", ["sync", "async", "await"])
def test_validation_raised_before_io_in_every_mode(use_core, recorder, mode):
    connect.configure(lambda c: _conf(c, recorder.base, mode))
    with pytest.raises(EventDataValidationError) as ei:
        connect.push("c", {"tp_a": 1, "TP_b": 2, "ok": 3})
    assert str(ei.value) == "The following properties use the reserved prefix tp_:\n->tp_a\n->TP_b"
    with pytest.raises(EventDataValidationError) as ei:
        connect.push({"c": [{"fine": 1}, {"tp_x": 1}]})
    assert ei.value.index == 1 and ei.value.collection == "c"
    with pytest.raises(EventTypeError):
        connect.push("c", [1])
    with pytest.raises(EventTypeError):
        connect.push({"c": {"not": "a list"}})
    with pytest.raises(EventTypeError):
        connect.push("c", {"x": object()})
    with pytest.raises(EventTooLargeError):
        connect.push("c", {"x": "a" * 70000})
    with pytest.raises(TypeError):
        connect.push(42, {"a": 1})
    assert recorder.requests == []


def test_dispatch_rule(use_core, recorder):
    recorder.default = (200, {"Content-Type": "application/json"}, b"{}")
    connect.configure(lambda c: _conf(c, recorder.base))
    connect.push("c", {"a": 1})
    connect.push("c", [{"a": 1}])
    connect.push({"c": [{"a": 1}], "d": [{"b": 2}]})
    paths = [r.path for r in recorder.requests]
    assert paths == ["/api/events/c", "/api/events", "/api/events"]
    assert list(recorder.requests[1].json()) == ["c"] and list(recorder.requests[2].json()) == ["c", "d"]


def test_event_push_response_statuses_and_bodies(use_core, recorder):
    connect.configure(lambda c: _conf(c, recorder.base), retry=Retry.NONE)
    recorder.reply(201, b"", "application/json; charset=utf-8")
    recorder.reply(500, {"errorMessage": "something went wrong"})
    recorder.reply(500, b"<html></html>", "text/html")
    recorder.reply(200, b"", None)  # no Content-Type: not JSON
    recorder.reply(413, {"errorMessage": "Maximum event size of 64kb exceeded."})
    recorder.reply(422, {"errors": [{"field": "a", "description": "b"}]})
    r201 = connect.push("c", {"a": 1})
    assert (r201.http_status_code, r201.success) == ("201", True)
    assert r201.data["event"] == recorder.requests[0].json()
    r500 = connect.push("c", {"a": 1})
    assert (r500.success, r500.data["errorMessage"]) == (False, "something went wrong")
    assert r500.data["event"]["a"] == 1
    html = connect.push("c", {"a": 1})
    assert (html.http_status_code, html.data) == ("500", "<html></html>")
    bare = connect.push("c", {"a": 1})
    assert (bare.http_status_code, bare.success, bare.data) == ("200", True, "")
    r413 = connect.push("c", {"a": 1})
    assert (r413.http_status_code, r413.success) == ("413", False)
    assert r413.data["errorMessage"] == "Maximum event size of 64kb exceeded."
    r422 = connect.push("c", {"a": 1})
    assert r422.data["errors"][0]["field"] == "a" and not r422.success
    assert "Status: 422" in str(r422) and "Successful: False" in str(r422)


def test_sync_401_409_from_hub_and_transport_error(hub, use_core, coll):
    connect.configure(lambda c: _conf(c, hub.base))
    assert connect.push(coll, {"id": "same"}).success
    dup = connect.push(coll, {"id": "same"})
    assert (dup.http_status_code, dup.success, dup.duplicate) == ("409", False, True)
    b = connect.push(coll, [{"id": "same"}, {"id": "new"}])
    assert [i["duplicate"] for i in b.data[coll]] == [True, False]
    connect.configure(project_id=PROJECT, api_key="bad", base_url=hub.base)
    r = connect.push(coll, {"a": 1})
    assert (r.http_status_code, r.success) == ("401", False)
    assert r.data["errorMessage"] == "Unauthorised. Please check your Project Id and API Key"
    connect.configure(project_id=PROJECT, api_key=KEY, base_url="http://127.0.0.1:9", retry=FAST_RETRY)
    with pytest.raises(ConnectError):
        connect.push(coll, {"a": 1})


def test_async_callbacks_chaining_and_non_2xx(hub, use_core, coll, monkeypatch):
    connect.configure(lambda c: _conf(c, hub.base, "async"))
    got, errs, threads = [], [], []
    done = threading.Event()
    release = threading.Event()  # the first request is held until its callbacks are attached (else they run at once)
    real_post = Transport.post

    def held_post(self, *a, **kw):
        release.wait(10)
        return real_post(self, *a, **kw)

    monkeypatch.setattr(Transport, "post", held_post)

    def on_response(resp):
        got.append(resp)
        threads.append(threading.current_thread().name)
        done.set()

    d = connect.push(coll, {"name": "Something", "cost": 2.01}).response_received(on_response).error_occured(
        errs.append)
    assert isinstance(d, DeferredResponse)
    assert not d.done
    release.set()
    assert done.wait(10)
    assert len(got) == 1 and got[0].success and not errs
    assert threads[0] != threading.current_thread().name  # the sender thread
    # added after completion: runs at once, exactly once
    late = []
    d.response_received(late.append)
    assert late == got
    # non-2xx still goes to response_received
    assert connect.push(coll, {"id": "a-dup"}).wait(10).success
    d2 = connect.push(coll, {"id": "a-dup"})
    seen = []
    d2.response_received(seen.append).error_occurred(errs.append)
    r = d2.wait(10)
    assert r.http_status_code == "409" and not r.success
    assert seen == [r] and not errs


def test_async_transport_error_goes_to_error_occured(use_core):
    connect.configure(project_id="p", api_key="k", base_url="http://127.0.0.1:9", mode="async",
                      retry=FAST_RETRY)
    errs, got = [], []
    ev = threading.Event()
    d = connect.push("c", {"a": 1}).response_received(got.append).error_occured(
        lambda e: (errs.append(e), ev.set()))
    assert ev.wait(10)
    assert not got and isinstance(errs[0], ConnectError)
    with pytest.raises(ConnectError):
        d.wait(1)
    again = []
    d.errback(again.append)
    assert again == errs


def test_await_mode(hub, use_core, coll):
    connect.configure(lambda c: _conf(c, hub.base, "await"))

    async def main():
        r = await connect.push(coll, {"name": "Something", "cost": 2.01})
        rs = await asyncio.gather(*(connect.push(coll, [{"i": i}, {"i": -i}]) for i in range(10)))
        return r, rs

    aw = connect.push(coll, {"pre": True})
    assert isinstance(aw, AwaitableResponse)
    r, rs = asyncio.run(main())
    assert r.success and r.http_status_code == "200" and all(x.success for x in rs)
    assert aw.result(10).success
    assert len(hub.events(coll)) == 22


def test_await_transport_error_raises(use_core):
    connect.configure(project_id="p", api_key="k", base_url="http://127.0.0.1:9", mode="await",
                      retry=FAST_RETRY)

    async def main():
        await connect.push("c", {"a": 1})

    with pytest.raises(ConnectError):
        asyncio.run(main())


def test_reconfigure_finishes_inflight_sends(hub, use_core, coll):
    connect.configure(lambda c: _conf(c, hub.base, "async"))
    ds = [connect.push(coll, {"i": i}) for i in range(200)]
    connect.configure(lambda c: _conf(c, hub.base, "sync"))  # replaces the async client
    assert all(d.done for d in ds)
    assert all(d.wait(0).success for d in ds)
    assert len(hub.events(coll)) == 200
    assert connect.push(coll, {"after": 1}).success


def test_closed_client_raises(hub, use_core):
    from eventpush.connect.ruby import _Client

    c = _Client(Configuration(project_id=PROJECT, api_key=KEY, base_url=hub.base, mode="async"))
    c.close()
    with pytest.raises(ClosedError):
        c.push("c", {"a": 1})


def test_split_batch_merged(hub, use_core, coll):
    connect.configure(lambda c: _conf(c, hub.base))
    r = connect.push(coll, [{"i": i} for i in range(5003)])
    assert r.success and r.http_status_code == "200"
    assert [item["event"]["i"] for item in r.data[coll]] == list(range(5003))
    assert len(hub.events(coll)) == 5003


def test_batch_duplicate_after_retry_is_success(use_core, recorder):
    recorder.reply(503, b"", None)
    recorder.reply(200, {"c": [{"success": False, "duplicate": True, "message": "dup"}]})
    recorder.reply(502, b"", None)
    recorder.reply(409, {"errorMessage": "dup"})
    connect.configure(lambda c: _conf(c, recorder.base), retry=FAST_RETRY)
    b = connect.push("c", [{"a": 1}])
    assert b.data["c"][0]["success"] is True and b.data["c"][0]["duplicate"] is True
    s = connect.push("c", {"a": 1})
    assert s.success and s.http_status_code == "409" and s.attempts == 2


def test_event_push_response_constructor_and_pickle():
    import pickle

    ev = {"name": "test"}
    r = EventPushResponse(201, "application/json; charset=utf-8", "", ev)
    assert r.success and r.data["event"] is ev
    b = EventPushResponse(200, "application/json", '{"collectionName":[{"duplicate":true}]}',
                          {"collectionName": [ev]}, batch=True)
    assert b.data["collectionName"][0]["duplicate"] is True and b.data["collectionName"][0]["event"] is ev
    t = EventPushResponse(500, "text/html", "<html><html>", ev)
    assert (t.data, t.http_status_code, t.success) == ("<html><html>", "500", False)
    r2 = pickle.loads(pickle.dumps(b))
    assert r2.data == orjson.loads(orjson.dumps(b.data)) and r2.http_status_code == "200"


def test_400_from_hub_for_reserved_id(hub, use_core, coll):
    connect.configure(lambda c: _conf(c, hub.base))
    r = connect.push(coll, {"_id": 1})  # the gem does not check _id; the server does
    assert (r.http_status_code, r.success) == ("400", False)
    assert r.data["errorMessage"] == "Property name _id is reserved and cannot be set."
    assert r.data["event"]["_id"] == 1


def test_async_concurrency_every_callback_once(hub, use_core, coll):
    connect.configure(lambda c: _conf(c, hub.base, "async"), max_workers=4)
    n_threads, per_thread = 4, 300
    lock = threading.Lock()
    got, errs, deferreds = [], [], []

    def on_response(resp):
        with lock:
            got.append(resp)

    def work(t):
        for i in range(per_thread):
            if i % 3 == 0:
                d = connect.push(coll, [{"t": t, "i": i}])
            else:
                d = connect.push(coll, {"t": t, "i": i})
            d.response_received(on_response).error_occured(errs.append)
            with lock:
                deferreds.append(d)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in deferreds:
        d.wait(30)
    assert not errs and len(got) == n_threads * per_thread == len(deferreds)
    assert all(r.success for r in got)
    stored = hub.events(coll)
    assert len(stored) == n_threads * per_thread and len({e["id"] for e in stored}) == len(stored)


def test_buffered_mode_delivers_everything_and_returns_at_once(hub, use_core, coll, tmp_path):
    connect.configure(project_id=PROJECT, api_key=KEY, base_url=hub.base, mode="buffered",
                      buffer={"interval": 0.05, "spool_dir": str(tmp_path / "spool")})
    other = coll + "-o"
    assert connect.push(coll, {"n": 0}) is None
    assert connect.push(coll, [{"n": i} for i in range(1, 1000)]) is None
    assert connect.push({coll: [{"n": 1000}], other: [{"n": -1}, {"n": -2}]}) is None
    assert connect.flush(30) is True
    stored = hub.events(coll)
    assert sorted(e["n"] for e in stored) == list(range(1001))
    assert all(list(e)[:2] == ["id", "timestamp"] for e in stored)  # the Ruby rules, as in the other modes
    assert sorted(e["n"] for e in hub.events(other)) == [-2, -1]
    connect.reset()


def test_buffered_mode_bad_event_raises_at_the_call_site_and_costs_nothing_else(hub, use_core, coll, tmp_path):
    connect.configure(project_id=PROJECT, api_key=KEY, base_url=hub.base, mode="buffered",
                      buffer={"interval": 0.05, "spool_dir": str(tmp_path / "spool")})
    with pytest.raises(EventDataValidationError) as info:
        connect.push(coll, [{"n": 1}, {"tp_bad": 2}, {"n": 3}])
    assert info.value.index == 1
    with pytest.raises(EventDataValidationError):
        connect.push(coll, {"tp_x": 1})
    with pytest.raises(EventTypeError) as info:  # the same error as in the other modes
        connect.push({coll: {"n": 4}})
    assert info.value.collection == coll and str(info.value.message) == "Events must be a list of dict objects"
    assert connect.flush(30)
    assert sorted(e["n"] for e in hub.events(coll)) == [1, 3]
    connect.reset()


def test_buffered_mode_endpoint_down_spools_everything_on_reset(use_core, tmp_path):
    from eventpush.spool import Spool

    spool = tmp_path / "spool"
    connect.configure(project_id=PROJECT, api_key=KEY, base_url="http://127.0.0.1:9/connect", mode="buffered",
                      retry=FAST_RETRY, buffer={"interval": 0.05, "spool_dir": str(spool)})
    batcher = connect.ruby._client._batcher
    connect.push("c", [{"n": i} for i in range(500)])
    connect.reset()  # drains: delivered, rejected or spooled, never dropped
    st = batcher.stats
    assert st["delivered"] == 0 and st["spooled"] == 500 and st["dropped"] == 0
    with Spool(str(spool)) as sp:
        assert sp.pending()[1] == 500


# -- split pushes: results stay with their events (spec §1.5, §3.5) ----------------------------------------------

JSON = {"Content-Type": "application/json"}


def _all_stored_reply(req):
    return 200, JSON, orjson.dumps({c: [{"success": True}] * len(evs) for c, evs in req.json().items()})


@pytest.mark.parametrize("failing", [0, 1])
@pytest.mark.parametrize("reply", [
    (500, JSON, b'{"errorMessage":"An error occurred while processing your request"}'),
    (502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>"),
], ids=["500-errorMessage", "502-html"])
def test_split_push_part_failed_as_a_whole_keeps_results_aligned(use_core, recorder, failing, reply):
    # 6,100 events in two collections go out as 5,000 + 1,100; one part fails as a whole, the other is stored
    recorder.script = [reply if k == failing else _all_stored_reply for k in range(2)]
    connect.configure(lambda c: _conf(c, recorder.base), retry=Retry.NONE)
    r = connect.push({"c": [{"n": i} for i in range(6000)], "d": [{"m": j} for j in range(100)]})
    parts = [r_.json() for r_ in recorder.requests]
    assert [sum(map(len, p.values())) for p in parts] == [5000, 1100]
    assert r.http_status_code == str(reply[0]) and r.success is False
    for coll, key, total in (("c", "n", 6000), ("d", "m", 100)):
        items = r.data[coll]
        assert len(items) == total
        assert [it["event"][key] for it in items] == list(range(total))  # every result with its own event
    stored = {(coll, e.get("n", e.get("m"))) for k, p in enumerate(parts) if k != failing
              for coll, evs in p.items() for e in evs}
    failed_part = {(coll, e.get("n", e.get("m"))) for coll, evs in parts[failing].items() for e in evs}
    for coll, key in (("c", "n"), ("d", "m")):
        for it in r.data[coll]:
            where = (coll, it["event"][key])
            if where in stored:
                assert it["success"] is True
            else:
                assert where in failed_part and it["success"] is False and it["duplicate"] is False
                if reply[0] == 500:
                    assert it["message"] == "An error occurred while processing your request"
                else:
                    assert "502" in it["message"]
    if reply[0] == 500:  # the failed part's top-level error is kept, as in an unsplit reply
        assert r.data["errorMessage"] == "An error occurred while processing your request"


def test_split_push_short_result_list_is_padded(use_core, recorder):
    def short(req):  # a reply with one result too few for the first part
        return 200, JSON, orjson.dumps({"c": [{"success": True}] * (len(req.json()["c"]) - 1)})

    recorder.script = [short, _all_stored_reply]
    connect.configure(lambda c: _conf(c, recorder.base), retry=Retry.NONE)
    r = connect.push("c", [{"n": i} for i in range(5002)])
    items = r.data["c"]
    assert [it["event"]["n"] for it in items] == list(range(5002))
    assert items[4999]["success"] is False and all(it["success"] for k, it in enumerate(items) if k != 4999)


def test_split_push_duplicate_counts_as_stored_only_in_the_retried_part(use_core, recorder):
    def dup_first(req):
        doc = {"c": [{"success": True}] * len(req.json()["c"])}
        doc["c"][0] = {"success": False, "duplicate": True, "message": "Duplicate event"}
        return 200, JSON, orjson.dumps(doc)

    # part 1 answers at once (its duplicate is genuine); part 2 is retried after a 503 (its duplicate is ours)
    recorder.script = [dup_first, (503, JSON, b'{"errorMessage":"busy"}'), dup_first]
    connect.configure(lambda c: _conf(c, recorder.base), retry=FAST_RETRY)
    r = connect.push("c", [{"id": f"e{i}"} for i in range(6000)])
    assert len(recorder.requests) == 3 and r.http_status_code == "200"
    items = r.data["c"]
    assert [it["event"]["id"] for it in items] == [f"e{i}" for i in range(6000)]
    assert (items[0]["success"], items[0]["duplicate"]) == (False, True)  # never retried: not ours
    assert (items[5000]["success"], items[5000]["duplicate"]) == (True, True)  # after a retry: stored by us
    assert sum(it["success"] for it in items) == 5999


# -- replacing the client while pushes are under way (spec §4.1) ---------------------------------------------------

@pytest.mark.parametrize("replace", ["configure", "reset"])
def test_sync_replace_waits_for_the_push_in_flight(use_core, recorder, replace):
    arrived = threading.Event()

    def busy(req):  # a transient failure: the push waits for its retry while the client gets replaced
        arrived.set()
        return 503, {"Content-Type": "application/json", "Retry-After": "0.5"}, b'{"errorMessage":"busy"}'

    recorder.script = [busy]
    recorder.default = (200, JSON, b"")
    connect.configure(lambda c: _conf(c, recorder.base, "sync"))
    out = {}

    def pusher():
        try:
            out["r"] = connect.push("c", {"n": 1})
        except Exception as exc:  # recorded: the assertion below names it
            out["r"] = exc

    t = threading.Thread(target=pusher)
    t.start()
    assert arrived.wait(10)
    if replace == "configure":
        connect.configure(lambda c: _conf(c, recorder.base, "sync"))
    else:
        connect.reset()
    assert "r" in out  # the old client finished the push before it closed
    t.join(10)
    r = out["r"]
    assert isinstance(r, EventPushResponse), r
    assert (r.http_status_code, r.success, r.attempts) == ("200", True, 2)
    assert len(recorder.requests) == 2


@pytest.mark.parametrize("mode,replace", [("async", "configure"), ("sync", "configure"), ("await", "reset")])
def test_push_started_before_a_replace_goes_out_on_the_old_client(use_core, recorder, mode, replace):
    import collections.abc

    from eventpush.connect import ruby

    class Slow(collections.abc.Mapping):  # not a dict: push() copies it with dict(), which calls keys()
        def __init__(self, data, entered, release):
            self.data, self.entered, self.release = data, entered, release

        def __getitem__(self, k):
            return self.data[k]

        def __iter__(self):
            return iter(self.data)

        def __len__(self):
            return len(self.data)

        def keys(self):
            self.entered.set()
            assert self.release.wait(10)
            return self.data.keys()

    recorder.default = _all_stored_reply
    connect.configure(lambda c: _conf(c, recorder.base, mode))
    old = ruby._client
    entered, release = threading.Event(), threading.Event()
    out = {}

    def pusher():
        try:
            out["r"] = connect.push(Slow({"c": [{"n": 1}]}, entered, release))
        except Exception as exc:  # recorded: the assertion below names it
            out["r"] = exc

    t = threading.Thread(target=pusher)
    t.start()
    assert entered.wait(10)  # the push has its client and is encoding
    if replace == "configure":
        swap = threading.Thread(target=connect.configure, args=(lambda c: _conf(c, recorder.base, mode),))
    else:
        swap = threading.Thread(target=connect.reset)
    swap.start()
    for _ in range(1000):  # until close() of the old client began
        if old._closed:
            break
        time.sleep(0.01)
    assert old._closed and ruby._client is not old
    release.set()
    t.join(10)
    swap.join(10)
    r = out["r"]
    assert not isinstance(r, Exception), repr(r)
    r = r.wait(10) if mode == "async" else r.result(10) if mode == "await" else r
    assert r.success and [it["event"]["n"] for it in r.data["c"]] == [1]
    assert len(recorder.requests) == 1


def test_many_pushes_racing_configure_all_go_out(use_core, recorder):
    recorder.default = _all_stored_reply
    connect.configure(lambda c: _conf(c, recorder.base, "async"), max_workers=4)
    errors, deferreds = [], []
    lock = threading.Lock()

    def work():
        for i in range(80):
            try:
                d = connect.push("c", [{"i": i, "k": k} for k in range(400)])  # encoding takes a moment
            except Exception as exc:  # recorded: must stay empty
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    deferreds.append(d)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        connect.configure(lambda c: _conf(c, recorder.base, "async"), max_workers=4)
    for t in threads:
        t.join()
    assert errors == []
    assert len(deferreds) == 320 and all(d.wait(30).success for d in deferreds)
    assert sum(len(r.json()["c"]) for r in recorder.requests) == 320 * 400
