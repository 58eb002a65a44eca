"""Brokers ("backends") of ``eventpush.realtime``: the interface, the registry, the embedded and the ``test`` broker.

A backend moves opaque messages from ``publish(message, channel)`` into the per-consumer queues
``"{consumer_id}@{channel}"`` that exist for that channel at publish time (fanout), and hands them to subscriptions
one at a time (prefetch 1). A :class:`Delivery` is settled by the transport only after the message was handed to the
client (``ack``), or put back at the head of its queue (``reject(requeue=True)``).

The RabbitMQ backend lives in :mod:`eventpush.realtime.amqp` and is registered here as ``"amqp"``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional

from ._base import check_channel, check_consumer

__all__ = [
    "Backend",
    "Subscription",
    "Delivery",
    "EmbeddedBackend",
    "TestBackend",
    "register_backend",
    "get_backend",
    "backend_names",
]

log = logging.getLogger("eventpush.realtime.backends")

_REGISTRY: Dict[str, Callable[..., "Backend"]] = {}


def register_backend(name: str, cls: Callable[..., "Backend"]) -> None:
    """Register a backend class (or factory) under ``name`` (as Push's ``Backend::Adapters.register``)."""
    if not isinstance(name, str) or not name:
        raise ValueError("backend name must be a non-empty str")
    _REGISTRY[name] = cls


def get_backend(name: str) -> Callable[..., "Backend"]:
    """The backend class registered under ``name`` (``embedded``, ``amqp``, ``test``, or your own)."""
    if name == "amqp" and "amqp" not in _REGISTRY:
        from . import amqp  # noqa: F401 - registers itself; imported lazily (aio-pika is an extra)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no realtime backend registered as {name!r} (known: {', '.join(backend_names())})") from None


def backend_names() -> List[str]:
    """Names of the registered backends."""
    names = set(_REGISTRY) | {"amqp"}
    return sorted(names)


class Delivery:
    """One message handed to a subscription; settle it exactly once with :meth:`ack` or :meth:`reject`."""

    __slots__ = ("body", "_settle", "settled")

    def __init__(self, body: bytes, settle: Callable[[bool, bool], Any]) -> None:
        self.body = body
        self._settle = settle
        self.settled = False

    async def ack(self) -> None:
        """The message reached the client: remove it from its queue."""
        if not self.settled:
            self.settled = True
            r = self._settle(True, False)
            if asyncio.iscoroutine(r):
                await r

    async def reject(self, requeue: bool = True) -> None:
        """The message did not reach the client: put it back at the head of its queue (or drop it)."""
        if not self.settled:
            self.settled = True
            r = self._settle(False, requeue)
            if asyncio.iscoroutine(r):
                await r

    def __repr__(self) -> str:
        return f"<Delivery {self.body[:40]!r}{'…' if len(self.body) > 40 else ''}>"


class Subscription:
    """A consumer's subscription to one channel. Obtained from ``await backend.subscribe(consumer_id, channel)``."""

    consumer: str
    channel: str

    async def get(self, timeout: Optional[float]) -> Optional[Delivery]:
        """The next message (a :class:`Delivery` to settle), or ``None`` after ``timeout`` seconds."""
        raise NotImplementedError

    async def cancel(self) -> None:
        """Stop receiving; the queue stays for ``queue_ttl``. An outstanding Delivery may still be settled."""
        raise NotImplementedError

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.cancel()


class Backend:
    """Base class of the brokers. ``publish`` is thread-safe; subscriptions live on an asyncio loop."""

    name = ""
    publishable = True
    subscribable = True

    def __init__(self, *, queue_ttl: float = 15.0, **options: Any) -> None:
        if queue_ttl <= 0:
            raise ValueError("queue_ttl must be > 0 seconds")
        self.queue_ttl = float(queue_ttl)

    def publish(self, message: bytes, channel: str) -> None:
        """Copy ``message`` into every queue of ``channel`` (thread-safe, non-blocking)."""
        raise NotImplementedError

    def publish_many(self, messages: Iterable[bytes], channel: str) -> None:
        """Publish several messages to one channel, in order."""
        for m in messages:
            self.publish(m, channel)

    async def publish_async(self, messages: List[bytes], channel: str) -> None:
        """Publish and wait until the broker took the messages (confirms on RabbitMQ)."""
        self.publish_many(messages, channel)

    async def subscribe(self, consumer: str, channel: str) -> Subscription:
        """Open a subscription of ``consumer`` to ``channel`` (creating the queue if needed)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Connect (called on the serving loop before the first request)."""

    async def close(self) -> None:
        """Disconnect."""

    def stats(self) -> Dict[str, int]:
        """Counters (published, delivered, dropped, …)."""
        return {}


def _wake(fut: "Optional[asyncio.Future[None]]", loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
    """Resolve a waiter future from any thread."""
    if fut is None:
        return
    if threading.get_ident() == thread_id:
        if not fut.done():
            fut.set_result(None)
    else:
        # PERF: only cross-thread publishes pay for the loop's self-pipe write.
        try:
            loop.call_soon_threadsafe(_set_if_pending, fut)
        except RuntimeError:  # the loop was closed: nobody is waiting any more
            pass


def _set_if_pending(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


# --------------------------------------------------------------------------------------------------------------------
# Embedded broker


class _Queue:
    __slots__ = ("name", "channel", "messages", "unacked", "subs", "idle_since", "waiters")

    def __init__(self, name: str, channel: str) -> None:
        self.name = name
        self.channel = channel
        self.messages: Deque[bytes] = deque()
        self.unacked = False
        self.subs = 0
        self.idle_since = 0.0
        self.waiters: Deque["_EmbeddedSubscription"] = deque()


class EmbeddedBackend(Backend):
    """The in-process broker (default): per ``consumer@channel`` FIFO queues, fanout at publish time, prefetch 1,
    ack/requeue at the head, expiry ``queue_ttl`` after the last subscription ended, optional ``max_queue_messages``
    (oldest dropped and counted). Safe to publish from any thread; state lives in this process only."""

    name = "embedded"

    def __init__(self, *, queue_ttl: float = 15.0, max_queue_messages: Optional[int] = None, **options: Any) -> None:
        super().__init__(queue_ttl=queue_ttl)
        if max_queue_messages is not None and max_queue_messages < 1:
            raise ValueError("max_queue_messages must be >= 1")
        self.max_queue_messages = max_queue_messages
        self._lock = threading.Lock()
        self._queues: Dict[str, _Queue] = {}
        self._channels: Dict[str, Dict[str, _Queue]] = {}
        self._next_sweep = 0.0
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.requeued = 0
        self.dropped_no_queue = 0
        self.dropped_overflow = 0
        self.expired_queues = 0
        self.expired_messages = 0

    # -- queues (call with the lock held) --------------------------------------------------------------------------
    def _expired(self, q: _Queue, now: float) -> bool:
        return q.subs == 0 and not q.unacked and now - q.idle_since >= self.queue_ttl

    def _drop_queue(self, q: _Queue) -> None:
        self._queues.pop(q.name, None)
        chan = self._channels.get(q.channel)
        if chan is not None:
            chan.pop(q.name, None)
            if not chan:
                del self._channels[q.channel]
        self.expired_queues += 1
        self.expired_messages += len(q.messages)

    def _sweep(self, now: float) -> None:
        # Expiry is exact without timers: every operation checks the queues it touches; this sweep only frees
        # the memory of queues nobody touches any more.
        self._next_sweep = now + max(min(self.queue_ttl / 4.0, 5.0), 0.01)
        for q in [q for q in self._queues.values() if self._expired(q, now)]:
            self._drop_queue(q)

    # -- publishing -------------------------------------------------------------------------------------------------
    def publish(self, message: bytes, channel: str) -> None:
        if channel not in self._channels:
            # PERF: the hub publishes every stored event; with nobody listening this is the whole cost.
            with self._lock:
                if channel not in self._channels:
                    self.published += 1
                    self.dropped_no_queue += 1
                    return
        self.publish_many((message,), channel)

    def publish_many(self, messages: Iterable[bytes], channel: str) -> None:
        msgs = messages if isinstance(messages, (list, tuple)) else list(messages)
        wake: List[_EmbeddedSubscription] = []
        with self._lock:
            self.published += len(msgs)
            chan = self._channels.get(channel)
            if not chan:
                # PERF: the common case for the hub's live-collection channels — one dict lookup, no clock read.
                self.dropped_no_queue += len(msgs)
                return
            now = time.monotonic()
            if now >= self._next_sweep:
                self._sweep(now)
                chan = self._channels.get(channel)
                if not chan:
                    self.dropped_no_queue += len(msgs)
                    return
            limit = self.max_queue_messages
            for q in list(chan.values()):
                if q.subs == 0 and self._expired(q, now):
                    self._drop_queue(q)
                    continue
                q.messages.extend(msgs)
                if limit is not None:
                    while len(q.messages) > limit:
                        q.messages.popleft()
                        self.dropped_overflow += 1
                if q.waiters and not q.unacked:
                    wake.append(q.waiters.popleft())
            if not self._channels.get(channel):
                self.dropped_no_queue += len(msgs)
        for s in wake:
            s._wake()

    # -- subscribing ------------------------------------------------------------------------------------------------
    async def subscribe(self, consumer: str, channel: str) -> "_EmbeddedSubscription":
        check_consumer(consumer)
        check_channel(channel)
        name = f"{consumer}@{channel}"
        with self._lock:
            now = time.monotonic()
            if now >= self._next_sweep:
                self._sweep(now)
            q = self._queues.get(name)
            if q is not None and self._expired(q, now):
                self._drop_queue(q)
                q = None
            if q is None:
                q = _Queue(name, channel)
                self._queues[name] = q
                self._channels.setdefault(channel, {})[name] = q
            q.subs += 1
        return _EmbeddedSubscription(self, q, consumer, channel)

    def _settle(self, q: _Queue, body: bytes, ack: bool, requeue: bool) -> None:
        wake = None
        with self._lock:
            q.unacked = False
            if ack:
                self.acked += 1
            elif requeue and self._queues.get(q.name) is q:
                q.messages.appendleft(body)
                self.requeued += 1
            if not q.subs:
                q.idle_since = time.monotonic()
            if q.messages and q.waiters:
                wake = q.waiters.popleft()
        if wake is not None:
            wake._wake()

    def queue_names(self) -> List[str]:
        """Names of the live (not expired) queues."""
        with self._lock:
            self._sweep(time.monotonic())
            return sorted(self._queues)

    def queue_length(self, name: str) -> int:
        """Messages ready in queue ``name`` (0 when it does not exist)."""
        with self._lock:
            q = self._queues.get(name)
            if q is None or self._expired(q, time.monotonic()):
                return 0
            return len(q.messages)

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {
                "published": self.published,
                "delivered": self.delivered,
                "acked": self.acked,
                "requeued": self.requeued,
                "dropped_no_queue": self.dropped_no_queue,
                "dropped_overflow": self.dropped_overflow,
                "expired_queues": self.expired_queues,
                "expired_messages": self.expired_messages,
                "queues": len(self._queues),
            }


class _EmbeddedSubscription(Subscription):
    __slots__ = ("_b", "_q", "consumer", "channel", "_fut", "_loop", "_thread", "_cancelled")

    def __init__(self, backend: EmbeddedBackend, q: _Queue, consumer: str, channel: str) -> None:
        self._b = backend
        self._q = q
        self.consumer = consumer
        self.channel = channel
        self._fut: Optional[asyncio.Future[None]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread = 0
        self._cancelled = False

    def _wake(self) -> None:
        if self._loop is not None:
            _wake(self._fut, self._loop, self._thread)

    async def get(self, timeout: Optional[float]) -> Optional[Delivery]:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._thread = threading.get_ident()
        deadline = None if timeout is None else loop.time() + timeout
        b = self._b
        q = self._q
        while True:
            with b._lock:
                if self._cancelled:
                    return None
                if q.messages and not q.unacked:
                    body = q.messages.popleft()
                    q.unacked = True
                    b.delivered += 1
                    return Delivery(body, functools.partial(b._settle, q, body))
                fut = self._fut = loop.create_future()
                q.waiters.append(self)
            try:
                if deadline is None:
                    await fut
                else:
                    remaining = deadline - loop.time()
                    if remaining > 0:
                        await asyncio.wait((fut,), timeout=remaining)
            finally:
                with b._lock:
                    self._fut = None
                    try:
                        q.waiters.remove(self)
                    except ValueError:
                        pass
                    # we were woken for a message we will not take (timeout/cancel): pass the turn on
                    pass_on = (not fut.done() or fut.cancelled()) and q.messages and not q.unacked and q.waiters
                    nxt = q.waiters.popleft() if pass_on else None
                if nxt is not None:
                    nxt._wake()
            if not fut.done() and deadline is not None and loop.time() >= deadline:
                return None

    async def cancel(self) -> None:
        self.cancel_nowait()

    def cancel_nowait(self) -> None:
        """Synchronous :meth:`cancel` (the embedded broker never waits)."""
        b = self._b
        with b._lock:
            if self._cancelled:
                return
            self._cancelled = True
            q = self._q
            q.subs -= 1
            if q.subs == 0:
                q.idle_since = time.monotonic()
            nxt = q.waiters.popleft() if (q.messages and not q.unacked and q.waiters) else None
            fut = self._fut
        if fut is not None and self._loop is not None:
            _wake(fut, self._loop, self._thread)
        if nxt is not None:
            nxt._wake()


register_backend("embedded", EmbeddedBackend)
register_backend("memory", EmbeddedBackend)


# --------------------------------------------------------------------------------------------------------------------
# test backend


class TestBackend(Backend):
    """Push's synchronous ``test`` backend: a dict channel → list. ``publish`` appends even without a subscriber;
    a subscription drains FIFO (the original popped newest first — fixed); deleting a subscription deletes its
    channel's messages. Also serves a Dispatcher (one message per long-poll, as the other brokers)."""

    __test__ = False  # not a pytest class
    name = "test"

    def __init__(self, *, queue_ttl: float = 15.0, **options: Any) -> None:
        super().__init__(queue_ttl=queue_ttl)
        self._lock = threading.Lock()
        self.channels: Dict[str, List[bytes]] = {}
        self._sync: Dict[str, List[Callable[[bytes], Any]]] = {}
        self._waiters: Dict[str, List["_TestSubscription"]] = {}

    def publish(self, message: bytes, channel: str) -> None:
        with self._lock:
            callbacks = list(self._sync.get(channel, ()))
            if not callbacks:
                self.channels.setdefault(channel, []).append(message)
            waiters = self._waiters.pop(channel, [])
        for cb in callbacks:
            cb(message)
        for w in waiters:
            w._wake()

    def subscribe_sync(self, channel: str, callback: Callable[[bytes], Any]) -> Callable[[], None]:
        """Drain ``channel`` into ``callback`` now (FIFO), then deliver each later publish synchronously.
        Returns the unsubscribe function, which also deletes the channel's messages."""
        with self._lock:
            pending = self.channels.pop(channel, [])
            self._sync.setdefault(channel, []).append(callback)
        for m in pending:
            callback(m)

        def unsubscribe() -> None:
            with self._lock:
                cbs = self._sync.get(channel, [])
                if callback in cbs:
                    cbs.remove(callback)
                if not cbs:
                    self._sync.pop(channel, None)
                self.channels.pop(channel, None)

        return unsubscribe

    def drain(self, channel: str) -> List[bytes]:
        """Take every message of ``channel``, oldest first."""
        with self._lock:
            return self.channels.pop(channel, [])

    async def subscribe(self, consumer: str, channel: str) -> "_TestSubscription":
        check_channel(channel)
        return _TestSubscription(self, consumer, channel)


class _TestSubscription(Subscription):
    def __init__(self, backend: TestBackend, consumer: str, channel: str) -> None:
        self._b = backend
        self.consumer = consumer
        self.channel = channel
        self._fut: Optional[asyncio.Future[None]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread = 0
        self._cancelled = False

    def _wake(self) -> None:
        if self._loop is not None:
            _wake(self._fut, self._loop, self._thread)

    async def get(self, timeout: Optional[float]) -> Optional[Delivery]:
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        deadline = None if timeout is None else loop.time() + timeout
        b = self._b
        while not self._cancelled:
            with b._lock:
                msgs = b.channels.get(self.channel)
                if msgs:
                    body = msgs.pop(0)

                    def settle(ack: bool, requeue: bool, body: bytes = body) -> None:
                        if not ack and requeue:
                            with b._lock:
                                b.channels.setdefault(self.channel, []).insert(0, body)

                    return Delivery(body, settle)
                fut = self._fut = loop.create_future()
                b._waiters.setdefault(self.channel, []).append(self)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            await asyncio.wait((fut,), timeout=remaining)
            self._fut = None
        return None

    async def cancel(self) -> None:
        self._cancelled = True
        with self._b._lock:
            self._b.channels.pop(self.channel, None)
        self._wake()


register_backend("test", TestBackend)
