"""The Dispatcher served by uvicorn on 127.0.0.1: long-poll, publishing, consumer ids, channels, CORS, bad input
(spec §4, §5, §7, checklist §11)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import requests

from eventpush.realtime import Dispatcher, EmbeddedBackend, Producer, TestBackend, configure


def poll(url, timeout=10, **kw):
    return requests.get(url, timeout=timeout, **kw)


def wait_queue(backend, name, timeout=5.0):
    deadline = time.monotonic() + timeout
    while name not in backend.queue_names():
        assert time.monotonic() < deadline, f"queue {name} never appeared: {backend.queue_names()}"
        time.sleep(0.01)


def wait_subscribed(backend, name, timeout=5.0):
    """Until a request holds a subscription on queue ``name`` (so a publish now reaches it)."""
    deadline = time.monotonic() + timeout
    while True:
        q = backend._queues.get(name)
        if q is not None and q.subs > 0:
            return
        assert time.monotonic() < deadline, f"no subscription on {name}"
        time.sleep(0.005)


def test_seed_demo_same_channel(serve):
    """The seed README, fixed to use one channel: a curl-like long-poll, then the producer line as written."""
    configure()  # process defaults: the embedded broker, shared by Dispatcher() and Producer()
    srv = serve(Dispatcher())
    result = {}

    def curl():
        result["r"] = poll(srv.url + "/greetings", timeout=40)

    t = threading.Thread(target=curl)
    t.start()
    from eventpush.realtime import default_backend

    deadline = time.monotonic() + 5
    while not any(n.endswith("@/greetings") for n in default_backend().queue_names()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    Producer().publish("hi there!").to("/greetings")
    t.join(10)
    r = result["r"]
    assert r.status_code == 200 and r.content == b"hi there!"


def test_long_poll_200_raw_body_byte_length_no_content_type(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, timeout=5))
    msg = "héllo ☃ wörld\n{\"a\": 1}".encode("utf-8")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", poll(srv.url + "/chan", headers={"Consumer-Id": "c1"})))
    t.start()
    wait_subscribed(b, "c1@/chan")
    b.publish(msg, "/chan")
    t.join(10)
    r = out["r"]
    assert r.status_code == 200
    assert r.content == msg  # byte for byte, no framing
    assert r.headers["Content-Length"] == str(len(msg)) != str(len(msg.decode()))
    assert "Content-Type" not in r.headers


def test_timeout_gives_204_empty(serve):
    srv = serve(Dispatcher(backend=EmbeddedBackend(), timeout=0.3))
    t0 = time.monotonic()
    r = poll(srv.url + "/quiet", headers={"Consumer-Id": "c"})
    assert r.status_code == 204 and r.content == b"" and "Content-Type" not in r.headers
    assert time.monotonic() - t0 >= 0.25
    # no timeout of its own: the process configuration's long_poll.timeout, 30 s by default
    assert Dispatcher().config.timeout is None and Dispatcher().long_poll_timeout == 30


def timed_poll(url, consumer):
    """A long-poll with a generous client timeout (the server's default would be 30 s); → (response, seconds)."""
    t0 = time.monotonic()
    r = poll(url, timeout=20, headers={"Consumer-Id": consumer})
    return r, time.monotonic() - t0


def test_long_poll_timeout_from_the_process_configuration(serve, restore_push_config):
    """``long_poll.timeout`` of ``configure()`` is the server's poll timeout (spec §8, §11) for a Dispatcher that
    sets none; it is read as each long-poll starts; an explicit ``timeout`` wins."""
    from eventpush.realtime import Configuration
    from eventpush.realtime.hub_integration import HubPush

    configure({"long_poll": {"timeout": 0.5}})
    b = EmbeddedBackend()
    d = Dispatcher(backend=b)
    srv = serve(d)
    r, took = timed_poll(srv.url + "/quiet-cfg", "c")
    assert r.status_code == 204 and r.content == b"" and "Content-Type" not in r.headers
    assert 0.4 <= took < 10, took  # the configured 0.5 s, well before the 30 s default
    assert d.config.timeout is None and d.long_poll_timeout == 0.5
    assert "timeout=None" in repr(d.config)
    assert HubPush(EmbeddedBackend()).app.long_poll_timeout == 0.5  # the hub's /push mount sets none either

    # a later configure() applies to the running server, from its next long-poll on
    configure(Configuration.from_hash({"long_poll": {"timeout": 2}}))
    r, took = timed_poll(srv.url + "/quiet-cfg", "c")
    assert r.status_code == 204 and r.content == b""
    assert 1.8 <= took < 10, took

    # an explicit timeout (keyword, or set in the configure callback) wins over the configuration's 60 s
    configure({"long_poll": {"timeout": 60}})
    explicit = serve(Dispatcher(backend=b, timeout=0.3))
    in_callback = serve(Dispatcher(lambda c: setattr(c, "timeout", 0.3), backend=b))
    for s in (explicit, in_callback):
        r, took = timed_poll(s.url + "/quiet-explicit", "e")
        assert r.status_code == 204 and r.content == b""
        assert took < 10, took
    # and a message still ends a configured long-poll at once
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", timed_poll(srv.url + "/loud-cfg", "m")))
    t.start()
    wait_subscribed(b, "m@/loud-cfg")
    b.publish(b"not a timeout", "/loud-cfg")
    t.join(15)
    r, took = got["r"]
    assert r.status_code == 200 and r.content == b"not a timeout" and took < 10


def test_messages_between_polls_arrive_in_order_one_per_response(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, timeout=0.5))
    h = {"Consumer-Id": "me"}
    assert poll(srv.url + "/news", headers=h).status_code == 204  # creates the queue
    for i in range(5):
        b.publish(b"n%d" % i, "/news")  # published between two polls
    got = [poll(srv.url + "/news", headers=h).content for _ in range(5)]
    assert got == [b"n0", b"n1", b"n2", b"n3", b"n4"]
    assert poll(srv.url + "/news", headers=h).status_code == 204


