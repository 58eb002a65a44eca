"""Fixtures of the bench tests: the real hub (``eventpush serve --sink`` and with a temporary SQLite database) in a
subprocess on a free 127.0.0.1 port, a small scripted HTTP server (failing, slow, or an NDJSON sink that counts
what it received), the headless Chromium binary, and a runner for the ``eventpush bench`` CLI."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from eventpush.bench.embedded import fetch_stats, free_port
from eventpush.cli import main as cli_main

CHROMIUM = "/usr/bin/chromium"


class HubProcess:
    """``python -m eventpush.cli.serve`` in a subprocess; ``stop()`` sends SIGTERM, then SIGKILL."""

    def __init__(self, *args: str, log_path: str) -> None:
        self.port = free_port()
        self.args = list(args)
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "HubProcess":
        cmd = [sys.executable, "-m", "eventpush.cli.serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--no-realtime", "--no-access-log", "--log-level", "warning", *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while fetch_stats(self.base + "/stats", timeout=1.0) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.log_path, "rb") as f:
                    raise RuntimeError(f"hub did not start: {f.read().decode(errors='replace')}")
            time.sleep(0.05)
        return self

    def events(self) -> int:
        """The hub's ``/stats`` event count."""
        doc = fetch_stats(self.base + "/stats")
        assert doc is not None
        return int(doc["events"])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def sink_hub(tmp_path_factory: Any) -> Iterator[HubProcess]:
    """One ``eventpush serve --sink`` for the session."""
    hub = HubProcess("--sink", log_path=str(tmp_path_factory.mktemp("bench-hub") / "hub.log"))
    try:
        yield hub.start()
    finally:
        hub.stop()


@pytest.fixture
def hub_factory(tmp_path: Any) -> Iterator[Callable[..., HubProcess]]:
    """``hub_factory(*serve_args)`` starts a hub with those ``eventpush serve`` options; all stop at teardown."""
    hubs: List[HubProcess] = []

    def make(*args: str) -> HubProcess:
        hub = HubProcess(*args, log_path=str(tmp_path / f"hub-{len(hubs)}.log"))
        hubs.append(hub)
        return hub.start()

    try:
        yield make
    finally:
        for hub in hubs:
            hub.stop()


@pytest.fixture
def db_hub(tmp_path: Any) -> Iterator[HubProcess]:
    """A hub storing into a temporary SQLite database."""
    hub = HubProcess("--db", str(tmp_path / "hub.db"), log_path=str(tmp_path / "hub.log"))
    try:
        yield hub.start()
    finally:
        hub.stop()


# ------------------------------------------------------------------------------------------------------------
# A scripted HTTP/1.1 server (keep-alive) on 127.0.0.1


class ScriptedServer:
    """Answers each POST with ``script(n, body) -> (status, headers, body, delay_s)`` (``n``: 0-based request
    number) and records what it received: requests per status, events per status (NDJSON lines or JSON array
    items), decoded bodies."""

    def __init__(self, script: Callable[[int, bytes], Tuple[int, Dict[str, str], bytes, float]]) -> None:
        self.script = script
        self.lock = threading.Lock()
        self.requests = 0
        self.by_status: Counter = Counter()
        self.events_by_status: Counter = Counter()
        self.content_encodings: Counter = Counter()
        self.paths: Counter = Counter()
        self.lines: List[bytes] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                enc = self.headers.get("Content-Encoding") or "identity"
                body = gzip.decompress(raw) if enc == "gzip" else raw
                with owner.lock:
                    n = owner.requests
                    owner.requests += 1
                    owner.content_encodings[enc] += 1
                    owner.paths[self.path] += 1
                status, headers, reply, delay = owner.script(n, body)
                events = owner.count_events(body)
                with owner.lock:
                    owner.by_status[status] += 1
                    owner.events_by_status[status] += events
                    if 200 <= status < 300 and body.strip().startswith(b"{") and b"\n" in body.strip():
                        owner.lines.extend(body.splitlines())
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @staticmethod
    def count_events(body: bytes) -> int:
        text = body.strip()
        if text.startswith(b"["):
            return len(json.loads(text))
        if text.startswith(b"{") and b"\n" not in text:
            doc = json.loads(text)
            if isinstance(doc.get("events"), list):
                return len(doc["events"])
            return sum(len(v) for v in doc.values() if isinstance(v, list))
        return sum(1 for line in text.splitlines() if line.strip())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def scripted_server() -> Iterator[Callable[..., ScriptedServer]]:
    """``scripted_server(script)`` starts a :class:`ScriptedServer`; all are stopped at teardown."""
    servers: List[ScriptedServer] = []

    def make(script: Callable[[int, bytes], Tuple[int, Dict[str, str], bytes, float]]) -> ScriptedServer:
        s = ScriptedServer(script).start()
        servers.append(s)
        return s

    try:
        yield make
    finally:
        for s in servers:
            s.stop()


# ------------------------------------------------------------------------------------------------------------
# The CLI


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def json(self) -> Dict[str, Any]:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<CliResult {self.code}\n{self.out[-3000:]}\n{self.err[-3000:]}>"


@pytest.fixture
def bench_cli(capsys: pytest.CaptureFixture) -> Callable[..., CliResult]:
    """Run ``eventpush bench ARGS`` in this process (the real CLI entry point); returns code, stdout, stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = cli_main(["bench", *args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def bench_schema() -> Dict[str, Any]:
    from eventpush.bench import load_schema

    return load_schema()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless Chromium binary; the test is skipped (with the reason) only when it is absent."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(f"Chromium is not installed ({CHROMIUM} is absent)")
    return path
