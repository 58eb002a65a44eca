"""The hub's realtime hook: /push (HTTP and WebSocket) mounted from eventpush.realtime, /push.js, and a publish of
every committed event to /collections/{api}/{collection}."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from hub_support import Hub

try:
    from eventpush.realtime.hub_integration import build  # noqa: F401

    HAVE_RT = True
except ImportError as exc:  # the hub runs without realtime then; covered by test_without_realtime
    HAVE_RT = False
    WHY = f"eventpush.realtime.hub_integration is not importable: {exc}"

needs_rt = pytest.mark.skipif(not HAVE_RT, reason="eventpush.realtime.hub_integration is not importable")
JSON = {"Content-Type": "application/json"}


def _long_poll(hub: Hub, channel: str, consumer: str, out: list) -> threading.Thread:
    def run() -> None:
        out.append(hub.request("GET", "/push" + channel, headers={"Consumer-Id": consumer}, timeout=40))

    t = threading.Thread(target=run)
    t.start()
    return t


@needs_rt
def test_committed_events_are_published(hub_factory):
    hub = hub_factory()
    assert hub.request("GET", "/health").json()["realtime"] is True
    got_c: list = []
    got_b: list = []
    tc = _long_poll(hub, "/collections/connect/live", "consumer-c", got_c)
    tb = _long_poll(hub, "/collections/barchart/events", "consumer-b", got_b)
    time.sleep(0.7)  # let both consumers subscribe
    assert hub.post("/connect/events/live", {"id": "e1", "timestamp": "2020-01-01T00:00:00Z", "v": 1},
                    headers=JSON).status == 200
    ev = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": ["u"]}
    created = hub.request("POST", "/barchart/events", {"events": [ev]}, JSON).json()
    tc.join(30)
    tb.join(30)
    assert got_c[0].status == 200
    assert got_c[0].body == b'{"id":"e1","timestamp":"2020-01-01T00:00:00Z","v":1}'  # the stored JSON
    assert got_b[0].status == 200 and orjson.loads(got_b[0].body) == created[0]


@needs_rt
def test_push_js_and_mount(hub_factory):
    hub = hub_factory()
    r = hub.request("GET", "/push.js")
    assert r.status == 200 and r.headers["content-type"] == "application/javascript" and len(r.body) > 100


def test_without_realtime(hub_factory):
    hub = hub_factory("--no-realtime")
    assert hub.request("GET", "/health").json()["realtime"] is False
    assert hub.request("GET", "/push.js").status == 404
    assert hub.request("GET", "/push/collections/connect/x").status == 404
    assert hub.post("/connect/events/x", {"id": "1"}, headers=JSON).status == 200


def test_websocket_outside_push_is_refused(hub_factory):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    hub = hub_factory("--no-realtime")
    for path in ("/connect/events/x", "/push/x"):
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{hub.port}{path}", open_timeout=5)
        assert info.value.response.status_code == 403
