"""``Producer``: ``Producer(target).publish(message).to(channel)``.

``target`` is where messages go:

- ``None`` — the configured default backend (:func:`eventpush.realtime.configure`; the environment variable
  ``EVENTPUSH_PUSH_TARGET`` may name a hub or AMQP URL instead, so a separate script reaches a running hub);
- a hub URL ``http(s)://host:port`` — ``POST {hub}/push{channel}`` → 204 (a URL with a path is used as the push base
  itself, e.g. a standalone Dispatcher at ``http://host:port/``… pass ``prefix=""``);
- an AMQP URL ``amqp://…`` — published straight to RabbitMQ (fanout exchange named by the channel) with publisher
  confirms, from a background I/O thread; a broker not reachable within ``connect_timeout`` (5 s) raises
  :class:`~eventpush.realtime.BrokerUnavailableError` naming the URL and the cause (once connected, a broker that
  goes away is waited for: publishes are kept and retried);
- a backend name (``"embedded"``, ``"test"``…) or a :class:`~eventpush.realtime.Backend` instance.

Messages are ``str`` (UTF-8) or ``bytes`` unchanged, or ``dict`` / ``list`` encoded with orjson.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections import deque
from typing import Any, Deque, Dict, Iterable, List, Optional, Union
from urllib.parse import quote, urlsplit

from ..errors import ClosedError, ConnectError, HTTPStatusError, TimeoutError
from ._base import BrokerUnavailableError, MessageTooLargeError, PublishUnconfirmedError, check_channel, to_bytes
from .backends import Backend, get_backend

__all__ = ["Producer", "AsyncProducer", "Publication", "AsyncPublication"]

log = logging.getLogger("eventpush.realtime.producer")

Target = Union[None, str, Backend]


#: Seconds for each HTTP publish request (connect and read): longer than a hub's own publish timeout (10 s), so
#: that the hub's answer about a publish its broker did not confirm arrives (a request that gets no answer at all
#: raises PublishUnconfirmedError: it reached the server, which may have published it).
HTTP_TIMEOUT = 30.0
#: default seconds a confirmed burst (``publish_many``) over AMQP waits for RabbitMQ's confirms before it withdraws
#: what RabbitMQ did not take
PUBLISH_TIMEOUT = 30.0


# --------------------------------------------------------------------------------------------------------------------
# targets


class _HttpTarget:
    """Publishing through a hub's (or a Dispatcher's) HTTP publish endpoint."""

    def __init__(self, url: str, prefix: Optional[str], timeout: float) -> None:
        import urllib3

        from .dispatcher import BATCH_CONTENT_TYPE

        parts = urlsplit(url)
        if prefix is None:
            prefix = "/push" if parts.path in ("", "/") else ""
        self.base = url.rstrip("/") + prefix.rstrip("/")
        self._batch_type = BATCH_CONTENT_TYPE
        self._pool = urllib3.PoolManager(
            maxsize=8,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            # Connect failures are safe to retry (nothing was sent); a POST that reached the server is not.
            retries=urllib3.Retry(total=2, connect=2, read=0, status=0, other=0, redirect=0, backoff_factor=0.1),
        )

    def url_for(self, channel: str) -> str:
        return self.base + quote(channel if channel.startswith("/") else "/" + channel, safe="/:@!$&'()*+,;=-._~")

    def send(self, messages: List[bytes], channel: str) -> None:
        import urllib3

        url = self.url_for(channel)
        if len(messages) == 1:
            body, headers = messages[0], {"Content-Type": "application/octet-stream"}
        else:
            from .dispatcher import encode_batch

            body, headers = encode_batch(messages), {"Content-Type": self._batch_type}
        try:
            r = self._pool.request("POST", url, body=body, headers=headers)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise self._unknown(messages, channel, url, exc) from None
        except urllib3.exceptions.MaxRetryError as exc:
            reason = exc.reason
            if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
                raise self._unknown(messages, channel, url, reason) from None
            # NewConnectionError subclasses urllib3's TimeoutError: a refused connection is not a timeout
            if isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
                reason, urllib3.exceptions.NewConnectionError
            ):
                raise TimeoutError(f"timed out publishing to {channel!r}: {reason}", method="POST", url=url) from None
            raise ConnectError(f"cannot publish to {channel!r}: {reason}", method="POST", url=url) from None
        except urllib3.exceptions.TimeoutError as exc:
            raise TimeoutError(f"timed out publishing to {channel!r}: {exc}", method="POST", url=url) from None
        except urllib3.exceptions.HTTPError as exc:
            raise ConnectError(f"cannot publish to {channel!r}: {exc}", method="POST", url=url) from None
        if r.status == 413:
            raise MessageTooLargeError(
                f"the server refused the message as too large: {r.data[:200].decode('utf-8', 'replace').strip()}",
                index=0 if len(messages) == 1 else None,
            )
        if r.status == 202 and r.headers.get("X-Push-Unconfirmed") is not None:
            from .dispatcher import _parse_ranges

            raise PublishUnconfirmedError(
                f"publishing to {channel!r} ({url}): " + r.data[:500].decode("utf-8", "replace").strip(),
                unconfirmed=_parse_ranges(r.headers.get("X-Push-Unconfirmed")),
                withdrawn=_parse_ranges(r.headers.get("X-Push-Withdrawn")),
                channel=channel,
            )
        if r.status == 204 and r.headers.get("X-Push-Published") is None:
            raise HTTPStatusError(
                f"{url} did not publish (a 204 without X-Push-Published: publishing is not enabled there, so the "
                "POST was taken as a long-poll)",
                status=204,
                method="POST",
                url=url,
            )
        if r.status != 204:
            raise HTTPStatusError(
                f"publishing to {channel!r} failed: HTTP {r.status} {r.data[:200]!r}",
                status=r.status,
                body=r.data,
                method="POST",
                url=url,
            )

    @staticmethod
    def _unknown(messages: List[bytes], channel: str, url: str, exc: BaseException) -> PublishUnconfirmedError:
        # The request reached the server and no answer came: the server may have published it (a hub waiting
        # for a broker that blocks publishers answers only after its own publish timeout). Not a plain timeout,
        # which would invite publishing again.
        return PublishUnconfirmedError(
            f"publishing to {channel!r} ({url}): no answer ({exc}); the message(s) may still be delivered",
            unconfirmed=range(len(messages)),
            channel=channel,
        )

    def flush(self, timeout: Optional[float]) -> None:
        pass

    def close(self) -> None:
        self._pool.clear()


class _AmqpTarget:
    """An :class:`~eventpush.realtime.amqp.AmqpBackend` on a private event loop thread (one per URL, shared).

    The first connection must succeed within ``connect_timeout``, else the constructor raises
    :class:`BrokerUnavailableError` and leaves nothing behind: a wrong URL or a broker that is down fails at once
    instead of a buffered publish waiting for confirms that cannot come (in ``close()`` and again at exit)."""

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        from .amqp import AmqpBackend

        self.url = url
        self.closed = True  # until connected
        self.loop = asyncio.new_event_loop()
        self.backend = AmqpBackend(url, connect_timeout=connect_timeout)
        self._thread = threading.Thread(target=self._run, name="eventpush-amqp-producer", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()
        try:
            # start() returns after connect_timeout at the latest (connected or not); the margin is for the thread
            self._call(self.backend.start(), connect_timeout + 10.0)
            if not self.backend.connected:
                raise self.backend.unreachable(f"no connection within {connect_timeout:g} s")
        except BaseException:
            try:
                self._stop()
            except Exception:  # noqa: BLE001 - the connection failure above is the error to report
                log.debug("stopping the failed RabbitMQ producer for %s", _safe(url), exc_info=True)
            raise
        self.closed = False

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def _call(self, coro: Any, timeout: Optional[float]) -> Any:
        import concurrent.futures

        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise self._unavailable(f"no answer within {timeout:g} s") from None

    def _unavailable(self, what: str) -> BrokerUnavailableError:
        b = self.backend
        if b.connected:
            return BrokerUnavailableError(
                f"RabbitMQ at {_safe(self.url)} is connected but not confirming ({what}): it may be blocking "
                "publishers (a resource alarm)", method="PUBLISH")
        return BrokerUnavailableError(
            f"RabbitMQ at {_safe(self.url)} is not reachable ({b.last_error or 'the connection was lost'}); {what}",
            method="PUBLISH")

    publish_timeout = PUBLISH_TIMEOUT

    def send(self, messages: List[bytes], channel: str, publish_timeout: Optional[float] = None) -> List[Any]:
        if self.closed:
            raise ClosedError("producer is closed")
        if len(messages) == 1:
            # a buffered publish: never blocks the caller (spec §2); flush() waits for the confirms
            return [self.backend.publish(messages[0], channel)]
        # confirmed burst: on timeout publish_async withdraws what was not handed over (BrokerUnavailableError:
        # not published) or names what may still be delivered (PublishUnconfirmedError)
        t = self.publish_timeout if publish_timeout is None else publish_timeout
        self._call(self.backend.publish_async(messages, channel, timeout=t), t + 10.0)
        return []

    def pending(self) -> int:
        """Messages of this process's producers for this URL not confirmed yet."""
        async def count() -> int:
            return self.backend.unsettled()

        return self._call(count(), 10.0)

    def flush(self, timeout: Optional[float]) -> None:
        try:
            self._call(self.backend.flush(), timeout)
        except BrokerUnavailableError:
            n = self.pending()
            raise self._unavailable(
                f"{n} message(s) not confirmed within {timeout:g} s; they stay queued and are retried") from None

    def settle(self, records: List[Any], timeout: Optional[float]) -> None:
        """Wait up to ``timeout`` for ``records`` to be confirmed; then withdraw those not handed to RabbitMQ and
        raise, saying how many were not published (and which may still be delivered)."""
        if not records:
            return
        margin = None if timeout is None else timeout + 10.0
        unconfirmed, withdrawn = self._call(self.backend.settle(records, timeout), margin)
        if not unconfirmed and not withdrawn:
            return
        what = (f"{len(withdrawn)} message(s) not published (withdrawn: never handed to the broker, safe to "
                f"publish again) after {timeout:g} s")
        err = self._unavailable(what)
        if unconfirmed:
            raise PublishUnconfirmedError(
                f"{err}; {len(unconfirmed)} message(s) were handed to RabbitMQ but not confirmed: they may still be "
                "delivered — do not publish them again",
                unconfirmed=unconfirmed, withdrawn=withdrawn, messages=[(r.channel, r.body) for r in records],
            )
        err.unsent = len(withdrawn)  # type: ignore[attr-defined]
        raise err

    def close(self) -> int:
        """Disconnect (after a short flush while connected); returns how many messages were not published."""
        if self.closed:
            return 0
        self.closed = True
        return self._stop()

    def _stop(self) -> int:
        try:
            return self._call(self.backend.close(), 10.0)  # logs an error naming the messages not published
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self.loop.close()  # its selector and self-pipe: a program may retry a Producer many times


