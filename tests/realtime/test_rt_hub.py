"""Push through the real hub (``eventpush serve``): the seed's demo as written, /push.js, live collection tails,
and two hub processes on one RabbitMQ (issue 7, "Done when")."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import requests

from support.push import open_queue



@pytest.fixture
def hub_(hub):
    return hub


def test_seed_readme_as_written_against_eventpush_serve(hub_, tmp_path):
    hub = hub_()
    out = []
    t = threading.Thread(target=lambda: out.append(requests.get(hub.url + "/push/greetings", timeout=40)))
    t.start()  # terminal 1: curl the consumer server
    time.sleep(0.3)
    # terminal 2: the producer line of the README, unchanged, in its own process; the target comes from the env.
    # A message published before the curl's queue exists is dropped (fanout), so run it again until curl returns.
    script = "from eventpush.realtime import Producer\nProducer().publish('hi there!').to('/greetings')\n"
    env = dict(__import__("os").environ, EVENTPUSH_PUSH_TARGET=hub.url)
    for _ in range(10):
        subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=30)
        t.join(1.0)
        if not t.is_alive():
            break
    t.join(30)
    assert out[0].status_code == 200 and out[0].content == b"hi there!"


def test_hub_serves_push_js_and_push_endpoints(hub_, tmp_path):
    hub = hub_()
    r = requests.get(hub.url + "/push.js", timeout=5)
    assert r.status_code == 200 and b"Push.Client" in r.content
    from eventpush.realtime.hub_integration import client_js

    assert r.content == client_js()
    assert requests.post(hub.url + "/push/x", data=b"nobody").status_code == 204
    assert requests.post(hub.url + "/push/" + "x" * 300, data=b"m").status_code == 400


def test_live_collection_tail_over_sse(hub_, tmp_path):
    hub = hub_()
    with requests.get(hub.url + "/push/collections/connect/purchases", headers={"Accept": "text/event-stream"},
                      stream=True, timeout=15) as tail:
        assert tail.status_code == 200
        chunks = tail.iter_content(chunk_size=None)
        buf = next(chunks)  # the opening comment: the tail is subscribed
        r = requests.post(hub.url + "/connect/events/purchases", json={"item": "golden gadget", "price": 1})
        assert r.status_code == 200, r.text
        for chunk in chunks:
            buf += chunk
            if b"golden gadget" in buf and buf.endswith(b"\n\n"):
                break
    data = [line for line in buf.split(b"\n") if line.startswith(b"data: ")]
    import orjson

    event = orjson.loads(data[0][6:])
    assert event["item"] == "golden gadget" and event["price"] == 1


@pytest.mark.rabbitmq
def test_two_hub_processes_on_one_rabbitmq(hub_, tmp_path, rabbitmq_url, uid):
    a = hub_("--broker", rabbitmq_url)
    b = hub_("--broker", rabbitmq_url)
    chan = f"/two-hubs/{uid}"
    h = {"Consumer-Id": "hubc"}
    open_queue(a.url + "/push" + chan, "hubc")  # the consumer's queue exists on RabbitMQ from here on
    out = []
    t = threading.Thread(target=lambda: out.append(requests.get(a.url + "/push" + chan, headers=h, timeout=40)))
    t.start()
    assert requests.post(b.url + "/push" + chan, data=b"through b").status_code == 204
    t.join(30)
    assert out[0].content == b"through b"
    # a producer straight to RabbitMQ and both hubs' HTTP publishing, polled alternately: all, in order
    from eventpush.realtime import Producer

    p = Producer(rabbitmq_url)
    p.publish("amqp direct").to(chan)
    p.flush(10)
    requests.post(a.url + "/push" + chan, data=b"through a")
    got = [requests.get(n.url + "/push" + chan, headers=h, timeout=40).content for n in (b, a)]
    assert got == [b"amqp direct", b"through a"]
    # the README's producer line as written, in its own process, with Push's original default backend (amqp):
    # straight to RabbitMQ, the buffered publish confirmed at interpreter exit
    out = []
    t = threading.Thread(target=lambda: out.append(requests.get(b.url + "/push" + chan, headers=h, timeout=40)))
    t.start()
    script = f"from eventpush.realtime import Producer\nProducer().publish('hi there!').to({chan!r})\n"
    env = dict(__import__("os").environ, EVENTPUSH_PUSH_BACKEND="amqp")
    env.pop("EVENTPUSH_PUSH_TARGET", None)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    t.join(30)
    assert out[0].content == b"hi there!"
    # the live tail works across nodes too: tail on a, ingest on b
    with requests.get(a.url + "/push/collections/connect/orders?cid=tail", headers={"Accept": "text/event-stream"},
                      stream=True, timeout=15) as tail:
        chunks = tail.iter_content(chunk_size=None)
        buf = next(chunks)  # subscribed: queue declared, bound and consumed before the response started
        assert requests.post(b.url + "/connect/events/orders", json={"order": uid}).status_code == 200
        for chunk in chunks:
            buf += chunk
            if uid.encode() in buf and buf.endswith(b"\n\n"):
                break
    assert uid.encode() in buf


def test_long_poll_timeout_option(hub_):
    """``eventpush serve --long-poll-timeout S``: a long-poll on /push with no message answers 204 after S seconds
    (the hub had no way to change the 30 s)."""
    hub = hub_("--long-poll-timeout", "0.5")
    t0 = time.monotonic()
    r = requests.get(hub.url + "/push/quiet", headers={"Consumer-Id": "c"}, timeout=20)
    took = time.monotonic() - t0
    assert r.status_code == 204 and r.content == b""
    assert 0.4 <= took < 10, took


def test_channel_below_the_mount_may_start_with_push(hub_):
    hub = hub_()
    open_queue(hub.url + "/push/push/odd", "odd")
    out = []
    t = threading.Thread(target=lambda: out.append(
        requests.get(hub.url + "/push/push/odd", headers={"Consumer-Id": "odd"}, timeout=30)))
    t.start()
    from eventpush.realtime import Producer

    Producer(hub.url).publish("odd one").to("/push/odd")  # POST /push/push/odd
    t.join(20)
    assert out[0].content == b"odd one"
