"""A fast counting HTTP/1.1 sink for the end-to-end benchmark (run as its own process by ``benchmarks/e2e.py``).

It reads every request body into a reusable buffer and discards it, counting the events in it by a marker (each
event of each client carries exactly one: ``"id":`` for Connect-shaped bodies, ``"messageId"`` for Segment,
``"uuid"`` for PostHog), so "events delivered" is counted from the bytes that arrived, not taken from the client.
A gzip body is decompressed first. One thread per connection; the socket work and the counting (``bytes.count``)
run in C, so the sink stays far from being the bottleneck (its CPU time is reported next to every row).

Replies: ``POST /events`` with ``--connect-collection NAME`` → the Connect batch reply ``{"NAME":[{"success":true},
…]}`` (one item per event, as the real API answers); ``/v1/batch`` → ``{"success": true}``; anything else → ``{}``
(``/batch/`` PostHog's ``{"status": 1}``). Control: ``POST /_reset`` (body = the marker to count from now on) zeroes
the counters; ``GET /_count`` → ``{"events", "requests", "bytes", "errors"}``.

Usage: ``python benchmarks/e2e_sink.py [--port 0] [--connect-collection events]`` prints ``PORT <n>``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import zlib

_lock = threading.Lock()
_state = {"events": 0, "requests": 0, "bytes": 0, "errors": 0}
_marker = [b'"id":']
_collection = [None]


def _reply(status: int, body: bytes, keep_alive: bool) -> bytes:
    head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def _serve(conn: socket.socket) -> None:
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    filled = 0
    try:
        while True:
            # read the head
            while True:
                end = buf.find(b"\r\n\r\n", 0, filled)
                if end >= 0:
                    break
                if filled == len(buf):
                    return
                n = conn.recv_into(view[filled:])
                if not n:
                    return
                filled += n
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            start = end + 4
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body_parts = []
                pos = start
                while True:
                    while True:
                        nl = buf.find(b"\r\n", pos, filled)
                        if nl >= 0:
                            break
                        if pos > 0:
                            buf[: filled - pos] = buf[pos:filled]
                            filled -= pos
                            nl = -1
                            pos = 0
                        n = conn.recv_into(view[filled:])
                        if not n:
                            return
                        filled += n
                    size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
                    pos = nl + 2
                    need = size + 2
                    while filled - pos < need:
                        if pos > 0:
                            buf[: filled - pos] = buf[pos:filled]
                            filled -= pos
                            pos = 0
                        if need > len(buf):
                            view.release()
                            buf.extend(bytearray(need - len(buf)))
                            view = memoryview(buf)
                        n = conn.recv_into(view[filled:])
                        if not n:
                            return
                        filled += n
                    body_parts.append(bytes(buf[pos:pos + size]))
                    pos += need
                    if size == 0:
                        break
                body = b"".join(body_parts)
                body_range = None
                rest_from = pos
            else:
                length = int(headers.get("content-length", "0") or 0)
                total = start + length
                if total > len(buf):
                    view.release()
                    buf.extend(bytearray(total - len(buf)))
                    view = memoryview(buf)
                while filled < total:
                    n = conn.recv_into(view[filled:total])
                    if not n:
                        return
                    filled += n
                body = None
                body_range = (start, total)
                rest_from = total
            keep_alive = headers.get("connection", "").lower() != "close"
            status, reply = 200, b"{}"
            if path == "/_count":
                with _lock:
                    reply = json.dumps(_state).encode()
            elif path == "/_reset":
                with _lock:
                    for k in _state:
                        _state[k] = 0
                    raw = bytes(buf[body_range[0]:body_range[1]]) if body_range else body
                    _marker[0] = raw or _marker[0]
            else:
                gz = headers.get("content-encoding", "").lower() == "gzip"
                if body_range is not None and not gz:
                    # PERF: counted in place, in C, over the received bytes: no copy, no parsing
                    count = buf.count(_marker[0], body_range[0], body_range[1])
                    nbytes = body_range[1] - body_range[0]
                else:
                    data = bytes(buf[body_range[0]:body_range[1]]) if body_range is not None else body
                    if gz:
                        try:
                            data = zlib.decompress(data, 47)
                        except zlib.error:
                            data = b""
                            with _lock:
                                _state["errors"] += 1
                    count = data.count(_marker[0])
                    nbytes = len(data)
                with _lock:
                    _state["events"] += count
                    _state["requests"] += 1
                    _state["bytes"] += nbytes
                if path.rstrip("/") == "/events" and _collection[0]:
                    reply = (b'{"' + _collection[0] + b'":[' + b",".join([b'{"success":true}'] * count) + b"]}")
                elif path.startswith("/v1/batch"):
                    reply = b'{"success":true}'
                elif path.startswith("/batch"):
                    reply = b'{"status":1}'
            conn.sendall(_reply(status, reply, keep_alive))
            if not keep_alive:
                return
            # keep what was read beyond this request
            leftover = filled - rest_from
            if leftover:
                buf[:leftover] = buf[rest_from:filled]
            filled = leftover
    except (ConnectionError, OSError, ValueError):
        return
    finally:
        conn.close()


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description="counting HTTP sink for benchmarks/e2e.py")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--connect-collection", default=None)
    args = p.parse_args(argv)
    if args.connect_collection:
        _collection[0] = args.connect_collection.encode()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(512)
    print(f"PORT {srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
