"""Fixtures for eventpush.connect: the real hub (``eventpush serve``) and a small recording HTTP server for exact
request bytes and statuses the hub does not produce (500, non-JSON replies, a missing Content-Type)."""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

import orjson
import pytest

from eventpush import _impl

PROJECT = "proj-c"
KEY = "key-c"


from support.net import free_port as _free_port  # noqa: E402


class HubProc:
    """The real hub in a subprocess; ``base`` is the Connect API root (``…/connect``)."""

    def __init__(self, tmp: Any) -> None:
        self.port = _free_port()
        self.log = open(tmp / "hub.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventpush.cli.serve", "--port", str(self.port), "--db", str(tmp / "hub.db"),
             "--project", f"{PROJECT}:{KEY}", "--no-realtime", "--no-access-log", "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.logpath = tmp / "hub.log"
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("hub exited:\n" + self.logpath.read_text())
            try:
                if self.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("hub did not start:\n" + self.logpath.read_text())
            time.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/connect"

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def events(self, collection: str) -> List[Dict[str, Any]]:
        """Everything stored in ``collection`` (oldest first)."""
        from urllib.parse import quote

        status, body = self.request("GET", f"/connect/events/{quote(collection, safe='')}?limit=10000",
                                    headers={"X-Project-Id": PROJECT, "X-Api-Key": KEY})
        assert status == 200, body
        return list(reversed(orjson.loads(body)["results"]))

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self.log.close()


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProc]:
    h = HubProc(tmp_path_factory.mktemp("connect-hub"))
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def coll() -> str:
    """A fresh collection name per test."""
    return "c-" + uuid.uuid4().hex[:12]


class Recorded:
    def __init__(self, method: str, path: str, headers: Dict[str, str], body: bytes,
                 client: Tuple[str, int] = ("", 0)) -> None:
        self.client = client
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


class Recorder:
    """A threaded HTTP/1.1 server on 127.0.0.1 that records every request and answers from a script: ``reply``
    entries ``(status, headers, body)`` are used in order, then ``default``."""

    def __init__(self) -> None:
        self.requests: List[Recorded] = []
        self.script: List[Tuple[int, Dict[str, str], bytes]] = []
        self.default: Any = (200, {"Content-Type": "application/json"}, b"")
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with rec.lock:
                    rec.requests.append(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                                 body, self.client_address))
                    reply = rec.script.pop(0) if rec.script else rec.default
                if callable(reply):
                    reply = reply(rec.requests[-1])
                status, headers, data = reply
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def reply(self, status: int, body: Any = b"", content_type: Optional[str] = "application/json",
              **headers: str) -> None:
        if not isinstance(body, bytes):
            body = orjson.dumps(body)
        h = dict(headers)
        if content_type:
            h["Content-Type"] = content_type
        self.script.append((status, h, body))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def use_core(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the face on the encoder core under test (compiled, then the twin)."""
    monkeypatch.setattr(_impl, "core", core)
    return core


@pytest.fixture(autouse=True)
def _reset_module_api() -> Iterator[None]:
    yield
    from eventpush import connect

    connect.reset()
