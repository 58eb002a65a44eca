"""The embedded broker, the ``test`` backend, the registry and the configuration (spec §2, §3.2, §3.3, §8)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from eventpush.realtime import (
    Configuration,
    EmbeddedBackend,
    InvalidChannelError,
    TestBackend,
    backend_names,
    get_backend,
    register_backend,
)
from eventpush.realtime.backends import Backend


def run(coro):
    return asyncio.run(coro)


async def take(sub, timeout=1.0):
    d = await sub.get(timeout)
    assert d is not None, "expected a message"
    await d.ack()
    return d.body


def test_registry_has_the_three_brokers():
    assert get_backend("embedded") is EmbeddedBackend
    assert get_backend("test") is TestBackend
    from eventpush.realtime.amqp import AmqpBackend

    assert get_backend("amqp") is AmqpBackend
    assert {"embedded", "amqp", "test"} <= set(backend_names())
    with pytest.raises(KeyError, match="nope"):
        get_backend("nope")

    class Mine(EmbeddedBackend):
        name = "mine"

    register_backend("mine", Mine)
    assert get_backend("mine") is Mine
    assert Configuration(backend="mine").create_backend().__class__ is Mine


def test_fanout_at_publish_time_and_drop_without_queue():
    async def main():
        b = EmbeddedBackend()
        b.publish(b"before", "/c")  # no queue yet: dropped (fanout semantics) and counted
        assert b.stats()["dropped_no_queue"] == 1
        s1 = await b.subscribe("a", "/c")
        s2 = await b.subscribe("b", "/c")
        other = await b.subscribe("a", "/other")
        b.publish(b"m1", "/c")
        b.publish(b"m2", "/c")
        assert [await take(s1), await take(s1)] == [b"m1", b"m2"]
        assert [await take(s2), await take(s2)] == [b"m1", b"m2"]
        assert await other.get(0.05) is None
        assert b.queue_names() == ["a@/c", "a@/other", "b@/c"]

    run(main())


def test_prefetch_one_and_requeue_at_head():
    async def main():
        b = EmbeddedBackend()
        s = await b.subscribe("a", "/c")
        b.publish_many([b"1", b"2", b"3"], "/c")
        d1 = await s.get(1)
        # prefetch 1: a second subscription of the same consumer gets nothing while d1 is unacked
        s_twin = await b.subscribe("a", "/c")
        assert await s_twin.get(0.05) is None
        await d1.reject(requeue=True)
        again = await s.get(1)
        assert again.body == b"1"  # back at the head
        await again.ack()
        assert [await take(s), await take(s)] == [b"2", b"3"]
        assert b.stats()["requeued"] == 1

    run(main())


def test_waiting_subscription_is_woken_by_a_publish_from_another_thread():
    async def main():
        b = EmbeddedBackend()
        s = await b.subscribe("a", "/c")
        t = threading.Timer(0.05, b.publish, args=(b"late", "/c"))
        t.start()
        t0 = time.monotonic()
        body = await take(s, 2.0)
        assert body == b"late" and time.monotonic() - t0 < 1.0
        t.join()

    run(main())


def test_queue_expires_ttl_after_last_subscription_with_its_messages():
    async def main():
        b = EmbeddedBackend(queue_ttl=0.2)
        s = await b.subscribe("a", "/c")
        await s.cancel()
        b.publish(b"kept", "/c")  # the queue outlives the subscription…
        assert b.queue_length("a@/c") == 1
        time.sleep(0.3)
        b.publish(b"after expiry", "/c")  # …until queue_ttl: then it is gone with its messages
        assert b.queue_names() == []
        s2 = await b.subscribe("a", "/c")
        assert await s2.get(0.05) is None
        st = b.stats()
        assert st["expired_queues"] == 1 and st["expired_messages"] == 1 and st["dropped_no_queue"] == 1

    run(main())


def test_resubscribe_within_ttl_cancels_expiry():
    async def main():
        b = EmbeddedBackend(queue_ttl=0.3)
        s = await b.subscribe("a", "/c")
        await s.cancel()
        b.publish(b"x", "/c")
        time.sleep(0.15)
        s = await b.subscribe("a", "/c")  # back within the TTL
        time.sleep(0.25)  # longer than the TTL since the first cancel, but the queue is in use
        b.publish(b"y", "/c")
        assert [await take(s), await take(s)] == [b"x", b"y"]

    run(main())


def test_max_queue_messages_drops_oldest_and_counts():
    async def main():
        b = EmbeddedBackend(max_queue_messages=2)
        s = await b.subscribe("a", "/c")
        b.publish_many([b"1", b"2", b"3"], "/c")
        assert [await take(s), await take(s)] == [b"2", b"3"]
        assert b.stats()["dropped_overflow"] == 1

    run(main())


def test_thousand_consumers_each_get_every_message():
    async def main():
        b = EmbeddedBackend()
        subs = [await b.subscribe(f"c{i}", "/big") for i in range(1000)]

        async def consume(s):
            return [await take(s, 5.0) for _ in range(5)]

        tasks = [asyncio.ensure_future(consume(s)) for s in subs]
        await asyncio.sleep(0.01)
        # published from another thread while all 1000 wait
        t = threading.Thread(target=lambda: [b.publish(b"m%d" % i, "/big") for i in range(5)])
        t.start()
        results = await asyncio.gather(*tasks)
        t.join()
        assert all(r == [b"m0", b"m1", b"m2", b"m3", b"m4"] for r in results)
        assert b.stats()["acked"] == 5000

    run(main())


def test_invalid_names_are_refused():
    async def main():
        b = EmbeddedBackend()
        for bad in ("", "x" * 191, "/a\x00b", "amq.direct"):
            with pytest.raises(InvalidChannelError):
                await b.subscribe("a", bad)
        with pytest.raises(ValueError, match="consumer"):
            await b.subscribe("a@b", "/c")

    run(main())


def test_test_backend_is_synchronous_fifo_and_drops_on_unsubscribe():
    b = TestBackend()
    b.publish(b"1", "/c")  # appended even without a subscriber (unlike fanout)
    b.publish(b"2", "/c")
    got = []
    unsubscribe = b.subscribe_sync("/c", got.append)
    assert got == [b"1", b"2"]  # drained synchronously, oldest first (the original popped newest first)
    b.publish(b"3", "/c")
    assert got == [b"1", b"2", b"3"]  # delivered synchronously while subscribed
    unsubscribe()
    b.publish(b"4", "/c")
    assert b.drain("/c") == [b"4"]
    b.publish(b"5", "/c")
    unsub2 = b.subscribe_sync("/other", got.append)
    unsub2()
    assert b.channels == {"/c": [b"5"]}
    u = b.subscribe_sync("/c", lambda m: None)
    u()  # deleting the subscription deletes the channel's messages
    assert b.drain("/c") == []


def test_test_backend_async_subscription_fifo():
    async def main():
        b = TestBackend()
        b.publish_many([b"a", b"b"], "/c")
        s = await b.subscribe("x", "/c")
        assert [await take(s), await take(s)] == [b"a", b"b"]
        await s.cancel()

    run(main())


def test_configuration_defaults_and_from_hash(tmp_path):
    c = Configuration()
    assert c.backend == "embedded" and c.queue_ttl == 15.0
    a = c.amqp
    assert (a.host, a.port, a.username, a.password, a.vhost) == ("127.0.0.1", 5672, "guest", "guest", "/")
    assert a.url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert c.long_poll.url == "http://localhost:3000/_push" and c.long_poll.timeout == 30.0
    assert c.web_socket.url == "ws://localhost:3000/_push"

    c = Configuration.from_hash(
        {
            "backend": "amqp",
            "amqp": {"host": "10.0.0.1", "port": 5673, "username": "u", "password": "p", "vhost": "v", "queue_ttl": 5},
            "long_poll": {"url": "http://h/_push", "timeout": 20},
            "web_socket": {"url": "ws://h/_push"},
        }
    )
    assert c.backend == "amqp" and c.queue_ttl == 5.0 and c.amqp.url == "amqp://u:p@10.0.0.1:5673/v"
    assert c.long_poll.timeout == 20.0 and c.web_socket.url == "ws://h/_push"
    assert Configuration.from_hash({"queue_ttl": 2}).queue_ttl == 2.0
    assert Configuration.from_hash({":backend": ":test"}).backend == "test"  # a push.yml written for Ruby
    with pytest.raises(ValueError, match="colour"):
        Configuration.from_hash({"colour": 1})
    with pytest.raises(ValueError, match="amqp.hots"):
        Configuration.from_hash({"amqp": {"hots": "x"}})
    assert isinstance(Configuration.from_hash({"queue_ttl": 1}).create_backend(), EmbeddedBackend)
    assert Configuration.from_hash({"queue_ttl": 1}).create_backend().queue_ttl == 1.0

    yml = tmp_path / "push.yml"
    yml.write_text("production:\n  backend: test\n  amqp:\n    queue_ttl: 7\n")
    c = Configuration.from_yaml(str(yml), "production")
    assert c.backend == "test" and c.queue_ttl == 7.0
    assert isinstance(c.create_backend(), TestBackend)


def test_backend_interface_flags():
    assert EmbeddedBackend.publishable and EmbeddedBackend.subscribable
    assert issubclass(TestBackend, Backend)
