"""The browser client push.js in headless Chromium: messages published from Python end up in the page's DOM."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import tempfile
import time

import pytest

from eventpush.realtime import Dispatcher, EmbeddedBackend, Producer
from eventpush.realtime.hub_integration import client_js

pytestmark = pytest.mark.chromium

CHROMIUM = "/usr/bin/chromium"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>push test</title></head>
<body><ul id="out"></ul>
<script src="/push.js"></script>
<script>
// Runs in real time (no virtual-time budget, which can pause WebSocket events): once every message is in the DOM,
// the page posts what its list shows back to the test server.
var n = 0, want = %(want)d;
var client = new Push.Client(["%(transport)s"])
  .url({longpoll: "/push/browser"})
  .params({cid: "%(cid)s"})
  .options({retry: 200, timeout: 2})
  .message(function (m) {
    var li = document.createElement("li");
    li.textContent = m;
    document.getElementById("out").appendChild(li);
    if (++n >= want) {
      client.disconnect();
      document.title = "done";
      var shown = Array.prototype.map.call(document.querySelectorAll("#out li"), function (e) { return e.textContent; });
      fetch("/done", {method: "POST", body: JSON.stringify({title: document.title, items: shown})});
    }
  })
  .connect();
</script></body></html>
"""

def make_app(backend):
    push = Dispatcher(backend=backend, timeout=2)
    js = client_js()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await push(scope, receive, send)
        path = scope["path"]
        if path == "/done":
            body, more = b"", True
            while more:
                msg = await receive()
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
            app.reports.append(json.loads(body))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if path.startswith("/push/"):
            return await push(dict(scope, root_path="/push", path=path[5:]), receive, send)
        if path == "/push.js":
            body, ctype = js, b"application/javascript"
        elif path.startswith("/page/"):
            _, _, transport, cid = path.split("/")
            body = (PAGE % {"want": 3, "transport": transport, "cid": cid}).encode()
            ctype = b"text/html; charset=utf-8"
        else:
            body, ctype = b"not found", b"text/plain"
        await send({"type": "http.response.start", "status": 200 if ctype != b"text/plain" else 404,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    app.reports = []
    return app


@pytest.mark.parametrize("transport", ["EventSource", "LongPoll", "WebSocket"])
def test_push_js_receives_messages_published_from_python(serve, transport):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    b = EmbeddedBackend()
    app = make_app(b)
    srv = serve(app)
    cid = f"chrome-{transport.lower()}"
    profile = tempfile.mkdtemp(prefix="eventpush-chromium-")
    # a live headless browser (the debugging port keeps it running with the page open) until the page reports
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", f"{srv.url}/page/{transport}/{cid}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # until the page's client holds a subscription on its queue
            q = b._queues.get(f"{cid}@/browser")
            if q is not None and q.subs > 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the page never subscribed"
            time.sleep(0.05)
        p = Producer(b)
        p.publish("hello from python").to("/browser")
        p.publish("ünïcödé ☃").to("/browser")
        p.publish('{"json": true}').to("/browser")
        deadline = time.monotonic() + 30
        while not app.reports:  # until the page posted what it shows
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the page never reported its messages"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the browser and its renderer / zygote children
        except ProcessLookupError:
            pass
        proc.wait()
        proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
    assert app.reports == [{"title": "done", "items": ["hello from python", "ünïcödé ☃", '{"json": true}']}]
    assert b.stats()["acked"] == 3
