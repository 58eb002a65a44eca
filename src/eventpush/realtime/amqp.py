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
import weakref
from typing import Any, Deque, Dict, Iterable, List, Optional, Set, Tuple

try:
    import aio_pika
    import aiormq.exceptions
    from aio_pika import ExchangeType
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the amqp realtime backend needs aio-pika: pip install 'eventpush[amqp]'") from exc

from ._base import (
    BrokerRefusedError,
    BrokerUnavailableError,
    InvalidChannelError,
    PublishUnconfirmedError,
    check_channel,
    check_consumer,
)
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


# states of an outbox record
_QUEUED, _SENT, _CONFIRMED, _FAILED, _WITHDRAWN = range(5)


class _Out:
    """One message in the publish pipeline. ``state``: queued (not yet handed to RabbitMQ: can be withdrawn), sent
    (a basic.publish was written: the outcome is unknown until the confirm), confirmed, failed, withdrawn."""

    __slots__ = ("channel", "body", "fut", "state")

    def __init__(self, channel: str, body: bytes, fut: Optional[asyncio.Future] = None) -> None:
        self.channel = channel
        self.body = body
        self.fut = fut
        self.state = _QUEUED

    @property
    def settled(self) -> bool:
        return self.state in (_CONFIRMED, _FAILED, _WITHDRAWN)


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
        self._outbox: Deque[_Out] = deque()
        self._batch: List[_Out] = []  # the records the pump is publishing right now
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
        self.withdrawn = 0  # messages taken back before they reached RabbitMQ (a publish timed out or was cancelled)
        self.queue_mismatches = 0  # subscriptions to a queue that exists with other arguments (used as it is)
        self._mismatch_logged: Set[str] = set()
        self._decl_pool: List[Any] = []  # idle raw channels for declares (one declare per channel at a time)
        self._decl_sem: Optional[asyncio.Semaphore] = None
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
            _owners[id(conn)] = self  # aio-pika's reconnect failures update last_error (_ReconnectFailures)
            conn.reconnect_callbacks.add(self._on_reconnect)
            conn.close_callbacks.add(self._on_close)
            assert self._connected is not None
            self._connected.set()
            self._kick()
            log.info("connected to RabbitMQ at %s", _safe(self.url))
            return

    def _on_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        self.last_error = None
        log.info("reconnected to RabbitMQ at %s", _safe(self.url))
        if self._connected is not None:
            self._connected.set()
        self._kick()

    def _on_close(self, *args: Any) -> None:
        exc = args[1] if len(args) > 1 else None
        if isinstance(exc, BaseException) and not isinstance(exc, asyncio.CancelledError) and not self._closed:
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        elif not self._closed:
            self.last_error = "the connection was lost"
        self._decl_pool.clear()
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

    async def close(self, timeout: float = 5.0) -> int:
        """Flush what can still be published (up to ``timeout`` seconds, only while connected), then disconnect.
        Returns how many messages were not published (logged as an error: nothing is dropped silently)."""
        if self._closed:
            return 0
        if self._started and self.unsettled() and self.connected:
            try:
                await asyncio.wait_for(self.flush(), timeout=timeout)
            except (asyncio.TimeoutError, BrokerUnavailableError):
                pass
        lost = self.unsettled() if self._started else 0
        if lost:
            log.error("closing the RabbitMQ backend for %s with %d message(s) not published (%s)", _safe(self.url),
                      lost, self._why_unconfirmed())
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
        return lost

    # -- publishing ---------------------------------------------------------------------------------------------
    def publish(self, message: bytes, channel: str) -> "_Out":
        """Thread-safe buffered publish: appended to the pump's outbox, confirmed in the background. Returns the
        outbox record (its ``state`` tells whether RabbitMQ confirmed it; see :meth:`settle`)."""
        check_channel(channel)  # a name RabbitMQ refuses would block the pump forever
        rec = _Out(channel, message)
        self._enqueue((rec,))
        return rec

    def publish_many(self, messages: Any, channel: str) -> List["_Out"]:
        check_channel(channel)
        recs = [_Out(channel, m) for m in messages]
        self._enqueue(recs)
        return recs

    def _enqueue(self, items: Any) -> None:
        if self._closed:
            from ._base import ClosedError

            raise ClosedError("the amqp backend is closed")
        out = self._outbox
        for it in items:
            out.append(it)
            self.published += 1
        while len(out) > self.max_pending:
            it = out.popleft()
            if it.state == _WITHDRAWN:
                continue
            it.state = _FAILED
            self.dropped_overflow += 1
            log.error("RabbitMQ outbox full (%d): dropped the oldest message for %r", self.max_pending, it.channel)
            if it.fut is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(_fail, it.fut, BrokerUnavailableError("outbox overflow"))
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

    def withdraw(self, records: Iterable["_Out"]) -> Tuple[List[int], List[int]]:
        """Take back the records not yet handed to RabbitMQ (on the backend's loop). Returns ``(unconfirmed,
        withdrawn)``: the indices (in ``records``) of the messages already written to the broker and not confirmed
        — their outcome is unknown, they may still be delivered — and of those withdrawn, which will never be
        published. Confirmed and failed records are in neither."""
        unconfirmed: List[int] = []
        withdrawn: List[int] = []
        for i, it in enumerate(records):
            if it.state == _QUEUED:
                it.state = _WITHDRAWN
                withdrawn.append(i)
                if it.fut is not None and not it.fut.done():
                    it.fut.cancel()
            elif it.state == _SENT:
                unconfirmed.append(i)
        self.withdrawn += len(withdrawn)
        return unconfirmed, withdrawn

    async def publish_async(self, messages: List[bytes], channel: str, *, timeout: Optional[float] = None) -> None:
        """Publish and wait for the broker's confirms. On a timeout (or when cancelled) the messages not yet
        handed to RabbitMQ are withdrawn: if none was handed over, :class:`BrokerUnavailableError` (not published,
        safe to publish again); else :class:`PublishUnconfirmedError` naming the messages whose outcome is unknown
        (they may still be delivered) and those withdrawn."""
        check_channel(channel)
        if not self._started:
            await self.start()
        if not self.connected:
            raise self.unreachable(method="PUBLISH")
        loop = asyncio.get_running_loop()
        recs = [_Out(channel, m, loop.create_future()) for m in messages]
        self._enqueue(recs)
        futs = [r.fut for r in recs]
        try:
            done, pending = await asyncio.wait(futs, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            self.withdraw(recs)
            raise
        failed = [f for f in done if not f.cancelled() and f.exception() is not None]
        if failed:
            self.withdraw(recs)
            raise failed[0].exception()  # type: ignore[misc]
        if not pending:
            return
        unconfirmed, withdrawn = self.withdraw(recs)
        confirmed = sum(1 for r in recs if r.state == _CONFIRMED)
        why = self._why_unconfirmed()
        if unconfirmed:
            raise PublishUnconfirmedError(
                f"RabbitMQ did not confirm {len(unconfirmed)} of {len(recs)} message(s) for {channel!r} within "
                f"{timeout:g} s ({why}): they were handed to the broker and may still be delivered — do not publish "
                f"them again; {len(withdrawn)} withdrawn (not published), {confirmed} confirmed",
                unconfirmed=unconfirmed, withdrawn=withdrawn, channel=channel,
            )
        raise BrokerUnavailableError(
            f"not published: RabbitMQ at {_safe(self.url)} did not take {len(withdrawn)} message(s) for {channel!r} "
            f"within {timeout:g} s ({why}); they were withdrawn and may be published again"
            + (f" ({confirmed} earlier ones were confirmed)" if confirmed else ""),
            method="PUBLISH",
        )

    def _why_unconfirmed(self) -> str:
        if not self.connected:
            return "not connected: " + (self.last_error or "connection lost")
        return "connected, but the broker is not confirming: it may be blocking publishers (a resource alarm)"

    async def flush(self) -> None:
        """Wait until everything published so far was confirmed."""
        loop = asyncio.get_running_loop()
        marker = _Out("", b"", loop.create_future())  # an empty channel is never published: the pump resolves it
        self._outbox.append(marker)
        self._kick()
        try:
            await marker.fut  # type: ignore[misc]
        finally:
            marker.state = _WITHDRAWN

    def unsettled(self) -> int:
        """Messages not confirmed yet (queued or awaiting the broker's confirm)."""
        n = sum(1 for it in self._outbox if it.channel and not it.settled)
        return n + sum(1 for it in self._batch if it.channel and not it.settled and it not in self._outbox)

    async def settle(self, records: List["_Out"], timeout: Optional[float]) -> Tuple[List[int], List[int]]:
        """Wait up to ``timeout`` until ``records`` are all settled; then withdraw what was not handed to RabbitMQ.
        Returns :meth:`withdraw`'s ``(unconfirmed, withdrawn)`` (both empty when everything was confirmed)."""
        if any(not r.settled for r in records):
            try:
                await asyncio.wait_for(self.flush(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.withdraw(records)

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
            batch: List[_Out] = []
            while self._outbox and len(batch) < 1000:
                it = self._outbox.popleft()
                if it.state != _WITHDRAWN:
                    batch.append(it)
            self._batch = batch
            try:
                failed = await self._publish_batch(batch)
            except asyncio.CancelledError:
                self._outbox.extendleft(reversed(batch))
                raise
            finally:
                self._batch = []
            if failed:
                self.publish_retries += len(failed)
                self._outbox.extendleft(reversed(failed))
                await asyncio.sleep(0.2)

    async def _publish_batch(self, batch: List[_Out]) -> list:
        ch = self._pub_ch
        exchanges: Dict[str, Any] = {}
        refused: Optional[Tuple[str, BaseException]] = None
        try:
            if any(it.channel for it in batch):
                await ch.ready()
                for it in batch:
                    name = it.channel
                    if name and name not in exchanges and it.state != _WITHDRAWN:
                        exchanges[name] = await ch.declare_exchange(
                            amqp_name(name), ExchangeType.FANOUT, auto_delete=True, robust=False
                        )
        except _REFUSED as exc:  # the broker closed the channel: it reopens; the other channels are retried
            refused = (name, exc)
        except _AWAY as exc:
            log.debug("publish deferred (%s)", exc)
            return [it for it in batch if it.state != _WITHDRAWN]
        if refused is not None:
            name, exc = refused
            keep: List[_Out] = []
            err = InvalidChannelError(f"RabbitMQ refuses the exchange of channel {name!r}: {exc}")
            n = 0
            for it in batch:
                if it.state == _WITHDRAWN:
                    continue
                if it.channel != name:
                    keep.append(it)
                    continue
                n += 1
                it.state = _FAILED
                if it.fut is not None and not it.fut.done():
                    it.fut.set_exception(err)
            self.refused += n
            log.error("%d message(s) for channel %r not published: %s", n, name, err)
            return keep
        # withdrawn while the exchanges were declared: never handed to RabbitMQ
        real = [it for it in batch if it.channel and it.state != _WITHDRAWN]
        coros = []
        for it in real:
            it.state = _SENT  # from here on the outcome is unknown until the confirm
            coros.append(exchanges[it.channel].publish(aio_pika.Message(it.body), routing_key=""))
        results = await asyncio.gather(*coros, return_exceptions=True)
        failed: List[_Out] = []
        i = 0
        for it in batch:
            fut = it.fut
            if not it.channel:  # flush marker: everything before it was settled
                if it.state == _WITHDRAWN:
                    continue
                if not failed and fut is not None and not fut.done():
                    fut.set_result(None)
                elif fut is not None and not fut.done():
                    failed.append(it)
                continue
            if it.state == _WITHDRAWN:
                continue
            r = results[i]
            i += 1
            if isinstance(r, BaseException):
                failed.append(it)  # stays "sent": it may have reached the broker; retried (a rare duplicate)
            else:
                it.state = _CONFIRMED
                self.confirmed += 1
                if fut is not None and not fut.done():
                    fut.set_result(None)
        return failed

    # -- subscribing --------------------------------------------------------------------------------------------
    async def _decl_channel(self) -> Any:
        """An open raw (aiormq) channel for declares: from the pool, else a new one. A declare RabbitMQ refuses
        closes only this channel — never the shared one the node's consumers receive on."""
        while self._decl_pool:
            ch = self._decl_pool.pop()
            if not ch.is_closed:
                return ch
        conn = self._conn
        transport = getattr(conn, "transport", None) if conn is not None else None
        if transport is None or transport.connection.is_closed:
            raise ConnectionError("not connected")
        return await transport.connection.channel(publisher_confirms=False)

    def _release(self, ch: Any, ok: bool) -> None:
        if ch.is_closed:
            return
        if ok and len(self._decl_pool) < 16:
            self._decl_pool.append(ch)
        else:
            asyncio.ensure_future(_close_quietly(ch))

    async def _declare(self, channel: str, queue: str) -> None:
        """Declare the channel's fanout exchange and the consumer's queue and bind them, on declare channels of
        their own. The queue has ``x-expires`` and ``x-single-active-consumer`` (so that of overlapping requests
        of one consumer id only one receives, and a message one of them gives back goes to the next, in order).
        A queue that exists with other arguments (created by a node with another ``queue_ttl``, or by an older
        version without single-active-consumer) is used as it is, and the mismatch is logged."""
        if self._decl_sem is None:
            self._decl_sem = asyncio.Semaphore(32)
        exchange = amqp_name(channel)
        args = {"x-expires": int(self.queue_ttl * 1000), "x-single-active-consumer": True}
        async with self._decl_sem:
            for attempt in range(3):
                ch = await self._decl_channel()
                ok = False
                try:
                    try:
                        await ch.exchange_declare(exchange=exchange, exchange_type="fanout", auto_delete=True)
                    except aiormq.exceptions.ChannelPreconditionFailed as exc:
                        # an exchange of that name exists with another type or arguments: this channel is unusable
                        raise InvalidChannelError(f"RabbitMQ refuses channel {channel!r}: {exc}") from exc
                    try:
                        await ch.queue_declare(queue=queue, arguments=args)
                    except aiormq.exceptions.ChannelPreconditionFailed as exc:
                        ch = await self._decl_channel()  # the refusal closed the other one
                        await ch.queue_declare(queue=queue, passive=True)  # NOT_FOUND (expired since): again
                        self._mismatch(queue, args, exc)
                    await ch.queue_bind(queue=queue, exchange=exchange, routing_key="")
                    ok = True
                    return
                except aiormq.exceptions.ChannelNotFoundEntity:
                    # the queue expired, or the auto-delete exchange lost its last binding, between two steps
                    if attempt == 2:
                        raise
                except _REFUSED as exc:  # a server-side configuration (permissions, a locked exclusive queue)
                    raise BrokerRefusedError(
                        f"RabbitMQ refuses the queue {queue!r} of channel {channel!r}: {exc}"
                    ) from exc
                finally:
                    self._release(ch, ok)

    def _mismatch(self, queue: str, args: Dict[str, Any], exc: BaseException) -> None:
        self.queue_mismatches += 1
        if queue in self._mismatch_logged:
            return
        if len(self._mismatch_logged) > 10_000:
            self._mismatch_logged.clear()
        self._mismatch_logged.add(queue)
        log.warning(
            "queue %r exists with other arguments than this node's %s (another node has another queue_ttl, or an "
            "older version declared it): using it as it is until it expires (%s)", queue, args, exc,
        )

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
            "withdrawn": self.withdrawn,
            "queue_mismatches": self.queue_mismatches,
        }


#: connection id → backend, for the log filter below
_owners: "weakref.WeakValueDictionary[int, AmqpBackend]" = weakref.WeakValueDictionary()


class _ReconnectFailures(logging.Filter):
    """aio-pika retries a lost connection by itself and only logs why an attempt failed: keep that reason as the
    backend's ``last_error``, so that errors name the real cause (connection refused, access refused…)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and isinstance(args[1], BaseException):
            owner = _owners.get(id(args[0]))
            if owner is not None and not owner.connected:
                e = args[1]
                owner.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return True


logging.getLogger("aio_pika.robust_connection").addFilter(_ReconnectFailures())


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
            # declared elsewhere (a refusal must not close the channel every consumer of the node receives on)
            await b._declare(self.channel, self.queue_name)
            und = await ch.get_underlay_channel()
            q = await ch.get_queue(self.queue_name, ensure=False)
            self._tag = await q.consume(self._on_message, no_ack=False, robust=False)
        except (InvalidChannelError, BrokerRefusedError, BrokerUnavailableError):
            raise
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


async def _close_quietly(ch: Any) -> None:
    try:
        await ch.close()
    except Exception:  # noqa: BLE001 - a channel that is closing anyway
        pass


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
