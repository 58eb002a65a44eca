"""Helpers shared by the delivery tests (a module of its own: ``conftest`` is not importable by name reliably)."""

from __future__ import annotations

import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (_TESTS, os.path.dirname(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import http.server  # noqa: E402
import threading  # noqa: E402
from typing import Any, Callable, List, Tuple  # noqa: E402

from eventpush.transport import Retry  # noqa: E402

#: retries that keep the suite fast: six attempts, a few milliseconds apart
FAST_RETRY = Retry(attempts=6, backoff=0.005, backoff_max=0.05, total=20.0)


from support.net import free_port as free_port_local  # noqa: E402 - a port nobody listens on



def drain_spool(spool: Any) -> List[Any]:
    """Every record's batch, oldest first, each acknowledged once read."""
    out = []
    while True:
        rec = spool.next_record()
        if rec is None:
            return out
        out.append(rec.batch)
        rec.ack()


class ScriptedEndpoint:
    """A plain HTTP/1.1 endpoint on 127.0.0.1 whose answer to each POST is decided by the test:
    ``answer(index, body) -> (status, [(header, value), ...])`` for the ``index``-th POST (from 0), called in the
    request's own thread (it may block); every reply body is ``{}``. For exact status lines and headers, or
    requests held back on purpose, which the fault-injecting server does not do. ``stop()`` when done."""

    def __init__(self, answer: Callable[[int, bytes], Tuple[int, List[Tuple[str, str]]]]) -> None:
        self.count = 0
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    index, outer.count = outer.count, outer.count + 1
                status, headers = answer(index, body)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = ["FAST_RETRY", "free_port_local", "ScriptedEndpoint", "drain_spool"]
