"""RabbitMQ faults seen with several nodes (review): a publish that times out is withdrawn or reported as
unconfirmed (never "failed" and delivered later), one consumer id's overlapping requests keep the publish order,
a declare RabbitMQ refuses disturbs no other consumer, and ``Producer.close`` says why and how much is unsent."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pika
import pytest
import requests

from eventpush.realtime import BrokerUnavailableError, Producer, PublishUnconfirmedError
from support.net import free_port, wait_for
from support.push import amqp_app, open_queue

pytestmark = pytest.mark.rabbitmq


def ctl(*args, timeout=60):
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout)


def need_rabbitmqctl():
    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl not installed")
    if ctl("status").returncode != 0:
        pytest.skip("rabbitmqctl cannot control the local broker (needs the Erlang cookie)")



@contextlib.contextmanager
def disk_alarm():
    """RabbitMQ blocks publishers (a disk alarm) inside the block; the previous limit is restored after."""
    need_rabbitmqctl()
    prev = ctl("eval", "rabbit_disk_monitor:get_disk_free_limit().").stdout.strip()
    if not prev.isdigit():
        prev = "50000000"

    def alarmed():
        return "disk" in ctl("eval", "rabbit_alarm:get_alarms().").stdout

    try:
        assert ctl("set_disk_free_limit", "1000GB").returncode == 0
        wait_for(alarmed, 30, "the disk alarm")
        yield
    finally:
        ctl("set_disk_free_limit", prev)
        wait_for(lambda: not alarmed(), 30, "the disk alarm to clear")


def drain(url, cid, timeout=2):
    """Long-poll until a 204: every message the consumer's queue holds, in order."""
    got = []
    while True:
        r = requests.get(url, headers={"Consumer-Id": cid}, timeout=timeout + 15, params={"_": len(got)})
        if r.status_code == 204:
            return got
        assert r.status_code == 200, r.status_code
        got.append(r.content)


# -- 1. a publish reported as failed is never delivered later ----------------------------------------------------------
def test_http_publish_timeout_is_withdrawn_or_reported_unconfirmed(rabbitmq_url, spawn, uid):
    node = spawn(amqp_app(rabbitmq_url, timeout=2, queue_ttl=60, publish_timeout=2))
    chan = f"/blocked/{uid}"
    open_queue(node.url + chan, "c")
    assert requests.post(node.url + chan, data=b"before", timeout=15).status_code == 204
    with disk_alarm():
        # handed to RabbitMQ, which blocks: the outcome is unknown -> 202 that says so, never a 503
        r1 = requests.post(node.url + chan, data=b"first", timeout=30)
        assert r1.status_code == 202, (r1.status_code, r1.text)
        assert r1.headers["X-Push-Unconfirmed"] == "0" and r1.headers["X-Push-Published"] == "0"
        assert "may still be delivered" in r1.text
        # queued behind it, never handed over: withdrawn -> 503, not published (safe to publish again)
        r2 = requests.post(node.url + chan, data=b"second", timeout=30)
        assert r2.status_code == 503 and "not published" in r2.text and r2.headers.get("Retry-After")
    # the client retries what was not published, not what may still be delivered
    assert requests.post(node.url + chan, data=b"second", timeout=30).status_code == 204
    assert drain(node.url + chan, "c") == [b"before", b"first", b"second"]


def test_amqp_producer_timeout_is_withdrawn_or_reported_unconfirmed(rabbitmq_url, spawn, uid):
    node = spawn(amqp_app(rabbitmq_url, timeout=2, queue_ttl=60))
    chan = f"/blocked-amqp/{uid}"
    open_queue(node.url + chan, "c")
    p = Producer(rabbitmq_url, publish_timeout=2)
    p.publish_many(["a0", "a1"]).to(chan)
    with disk_alarm():
        with pytest.raises(PublishUnconfirmedError) as unknown:
            p.publish_many(["x0", "x1"]).to(chan)
        assert unknown.value.unconfirmed == [0, 1] and unknown.value.withdrawn == []
        with pytest.raises(BrokerUnavailableError) as failed:
            p.publish_many(["y0", "y1"]).to(chan)
        assert "not published" in str(failed.value) and "withdrawn" in str(failed.value)
    p.publish_many(["y0", "y1"]).to(chan)  # the retry of what failed
    p.close()
    assert drain(node.url + chan, "c") == [b"a0", b"a1", b"x0", b"x1", b"y0", b"y1"]


