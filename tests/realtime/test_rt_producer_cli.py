"""Producer / AsyncProducer targets and errors, and the ``eventpush publish`` / ``subscribe`` commands."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from eventpush.errors import ConnectError, EventTypeError, HTTPStatusError
from eventpush.realtime import (
    AsyncProducer,
    BrokerUnavailableError,
    Dispatcher,
    EmbeddedBackend,
    InvalidChannelError,
    MessageTooLargeError,
    Producer,
    TestBackend,
    configure,
    default_backend,
)
from support.net import free_port
from support.push import open_queue


def test_default_backend_and_message_forms():
    configure(backend="test")
    try:
        p = Producer()
        p.publish("text ☃").to("/f")
        p.publish(b"\x00\x01").to("/f")
        p.publish({"a": [1, 2.5, None]}).to("/f")
        p.publish([1, "x"]).to("/f")
        p.publish_many(["m1", b"m2"]).to("/f")
        assert p.publish("x").to("/f") is None
        b = default_backend()
        Producer(backend=b).publish("kw").to("/g")  # spec §2 spells the argument "backend"
        assert b.drain("/g") == [b"kw"]
        assert isinstance(b, TestBackend)
        assert b.drain("/f") == ["text ☃".encode(), b"\x00\x01", b'{"a":[1,2.5,null]}', b'[1,"x"]', b"m1", b"m2",
                                 b"x"]
    finally:
        configure()
    assert isinstance(default_backend(), EmbeddedBackend)


def test_producer_is_thread_safe():
    b = EmbeddedBackend()
    got = []

    async def consume():
        sub = await b.subscribe("t", "/threads")
        ready.set()
        while len(got) < 8 * 500:
            d = await sub.get(10)
            assert d is not None
            got.append(d.body)
            await d.ack()

    import threading as th

    ready = th.Event()
    p = Producer(b)

    def worker(k):
        ready.wait(10)
        for i in range(500):
            p.publish(b"%d:%d" % (k, i)).to("/threads")

    threads = [th.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    asyncio.run(consume())
    for t in threads:
        t.join()
    for k in range(8):  # every message, and each thread's messages in its publish order
        mine = [int(m.split(b":")[1]) for m in got if m.startswith(b"%d:" % k)]
        assert mine == list(range(500))


def test_backends_selectable_by_name(serve):
    srv = serve(Dispatcher(backend="test", publish=True, timeout=0.3))
    requests.post(srv.url + "/n", data=b"kept by the test backend")
    assert requests.get(srv.url + "/n").content == b"kept by the test backend"
    srv2 = serve(Dispatcher(backend="embedded", publish=True, timeout=0.1))
    requests.post(srv2.url + "/n", data=b"dropped: no queue yet")
    assert requests.get(srv2.url + "/n").status_code == 204


def test_bad_input_raises_at_the_call_site():
    p = Producer(TestBackend())
    with pytest.raises(EventTypeError, match="message"):
        p.publish(object())
    with pytest.raises(EventTypeError) as ei:
        p.publish_many(["ok", {"bad": {1, 2}}])
    assert ei.value.index == 1
    with pytest.raises(InvalidChannelError):
        p.publish("m").to("")
    with pytest.raises(InvalidChannelError):
        p.publish("m").to("/" + "x" * 300)
    p.close()
    with pytest.raises(RuntimeError):
        p.publish("m").to("/after-close")


def test_http_target_statuses(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, publish=True, max_message_size=100, timeout=0.2))
    requests.get(srv.url + "/h", headers={"Consumer-Id": "h"})
    with Producer(srv.url, prefix="") as p:  # a standalone Dispatcher: no /push mount
        p.publish("ok").to("/h")
        with pytest.raises(MessageTooLargeError):
            p.publish("x" * 101).to("/h")
    assert b.queue_length("h@/h") == 1
    closed_port = free_port()
    with pytest.raises(ConnectError):
        Producer(f"http://127.0.0.1:{closed_port}").publish("x").to("/h")
    off = serve(Dispatcher(backend=b, publish=False, timeout=0.1))
    # publishing disabled: the POST is a long-poll that answers 204 after its timeout — not a publish
    # publishing disabled: the POST is a long-poll (the original accepts every method) that ends in 204 without
    # publishing — the producer notices the missing X-Push-Published header instead of reporting success
    with pytest.raises(HTTPStatusError, match="did not publish") as ei:
        Producer(off.url, prefix="").publish("y").to("/h")
    assert ei.value.status == 204
    assert b.queue_length("h@/h") == 1


def test_http_target_bad_channel_is_refused_locally(serve):
    srv = serve(Dispatcher(backend=EmbeddedBackend(), publish=True))
    with pytest.raises(InvalidChannelError):
        Producer(srv.url, prefix="").publish("z").to("/bad\x01")


def test_async_producer_embedded_and_http(serve):
    b = EmbeddedBackend()
    srv = serve(Dispatcher(backend=b, publish=True, timeout=0.2))
    requests.get(srv.url + "/a", headers={"Consumer-Id": "a"})

    async def main():
        async with AsyncProducer(b) as p:
            await p.publish("direct").to("/a")
        async with AsyncProducer(srv.url, prefix="") as p:
            await p.publish({"via": "http"}).to("/a")
            await p.publish_many(["h1", "h2"]).to("/a")

    asyncio.run(main())
    got = [requests.get(srv.url + "/a", headers={"Consumer-Id": "a"}).content for _ in range(4)]
    assert got == [b"direct", b'{"via":"http"}', b"h1", b"h2"]


def cli(*args):
    """``eventpush …`` (or, while the encoder core is not built, the same subcommand modules)."""
    if importlib.util.find_spec("eventpush._core_py") is not None:
        return [sys.executable, "-m", "eventpush", *args]
    code = (
        "import argparse, sys\n"
        "from eventpush.cli import publish, subscribe\n"
        "p = argparse.ArgumentParser(prog='eventpush'); s = p.add_subparsers()\n"
        "publish.register(s); subscribe.register(s)\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "try:\n    sys.exit(a.func(a))\nexcept KeyboardInterrupt:\n    sys.exit(130)\n"
    )
    return [sys.executable, "-c", code, *args]


def test_cli_publish_and_subscribe(hub):
    srv = hub()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    open_queue(srv.url + "/push/cli", "me")  # so nothing published from here on can miss the subscriber
    sub = subprocess.Popen(cli("subscribe", "/cli", "--from", srv.url, "--consumer", "me", "--count", "3"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        for m in ("one", "two words", "three"):
            r = subprocess.run(cli("publish", "/cli", m, "--to", srv.url), capture_output=True, timeout=30)
            assert r.returncode == 0, r.stderr
        out, err = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert sub.returncode == 0, err
    assert out == b"one\ntwo words\nthree\n"
    bad = subprocess.run(cli("publish", "/x", "m", "--to", f"http://127.0.0.1:{free_port()}"), capture_output=True,
                         timeout=30)
    assert bad.returncode == 1 and b"eventpush publish" in bad.stderr


def test_cli_subscribe_ctrl_c_exits_0(hub):
    srv = hub()
    open_queue(srv.url + "/push/cc", "cc")
    sub = subprocess.Popen(cli("subscribe", "/cc", "--from", srv.url, "--consumer", "cc"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        requests.post(srv.url + "/push/cc", data=b"seen")
        first = sub.stdout.readline()  # printed as it arrived (the subscription loop is running)
        sub.send_signal(signal.SIGINT)
        rest, err = sub.communicate(timeout=20)
        out = first + rest
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert sub.returncode == 0, err
    assert out == b"seen\n"


_LOST_INTERRUPT = r"""
import signal, sys, time
from eventpush.cli import subscribe
signal.signal(signal.SIGINT, subscribe._on_sigint)