def test_consumer_id_header_then_cid_then_sid_else_random(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, timeout=0.05))
    poll(srv.url + "/ids", headers={"Consumer-Id": "hdr"}, params={"cid": "q1"})
    poll(srv.url + "/ids", params={"cid": "q1", "sid": "s1"})
    poll(srv.url + "/ids", params={"sid": "s1"})
    assert {"hdr@/ids", "q1@/ids", "s1@/ids"} <= set(b.queue_names())
    before = set(b.queue_names())
    poll(srv.url + "/ids")
    poll(srv.url + "/ids")
    fresh = set(b.queue_names()) - before
    assert len(fresh) == 2  # a new id — and a new queue — per request, as the original
    for name in fresh:
        secs, rnd = name.split("@")[0].split("-")
        assert abs(int(secs) - time.time()) < 60 and 0 <= int(rnd) < 0xFFFFFFFFFFFF
    # so without an id nothing carries over between polls
    b.publish(b"lost", "/ids")
    assert poll(srv.url + "/ids").status_code == 204


def test_custom_extraction_callables(serve):
    b = EmbeddedBackend()

    def conf(config):
        config.consumer = lambda scope: dict(scope["headers"]).get(b"x-user", b"anon").decode()
        config.channel = lambda scope: "/rooms/" + scope["query_string"].decode().split("=")[1]
        config.timeout = 0.05

    srv = serve(Dispatcher(conf, backend=b))
    poll(srv.url + "/ignored", params={"room": "7"}, headers={"X-User": "bob"})
    assert b.queue_names() == ["bob@/rooms/7"]
    with pytest.raises(AttributeError, match="colour"):
        Dispatcher(lambda c: setattr(c, "colour", 1))
    with pytest.raises(TypeError):
        Dispatcher(colour=1)


def test_disconnect_deletes_subscription_queue_kept(serve):
    b = EmbeddedBackend(queue_ttl=30)
    srv = serve(Dispatcher(backend=b, timeout=20))
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /d HTTP/1.1\r\nHost: x\r\nConsumer-Id: gone\r\n\r\n")
    wait_subscribed(b, "gone@/d")
    s.close()  # the client goes away mid-poll
    deadline = time.monotonic() + 5
    while b._queues["gone@/d"].subs:
        assert time.monotonic() < deadline, "subscription not deleted on disconnect"
        time.sleep(0.01)
    b.publish(b"for later", "/d")  # the queue is still there and keeps it
    r = poll(srv.url + "/d", headers={"Consumer-Id": "gone"})
    assert r.status_code == 200 and r.content == b"for later"


