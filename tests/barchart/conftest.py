"""Fixtures of the Barchart face tests: the real hub (``eventpush serve``) on 127.0.0.1 and a fault-injecting
HTTP proxy in front of it.

The proxy injects every fault **before** forwarding the request, so a failed request was never stored by the hub.
That is what makes exactly-once across failures observable: the Barchart API has no idempotency key, so a failure
after the hub stored a batch (a lost reply) would be re-sent and stored twice (spec §1.1, "at-least-once").
"""

from __future__ import annotations

import http.client
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import orjson
import pytest
from support.net import free_port, stop_process, wait_port


SERVER_ERROR_BODY = [
    {
        "value": {
            "code": "REQUEST_GENERAL_FAILURE",
            "message": "An attempt to accept new events failed for unspecified reason(s).",
        },
        "children": [],
    }
]


class Hub:
    """A running ``eventpush serve`` process with its SQLite file (read directly to see what was stored)."""

    def __init__(self, port: int, db: Path, proc: subprocess.Popen) -> None:
        self.port = port
        self.db = db
        self.proc = proc
        self.base_url = f"http://127.0.0.1:{port}/barchart"

    def stored(self) -> List[dict]:
        """Every Barchart event the hub stored, in storage order."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute(
                "SELECT e.body FROM events e JOIN collections c ON c.cid = e.cid WHERE c.api = 'barchart' "
                "ORDER BY e.seq"
            ).fetchall()
        finally:
            con.close()
        return [orjson.loads(r[0]) for r in rows]


def start_hub(tmp: Path, *extra: str) -> Hub:
    port = free_port()
    db = tmp / "hub.db"
    log = open(tmp / "hub.log", "wb")
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventpush", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
         "--log-level", "warning", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        wait_port(port, 20.0, proc)
    except BaseException:
        stop_process(proc)
        log.close()
        print((tmp / "hub.log").read_text(errors="replace"))
        raise
    log.close()
    return Hub(port, db, proc)




@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub per test module (tests tell their events apart by a unique user id in the context)."""
    h = start_hub(tmp_path_factory.mktemp("hub"))
    try:
        yield h
    finally:
        stop_process(h.proc)


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    """``hub_factory("--strict-context")`` → another hub with those options; stopped after the test."""
    started: List[Hub] = []

    def make(*extra: str) -> Hub:
        d = tmp_path / f"hub{len(started)}"
        d.mkdir()
        h = start_hub(d, *extra)
        started.append(h)
        return h

    try:
        yield make
    finally:
        for h in started:
            stop_process(h.proc)


class _ThreadingHTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class FaultProxy:
    """A threaded HTTP/1.1 proxy to ``upstream_port``. ``plan(n)`` is asked for the n-th request (0-based) and
    returns ``None`` (forward) or a fault: ``"503"`` (Retry-After: 0), ``"429"``, ``"500json"`` (the spec's
    ServerError body, ``application/json``), ``"500text"`` (text/plain), ``"400json"``, ``"400text"`` (text/plain),
    ``"drop"`` (close the connection without a reply), or ``"slow"`` (forward after ``slow_delay`` seconds: not a
    failure). Faults happen before forwarding. ``host="::1"`` listens on the IPv6 loopback instead."""

    def __init__(self, upstream_port: int, plan: Optional[Callable[[int], Optional[str]]] = None,
                 host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.plan = plan or (lambda n: None)
        self.lock = threading.Lock()
        self.requests = 0
        self.forwarded = 0
        self.faults: Dict[str, int] = {}
        self.bodies: List[bytes] = []  # bodies of forwarded requests
        self.headers: List[Dict[str, str]] = []
        self.paths: List[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.slow_delay = 0.3
        self.times: List[float] = []  # monotonic start of every forwarded request
        self.done_times: List[float] = []
        self.keep_bodies = True
        proxy = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with proxy.lock:
                    n = proxy.requests
                    proxy.requests += 1
                fault = proxy.plan(n)
                slow = fault == "slow"  # not a failure: forwarded after a pause (keeps a send in flight)
                if slow:
                    fault = None
                if fault is not None:
                    with proxy.lock:
                        proxy.faults[fault] = proxy.faults.get(fault, 0) + 1
                    self._fault(fault)
                    return
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                    proxy.times.append(time.monotonic())
                try:
                    if slow:
                        time.sleep(proxy.slow_delay)
                    self._forward(body)
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                        proxy.done_times.append(time.monotonic())

            def _forward(self, body: bytes) -> None:
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                with proxy.lock:
                    proxy.forwarded += 1
                    if proxy.keep_bodies:
                        proxy.bodies.append(body)
                        proxy.headers.append(dict(self.headers.items()))
                        proxy.paths.append(self.path)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _fault(self, fault: str) -> None:
                if fault == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                status, ctype, data, extra = {
                    "503": (503, "text/plain", b"unavailable", {"Retry-After": "0"}),
                    "429": (429, "text/plain", b"slow down", {"Retry-After": "0"}),
                    "500json": (500, "application/json", orjson.dumps(SERVER_ERROR_BODY), {}),
                    "500text": (500, "text/plain", b"internal error", {}),
                    "400json": (400, "application/json", orjson.dumps({"message": "bad"}), {}),
                    "400text": (400, "text/plain", b"bad request", {}),
                }[fault]
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server_cls = _ThreadingHTTPServer6 if ":" in host else ThreadingHTTPServer  # an IPv6 literal: "::1"
        self.server = server_cls((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        netloc = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{netloc}:{self.port}/barchart"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def make_proxy(hub: Hub) -> Iterator[Callable[..., FaultProxy]]:
    """``make_proxy(plan)`` → a FaultProxy in front of the module's hub; closed after the test."""
    proxies: List[FaultProxy] = []

    def make(plan: Optional[Callable[[int], Optional[str]]] = None, host: str = "127.0.0.1") -> FaultProxy:
        p = FaultProxy(hub.port, plan, host)
        proxies.append(p)
        return p

    try:
        yield make
    finally:
        for p in proxies:
            p.close()
