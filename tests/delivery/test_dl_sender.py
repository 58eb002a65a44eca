"""Sender: per-event results mapped back per reply kind, per-event re-sends, futures, asyncio."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

import eventpush
from eventpush import BARCHART, CONNECT, NDJSON
from eventpush.errors import ClosedError, ConnectError
from eventpush.replies import RETRY_ITEM_MESSAGE, map_reply
from eventpush.sender import BatchResult, Sender
from eventpush.replies import map_reply_lazy
from eventpush.transport import Retry, Transport

from dl_helpers import FAST_RETRY, free_port_local


def connect_batch(n, collections=("a", "b"), start=0):
    enc = eventpush.Encoder(CONNECT)
    for i in range(start, start + n):
        enc.add({"id": f"ev-{i}", "n": i}, collections[i % len(collections)], tag=i)
    return enc.seal()


def test_collections_reply_maps_back_in_body_order(server):
    batch = connect_batch(10)
    with Transport(server.url, retry=FAST_RETRY) as t, Sender(t, CONNECT) as s:
        res = s.send(batch).result(10)
    assert isinstance(res, BatchResult)
    assert res.ok and res.status == 200 and res.delivered == 10 and res.attempts == 1
    # body order groups by collection: a's first, then b's; tags say which input each came from
    assert [r.tag for r in res.results] == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    assert [r.collection for r in res.results] == ["a"] * 5 + ["b"] * 5
    assert res.data == {"a": [{"success": True}] * 5, "b": [{"success": True}] * 5}


def test_retryable_items_are_resent_alone_from_their_bytes(make_server):
    s = make_server("collections", item_retry_rate=0.3, seed=7)
    batch = connect_batch(200)
    with Transport(s.url, retry=FAST_RETRY.replace(attempts=10)) as t, Sender(t, CONNECT) as snd:
        res = snd.deliver(batch)
    assert res.ok, res
    assert s.injected["item_retry"] > 10
    assert res.retried >= s.injected["item_retry"]
    # every re-send carried only the events that had failed
    sizes = [e["events"] for e in s.log]
    assert sizes[0] == 200 and all(n < 200 for n in sizes[1:])
    assert s.ids() == {f"ev-{i}" for i in range(200)}
    assert s.duplicates == 0


def test_duplicate_after_a_retry_counts_as_delivered(make_server):
    # the first answer is a 500 after the events were stored: the retry meets duplicates
    s = make_server("collections", error_rate=1.0, statuses=(500,), store_on_error=1.0)
    batch = connect_batch(5)
    with Transport(s.url, retry=FAST_RETRY) as t, Sender(t, CONNECT) as snd:
        fut = snd.send(batch)
        s.faults.error_rate = 0.0  # may race with the first request: then it simply succeeds later
        res = fut.result(10)
    assert res.ok and res.delivered == 5
    if res.attempts > 1:
        assert res.duplicates == 5 and all(r.duplicate and r.ok for r in res.results)
        assert res.retried == 5 * (res.attempts - 1)


def test_duplicate_without_a_retry_is_not_ok(server):
    batch = connect_batch(3)
    with Transport(server.url) as t, Sender(t, CONNECT) as snd:
        assert snd.deliver(batch).ok
        again = snd.deliver(batch)
        replayed = snd.deliver(batch, resent=True)
    assert again.duplicates == 3 and again.delivered == 0 and not again.results[0].retryable
    assert replayed.ok and replayed.duplicates == 3


def test_rejected_items_are_never_resent(make_server):
    s = make_server("collections", reject_key="bad")
    enc = eventpush.Encoder(CONNECT)
    enc.add({"id": "g1"}, "c", tag="good")
    enc.add({"id": "b1", "bad": True}, "c", tag="bad")
    batch = enc.seal()
    with Transport(s.url, retry=FAST_RETRY) as t, Sender(t, CONNECT) as snd:
        res = snd.deliver(batch)
    good, bad = res.results
    assert good.ok and not bad.ok and bad.rejected and "not allowed" in bad.message
    assert res.rejected == 1 and len(s.log) == 1


def test_garbage_reply_resends_the_batch(make_server):
    s = make_server("collections", garbage_rate=1.0, seed=3)
    batch = connect_batch(20)
    with Transport(s.url, retry=FAST_RETRY) as t, Sender(t, CONNECT) as snd:
        fut = snd.send(batch)
        res = None
        try:
            res = fut.result(10)
        except ConnectError:
            pass  # the non-HTTP garbage variant every time: a transport error after the retries
    assert s.unique == 20  # the events got there in any case (stored before the garbage)
    if res is not None:
        assert not res.ok and res.retryable == 20


def test_created_reply_gives_each_event_its_created_item(make_server):
    s = make_server("created")
    enc = eventpush.Encoder(NDJSON)
    for i in range(3):
        enc.add({"k": i})
    batch = enc.seal()
    from eventpush.dialects import Dialect

    created_ndjson = Dialect(name="ndjson", rules="none", framing="ndjson", reply="created",
                             content_type="application/x-ndjson", batch_path="/events")
    with Transport(s.url) as t, Sender(t, created_ndjson) as snd:
        res = snd.deliver(batch)
    assert res.ok
    assert [r.data["sequence"] for r in res.results] == [0, 1, 2]
    assert len({r.data["batch"] for r in res.results}) == 1


def test_created_reply_counts_before_and_after_the_results_are_built(make_server):
    # a 2xx "created" reply is not mapped event by event until someone reads .results: the counters must not
    # need them, and the results built later must carry the created events all the same
    s = make_server("created")
    enc = eventpush.Encoder(BARCHART)
    for i in range(4):
        enc.add({"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-ACCESSED",
                 "timestamp": 1599482731026 + i, "context": ["u", str(i)]})
    with Transport(s.url) as t, Sender(t, BARCHART) as snd:
        res = snd.deliver(enc.seal())
    assert res.ok and res.delivered == 4 and res.rejected == res.retryable == 0 and res.failures() == []
    assert [item["sequence"] for item in res.data] == [0, 1, 2, 3]
    assert [r.data for r in res.results] == res.data and all(r.ok for r in res.results)


def test_http_errors_are_results_not_exceptions(make_server):
    s = make_server("collections", error_rate=1.0, statuses=(500,), store_on_error=0.0)
    with Transport(s.url, retry=FAST_RETRY.replace(attempts=2)) as t, Sender(t, CONNECT) as snd:
        res = snd.send(connect_batch(4)).result(10)
    assert res.status == 500 and res.retryable == 4 and res.delivered == 0 and res.attempts == 2
    assert res.results[0].message == "An error occurred while processing your request"


def test_transport_errors_are_the_futures_exception():
    with Transport(f"http://127.0.0.1:{free_port_local()}", retry=FAST_RETRY.replace(attempts=2)) as t:
        with Sender(t, CONNECT) as snd:
            fut = snd.send(connect_batch(2))
            with pytest.raises(ConnectError):
                fut.result(10)


def test_await_through_wrap_future(server):
    async def main():
        with Transport(server.url) as t, Sender(t, CONNECT, concurrency=2) as snd:
            futs = [asyncio.wrap_future(snd.send(connect_batch(10, start=k * 10))) for k in range(8)]
            return await asyncio.gather(*futs)

    results = asyncio.run(main())
    assert all(r.ok for r in results) and server.unique == 80


def test_send_body_single_event_and_409(server):
    body = orjson.dumps({"id": "one", "x": 1})
    with Transport(server.url) as t, Sender(t, CONNECT) as snd:
        r1 = snd.send_body("/events/things", body).result(10)
        r2 = snd.send_body("/events/things", body).result(10)
    assert r1.status == 200 and r1.data == b""
    assert r2.status == 409
    assert server.unique == 1


def test_map_reply_status_kinds():
    batch = connect_batch(2)
    results, _ = map_reply(CONNECT, batch, 409, b"", resent=True)
    assert all(r.ok and r.duplicate for r in results)
    results, _ = map_reply(CONNECT, batch, 422, orjson.dumps({"errors": [{"field": "x", "description": "bad"}]}))
    assert all(r.rejected and r.message == "x: bad" for r in results)
    results, _ = map_reply(CONNECT, batch, 429, b"")
    assert all(r.retryable for r in results)
    mixed = orjson.dumps({"a": [{"success": False, "message": RETRY_ITEM_MESSAGE}], "b": [{"success": True}]})
    results, doc = map_reply(CONNECT, batch, 200, mixed)
    assert results[0].retryable and results[1].ok and doc["b"] == [{"success": True}]
    results, _ = map_reply(CONNECT, batch, 200, b'{"a":[]}')
    assert all(r.retryable for r in results)


def test_closed_sender_refuses_work(server):
    with Transport(server.url) as t:
        snd = Sender(t, CONNECT)
        snd.close()
        with pytest.raises(ClosedError):
            snd.send(connect_batch(1))


def test_gzip_only_where_the_dialect_allows_it(make_server):
    s = make_server("status")
    c = make_server("collections")
    enc = eventpush.Encoder(NDJSON)
    for i in range(50):
        enc.add({"id": str(i), "text": "repeated words " * 4})
    batch = enc.seal()
    with Transport(s.url, gzip=True) as t, Sender(t, NDJSON) as snd:
        assert snd.deliver(batch).ok
    with Transport(c.url, gzip=True) as t, Sender(t, CONNECT) as snd:  # spec/connect.md §1.5: never compressed
        assert snd.deliver(connect_batch(3)).ok
    [first] = list(s.log)
    [second] = list(c.log)
    assert first["headers"]["content-encoding"] == "gzip" and first["headers"]["content-type"] == "application/x-ndjson"
    assert "content-encoding" not in second["headers"]
    assert s.unique == 50 and c.unique == 3


def test_a_send_waiting_for_a_slot_when_close_begins_raises_closed_error(make_server):
    """Every Future resolves: a send() blocked by backpressure while close() runs is refused, not queued behind
    the workers' stop markers (where no worker would ever run it)."""
    import threading

    s = make_server("collections", slow_rate=1.0, slow_delay=0.5)
    t = Transport(s.url, retry=Retry.NONE)
    sender = Sender(t, CONNECT, concurrency=1, max_in_flight=1)
    try:
        first = sender.send(connect_batch(1, ("c",)))  # takes the only slot for 0.5 s
        out = {}

        def second():
            try:
                out["future"] = sender.send(connect_batch(1, ("c",), start=1))
            except ClosedError as exc:
                out["error"] = exc

        th = threading.Thread(target=second)
        th.start()
        time.sleep(0.1)  # the second send waits for the slot
        sender.close()
        th.join(10)
        assert first.result(10).delivered == 1
        assert "error" in out or out["future"].result(10) is not None
    finally:
        t.close()