class Response:
    def __del__(self):  # like the previous HTTP response being closed as the next long-poll starts
        sys.stdout.write("closing\n"); sys.stdout.flush()
        time.sleep(5)

r = Response()
del r
sys.stdout.write("polling\n"); sys.stdout.flush()
time.sleep(60)
"""


@pytest.mark.skipif(importlib.util.find_spec("aio_pika") is None, reason="needs aio-pika")
def test_cli_subscribe_from_an_unreachable_broker_says_why_and_retries():
    import select
    import socket
    import time

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "eventpush", "subscribe", "/x", "--from",
                             f"amqp://guest:guest@127.0.0.1:{port}/"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        lines = []
        while len(lines) < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                lines.append(proc.stderr.readline())
        assert len(lines) == 2, lines
        assert proc.poll() is None  # still trying, no traceback
        assert all("is not reachable (" in ln and "Connect call failed" in ln and "retrying in" in ln for ln in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(importlib.util.find_spec("aio_pika") is None, reason="needs aio-pika")
def test_producer_to_an_unreachable_broker_raises_within_connect_timeout():
    """No broker at the URL: ``Producer(amqp://…)`` raises once ``connect_timeout`` (5 s) passed, naming the URL
    (without its password) and the cause, and leaves no connection thread or buffered message behind to wait for at
    exit (it used to return, buffer the message and wait 30 s for confirms in ``close()``, then 10 s at exit)."""
    from eventpush.realtime import producer as producer_module

    url = f"amqp://guest:secret@127.0.0.1:{free_port()}/"  # nothing listens there
    threads_before = {t.ident for t in threading.enumerate() if t.name == "eventpush-amqp-producer"}
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as ei:
        Producer(url)
    assert time.monotonic() - t0 < 15
    msg = str(ei.value)
    assert msg.startswith(f"RabbitMQ at {url.replace(':secret@', ':***@')} is not reachable (")
    assert "Connect call failed" in msg and "secret" not in msg
    assert url not in producer_module._amqp_targets  # nothing for the exit-time flush to wait on
    deadline = time.monotonic() + 5
    while {t.ident for t in threading.enumerate() if t.name == "eventpush-amqp-producer"} - threads_before:
        assert time.monotonic() < deadline, "the producer's I/O thread was left running"
        time.sleep(0.05)

    async def publish_async():
        async with AsyncProducer(url, connect_timeout=1) as p:
            await p.publish("x").to("/x")

    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=r"is not reachable \(.*Connect call failed"):
        asyncio.run(publish_async())
    assert time.monotonic() - t0 < 10


@pytest.mark.skipif(importlib.util.find_spec("aio_pika") is None, reason="needs aio-pika")
def test_cli_publish_to_an_unreachable_broker_fails_fast_and_says_why():
    """``eventpush publish … --to amqp://`` with no broker there: exit 1 within seconds (it took ~45 s: a 5 s
    connect wait, a 30 s wait for confirms in close(), 10 s more at exit) with one line on stderr naming the URL
    and the reason."""
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    r = subprocess.run(cli("publish", "/x", "hello", "--to", f"amqp://guest:secret@127.0.0.1:{port}/"),
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert took < 20, took
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr  # no traceback, no per-attempt noise from aio-pika
    assert lines[0].startswith(f"eventpush publish: RabbitMQ at amqp://guest:***@127.0.0.1:{port}/ is not reachable (")
    assert "Connect call failed" in lines[0] and "secret" not in lines[0]


def test_subscribe_ctrl_c_ends_even_when_python_drops_the_interrupt():
    """A KeyboardInterrupt raised while a finalizer runs is dropped by Python ("Exception ignored"); the
    subscriber's Ctrl-C handler still ends the process with status 0 within its grace period."""
    proc = subprocess.Popen([sys.executable, "-c", _LOST_INTERRUPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"closing\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Exception ignored" in err and b"KeyboardInterrupt" in err  # the interrupt was dropped...
    assert out == b"polling\n"  # ...and the program went on to its next long-poll...
    assert proc.returncode == 0  # ...until the grace timer ended it


def test_messages_nested_too_deep_are_refused_not_written():
    """orjson does not count tuples: a message holding tuples nested thousands deep corrupted the heap. The
    guarded encoding refuses it at the call site, in a child process that must survive; plain messages are as
    orjson writes them, with integers beyond 64 bits kept whole."""
    code = (
        "from eventpush.realtime._base import to_bytes\n"
        "from eventpush.errors import EventTypeError\n"
        "t = ()\n"
        "for _ in range(30000):\n"
        "    t = (t,)\n"
        "try:\n"
        "    to_bytes({'a': t}, index=3)\n"
        "except EventTypeError as exc:\n"
        "    print('refused', exc.index, 'Nesting too deep' in str(exc))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.split()) == (0, ["refused", "3", "True"]), r.stderr[-2000:]
    from eventpush.realtime._base import to_bytes

    assert to_bytes({"a": [1, (2, "é")], "n": 2**70}) == b'{"a":[1,[2,"\xc3\xa9"]],"n":1180591620717411303424}'
