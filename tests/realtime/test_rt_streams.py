"""WebSocket and Server-Sent Events transports (spec §6), and many consumers at once."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import requests
from websockets.sync.client import connect as ws_connect

from eventpush.realtime import Dispatcher, EmbeddedBackend


def wait_subscribed(backend, name, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        q = backend._queues.get(name)
        if q is not None and q.subs > 0:
            return
        assert time.monotonic() < deadline, f"no subscription on {name}"
        time.sleep(0.005)


def test_websocket_one_frame_per_message_text_and_binary(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b))
    with ws_connect(f"ws://127.0.0.1:{srv.port}/live?cid=w1", open_timeout=5) as ws:
        wait_subscribed(b, "w1@/live")
        b.publish("héllo".encode(), "/live")
        b.publish(b"\xff\x00raw", "/live")
        b.publish(b"multi\nline", "/live")
        assert ws.recv(timeout=5) == "héllo"  # valid UTF-8 → a text frame
        assert ws.recv(timeout=5) == b"\xff\x00raw"  # other bytes → a binary frame
        assert ws.recv(timeout=5) == "multi\nline"
        ws.send("client frames are ignored")
    # close deletes the subscription; the queue stays (queue_ttl)
    deadline = time.monotonic() + 5
    while b._queues["w1@/live"].subs:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    b.publish(b"while away", "/live")
    with ws_connect(f"ws://127.0.0.1:{srv.port}/live", additional_headers={"Consumer-Id": "w1"}) as ws:
        assert ws.recv(timeout=5) == "while away"


def test_websocket_500_messages_in_order(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b))
    with ws_connect(f"ws://127.0.0.1:{srv.port}/many?cid=w500") as ws:
        wait_subscribed(b, "w500@/many")
        threading.Thread(target=lambda: [b.publish(b"%d" % i, "/many") for i in range(500)]).start()
        got = [ws.recv(timeout=10) for _ in range(500)]
    assert got == [str(i) for i in range(500)]
    assert b.stats()["acked"] == 500


def test_websocket_upgrade_detected_case_insensitively(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b))
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(
        b"GET /ci HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nConsumer-Id: ci\r\n\r\n"
    )
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")
    wait_subscribed(b, "ci@/ci")
    b.publish(b"hey", "/ci")
    frame = s.recv(4096)
    assert frame[0] == 0x81 and frame[2:] == b"hey"  # FIN + text opcode, unmasked length 3, raw payload
    s.close()


def test_unacked_websocket_message_requeued_on_close(serve):
    """A socket that dies leaves undelivered messages in the queue for the next connection, in order."""
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b))
    with ws_connect(f"ws://127.0.0.1:{srv.port}/rq?cid=rq"):
        wait_subscribed(b, "rq@/rq")
    deadline = time.monotonic() + 5
    while b._queues["rq@/rq"].subs:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    b.publish_many([b"a", b"b", b"c"], "/rq")
    with ws_connect(f"ws://127.0.0.1:{srv.port}/rq?cid=rq") as ws:
        assert [ws.recv(timeout=5) for _ in range(3)] == ["a", "b", "c"]


def read_sse(resp, n_events, timeout=10):
    """Read raw SSE bytes until ``n_events`` events (blank-line terminated, comments included) arrived."""
    buf = b""
    deadline = time.monotonic() + timeout
    for chunk in resp.iter_content(chunk_size=None):
        buf += chunk
        if buf.count(b"\n\n") >= n_events:
            return buf
        assert time.monotonic() < deadline
    return buf


def test_sse_events_multiline_no_id_keepalive(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, keepalive=0.2))
    with requests.get(srv.url + "/sse?cid=s1", headers={"Accept": "text/event-stream"}, stream=True,
                      timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-cache"
        wait_subscribed(b, "s1@/sse")
        b.publish(b"one", "/sse")
        b.publish("two\nlines\r\nthree".encode(), "/sse")
        b.publish(b"\xff not utf-8", "/sse")
        b.publish(b"after", "/sse")
        raw = read_sse(r, 6)
        time.sleep(0.5)  # keepalive comments arrive while idle
        raw += read_sse(r, 1)
    events = [e for e in raw.split(b"\n\n") if e]
    data_events = [e for e in events if not e.startswith(b":")]
    assert data_events[:3] == [b"data: one", b"data: two\ndata: lines\ndata: three", b"data: after"]
    assert b": dropped a non-UTF-8 message" in raw  # acked, skipped with a comment, counted
    assert sum(1 for e in events if e == b":") >= 2  # the opening comment and keepalives
    assert b"id:" not in raw
    assert b.stats()["acked"] == 4 and b.queue_length("s1@/sse") == 0


def test_sse_resume_from_queue_after_disconnect(serve):
    b = EmbeddedBackend(queue_ttl=10)
    srv = serve(Dispatcher(backend=b, keepalive=5))
    h = {"Accept": "text/event-stream"}
    with requests.get(srv.url + "/res?cid=r", headers=h, stream=True, timeout=10) as r:
        wait_subscribed(b, "r@/res")
        b.publish(b"1", "/res")
        assert b"data: 1" in read_sse(r, 2)
    deadline = time.monotonic() + 5
    while b._queues["r@/res"].subs:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    b.publish_many([b"2", b"3"], "/res")  # while the client is away
    with requests.get(srv.url + "/res?cid=r", headers=h, stream=True, timeout=10) as r:
        raw = read_sse(r, 3)
    assert raw.split(b"\n\n")[1:3] == [b"data: 2", b"data: 3"]


async def _http_poll(port, path, cid, timeout=20.0):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConsumer-Id: {cid}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_thousand_long_poll_consumers_each_receive_every_message(serve):
    """1,000 consumers on one channel through a real server (embedded broker, uvicorn), each gets every message."""
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, publish=True, timeout=20), backlog=2048)
    n, k = 1000, 3

    async def main():
        # every consumer polls once (creating its queue), then the messages are published, then 2 more polls each
        first = [asyncio.ensure_future(_http_poll(srv.port, "/fan", f"c{i}")) for i in range(n)]
        deadline = time.monotonic() + 20
        while sum(1 for q in list(b._queues.values()) if q.subs) < n:
            assert time.monotonic() < deadline, "not all consumers subscribed"
            await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        for j in range(k):
            r = await loop.run_in_executor(None, lambda j=j: requests.post(srv.url + "/fan", data=b"msg%d" % j))
            assert r.status_code == 204
        results = {i: [r] for i, r in enumerate(await asyncio.gather(*first))}
        for _ in range(k - 1):
            more = await asyncio.gather(*(_http_poll(srv.port, "/fan", f"c{i}") for i in range(n)))
            for i, r in enumerate(more):
                results[i].append(r)
        return results

    results = asyncio.run(main())
    expected = [(200, b"msg0"), (200, b"msg1"), (200, b"msg2")]
    wrong = {i: r for i, r in results.items() if r != expected}
    assert not wrong, f"{len(wrong)} consumers got something else, e.g. {next(iter(wrong.items()))}"
    assert b.stats()["acked"] == n * k


def test_long_poll_and_websocket_at_once_1000_messages(serve):
    """The original's thin_spec: 1000 messages to a long-poll consumer and a WebSocket consumer at once."""
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, timeout=5))
    n = 1000
    got_ws = []
    got_lp = []

    def ws_client():
        with ws_connect(f"ws://127.0.0.1:{srv.port}/both?cid=ws") as ws:
            for _ in range(n):
                got_ws.append(ws.recv(timeout=20))

    def lp_client():
        s = requests.Session()
        while len(got_lp) < n:
            r = s.get(srv.url + "/both", headers={"Consumer-Id": "lp"}, timeout=20)
            if r.status_code == 200:
                got_lp.append(r.text)

    tw = threading.Thread(target=ws_client)
    tl = threading.Thread(target=lp_client)
    tw.start()
    tl.start()
    wait_subscribed(b, "ws@/both")
    wait_subscribed(b, "lp@/both")
    for i in range(n):
        b.publish(b"%d" % i, "/both")
    tw.join(60)
    tl.join(60)
    assert got_ws == [str(i) for i in range(n)]
    assert got_lp == [str(i) for i in range(n)]