def test_a_success_that_is_not_true_reads_the_same_on_every_path():
    """{"success": 1} equals {"success": true} for Python's ==: the all-success shortcut must not read it as
    success when the per-event mapping (retries) does not."""
    b = connect_batch(2, ("a",))
    body = b'{"a":[{"success":1},{"success":1.0}]}'
    results, _doc, uniform = map_reply_lazy(CONNECT, b, 200, body)
    assert uniform is None
    assert [r.ok for r in results] == [r.ok for r in map_reply(CONNECT, b, 200, body)[0]] == [False, False]
    ok = b'{"a":[{"success":true}, {"success":true}]}'  # (not the compact bytes: the parsed shortcut)
    assert map_reply_lazy(CONNECT, b, 200, ok)[2] == {"ok": True, "status": 200}


@pytest.mark.parametrize("item", [b'{"success":true}', b'{"success":true,"duplicate":false}'])
@pytest.mark.parametrize("spaced", [False, True])
def test_all_success_replies_as_connect_and_the_hub_write_them_need_no_result_objects(item, spaced):
    """Connect's docs write a batch item ``{"success": true}``, the hub (and the spec) adds ``"duplicate": false``:
    both, compact (one byte comparison) or not (parsed), are one uniform outcome; anything else is mapped per
    event, and says so."""
    b = connect_batch(5, ("a", "b", "é"))
    sep = b", " if spaced else b","
    body = b"{" + sep.join(orjson.dumps(c) + b":[" + sep.join([item] * (stop - start)) + b"]"
                           for c, start, stop in b.groups()) + b"}"
    assert map_reply_lazy(CONNECT, b, 200, body) == (None, None if not spaced else orjson.loads(body),
                                                     {"ok": True, "status": 200})
    # one item a duplicate: per-event results
    bad = body.replace(item, b'{"success":false,"duplicate":true,"message":"dup"}', 1)
    results, _doc, uniform = map_reply_lazy(CONNECT, b, 200, bad)
    assert uniform is None and [r.duplicate for r in results] == [True] + [False] * (b.count - 1)
    assert [r.ok for r in results] == [False] + [True] * (b.count - 1)