def test_queue_ttl_expiry_over_http(serve):
    b = EmbeddedBackend(queue_ttl=0.3)
    srv = serve(Dispatcher(backend=b, timeout=0.05))
    h = {"Consumer-Id": "t"}
    poll(srv.url + "/ttl", headers=h)
    b.publish(b"within", "/ttl")
    assert poll(srv.url + "/ttl", headers=h).content == b"within"
    time.sleep(0.45)  # away longer than queue_ttl: the queue and what it held are gone
    b.publish(b"expired", "/ttl")
    assert poll(srv.url + "/ttl", headers=h).status_code == 204


def test_http_publishing_opt_in(serve):
    b = EmbeddedBackend()
    on = serve(Dispatcher(backend=b, publish=True, timeout=0.5))
    h = {"Consumer-Id": "p"}
    poll(on.url + "/pub", headers=h)
    r = requests.post(on.url + "/pub", data=b"\x00\xffbinary")
    assert r.status_code == 204 and r.content == b""
    assert poll(on.url + "/pub", headers=h).content == b"\x00\xffbinary"
    # without publish=True a POST is just another long-poll (the original accepts every method)
    off = serve(Dispatcher(backend=b, timeout=0.2))
    r = requests.post(off.url + "/pub", data=b"x", headers={"Consumer-Id": "p"})
    assert r.status_code == 204
    assert poll(on.url + "/pub", headers=h).status_code == 204  # nothing was published


def test_413_and_400(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, publish=True, max_message_size=1000, timeout=0.1))
    poll(srv.url + "/lim", headers={"Consumer-Id": "l"})
    r = requests.post(srv.url + "/lim", data=b"x" * 1001)
    assert r.status_code == 413 and b"1000" in r.content
    assert requests.post(srv.url + "/lim", data=b"x" * 1000).status_code == 204
    assert b.queue_length("l@/lim") == 1  # the refused one was not published
    r = poll(srv.url + "/" + "x" * 300)
    assert r.status_code == 400 and b"channel" in r.content
    r = poll(srv.url + "/bad%01name")
    assert r.status_code == 400
    r = poll(srv.url + "/ok", headers={"Consumer-Id": "a@b"})
    assert r.status_code == 400 and b"consumer" in r.content
    r = requests.post(srv.url + "/" + "y" * 300, data=b"m")
    assert r.status_code == 400


def test_batch_publish_one_request(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, publish=True, timeout=0.1))
    poll(srv.url + "/batch", headers={"Consumer-Id": "b"})
    Producer(srv.url, prefix="").publish_many(["one", b"two", {"n": 3}]).to("/batch")
    got = [poll(srv.url + "/batch", headers={"Consumer-Id": "b"}).content for _ in range(3)]
    assert got == [b"one", b"two", b'{"n":3}']


