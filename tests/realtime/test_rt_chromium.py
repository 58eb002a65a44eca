"""The browser client push.js in headless Chromium: messages published from Python end up in the page's DOM."""

from __future__ import annotations

import asyncio
import os
import re
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
// A pending request holds Chromium's virtual time (and so --dump-dom) until the page reported completion:
// a WebSocket alone would not keep virtual time from running out.
fetch("/hold");
var n = 0, want = %(want)d;
var client = new Push.Client(["%(transport)s"])
  .url({longpoll: "/push/browser"})
  .params({cid: "%(cid)s"})
  .options({retry: 200, timeout: 2})
  .message(function (m) {
    var li = document.createElement("li");
    li.textContent = m;
    document.getElementById("out").appendChild(li);
    if (++n >= want) { client.disconnect(); document.title = "done"; fetch("/done"); }
  })
  .connect();
</script></body></html>
"""


def make_app(backend):
    push = Dispatcher(backend=backend, timeout=2)
    js = client_js()
    done = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await push(scope, receive, send)
        path = scope["path"]
        if path in ("/hold", "/done"):
            if path == "/done":
                done.append(True)
            else:
                deadline = asyncio.get_running_loop().time() + 30
                # released when the page reports completion, or once every frame was written to the socket
                # (Chromium may hold WebSocket events while virtual time is paused by this very request)
                while not done and backend.stats()["acked"] < 3 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.02)
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

    return app


@pytest.mark.parametrize("transport", ["EventSource", "LongPoll", "WebSocket"])
def test_push_js_receives_messages_published_from_python(serve, transport):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    b = EmbeddedBackend()
    srv = serve(make_app(b))
    cid = f"chrome-{transport.lower()}"
    profile = tempfile.mkdtemp(prefix="eventpush-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={profile}", "--virtual-time-budget=60000", "--dump-dom", f"{srv.url}/page/{transport}/{cid}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    dom = out.decode("utf-8")
    items = re.findall(r"<li>(.*?)</li>", dom)
    assert items == ["hello from python", "ünïcödé ☃", '{"json": true}'], dom[-2000:]
    assert "<title>done</title>" in dom
    assert b.stats()["acked"] == 3
