"""Helpers for the hub tests: the real hub (``python -m eventpush.cli.serve`` → uvicorn) in a subprocess."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import orjson

PROJECT = "proj-1"
KEY = "key-1"
AUTH = {"X-Project-Id": PROJECT, "X-Api-Key": KEY, "Content-Type": "application/json"}


from support.net import free_port as _free_port  # noqa: E402


class Response:
    """A finished HTTP exchange."""

    def __init__(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:300]!r}>"


class Hub:
    """One hub process. ``request()`` speaks HTTP/1.1 with http.client; ``stop()`` sends SIGTERM, then SIGKILL."""

    #: how the hub is started; ``[sys.executable, "-m", "eventpush", "serve"]`` is the same through the full CLI
    #: (which also loads the other subcommands).
    COMMAND = [sys.executable, "-m", "eventpush.cli.serve"]

    def __init__(self, tmp_path: Any, *args: str, db: Optional[str] = None, port: Optional[int] = None,
                 command: Optional[List[str]] = None) -> None:
        self.command = command or self.COMMAND
        self.tmp_path = tmp_path
        self.args = list(args)
        self.db = db if db is not None else str(tmp_path / "hub.db")
        self.port = port or _free_port()
        self.log_path = tmp_path / f"hub-{self.port}-{time.monotonic_ns()}.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "Hub":
        cmd = [*self.command, "--port", str(self.port), *self.args]
        if "--sink" not in self.args:
            cmd += ["--db", self.db]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.request("GET", "/health", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hub did not become healthy:\n{self.logs()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> Optional[int]:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            self._log.close()
        return proc.returncode

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: float = 30.0,
    ) -> Response:
        """``body``: bytes as is, anything else JSON-encoded."""
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = orjson.dumps(body)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any, headers: Optional[Dict[str, str]] = None) -> Response:
        return self.request("POST", path, body, AUTH if headers is None else headers)

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> Response:
        return self.request("GET", path, None, AUTH if headers is None else headers)

    def stats(self) -> Dict[str, Any]:
        return self.request("GET", "/stats").json()

    def access_lines(self) -> List[Dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                out.append(orjson.loads(line))
        return out


def read_response(sock: socket.socket) -> bytes:
    """Read one HTTP response (headers + Content-Length body) from ``sock``; b"" if the server closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while True:
        if length is not None and len(body) >= length:
            return head + b"\r\n\r\n" + body[:length]
        chunk = sock.recv(65536)
        if not chunk:
            return head + b"\r\n\r\n" + body
        body += chunk


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection and return the first response. The request may be answered before it
    is fully sent (early 413): a send error then is not a failure as long as a response arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_response(s)


def status_of(raw: bytes) -> Tuple[int, bytes]:
    """(status, body) of the response in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
