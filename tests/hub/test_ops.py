"""Operations of the hub: restarts, concurrency, workers, sink, root paths, stats, logs, limits, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import orjson
import pytest

from hub_support import Hub, raw_exchange, read_response, status_of

OK = {"success": True, "duplicate": False}


def count(db, api="connect", collection=None):
    with sqlite3.connect(db) as conn:
        q = "SELECT count(*) FROM events e JOIN collections c ON c.cid = e.cid WHERE c.api = ?"
        args = [api]
        if collection is not None:
            q += " AND c.name = ?"
            args.append(collection)
        return conn.execute(q, args).fetchone()[0]


def test_restart_keeps_data_and_duplicates(hub_factory):
    hub = hub_factory()
    assert hub.post("/connect/events", {"orders": [{"id": str(i)} for i in range(100)]}).status == 200
    assert hub.post("/connect/events/orders", {"id": "single"}).status == 200
    # uvicorn re-raises SIGTERM after its graceful shutdown
    assert hub.stop() in (0, -signal.SIGTERM)
    assert "database closed" in hub.logs()
    again = hub_factory(db=hub.db)
    got = again.get("/connect/events/orders?limit=1000").json()["results"]
    assert len(got) == 101 and got[0]["id"] == "single"
    assert again.post("/connect/events/orders", {"id": "single"}).status == 409
    res = again.post("/connect/events", {"orders": [{"id": "5"}, {"id": "new"}]}).json()["orders"]
    assert [r["duplicate"] for r in res] == [True, False]
    with sqlite3.connect(hub.db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _hammer(hub, threads=6, batches=12, size=500, dup_every=7):
    """Several threads post batches whose ids partly collide across threads; returns the acknowledged count."""
    acked = []
    errors = []

    def worker(t):
        n = 0
        for b in range(batches):
            events = []
            for i in range(size):
                # every dup_every-th id is shared by all threads: exactly one of them stores it
                eid = f"shared-{b}-{i}" if i % dup_every == 0 else f"t{t}-{b}-{i}"
                events.append({"id": eid, "timestamp": "2020-01-01T00:00:00Z", "t": t})
            r = hub.post("/connect/events", {"load": events})
            if r.status != 200:
                errors.append(r)
                continue
            n += sum(1 for x in r.json()["load"] if x["success"])
        acked.append(n)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    return sum(acked)


def test_concurrent_clients_stored_equals_acknowledged(hub_factory):
    hub = hub_factory("--no-access-log")
    acked = _hammer(hub)
    shared = 12 * len(range(0, 500, 7))
    assert acked == 12 * 500 * 6 - shared * 5  # every shared id acknowledged exactly once
    assert count(hub.db, collection="load") == acked
    got = hub.get("/connect/events/load?limit=10000").json()["results"]
    assert len(got) == min(acked, 10000)


def test_workers_share_one_database(hub_factory):
    hub = hub_factory("--workers", "2", "--no-access-log")
    acked = _hammer(hub, threads=4, batches=8)
    assert count(hub.db, collection="load") == acked
    pids = {hub.request("GET", "/health").json()["pid"] for _ in range(30)}
    assert len(pids) >= 1  # which worker answers is up to the kernel
    assert hub.stop() in (0, -signal.SIGTERM)



def test_duplicates_racing_across_workers_are_stored_once(hub_factory):
    """Six clients post the same 4,000 ids (8 batches of 500, each client in its own order) to two worker
    processes on one database: each id is stored once and answered new once; every other copy is answered
    duplicate (the ids index is shared, and every insert holds SQLite's write lock)."""
    import random
    import uuid

    hub = hub_factory("--workers", "2", "--no-access-log", "--no-realtime")
    ids = [str(uuid.uuid4()) for _ in range(4000)]
    batches = [ids[i:i + 500] for i in range(0, len(ids), 500)]
    results: list = []
    errors: list = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for batch in rng.sample(batches, len(batches)):
                r = hub.post("/connect/events", {"race": [{"id": i} for i in rng.sample(batch, len(batch))]})
                assert r.status == 200, r.body[:200]
                results.extend((x["success"], x["duplicate"]) for x in r.json()["race"])
        except Exception as exc:  # reported below, from the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results.count((True, False)) == 4000 and results.count((False, True)) == 5 * 4000
    with sqlite3.connect(hub.db) as conn:
        stored = conn.execute("SELECT count(*), count(DISTINCT eid) FROM events e JOIN collections c USING (cid) "
                              "WHERE c.name = 'race'").fetchone()
    assert stored == (4000, 4000)


def test_sink_counts_without_storing(hub_factory, tmp_path):
    hub = hub_factory("--sink")
    events = [{"id": str(i)} for i in range(1000)] + [{"tp_x": 1}, {"a.b": 1}, {"id": "1"}]
    res = hub.post("/connect/events", {"s": events}).json()["s"]
    assert res[:1000] == [OK] * 1000
    assert [r["success"] for r in res[1000:]] == [False, False, False]
    assert hub.post("/connect/events/s", {"id": "x"}).status == 200
    assert hub.post("/connect/events/s", {"tp_": 1}).status == 400
    assert hub.request("POST", "/barchart/events", {"events": [
        {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": []}]},
        {"Content-Type": "application/json"}).status == 200
    st = hub.stats()
    assert st["storage"] == "sink"
    assert st["apis"]["connect"]["collections"]["s"] == {"events": 1001, "duplicates": 1, "rejected": 3,
                                                        "bytes": st["apis"]["connect"]["collections"]["s"]["bytes"]}
    assert st["apis"]["connect"]["events"] == 1001 and st["apis"]["barchart"]["events"] == 1
    assert hub.get("/connect/events/s").json() == {"results": []}
    assert not os.path.exists(tmp_path / "hub.db")


def test_root_paths(hub_factory):
    hub = hub_factory("--root", "connect")
    assert hub.post("/events/rootc", {"id": "1"}).status == 200
    assert hub.post("/events", {"rootc": [{"id": "2"}]}).json() == {"rootc": [OK]}
    assert hub.post("/connect/events/rootc", {"id": "3"}).status == 200
    assert [e["id"] for e in hub.get("/events/rootc").json()["results"]] == ["3", "2", "1"]
    assert hub.request("POST", "/barchart/events", {"events": []}, {"Content-Type": "application/json"}).status == 200
    bc = hub_factory("--root", "barchart")
    ev = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": ["u"]}
    r = bc.request("POST", "/events", {"events": [ev]}, {"Content-Type": "application/json"})
    assert r.status == 200 and r.json()[0]["sequence"] == 0
    assert bc.request("GET", "/service/version").status == 200
    assert bc.post("/events/x", {"id": "1"}).status == 404  # connect is not at the root here


def test_stats_and_access_log(hub_factory):
    hub = hub_factory("--project", "p:k")
    auth = {"X-Project-Id": "p", "X-Api-Key": "k", "Content-Type": "application/json"}
    hub.post("/connect/events", {"a": [{"id": "1"}, {"id": "1"}, {"tp_x": 1}], "b": [{"id": "2"}]}, headers=auth)
    hub.post("/connect/events/a", {"id": "1"}, headers=auth)
    hub.post("/connect/events/a", {"x": 1}, headers={"X-Project-Id": "p", "X-Api-Key": "bad"})
    st = hub.stats()
    a = st["apis"]["connect"]["collections"]["a"]
    assert (a["events"], a["duplicates"], a["rejected"]) == (1, 2, 1)
    assert st["apis"]["connect"]["collections"]["b"]["events"] == 1
    assert st["events"] == 2 and st["rejected"] == 1
    assert st["events_per_second_1m"] > 0
    assert st["bytes_in"] > 0 and st["rejected_requests"] == 2  # the 409 and the 401
    assert st["apis"]["connect"]["bytes"] == len(b'{"id":"1"}') + len(b'{"id":"2"}') + 2 * len(',"timestamp":"2026-01-01T00:00:00.000Z"')
    time.sleep(0.2)
    lines = [x for x in hub.access_lines() if x["path"].startswith("/connect")]
    assert [x["status"] for x in lines] == [200, 409, 401]
    assert lines[0]["events"] == 4 and lines[0]["stored"] == 2 and lines[0]["rejected"] == 1
    assert lines[1]["reason"] == "duplicate id" and lines[2]["reason"] == "bad credentials"
    assert set(lines[0]) >= {"ts", "client", "method", "path", "status", "bytes_in", "bytes_out", "ms"}


def test_open_mode_accepts_any_key_and_says_so(hub_factory):
    hub = hub_factory()
    assert "any X-Project-Id / X-Api-Key is accepted" in hub.logs()
    assert hub.post("/connect/events/x", {"a": 1}, headers={"X-Project-Id": "any", "X-Api-Key": "thing"}).status == 200
    assert hub.post("/connect/events/x", {"a": 1}, headers={}).status == 200
    assert hub.get("/connect/events/x", headers={"X-Project-Id": "any"}).json()["results"][0]["a"] == 1


def _python_gc_threshold() -> int:
    out = subprocess.run([sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"], capture_output=True,
                         text=True, check=True)
    return int(out.stdout)


def test_gc_threshold_reaches_every_worker(hub_factory):
    import re

    default = hub_factory()
    assert re.findall(r"hub ready \(pid \d+\):.* gc threshold=(\d+)", default.logs()) == ["20000"]
    python_default = hub_factory("--gc-threshold", "0")
    # Python's own first-generation threshold (700; 2000 from 3.13), as a fresh interpreter has it
    assert re.findall(r"gc threshold=(\d+)", python_default.logs()) == [str(_python_gc_threshold())]
    workers = hub_factory("--gc-threshold", "5000", "--workers", "2")
    deadline = time.monotonic() + 20
    while len(re.findall(r"hub ready \(pid \d+\)", workers.logs())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.findall(r"hub ready \(pid (\d+)\):.* gc threshold=(\d+)", workers.logs()) == [
        (pid, "5000") for pid in re.findall(r"hub ready \(pid (\d+)\)", workers.logs())
    ]
    assert len(set(re.findall(r"hub ready \(pid (\d+)\)", workers.logs()))) == 2


def _read_until_closed(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_header_timeout_and_size_limit(hub_factory):
    """A connection must complete its request headers in time and within the size limit: a silent one is closed,
    a slow one gets 408, an oversized one 431 (and a log line each); kept-alive requests still work."""
    hub = hub_factory("--header-timeout", "1", "--max-header-bytes", "2048")

    def connect() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
        return s

    with connect() as idle:
        assert _read_until_closed(idle) == b""  # closed, nothing said
    with connect() as slow:
        slow.sendall(b"POST /connect/events/c HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        reply = _read_until_closed(slow)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in reply
    with connect() as big:
        big.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Project-Id: " + b"p" * 4096 + b"\r\n\r\n")
        reply = _read_until_closed(big)
    assert reply.startswith(b"HTTP/1.1 431 ") and b"exceed 2048 bytes" in reply
    with connect() as kept:
        for _ in range(3):  # each request within the limits, the pauses between them longer than the timeout
            kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += kept.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(v for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n")[1:])
                              if k.lower() == b"content-length"))
            while len(body) < length:
                body += kept.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ") and orjson.loads(body)["status"] == "ok"
            time.sleep(1.3)
    assert hub.get("/health").status == 200
    logs = hub.logs()
    assert "408 from 127.0.0.1" in logs and "431 to 127.0.0.1" in logs


def test_an_endless_header_is_refused_at_the_limit(hub_factory):
    """httptools hands a header over only once it ends: one that never ends is still refused at the size limit
    (it used to be buffered whole, with no answer until the header timeout)."""
    import select

    hub = hub_factory("--header-timeout", "60", "--max-header-bytes", "4096")
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8192)
        for _ in range(128):  # up to 1 MiB of one header value, which never ends
            if select.select([s], [], [], 0.1)[0]:
                break  # the answer came: stop sending
            s.sendall(b"a" * 8192)
        reply = _read_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 431 ") and b"exceed 4096 bytes" in reply
    assert hub.get("/health").status == 200


def test_a_refusal_waits_for_the_answer_to_the_request_before_it(hub_factory):
    """Pipelined requests are answered in order: a 431 for the second one comes after the first one's 200 (it
    used to be written at once, which the client read as the answer to its batch, though that was stored)."""
    hub = hub_factory("--max-header-bytes", "4096")
    ts = '"timestamp":"2015-02-05T14:55:56.587Z"'
    batch = ('{"pipe":[%s]}' % ",".join('{"id":"p%d",%s,"pad":"%s"}' % (i, ts, "x" * 200)
                                        for i in range(5000))).encode()
    first = (b"POST /connect/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(batch)) + batch
    second = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 8192 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as s:
        s.sendall(first + second)
        replies = _read_until_closed(s)
    head, _, rest = replies.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), replies[:200]
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    results = orjson.loads(rest[:length])["pipe"]
    assert len(results) == 5000 and all(r["success"] for r in results)
    assert rest[length:].startswith(b"HTTP/1.1 431 ")
    assert count(hub.db, collection="pipe") == 5000


def test_a_body_answered_early_must_arrive_in_time(hub_factory):
    """After an early answer (413 on the declared length, 415) uvicorn reads and discards the rest of the body;
    the rest must come within --body-timeout, and once it is in, the connection is idle and gets the keep-alive
    timeout again (one body byte used to hold the connection open forever)."""
    hub = hub_factory("--max-body", "2048", "--body-timeout", "1", "--timeout-keep-alive", "1")
    head = b"POST /connect/events/c HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
    for ctype, length in ((b"application/json", 10 ** 9), (b"text/plain", 100)):
        with socket.create_connection(("127.0.0.1", hub.port), timeout=15) as s:
            s.sendall(head % (ctype, length))
            reply = read_response(s)
            assert reply.startswith(b"HTTP/1.1 413 " if length > 2048 else b"HTTP/1.1 415 "), reply
            s.sendall(b"x")  # one byte of the body, then silence
            t0 = time.monotonic()
            assert _read_until_closed(s) == b""
            assert time.monotonic() - t0 < 10
    with socket.create_connection(("127.0.0.1", hub.port), timeout=15) as s:
        s.sendall(head % (b"text/plain", 100))
        assert read_response(s).startswith(b"HTTP/1.1 415 ")
        s.sendall(b"x" * 100)  # the whole body: the connection is kept, then idle
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 200 ")
        t0 = time.monotonic()
        assert _read_until_closed(s) == b""  # closed by the keep-alive timeout
        assert time.monotonic() - t0 < 10
    logs = hub.logs()
    assert "the rest of a request body answered early did not arrive within 1 s" in logs


def test_control_characters_in_a_path_cannot_forge_log_lines(hub_factory):
    hub = hub_factory()
    forged = "2026-01-01 00:00:00,000 CRITICAL eventpush.hub: database corrupted"
    path = "/connect/events/x%0A" + forged.replace(" ", "%20")
    r = hub.post(path, b'{"a":1}', headers={"Content-Type": "text/plain"})
    assert r.status == 415
    hub.stop()
    lines = hub.logs().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    assert any("/connect/events/x\\n2026" in line and "-> 415" in line for line in lines)


@pytest.mark.parametrize("fmt", ["lines", "json"])
def test_keys_file(hub_factory, tmp_path, fmt):
    path = tmp_path / "keys"
    if fmt == "lines":
        path.write_text("# projects\np1:k1\n\np1:k2\np2:k:with:colons\n")
    else:
        path.write_text(json.dumps({"p1": ["k1", "k2"], "p2": "k:with:colons"}))
    hub = hub_factory("--keys-file", str(path))
    for pid, key in (("p1", "k1"), ("p1", "k2"), ("p2", "k:with:colons")):
        assert hub.post("/connect/events/x", {"a": 1}, headers={"X-Project-Id": pid, "X-Api-Key": key}).status == 200
    assert hub.post("/connect/events/x", {"a": 1}, headers={"X-Project-Id": "p2", "X-Api-Key": "k1"}).status == 401
    assert "any X-Project-Id" not in hub.logs()


def test_database_failure_is_500_and_server_survives(hub_factory):
    hub = hub_factory()
    assert hub.post("/connect/events/x", {"id": "1"}).status == 200
    with sqlite3.connect(hub.db) as conn:
        conn.execute("DROP TABLE chunks")
    r = hub.post("/connect/events/x", {"id": "2"})
    assert (r.status, r.json()) == (500, {"errorMessage": "An error occurred while processing your request"})
    r = hub.post("/connect/events", {"x": [{"id": "3"}]})
    assert r.status == 500
    ev = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": []}
    r = hub.request("POST", "/barchart/events", {"events": [ev]}, {"Content-Type": "application/json"})
    assert r.status == 500 and r.json()[0]["value"]["code"] == "REQUEST_GENERAL_FAILURE"
    assert hub.request("GET", "/health").status == 200
    assert "request failed" in hub.logs()


def test_body_limits_on_the_wire(hub):
    # the module hub: --max-body 1 MiB, --body-timeout 2 s
    head = ("POST /connect/events/wire HTTP/1.1\r\nHost: x\r\nX-Project-Id: proj-1\r\nX-Api-Key: key-1\r\n"
            "Content-Type: application/json\r\n")
    # declared too large: answered before any body byte is sent
    status, body = status_of(raw_exchange(hub.port, (head + "Content-Length: 5000000\r\n\r\n").encode()))
    assert status == 413 and b"exceeds the maximum" in body
    # chunked, no Content-Length: counted while reading
    chunk = b"x" * 65536
    data = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b'5\r\n{"a":\r\n'
    data += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    status, body = status_of(raw_exchange(hub.port, data))
    assert status == 413
    # a slow client: half a body, then silence
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall((head + "Content-Length: 100\r\n\r\n").encode() + b'{"a": 1')
        t0 = time.monotonic()
        reply = s.recv(65536)
        assert status_of(reply)[0] == 408
        assert 1.5 < time.monotonic() - t0 < 8
    assert hub.request("GET", "/health").status == 200


def test_graceful_shutdown_finishes_in_flight_request(hub_factory):
    hub = hub_factory()
    events = orjson.dumps({"inflight": [{"id": str(i)} for i in range(2000)]})
    head = (f"POST /connect/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(events)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", hub.port), timeout=15) as s:
        s.sendall(head + events[:1000])
        time.sleep(0.3)
        hub.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        s.sendall(events[1000:])
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += s.recv(65536)
    assert status_of(reply)[0] == 200
    assert hub.proc.wait(15) in (0, -signal.SIGTERM)
    assert count(hub.db, collection="inflight") == 2000
    assert "database closed" in hub.logs()


def test_workers_shutdown_refuses_new_connections_and_finishes_in_flight(hub_factory):
    """With --workers, the parent process kept listening while the workers drained: the kernel completed new
    connections that nobody would accept, and reset them when the parent exited. Now a new connection is refused
    at once (as with one worker), and the requests in flight on every worker still finish."""
    hub = hub_factory("--workers", "2", "--graceful-timeout", "30")
    bodies = [orjson.dumps({"drain": [{"id": f"{k}-{i}"} for i in range(50)]}) for k in range(6)]
    socks = []
    try:
        for body in bodies:  # several connections: both workers have a request in flight
            s = socket.create_connection(("127.0.0.1", hub.port), timeout=15)
            s.sendall(f"POST /connect/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
            socks.append(s)
        time.sleep(0.5)
        hub.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while hub.logs().count("Shutting down") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.logs().count("Shutting down") == 2, hub.logs()
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", hub.port), timeout=5).close()
        for s, body in zip(socks, bodies):
            s.sendall(body[10:])
        assert [status_of(read_response(s))[0] for s in socks] == [200] * len(bodies)
    finally:
        for s in socks:
            s.close()
    assert hub.proc.wait(15) == 0
    assert count(hub.db, collection="drain") == 50 * len(bodies)


def test_shutdown_ends_realtime_streams_and_long_polls(hub_factory):
    """SSE streams and long-polls are open-ended: a graceful shutdown ends them (the stream closes cleanly, the
    poll gets 204) instead of waiting out the graceful timeout."""
    hub = hub_factory("--graceful-timeout", "60")

    def read_until(s: socket.socket, marker: bytes) -> bytes:
        data = b""
        while marker not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    sse = socket.create_connection(("127.0.0.1", hub.port), timeout=30)
    poll = socket.create_connection(("127.0.0.1", hub.port), timeout=30)
    try:
        sse.sendall(b"GET /push/shutdown-sse?cid=s1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        assert b"text/event-stream" in read_until(sse, b":\n\n")
        poll.sendall(b"GET /push/shutdown-poll HTTP/1.1\r\nHost: x\r\nConsumer-Id: p1\r\n\r\n")
        time.sleep(0.5)  # the long-poll is waiting for a message
        t0 = time.monotonic()
        hub.proc.send_signal(signal.SIGTERM)
        assert read_until(sse, b"0\r\n\r\n").endswith(b"0\r\n\r\n")  # the chunked stream ended properly
        assert status_of(read_until(poll, b"\r\n\r\n"))[0] == 204
        assert hub.proc.wait(30) in (0, -signal.SIGTERM)
        assert time.monotonic() - t0 < 20  # (the graceful timeout is 60 s)
    finally:
        sse.close()
        poll.close()


def test_memory_database(hub_factory):
    hub = hub_factory(db=":memory:")
    assert hub.post("/connect/events/m", {"id": "1"}, headers={}).status == 200
    assert hub.post("/connect/events/m", {"id": "1"}, headers={}).status == 409
    assert [e["id"] for e in hub.get("/connect/events/m", headers={}).json()["results"]] == ["1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "2", "--db", ":memory:"], "cannot be shared"),
        (["--project", "no-colon"], "expected PROJECT_ID:API_KEY"),
        (["--keys-file", "/nonexistent/keys"], "No such file"),
        (["--workers", "0"], "at least 1"),
        (["--db", "/nonexistent/dir/x.db"], "cannot open the database"),
        (["--gc-threshold", "-1"], "gc_threshold must be 0"),
        (["--header-timeout", "0"], "header_timeout must be more than 0"),
        (["--max-header-bytes", "100"], "max_header_bytes must be at least 1024"),
    ],
)
def test_bad_options_exit_2(args, message):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "eventpush.cli.serve", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_full_cli_entry_point(tmp_path):
    import sys

    hub = Hub(tmp_path, "--project", "p:k", command=[sys.executable, "-m", "eventpush", "serve"])
    try:
        hub.start()
        auth = {"X-Project-Id": "p", "X-Api-Key": "k", "Content-Type": "application/json"}
        assert hub.post("/connect/events/cli", {"id": "1"}, headers=auth).status == 200
        assert hub.post("/connect/events/cli", {"id": "1"}, headers=auth).status == 409
    finally:
        hub.stop()