# -- 2. overlapping requests of one consumer id keep the order -----------------------------------------------------------
def test_a_message_given_back_goes_to_the_next_consumer_first(rabbitmq_url, uid):
    """Two nodes, one consumer id, overlapping subscriptions (an abandoned long-poll and its successor): the first
    holds m0 and gives it back; the second gets m0, m1, m2 — not m1 first."""
    from eventpush.realtime.amqp import AmqpBackend

    chan = f"/overlap/{uid}"

    async def run():
        a, b = AmqpBackend(rabbitmq_url, queue_ttl=30), AmqpBackend(rabbitmq_url, queue_ttl=30)
        await a.start()
        await b.start()
        try:
            first = await a.subscribe("o", chan)
            second = await b.subscribe("o", chan)
            await a.publish_async([b"m0", b"m1", b"m2"], chan)
            d = await first.get(5)
            assert d is not None and d.body == b"m0"
            # the Dispatcher's order for a request whose client left: cancel the consumer, then requeue
            await first.cancel()
            await d.reject(requeue=True)
            got = []
            for _ in range(3):
                d2 = await second.get(10)
                assert d2 is not None, got
                got.append(d2.body)
                await d2.ack()
            await second.cancel()
            assert got == [b"m0", b"m1", b"m2"]
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_a_second_stream_of_one_consumer_id_takes_over_in_order(rabbitmq_url, spawn, uid):
    """An SSE reconnect that overlaps the old stream (two nodes): the old stream gets every message while it is
    open (the new one waits: a queue has one reader at a time), the new one the rest, in order."""
    a = spawn(amqp_app(rabbitmq_url, timeout=2, queue_ttl=30))
    b = spawn(amqp_app(rabbitmq_url, timeout=2, queue_ttl=30))
    chan = f"/takeover/{uid}"

    def stream(node, out, stop):
        with contextlib.suppress(requests.RequestException), requests.get(node.url + chan, params={"cid": "s"}, headers={"Accept": "text/event-stream"},
                          stream=True, timeout=30) as r:
            out.append("open")
            buf = b""
            for chunk in r.iter_content(chunk_size=None):
                buf += chunk
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    if ev.startswith(b"data: "):
                        out.append(ev[6:].decode())
                if stop.is_set():
                    return

    old, new = [], []
    stop_old, stop_new = threading.Event(), threading.Event()
    t_old = threading.Thread(target=stream, args=(a, old, stop_old), daemon=True)
    t_old.start()
    wait_for(lambda: old, 20, what="the old stream")
    t_new = threading.Thread(target=stream, args=(b, new, stop_new), daemon=True)
    t_new.start()
    wait_for(lambda: new, 20, what="the new stream")
    p = Producer(a.url, prefix="")
    for i in range(10):
        p.publish(f"m{i}").to(chan)
    wait_for(lambda: len(old) + len(new) >= 11 + 1, 20, what="ten messages")
    assert old[1:] == [f"m{i}" for i in range(10)] and new == ["open"]
    stop_old.set()
    p.publish("m10").to(chan)  # wakes the old reader, which leaves (the message is requeued or written)
    t_old.join(15)
    for i in range(11, 20):
        p.publish(f"m{i}").to(chan)
    wait_for(lambda: new[-1:] == ["m19"], 20, what="the rest on the new stream")
    seen = old[1:] + new[1:]
    assert [int(m[1:]) for m in seen] == sorted(int(m[1:]) for m in seen)  # in order
    assert set(seen) == {f"m{i}" for i in range(20)}
    stop_new.set()


