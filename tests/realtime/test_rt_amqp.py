"""The RabbitMQ backend against the local broker (spec §3.1): topology, two nodes, expiry, producers, restart."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time

import pika
import pytest
import requests

from eventpush.realtime import AsyncProducer, Dispatcher, Producer
from support.net import wait_for
from support.push import amqp_app, open_queue

pytestmark = pytest.mark.rabbitmq


def passive(kind, name):
    """True when the exchange / queue exists (a passive declare on a throwaway pika connection)."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        ch = conn.channel()
        try:
            if kind == "exchange":
                ch.exchange_declare(name, passive=True)
            else:
                ch.queue_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return False
    finally:
        if conn.is_open:
            conn.close()


def consumer_count(queue):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count
    finally:
        conn.close()


def equivalent(kind, name, **kw):
    """Re-declaring with these exact properties succeeds only if the existing entity has them (else 406)."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        ch = conn.channel()
        if kind == "exchange":
            ch.exchange_declare(name, **kw)
        else:
            ch.queue_declare(name, **kw)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 406, exc
        return False
    finally:
        if conn.is_open:
            conn.close()


def bg_poll(url, cid, out, timeout=20):
    def run():
        out.append(requests.get(url, headers={"Consumer-Id": cid}, timeout=timeout))

    t = threading.Thread(target=run)
    t.start()
    return t



def test_topology_fanout_exchange_queue_expires_prefetch_manual_ack(rabbitmq_url, serve, uid):
    srv = serve(Dispatcher(backend=rabbitmq_url, queue_ttl=2, timeout=10, publish=True))
    chan = f"/topo/{uid}"
    qname = f"c{uid[-6:]}@{chan}"
    out = []
    t = bg_poll(srv.url + chan, qname.split("@")[0], out)
    wait_for(lambda: passive("queue", qname), what="the consumer queue")
    assert passive("exchange", chan)
    # exchange named exactly by the channel, fanout, auto-delete; queue "{consumer}@{channel}" with x-expires
    assert equivalent("exchange", chan, exchange_type="fanout", auto_delete=True)
    assert not equivalent("exchange", chan, exchange_type="fanout", auto_delete=False)
    # (single active consumer: overlapping requests of one consumer id take turns, so order is kept)
    assert equivalent("queue", qname, arguments={"x-expires": 2000, "x-single-active-consumer": True})
    assert not equivalent("queue", qname, arguments={"x-expires": 5000, "x-single-active-consumer": True})
    if shutil.which("rabbitmqctl"):
        rows = subprocess.run(["rabbitmqctl", "-q", "list_consumers", "queue_name", "prefetch_count", "ack_required",
                               "--formatter", "json"], capture_output=True, text=True, timeout=30)
        if rows.returncode == 0:  # needs the Erlang cookie (root or the rabbitmq user)
            import json

            mine = [c for c in json.loads(rows.stdout) if c["queue_name"] == qname]
            assert [(c["prefetch_count"], c["ack_required"]) for c in mine] == [(1, True)]  # prefetch 1, manual ack
    assert requests.post(srv.url + chan, data=b"topo!").status_code == 204
    t.join(15)
    assert out[0].status_code == 200 and out[0].content == b"topo!"
    # unused for queue_ttl: RabbitMQ deletes the queue, and with its last binding the auto-delete exchange
    # (a passive declare renews the queue's lease, so look only after a quiet period longer than the TTL)
    for _ in range(4):
        time.sleep(2.6)
        if not passive("queue", qname):
            break
    else:
        pytest.fail("the queue did not expire after queue_ttl")
    wait_for(lambda: not passive("exchange", chan), timeout=5, what="exchange auto-delete")


def test_two_nodes_behave_as_one(rabbitmq_url, spawn, uid):
    a = spawn(amqp_app(rabbitmq_url, timeout=10, queue_ttl=10))
    b = spawn(amqp_app(rabbitmq_url, timeout=10, queue_ttl=10))
    chan = f"/two/{uid}"
    open_queue(a.url + chan, "n1")  # declared and bound on RabbitMQ from here on
    out = []
    t = bg_poll(a.url + chan, "n1", out)
    assert requests.post(b.url + chan, data=b"via b").status_code == 204
    t.join(15)
    assert out[0].content == b"via b"
    # published through either node between polls; polled from either node: every message, in order
    for i, node in enumerate([a, b, a, b]):
        assert requests.post(node.url + chan, data=b"m%d" % i).status_code == 204
    got = [requests.get(node.url + chan, headers={"Consumer-Id": "n1"}, timeout=15).content for node in [b, a, b, a]]
    assert got == [b"m0", b"m1", b"m2", b"m3"]


def test_any_channel_and_consumer_id_work_on_rabbitmq(rabbitmq_url, spawn, uid):
    """Channels and consumer ids the embedded broker takes work on RabbitMQ too, though aio-pika carries only some
    names: those are hashed, the same on every node; the plain ones keep the exact topology names."""
    from urllib.parse import quote

    from eventpush.realtime.amqp import amqp_name

    a = spawn(amqp_app(rabbitmq_url, timeout=10, queue_ttl=10))
    b = spawn(amqp_app(rabbitmq_url, timeout=10, queue_ttl=10))
    for chan, cid in ((f"/caf\u00e9/{uid}", "user~1"), (f"/a=b!/{uid}", "YWJj=="), ("/" + "x" * 150 + uid, "a!b")):
        url = a.url + quote(chan)
        open_queue(url, cid)
        out = []
        t = bg_poll(url, cid, out)
        assert requests.post(b.url + quote(chan), data=chan.encode()).status_code == 204
        t.join(15)
        assert out[0].status_code == 200 and out[0].content == chan.encode()
        assert amqp_name(chan).startswith("#") and passive("exchange", amqp_name(chan))
    # the node keeps publishing afterwards (a name the client library refused used to stop its publisher)
    chan = f"/plain/{uid}"
    open_queue(a.url + chan, "p")
    assert requests.post(b.url + chan, data=b"still here").status_code == 204
    assert requests.get(a.url + chan, headers={"Consumer-Id": "p"}, timeout=15).content == b"still here"
    assert amqp_name(chan) == chan


def test_a_channel_rabbitmq_refuses_fails_alone(rabbitmq_url, spawn, uid):
    """An exchange of the channel's name exists with another type: publishing to it is a 400 that says why, and
    the node goes on publishing to every other channel."""
    taken = f"/taken/{uid}"
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        conn.channel().exchange_declare(taken, exchange_type="direct", auto_delete=False)
        a = spawn(amqp_app(rabbitmq_url, timeout=10, queue_ttl=10))
        r = requests.post(a.url + taken, data=b"x", timeout=15)
        assert r.status_code == 400 and "refuses" in r.text and "PRECONDITION_FAILED" in r.text
        r = requests.get(a.url + taken, headers={"Consumer-Id": "t"}, timeout=15)
        assert r.status_code == 400 and "refuses" in r.text
        chan = f"/fine/{uid}"
        open_queue(a.url + chan, "f")
        for i in range(3):
            assert requests.post(a.url + chan, data=b"%d" % i, timeout=15).status_code == 204
        got = [requests.get(a.url + chan, headers={"Consumer-Id": "f"}, timeout=15).content for _ in range(3)]
        assert got == [b"0", b"1", b"2"]
    finally:
        if conn.is_open:
            conn.channel().exchange_delete(taken)
            conn.close()


def test_no_queue_means_dropped_and_unacked_requeued(rabbitmq_url, spawn, uid):
    a = spawn(amqp_app(rabbitmq_url, timeout=1, queue_ttl=10))
    chan = f"/drop/{uid}"
    assert requests.post(a.url + chan, data=b"nobody listens").status_code == 204
    r = requests.get(a.url + chan, headers={"Consumer-Id": "d"}, timeout=10)
    assert r.status_code == 204  # the message published before the queue existed is not kept
    for i in range(3):
        requests.post(a.url + chan, data=b"%d" % i)
    got = [requests.get(a.url + chan, headers={"Consumer-Id": "d"}, timeout=10).content for _ in range(3)]
    assert got == [b"0", b"1", b"2"]  # one per response; the rest stays queued (requeued, not lost)
    # every finished request cancelled its consumer: nothing holds the queue (or a prefetched message)
    for i in range(20):
        requests.post(a.url + chan, data=b"again %d" % i)
    got = [requests.get(a.url + chan, headers={"Consumer-Id": "d"}, timeout=10).content for i in range(20)]
    assert got == [b"again %d" % i for i in range(20)]
    assert consumer_count(f"d@{chan}") == 0


def test_websocket_and_sse_over_rabbitmq(rabbitmq_url, serve, uid):
    from websockets.sync.client import connect as ws_connect

    srv = serve(Dispatcher(backend=rabbitmq_url, queue_ttl=5, publish=True))
    chan = f"/stream/{uid}"
    with ws_connect(f"ws://127.0.0.1:{srv.port}{chan}?cid=ws") as ws:  # subscribed before the handshake ends
        Producer(srv.url, prefix="").publish_many([b"x%d" % i for i in range(50)]).to(chan)
        assert [ws.recv(timeout=10) for _ in range(50)] == ["x%d" % i for i in range(50)]
    with requests.get(srv.url + chan + "?cid=sse", headers={"Accept": "text/event-stream"}, stream=True,
                      timeout=10) as r:  # the response starts once subscribed
        requests.post(srv.url + chan, data=b"a\nb")
        buf = b""
        for chunk in r.iter_content(chunk_size=None):
            buf += chunk
            if b"data: b\n\n" in buf:
                break
    assert b"data: a\ndata: b\n\n" in buf


def test_producers_publish_straight_to_rabbitmq(rabbitmq_url, serve, uid):
    srv = serve(Dispatcher(backend=rabbitmq_url, queue_ttl=10, timeout=0.5))
    chan = f"/prod/{uid}"
    h = {"Consumer-Id": "p"}
    assert requests.get(srv.url + chan, headers=h, timeout=10).status_code == 204  # creates the queue
    wait_for(lambda: passive("queue", f"p@{chan}"), what="queue")
    p = Producer(rabbitmq_url)
    p.publish("sync one").to(chan)
    p.publish({"k": [1, 2]}).to(chan)
    p.flush(10)
    p.publish_many(["b1", "b2", "b3"]).to(chan)  # one confirmed burst

    async def apub():
        async with AsyncProducer(rabbitmq_url) as ap:
            await ap.publish(b"async").to(chan)
            await ap.publish_many([b"a1", b"a2"]).to(chan)

    asyncio.run(apub())
    got = [requests.get(srv.url + chan, headers=h, timeout=10).content for _ in range(8)]
    assert got == [b"sync one", b'{"k":[1,2]}', b"b1", b"b2", b"b3", b"async", b"a1", b"a2"]


def test_broker_restart_during_a_run(rabbitmq_url, spawn, uid):
    """stop_app / start_app while a node serves: no crash, requests fail soft, everything works again after."""
    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl not installed (the broker restart needs it)")
    probe = subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("rabbitmqctl cannot control the local broker (needs the Erlang cookie)")
    node = spawn(amqp_app(rabbitmq_url, timeout=2, queue_ttl=30))
    chan = f"/restart/{uid}"
    h = {"Consumer-Id": "r"}
    requests.get(node.url + chan, headers=h, timeout=10)
    requests.post(node.url + chan, data=b"before")
    assert requests.get(node.url + chan, headers=h, timeout=10).content == b"before"
    out = []
    t = bg_poll(node.url + chan, "r", out)  # a poll in flight while the broker goes away
    time.sleep(0.3)
    try:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=60)
        down = requests.get(node.url + chan, headers=h, timeout=20)
        assert down.status_code in (204, 503)
        assert requests.post(node.url + chan, data=b"during").status_code == 503
        assert node.proc.poll() is None
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    t.join(20)
    assert out and out[0].status_code in (204, 503)
    # the node reconnects by itself: a consumer poll and a publish work again
    deadline = time.monotonic() + 30
    while True:
        r = requests.get(node.url + chan, headers=h, timeout=10)
        if r.status_code == 204:
            break
        assert time.monotonic() < deadline, f"node did not recover: {r.status_code}"
        time.sleep(0.5)
    got = []
    t = threading.Thread(target=lambda: got.append(requests.get(node.url + chan, headers=h, timeout=10)))
    t.start()
    wait_for(lambda: passive("queue", f"r@{chan}"), what="queue after restart")
    time.sleep(0.3)
    assert requests.post(node.url + chan, data=b"after").status_code == 204
    t.join(15)
    assert got[0].content == b"after"
    assert node.proc.poll() is None
