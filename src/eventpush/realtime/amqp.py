"""The RabbitMQ backend (``"amqp"``), with Push's own topology.

- one fanout exchange per channel, named exactly as the channel, declared ``auto_delete`` by publishers and
  subscribers; publish = a message to that exchange with no routing key;
- one queue per (consumer, channel) named ``"{consumer}@{channel}"``, bound to the exchange, with
  ``x-expires = queue_ttl * 1000`` — RabbitMQ deletes it (and, with its last binding, the exchange) once unused;
- consumption on one shared channel with ``prefetch 1`` per consumer and manual acks, settled only after the
  transport handed the message to the client.

A channel is an opaque string, but aio-pika's protocol layer (pamqp) carries only names of the characters
``a-zA-Z0-9-_.:@#,/+`` and space, exchange names of at most 127: any other channel (or queue) name is replaced by
``"#"`` and the SHA-256 of its UTF-8 bytes, on every node alike (:func:`amqp_name`). An exchange RabbitMQ refuses
(one of that name exists with another type or arguments, or permissions deny it) fails the messages for that
channel with :class:`~eventpush.realtime.InvalidChannelError` (a 400), counted in ``refused``; the others go on.

aio-pika's ``connect_robust`` reconnects after a broker restart; per-request queues and consumers are declared
non-robust (they must not pile up in aio-pika's restore registry) and are re-opened by the subscription itself
when its channel died. Publishing goes through one pump task with publisher confirms: ``publish()`` is a
thread-safe append; messages are kept (bounded) and retried while the broker is away — never dropped silently.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import threading
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

try:
    import aio_pika
    import aiormq.exceptions
    from aio_pika import ExchangeType
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the amqp realtime backend needs aio-pika: pip install 'eventpush[amqp]'") from exc

from ._base import BrokerUnavailableError, InvalidChannelError, check_channel, check_consumer
from .backends import Backend, Delivery, Subscription, register_backend

__all__ = ["AmqpBackend", "DEFAULT_URL", "amqp_name"]

log = logging.getLogger("eventpush.realtime.amqp")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

# The names pamqp (under aio-pika) lets through, for exchanges and queues alike; exchanges have at most 127.
_AMQP_NAME = re.compile(r"[a-zA-Z0-9\-_.:@#,/+ ]*\Z")
_MAX_EXCHANGE = 127
_MAX_QUEUE = 255

# RabbitMQ refuses this exchange (or queue): retrying cannot help, only the messages for that channel fail.
_REFUSED = (
    aiormq.exceptions.ChannelPreconditionFailed,  # another exchange of that name: other type or arguments
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelLockedResource,
)  # (not NOT_FOUND: an exchange auto-deleted between a declare and a bind is a race, retried as "away")


def amqp_name(name: str, limit: int = _MAX_EXCHANGE) -> str:
    """``name`` itself when RabbitMQ's client can carry it (the topology names exchanges exactly as channels), else
    ``"#"`` and the SHA-256 of its UTF-8 bytes (65 characters): the same on every node."""
    if len(name) <= limit and _AMQP_NAME.match(name):
        return name
    return "#" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


# Exceptions that mean "the broker/channel is away right now" rather than a bug.
_AWAY = (
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    RuntimeError,
)


class AmqpBackend(Backend):
    """RabbitMQ broker for several hub processes. ``url`` is an ``amqp://`` URL."""

    name = "amqp"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        queue_ttl: float = 15.0,
        reconnect_interval: float = 1.0,
        subscribe_timeout: float = 2.0,
        max_pending: int = 100_000,
        connect_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__(queue_ttl=queue_ttl)
        self.url = url
        self.reconnect_interval = reconnect_interval
        #: how long start() waits for the first connection (and one connection attempt may take)
        self.connect_timeout = float(connect_timeout)
        self.subscribe_timeout = subscribe_timeout
        self.max_pending = max_pending
        self._conn: Any = None
        self._sub_ch: Any = None
        self._pub_ch: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread = 0
        self._outbox: Deque[Tuple[str, bytes, Optional[asyncio.Future]]] = deque()
        self._wake_fut: Optional[asyncio.Future] = None
        self._wake_pending = False
        self._pump_task: Optional[asyncio.Task] = None
        self._connect_task: Optional[asyncio.Task] = None
        self._connected: Optional[asyncio.Event] = None  # created on the serving loop in start()
        self._started = False
        self._closed = False
        self._start_lock = threading.Lock()
        self.published = 0
        self.confirmed = 0
        self.dropped_overflow = 0
        self.publish_retries = 0
        self.reconnects = 0
        self.refused = 0  # messages failed because RabbitMQ refused their channel's exchange
        #: why the last connection attempt failed (None once connected): error messages name the real cause
        self.last_error: Optional[str] = None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect: wait up to ``connect_timeout`` for the first connection, then return even if the broker is down
        (it keeps trying in the background; :attr:`connected` tells, :meth:`unreachable` says why)."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._connected = asyncio.Event()
        self._pump_task = asyncio.ensure_future(self._pump())
        self._connect_task = asyncio.ensure_future(self._connect_forever())
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=self.connect_timeout)
        except asyncio.TimeoutError:
            log.warning("RabbitMQ at %s not reachable yet; retrying in the background", _safe(self.url))

    async def _connect_forever(self) -> None:
        while not self._closed:
            made: List[Any] = []

            def connection(*args: Any, **kwargs: Any) -> Any:
                made.append(aio_pika.RobustConnection(*args, **kwargs))
                return made[-1]

            try:
                conn = await aio_pika.connect_robust(
                    self.url, reconnect_interval=self.reconnect_interval, timeout=self.connect_timeout,
                    connection_class=connection,
                )
                sub = await conn.channel()
                await sub.set_qos(prefetch_count=1)  # per consumer (global=False)
                pub = await conn.channel(publisher_confirms=True)
            except BaseException as exc:
                # A connection that failed (or whose attempt was cancelled by close()) is closed: left alone, a
                # cancelled RobustConnection goes on reconnecting in the background. Bounded: aio-pika 9 (the
                # newest for Python 3.9) waits in close() for its own reconnect loop, which never ends.
                for c in made:
                    try:
                        await asyncio.wait_for(c.close(), timeout=self.connect_timeout)
                    except (Exception, asyncio.TimeoutError):  # noqa: BLE001 - closing what never opened
                        pass
                if not isinstance(exc, _AWAY):
                    raise
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("cannot connect to RabbitMQ at %s: %s; retrying", _safe(self.url), exc)
                await asyncio.sleep(self.reconnect_interval)
                continue
            self.last_error = None
            self._conn, self._sub_ch, self._pub_ch = conn, sub, pub
            conn.reconnect_callbacks.add(self._on_reconnect)
            conn.close_callbacks.add(self._on_close)
            assert self._connected is not None
            self._connected.set()
            self._kick()
            log.info("connected to RabbitMQ at %s", _safe(self.url))
            return

    def _on_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        log.info("reconnected to RabbitMQ at %s", _safe(self.url))
        if self._connected is not None:
            self._connected.set()
        self._kick()

    def _on_close(self, *_: Any) -> None:
        if self._connected is not None and not self._closed:
            self._connected.clear()
            log.warning("lost the RabbitMQ connection to %s; reconnecting", _safe(self.url))

    def unreachable(self, why: Optional[str] = None, method: Optional[str] = None) -> BrokerUnavailableError:
        """The error for "not connected": names the URL (without its password) and why — the last connection
        failure, else ``why``."""
        why = self.last_error or why
        return BrokerUnavailableError(
            f"RabbitMQ at {_safe(self.url)} is not reachable" + (f" ({why})" if why else ""), method=method
        )

    @property
    def connected(self) -> bool:
        """True while the connection to RabbitMQ is up."""
        return self._connected is not None and self._connected.is_set() and self._conn is not None \
            and not self._conn.is_closed

    async def wait_ready(self, timeout: Optional[float]) -> bool:
        """Wait until the subscription channel is usable; False after ``timeout``."""
        if not self._started:
            await self.start()
        try:
            await asyncio.wait_for(self._ready(), timeout=timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _ready(self) -> None:
        assert self._connected is not None
        while True:
            await self._connected.wait()
            ch = self._sub_ch
            conn = self._conn
            if conn is not None and not conn.is_closed and ch is not None:
                try:
                    await ch.ready()
                    und = await ch.get_underlay_channel()
                    if not und.is_closed:
                        return
                except _AWAY:
                    pass
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """Flush what can still be published (briefly), then disconnect."""
        if self._closed:
            return
        if self._started and self._outbox and self._connected is not None and self._connected.is_set():
            try:
                await asyncio.wait_for(self.flush(), timeout=5.0)
            except (asyncio.TimeoutError, BrokerUnavailableError):
                log.warning("closing with %d unpublished messages", len(self._outbox))
        self._closed = True
        for t in (self._pump_task, self._connect_task):
            if t is not None:
                t.cancel()
                try:
                    await t
                except BaseException:  # noqa: BLE001 - it was cancelled
                    pass
        if self._conn is not None:
            try:
                await self._conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    # -- publishing ---------------------------------------------------------------------------------------------
    def publish(self, message: bytes, channel: str) -> None:
        """Thread-safe buffered publish: appended to the pump's outbox, confirmed in the background."""
        check_channel(channel)  # a name RabbitMQ refuses would block the pump forever
        self._enqueue(((channel, message, None),))

    def publish_many(self, messages: Any, channel: str) -> None:
        check_channel(channel)
        self._enqueue([(channel, m, None) for m in messages])

    def _enqueue(self, items: Any) -> None:
        if self._closed:
            from ._base import ClosedError

            raise ClosedError("the amqp backend is closed")
        out = self._outbox
        for it in items:
            out.append(it)
            self.published += 1
        while len(out) > self.max_pending:
            ch, _, fut = out.popleft()
            self.dropped_overflow += 1
            log.error("RabbitMQ outbox full (%d): dropped the oldest message for %r", self.max_pending, ch)
            if fut is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(_fail, fut, BrokerUnavailableError("outbox overflow"))
        self._kick()

    def _kick(self) -> None:
        if self._loop is None or self._wake_pending:
            return
        self._wake_pending = True
        if threading.get_ident() == self._thread:
            self._do_wake()
        else:
            try:
                self._loop.call_soon_threadsafe(self._do_wake)
            except RuntimeError:
                pass

    def _do_wake(self) -> None:
        self._wake_pending = False
        if self._wake_fut is not None and not self._wake_fut.done():
            self._wake_fut.set_result(None)

    async def publish_async(self, messages: List[bytes], channel: str) -> None:
        """Publish and wait for the broker's confirms."""
        check_channel(channel)
        if not self._started:
            await self.start()
        if not self.connected:
            raise self.unreachable(method="PUBLISH")
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in messages]
        self._enqueue([(channel, m, f) for m, f in zip(messages, futs)])
        await asyncio.gather(*futs)

    async def flush(self) -> None:
        """Wait until everything published so far was confirmed."""
        loop = asyncio.get_running_loop()
        marker = loop.create_future()
        self._outbox.append(("", b"", marker))  # an empty channel is never published: the pump resolves it
        self._kick()
        await marker

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._outbox or self._connected is None or not self._connected.is_set():
                self._wake_fut = loop.create_future()
                if self._outbox and self._connected is not None and not self._connected.is_set():
                    await asyncio.wait((self._wake_fut,), timeout=0.5)
                else:
                    await self._wake_fut
                self._wake_fut = None
                continue
            batch: List[Tuple[str, bytes, Optional[asyncio.Future]]] = []
            while self._outbox and len(batch) < 1000:
                batch.append(self._outbox.popleft())
            try:
                failed = await self._publish_batch(batch)
            except asyncio.CancelledError:
                self._outbox.extendleft(reversed(batch))
                raise
            if failed:
                self.publish_retries += len(failed)
                self._outbox.extendleft(reversed(failed))
                await asyncio.sleep(0.2)

    async def _publish_batch(self, batch: List[Tuple[str, bytes, Optional[asyncio.Future]]]) -> list:
        ch = self._pub_ch
        real = [it for it in batch if it[0]]
        exchanges: Dict[str, Any] = {}
        refused: Optional[Tuple[str, BaseException]] = None
        try:
            if real:
                await ch.ready()
                for name, _, _ in real:
                    if name not in exchanges:
                        exchanges[name] = await ch.declare_exchange(
                            amqp_name(name), ExchangeType.FANOUT, auto_delete=True, robust=False
                        )
        except _REFUSED as exc:  # the broker closed the channel: it reopens; the other channels are retried
            refused = (name, exc)
        except _AWAY as exc:
            log.debug("publish deferred (%s)", exc)
            return batch
        if refused is not None:
            name, exc = refused
            keep: List[Tuple[str, bytes, Optional[asyncio.Future]]] = []
            err = InvalidChannelError(f"RabbitMQ refuses the exchange of channel {name!r}: {exc}")
            n = 0
            for it in batch:
                if it[0] != name:
                    keep.append(it)
                    continue
                n += 1
                if it[2] is not None and not it[2].done():
                    it[2].set_exception(err)
            self.refused += n
            log.error("%d message(s) for channel %r not published: %s", n, name, err)
            return keep
        results = await asyncio.gather(
            *(exchanges[name].publish(aio_pika.Message(body), routing_key="") for name, body, _ in real),
            return_exceptions=True,
        )
        failed: List[Tuple[str, bytes, Optional[asyncio.Future]]] = []
        i = 0
        for it in batch:
            name, _, fut = it
            if not name:  # flush marker: everything before it was settled
                if not failed and fut is not None and not fut.done():
                    fut.set_result(None)
                elif fut is not None:
                    failed.append(it)
                continue
            r = results[i]
            i += 1
            if isinstance(r, BaseException):
                failed.append(it)
            else:
                self.confirmed += 1
                if fut is not None and not fut.done():
                    fut.set_result(None)
        return failed

    # -- subscribing --------------------------------------------------------------------------------------------
    async def subscribe(self, consumer: str, channel: str) -> "_AmqpSubscription":
        check_consumer(consumer)
        check_channel(channel)
        if not self._started:
            await self.start()
        sub = _AmqpSubscription(self, consumer, channel)
        # while the broker is away a request fails soon (503 + Retry-After) rather than hanging
        await sub._open(self.subscribe_timeout)
        return sub

    def stats(self) -> Dict[str, int]:
        return {
            "published": self.published,
            "confirmed": self.confirmed,
            "pending": len(self._outbox),
            "dropped_overflow": self.dropped_overflow,
            "publish_retries": self.publish_retries,
            "reconnects": self.reconnects,
            "refused": self.refused,
        }


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _safe(url: str) -> str:
    """The URL without its password (for logs)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class _AmqpSubscription(Subscription):
    """A consumer on ``"{consumer}@{channel}"``; re-opened transparently when the broker came back."""

    def __init__(self, backend: AmqpBackend, consumer: str, channel: str) -> None:
        self._b = backend
        self.consumer = consumer
        self.channel = channel
        self.queue_name = amqp_name(f"{consumer}@{channel}", _MAX_QUEUE)
        self._queue: Any = None
        self._tag: Optional[str] = None
        self._closing: Optional[asyncio.Future] = None
        self._buf: Deque[Any] = deque()
        self._waiter: Optional[asyncio.Future] = None
        self._opening: Optional[asyncio.Future] = None
        self._cancelled = False

    async def _open(self, timeout: Optional[float]) -> None:
        b = self._b
        if not await b.wait_ready(timeout):
            raise b.unreachable()
        ch = b._sub_ch
        try:
            und = await ch.get_underlay_channel()
            ex = await ch.declare_exchange(amqp_name(self.channel), ExchangeType.FANOUT, auto_delete=True,
                                           robust=False)
            q = await ch.declare_queue(
                self.queue_name, arguments={"x-expires": int(b.queue_ttl * 1000)}, robust=False
            )
            await q.bind(ex, robust=False)
            self._tag = await q.consume(self._on_message, no_ack=False, robust=False)
        except _REFUSED as exc:
            raise InvalidChannelError(f"RabbitMQ refuses channel {self.channel!r}: {exc}") from exc
        except _AWAY as exc:
            raise BrokerUnavailableError(f"cannot subscribe {self.queue_name!r}: {exc}") from exc
        self._queue = q
        self._closing = und.closing

    async def _on_message(self, message: Any) -> None:
        if self._cancelled:
            # delivered after the consumer was cancelled (the response is gone): back to the head of the queue
            await _settle(message, False, True)
            return
        self._buf.append(message)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _broken(self) -> bool:
        return self._closing is None or self._closing.done()

    async def get(self, timeout: Optional[float]) -> Optional[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._cancelled:
            if self._buf:
                msg = self._buf.popleft()
                return Delivery(msg.body, functools.partial(_settle, msg))
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            if self._broken():
                # The channel died (broker restart): messages it held are requeued by RabbitMQ; resubscribe.
                # Shielded: a request that ends meanwhile must not leave a half-registered consumer behind;
                # cancel() waits for this to finish and then cancels the consumer.
                self._buf.clear()
                self._opening = asyncio.ensure_future(self._open(remaining))
                try:
                    await asyncio.shield(self._opening)
                except BrokerUnavailableError:
                    if deadline is None:
                        await asyncio.sleep(0.5)
                        continue
                    return None
                continue
            waiter = self._waiter = loop.create_future()
            closing = self._closing
            assert closing is not None
            try:
                await asyncio.wait((waiter, closing), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._waiter = None
        return None

    async def cancel(self) -> None:
        """Cancel the consumer first, then requeue whatever arrived but was not handed out."""
        if self._cancelled:
            return
        self._cancelled = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self._opening is not None and not self._opening.done():
            try:
                await self._opening
            except BaseException:  # noqa: BLE001 - a failed re-open leaves nothing to cancel
                pass
        if self._queue is not None and self._tag is not None and not self._broken():
            try:
                await self._queue.cancel(self._tag)
            except _AWAY as exc:
                log.debug("cancel of %s failed: %s", self.queue_name, exc)
        while self._buf:
            await _settle(self._buf.popleft(), False, True)


async def _settle(message: Any, ack: bool, requeue: bool) -> None:
    try:
        if ack:
            await message.ack()
        else:
            await message.reject(requeue=requeue)
    except _AWAY as exc:
        # The channel that delivered it is gone: RabbitMQ already requeued the message (a rare duplicate is the
        # price of ack-after-hand-off, as the spec says).
        log.debug("could not settle a delivery: %s", exc)
    except aio_pika.exceptions.MessageProcessError:
        pass


register_backend("amqp", AmqpBackend)