# -- 3. a refused declare disturbs no other consumer ---------------------------------------------------------------------
def test_a_refused_declare_disturbs_no_other_consumer(rabbitmq_url, spawn, uid):
    node = spawn(amqp_app(rabbitmq_url, timeout=1, queue_ttl=10))
    victims, bad, foreign = f"/victims/{uid}", f"/skew/{uid}", f"/foreign/{uid}"
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        ch = conn.channel()
        # another node with another --queue-ttl made this consumer's queue; someone made a direct exchange
        ch.exchange_declare(bad, exchange_type="fanout", auto_delete=True)
        ch.queue_declare(f"x@{bad}", arguments={"x-expires": 30000})
        ch.queue_bind(f"x@{bad}", bad)
        ch.exchange_declare(foreign, exchange_type="direct", auto_delete=False)
        for i in range(3):
            open_queue(node.url + victims, f"v{i}")
        results = {}

        def poll(i):
            got = results[i] = []
            deadline = time.monotonic() + 60
            while len(got) < 20 and time.monotonic() < deadline:
                r = requests.get(node.url + victims, headers={"Consumer-Id": f"v{i}"}, timeout=15)
                if r.status_code == 200:
                    got.append(r.content)

        threads = [threading.Thread(target=poll, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        statuses = []
        for n in range(20):
            ch.basic_publish(victims, "", b"m%d" % n)
            r = requests.get(node.url + (bad if n % 2 else foreign), headers={"Consumer-Id": "x"}, timeout=15)
            statuses.append((n % 2, r.status_code))
        for t in threads:
            t.join(30)
        # the queue with other arguments is used as it is (a 204 here), the foreign exchange is the channel's
        # name taken on the broker (400); neither disturbed the other consumers: each got every message once
        assert {s for k, s in statuses if k} == {204}
        assert {s for k, s in statuses if not k} == {400}
        for i in range(3):
            assert results[i] == [b"m%d" % n for n in range(20)], results[i]
        ch.basic_publish(bad, "", b"for x")
        assert requests.get(node.url + bad, headers={"Consumer-Id": "x"}, timeout=15).content == b"for x"
    finally:
        if conn.is_open:
            ch = conn.channel()
            ch.exchange_delete(foreign)
            ch.queue_delete(f"x@{bad}")
            conn.close()
    log = node.stop()
    assert "exists with other arguments" in log


# -- 4. Producer.close with the broker gone -----------------------------------------------------------------------------
class Proxy:
    """A TCP forwarder to RabbitMQ: stop() makes the broker unreachable (connections reset, new ones refused)."""

    def __init__(self):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.conns = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if not self.running:
                c.close()
                return
            u = socket.create_connection(("127.0.0.1", 5672))
            self.conns += [c, u]
            for x, y in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self):
        self.running = False
        with contextlib.suppress(OSError):
            self.srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a plain close() would not)
        self.srv.close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_producer_close_with_the_broker_gone_says_why_and_what_is_unsent(rabbitmq_url, uid):
    proxy = Proxy()
    child = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format="LOG %(levelname)s %(message)s")
        logging.getLogger("aio_pika").setLevel(logging.WARNING)
        import eventpush.realtime.producer as prod
        from eventpush.realtime import Producer, BrokerUnavailableError
        prod.EXIT_FLUSH_TIMEOUT = 1
        url = "amqp://guest:guest@127.0.0.1:{proxy.port}/"
        p = Producer(url)
        p.publish("warm").to("/close/{uid}")
        p.flush(10)
        print("STOP", flush=True)
        sys.stdin.readline()
        p.publish("while down").to("/close/{uid}")
        try:
            p.close(timeout=3)
            print("CLOSED normally")
        except BrokerUnavailableError as e:
            print("CLOSE ERROR", e, "| unsent", getattr(e, "unsent", None))
        q = Producer(url)
        q.publish("left at exit").to("/close/{uid}")
        q.publish("left at exit 2").to("/close/{uid}")
        print("MAIN DONE", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-c", child], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "STOP"
        proxy.stop()
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proxy.stop()
    lines = out.splitlines()
    close = [line for line in lines if line.startswith("CLOSE")]
    assert close and close[0].startswith("CLOSE ERROR"), out
    assert "not reachable" in close[0] and "1 message(s) not published" in close[0] and "unsent 1" in close[0]
    assert "Connect call failed" in close[0] or "refused" in close[0].lower() or "reset" in close[0].lower(), out
    assert "did not confirm" not in close[0]
    # the two messages buffered by the second producer are named at exit, not dropped silently
    assert any(line.startswith("LOG ERROR") and "2 message(s) not published" in line for line in lines), out
    assert "MAIN DONE" in out and proc.returncode == 0


def test_publish_command_says_when_the_outcome_is_unknown(rabbitmq_url, spawn, uid):
    # `eventpush publish` through a hub whose RabbitMQ blocks publishers: the hub answers 202 "may still be
    # delivered", and the command exits 4 (outcome unknown) instead of 1 (not published: safe to run again)
    port = free_port()
    hub = spawn(cmd=[sys.executable, "-m", "eventpush", "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--db", ":memory:", "--broker", rabbitmq_url, "--long-poll-timeout", "2",
                     # nobody polls while the alarm lasts (up to a minute on a slow machine): the consumer's queue
                     # must outlive it, or RabbitMQ deletes it with "before" in it (the default TTL is 15 s)
                     "--queue-ttl", "300"], port=port)
    chan = f"/cli-blocked/{uid}"
    open_queue(hub.url + "/push" + chan, "c")

    def publish(text):
        return subprocess.run([sys.executable, "-m", "eventpush", "publish", chan, text, "--to", hub.url],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert publish("before").returncode == 0
    with disk_alarm():
        p = publish("blocked")
        assert p.returncode == 4, (p.returncode, p.stderr)
        assert "outcome unknown" in p.stderr and "may still be delivered" in p.stderr
    # it was delivered once the alarm cleared: running the command again would have delivered it twice. (Polls
    # until both came or a 204 follows a minute: right after an alarm the broker may answer the first poll late.)
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 2 and time.monotonic() < deadline:
        got += drain(hub.url + "/push" + chan, "c")
    assert got == [b"before", b"blocked"], (  # (the broker's view, should it ever fail)
        ctl("list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers").stdout,
        ctl("list_consumers", "queue_name", "ack_required", "prefetch_count", "active").stdout)
    assert drain(hub.url + "/push" + chan, "c") == []  # and nothing more: not twice