def test_cors_only_when_configured(serve):
    b = EmbeddedBackend()
    plain = serve(Dispatcher(backend=b, timeout=0.05))
    r = poll(plain.url + "/c", headers={"Origin": "http://app.example"})
    assert not any(k.lower().startswith("access-control") for k in r.headers)
    cors = serve(Dispatcher(backend=b, timeout=0.05, cors_origins=["http://app.example"]))
    r = requests.options(cors.url + "/c", headers={"Origin": "http://app.example",
                                                   "Access-Control-Request-Headers": "Consumer-Id"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert "Consumer-Id" in r.headers["Access-Control-Allow-Headers"]
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    r = poll(cors.url + "/c", headers={"Origin": "http://app.example"})
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    r = poll(cors.url + "/c", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_mounted_channel_is_path_below_mount(serve):
    b = EmbeddedBackend()
    inner = Dispatcher(backend=b, timeout=0.05)

    async def outer(scope, receive, send):  # a minimal mount, as the hub does at /push
        if scope["type"] == "http" and scope["path"].startswith("/push/"):
            scope = dict(scope, root_path=scope.get("root_path", "") + "/push", path=scope["path"][5:])
            return await inner(scope, receive, send)
        if scope["type"] == "lifespan":
            return await inner(scope, receive, send)
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    srv = serve(outer)
    poll(srv.url + "/push/collections/connect/purchases", headers={"Consumer-Id": "m"})
    assert b.queue_names() == ["m@/collections/connect/purchases"]
    # uvicorn --root-path style (prefix kept in "path") gives the same channel
    srv2 = serve(inner, root_path="/push")
    poll(srv2.url + "/collections/x", headers={"Consumer-Id": "m"})  # uvicorn prepends root_path itself
    assert "m@/collections/x" in b.queue_names()


def test_original_js_client_requests(serve):
    """What the original (jQuery) client sends: GET ?cid=…&_=<cache buster>, re-poll at once on 204,
    raw JSON messages."""
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, timeout=0.2))
    s = requests.Session()
    seen = []
    published = False
    for i in range(6):
        r = s.get(srv.url + "/js", params={"cid": "jq", "_": str(1700000000000 + i)},
                  headers={"Accept": "application/json, text/javascript, */*; q=0.01",
                           "X-Requested-With": "XMLHttpRequest"}, timeout=5)
        if r.status_code == 200:
            seen.append(r.json())
        else:
            assert r.status_code == 204
        if not published:
            Producer(b).publish({"x": 1}).to("/js")
            Producer(b).publish([1, "two"]).to("/js")
            published = True
    assert seen == [{"x": 1}, [1, "two"]]


def test_ack_only_after_hand_off_requeues_on_failed_send():
    """A response that cannot be written (connection died) leaves the message at the head of the queue."""

    async def main():
        b = EmbeddedBackend()
        app = Dispatcher(backend=b, timeout=1)
        sub = await b.subscribe("x", "/h")
        await sub.cancel()
        b.publish_many([b"first", b"second"], "/h")
        scope = {"type": "http", "method": "GET", "path": "/h", "root_path": "", "query_string": b"",
                 "headers": [(b"consumer-id", b"x")]}
        msgs = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            if msgs:
                return msgs.pop()
            await asyncio.sleep(10)

        async def broken_send(message):
            if message["type"] == "http.response.body":
                raise OSError("connection reset")

        with pytest.raises(OSError):
            await app(scope, receive, broken_send)
        assert b.queue_length("x@/h") == 2  # "first" was requeued, not acked
        sent = []

        async def good_send(message):
            sent.append(message)

        msgs.append({"type": "http.request", "body": b"", "more_body": False})
        await app(scope, receive, good_send)
        assert sent[1]["body"] == b"first"

    asyncio.run(main())


def test_test_backend_serves_a_dispatcher(serve):
    b = TestBackend()
    srv = serve(Dispatcher(backend=b, timeout=0.3, publish=True))
    requests.post(srv.url + "/t", data=b"queued first")  # the test backend keeps messages without a subscriber
    assert poll(srv.url + "/t").content == b"queued first"


def test_sse_event_not_written_because_the_client_left_is_requeued():
    """A send blocked by a slow SSE reader returns without writing (and without an error) when the client goes
    away meanwhile, as uvicorn's does: that message must go back to the head of the queue, not be acked."""

    async def main():
        b = EmbeddedBackend()
        app = Dispatcher(backend=b, timeout=1, keepalive=30)
        sub = await b.subscribe("x", "/h")
        await sub.cancel()
        b.publish_many([b"first", b"second"], "/h")
        gone = asyncio.Event()
        scope = {"type": "http", "method": "GET", "path": "/h", "root_path": "", "query_string": b"",
                 "headers": [(b"consumer-id", b"x"), (b"accept", b"text/event-stream")]}
        requests_ = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            if requests_:
                return requests_.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        written = []

        async def send(message):
            body = message.get("body", b"")
            if body.startswith(b"data:"):
                gone.set()  # the reader left while this send waited: uvicorn returns without writing
                await asyncio.sleep(0)
                return
            written.append(body)

        await asyncio.wait_for(app(scope, receive, send), 5)
        assert b.queue_length("x@/h") == 2  # "first" went back to the head, "second" was never taken
        sent = []

        async def good_send(message):
            sent.append(message)

        poll_scope = dict(scope, headers=[(b"consumer-id", b"x")])
        requests_.append({"type": "http.request", "body": b"", "more_body": False})
        gone.clear()
        await asyncio.wait_for(app(poll_scope, receive, good_send), 5)
        assert sent[1]["body"] == b"first"

    asyncio.run(main())


def test_head_takes_no_message(serve):
    """A HEAD response has no body: it must not consume (and ack) the consumer's next message."""
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, timeout=0.3, publish=True))
    h = {"Consumer-Id": "hx"}
    assert poll(srv.url + "/h", headers=h).status_code == 204  # creates the queue
    for m in (b"m1", b"m2"):
        assert requests.post(srv.url + "/h", data=m, timeout=10).status_code == 204
    r = requests.head(srv.url + "/h", headers=h, timeout=10)
    assert r.status_code == 204 and r.content == b""
    got = [poll(srv.url + "/h", headers=h) for _ in range(3)]
    assert [(g.status_code, g.content) for g in got] == [(200, b"m1"), (200, b"m2"), (204, b"")]