def _safe(url: str) -> str:
    from .amqp import _safe as s

    return s(url)


class _BackendTarget:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def send(self, messages: List[bytes], channel: str) -> None:
        if len(messages) == 1:
            self.backend.publish(messages[0], channel)
        else:
            self.backend.publish_many(messages, channel)

    def flush(self, timeout: Optional[float]) -> None:
        pass

    def close(self) -> None:
        pass


_amqp_lock = threading.Lock()
_amqp_targets: Dict[str, _AmqpTarget] = {}


def _shared_amqp(url: str, connect_timeout: float) -> _AmqpTarget:
    with _amqp_lock:
        t = _amqp_targets.get(url)
        if t is None or t.closed:
            t = _amqp_targets[url] = _AmqpTarget(url, connect_timeout)  # raises: nothing is registered
        return t


#: seconds the interpreter's exit waits for RabbitMQ to confirm buffered publishes (only when there are some)
EXIT_FLUSH_TIMEOUT = 10.0


@atexit.register
def _flush_amqp_at_exit() -> None:
    # A script's last `Producer(...).publish(...).to(...)` is buffered: deliver it before the interpreter exits;
    # whatever cannot be delivered is named in an error, never dropped silently.
    for t in list(_amqp_targets.values()):
        if t.closed:
            continue
        try:
            if t.pending():
                t.flush(EXIT_FLUSH_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - reported, not raised at exit
            log.error("realtime messages not published at exit (%s): %s", _safe(t.url), exc)
        try:
            t.close()  # logs an error naming how many messages were not published
        except Exception as exc:  # noqa: BLE001
            log.error("closing the RabbitMQ producer for %s at exit: %s", _safe(t.url), exc)


def _resolve(target: Target, prefix: Optional[str], timeout: float, connect_timeout: float) -> Any:
    if target is None:
        env = os.environ.get("EVENTPUSH_PUSH_TARGET", "").strip()
        if env:
            return _resolve(env, prefix, timeout, connect_timeout)
        from .config import default_backend, get_config

        if get_config().backend == "amqp":
            b = default_backend()
            if getattr(b, "_started", False):  # inside a process serving it: hand over to its pump
                return _BackendTarget(b)
            return _shared_amqp(get_config().amqp.url, connect_timeout)
        return _BackendTarget(default_backend())
    if isinstance(target, Backend):
        return _BackendTarget(target)
    if isinstance(target, str):
        low = target.lower()
        if low.startswith(("http://", "https://")):
            return _HttpTarget(target, prefix, timeout)
        if low.startswith(("amqp://", "amqps://")):
            return _shared_amqp(target, connect_timeout)
        if target in ("embedded", "memory"):
            from .config import default_backend, get_config

            if get_config().backend == "embedded":
                return _BackendTarget(default_backend())
        return _BackendTarget(get_backend(target)())
    raise TypeError(f"Producer target must be None, a URL, a backend name or a Backend, not {type(target).__name__}")


# --------------------------------------------------------------------------------------------------------------------
# the public API


class Publication:
    """What :meth:`Producer.publish` returns: call :meth:`to` with the channel."""

    __slots__ = ("_producer", "_messages")

    def __init__(self, producer: "Producer", messages: List[bytes]) -> None:
        self._producer = producer
        self._messages = messages

    def to(self, channel: str) -> None:
        """Hand the message(s) to the broker for ``channel``; returns None. Thread-safe."""
        check_channel(channel)
        self._producer._send(self._messages, channel)


class Producer:
    """``Producer(target=None).publish(message).to(channel)``; ``publish_many(messages).to(channel)`` sends a batch
    in one round trip (one POST, or one confirmed burst on RabbitMQ). A context manager; thread-safe.

    ``timeout``: seconds for each HTTP request (connect and read; 30 s, longer than a hub's publish timeout; a
    request that got no answer raises :class:`~eventpush.realtime.PublishUnconfirmedError`). ``connect_timeout``:
    seconds to wait for the first connection to RabbitMQ (AMQP targets); a broker not reachable by then raises
    :class:`~eventpush.realtime.BrokerUnavailableError` here, naming the URL and the cause. ``publish_timeout``
    (AMQP, 30 s): how long ``publish_many(...).to()`` waits for the confirms; then the messages not yet handed to
    RabbitMQ are withdrawn — :class:`~eventpush.realtime.BrokerUnavailableError` (not published: safe to publish
    again) — or, if some had been handed over, :class:`~eventpush.realtime.PublishUnconfirmedError` names those that
    may still be delivered. Over HTTP a hub answers 202 with ``X-Push-Unconfirmed`` in that case, raised as
    :class:`~eventpush.realtime.PublishUnconfirmedError` too."""

    def __init__(
        self,
        target: Target = None,
        *,
        backend: Target = None,
        prefix: Optional[str] = None,
        timeout: float = HTTP_TIMEOUT,
        connect_timeout: float = 5.0,
        publish_timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        if backend is not None:  # spec §2 spells it Producer(backend=None)
            if target is not None:
                raise TypeError("give target or backend, not both")
            target = backend
        self._target = _resolve(target, prefix, timeout, connect_timeout)
        self._closed = False
        # AMQP: this producer's buffered publishes not yet known to be confirmed (for close())
        self._records: Deque[Any] = deque()
        self._lock = threading.Lock()
        self._publish_timeout = publish_timeout

    def publish(self, message: Any) -> Publication:
        """A message (str, bytes, dict or list) to publish; call ``.to(channel)`` on the result."""
        return Publication(self, [to_bytes(message)])

    def publish_many(self, messages: Iterable[Any]) -> Publication:
        """Several messages for one channel, published in order in one round trip."""
        return Publication(self, [to_bytes(m, index=i) for i, m in enumerate(messages)])

    def _send(self, messages: List[bytes], channel: str) -> None:
        if self._closed:
            raise ClosedError("this Producer is closed")
        if messages:
            if isinstance(self._target, _AmqpTarget):
                recs = self._target.send(messages, channel, self._publish_timeout)
            else:
                recs = self._target.send(messages, channel)
            if recs:
                with self._lock:
                    records = self._records
                    while records and records[0].settled:
                        records.popleft()
                    records.extend(recs)

    def flush(self, timeout: Optional[float] = 30.0) -> None:
        """Wait until buffered publishes were confirmed by the broker (AMQP targets; no-op otherwise). On timeout
        :class:`~eventpush.realtime.BrokerUnavailableError` says why; the messages stay queued and are retried."""
        self._target.flush(timeout)

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Flush and release this producer (shared AMQP connections stay open for other producers).

        AMQP targets wait up to ``timeout`` seconds (default 10; None waits for ever) for RabbitMQ to confirm this
        producer's buffered publishes. Then the ones not handed to the broker are withdrawn (never published) and
        :class:`~eventpush.realtime.BrokerUnavailableError` says how many and why (the broker is unreachable, with
        its last connection error, or it does not confirm); if some had been handed to the broker unconfirmed,
        :class:`~eventpush.realtime.PublishUnconfirmedError` names them instead (they may still be delivered)."""
        if self._closed:
            return
        self._closed = True
        try:
            if isinstance(self._target, _AmqpTarget):
                with self._lock:
                    records = [r for r in self._records if not r.settled]
                    self._records.clear()
                self._target.settle(records, timeout)
            else:
                self._target.flush(timeout)
        finally:
            if isinstance(self._target, _HttpTarget):
                self._target.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncPublication:
    """What :meth:`AsyncProducer.publish` returns: ``await ….to(channel)``."""

    __slots__ = ("_producer", "_messages")

    def __init__(self, producer: "AsyncProducer", messages: List[bytes]) -> None:
        self._producer = producer
        self._messages = messages

    async def to(self, channel: str) -> None:
        """Publish to ``channel``; returns when the broker (or hub) took the message(s)."""
        check_channel(channel)
        await self._producer._send(self._messages, channel)


class AsyncProducer:
    """The asyncio variant: ``await AsyncProducer(target).publish(message).to(channel)``. On AMQP, ``to`` waits
    for the publisher confirm (the first one waits up to ``connect_timeout`` for the connection; while RabbitMQ is
    not reachable ``to`` raises :class:`~eventpush.realtime.BrokerUnavailableError`); over HTTP the request runs in
    a worker thread."""

    def __init__(
        self,
        target: Target = None,
        *,
        backend: Target = None,
        prefix: Optional[str] = None,
        timeout: float = HTTP_TIMEOUT,
        connect_timeout: float = 5.0,
    ) -> None:
        if backend is not None:
            if target is not None:
                raise TypeError("give target or backend, not both")
            target = backend
        self._spec = target
        self._prefix = prefix
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._target: Any = None
        self._amqp: Any = None
        self._closed = False

    def publish(self, message: Any) -> AsyncPublication:
        """A message to publish; ``await`` ``.to(channel)`` on the result."""
        return AsyncPublication(self, [to_bytes(message)])

    def publish_many(self, messages: Iterable[Any]) -> AsyncPublication:
        """Several messages for one channel in one round trip."""
        return AsyncPublication(self, [to_bytes(m, index=i) for i, m in enumerate(messages)])

    async def _send(self, messages: List[bytes], channel: str) -> None:
        if self._closed:
            raise ClosedError("this AsyncProducer is closed")
        if not messages:
            return
        spec = self._spec
        if spec is None:
            env = os.environ.get("EVENTPUSH_PUSH_TARGET", "").strip()
            if env:
                spec = env
            else:
                from .config import get_config

                if get_config().backend == "amqp":
                    spec = get_config().amqp.url
        if isinstance(spec, str) and spec.lower().startswith(("amqp://", "amqps://")):
            if self._amqp is None:
                from .amqp import AmqpBackend

                self._amqp = AmqpBackend(spec, connect_timeout=self._connect_timeout)
                await self._amqp.start()
            await self._amqp.publish_async(messages, channel)
            return
        if self._target is None:
            self._target = _resolve(spec, self._prefix, self._timeout, self._connect_timeout)
        if isinstance(self._target, _HttpTarget):
            await asyncio.get_running_loop().run_in_executor(None, self._target.send, messages, channel)
        else:
            self._target.send(messages, channel)

    async def aclose(self) -> None:
        """Close (flushing AMQP publishes)."""
        if self._closed:
            return
        self._closed = True
        if self._amqp is not None:
            await self._amqp.close()
        if isinstance(self._target, _HttpTarget):
            self._target.close()

    async def __aenter__(self) -> "AsyncProducer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
