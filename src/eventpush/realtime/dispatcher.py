"""``Dispatcher``: the Push consumer server as a plain ASGI application.

One URL, four transports, chosen per request: a WebSocket upgrade → WebSocket (one frame per message);
``Accept: text/event-stream`` → Server-Sent Events; ``POST`` with ``publish=True`` → publish the body (204); any other
method → long-poll (200 with the raw message, or 204 after ``timeout``, by default the process configuration's
``long_poll.timeout``). The channel is the request path below the mount point; the consumer id comes from the
``Consumer-Id`` header, then ``?cid=``, then ``?sid=``, else a fresh id per request. A message is acknowledged only
after it was handed to the transport.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import struct
import weakref
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import parse_qs

from ._base import (
    BrokerRefusedError,
    BrokerUnavailableError,
    Consumer,
    InvalidChannelError,
    InvalidConsumerError,
    PublishUnconfirmedError,
    check_channel,
    check_consumer,
)
from .backends import Backend, Delivery, Subscription, get_backend

__all__ = ["Dispatcher", "DispatcherConfig", "default_consumer", "default_channel", "BATCH_CONTENT_TYPE"]

log = logging.getLogger("eventpush.realtime.dispatcher")

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]

#: ``POST`` body of several messages in one request: each message is a 4-byte big-endian length, then its bytes.
BATCH_CONTENT_TYPE = "application/x-eventpush-batch"

_LINE_SPLIT = re.compile(r"\r\n|\r|\n")


def _header(scope: Scope, name: bytes) -> Optional[str]:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def default_consumer(scope: Scope) -> Consumer:
    """The ``Consumer-Id`` header, then the ``cid`` / ``sid`` query parameter, else a fresh id (per request)."""
    cid = _header(scope, b"consumer-id")
    if not cid:
        qs = scope.get("query_string") or b""
        if qs:
            params = parse_qs(qs.decode("latin-1"))
            for key in ("cid", "sid"):
                vals = params.get(key)
                if vals and vals[0]:
                    cid = vals[0]
                    break
    return Consumer(cid or None)


def default_channel(scope: Scope) -> str:
    """The request path relative to the mount point (``scope["path"]`` minus ``scope["root_path"]``)."""
    path = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    # Servers differ: uvicorn's --root-path keeps the prefix in "path", a mount may pass only the rest.
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path or "/"


class DispatcherConfig:
    """The Dispatcher's settings; ``Dispatcher(configure)`` lets ``configure(config)`` mutate them.

    ``timeout`` long-poll seconds (None, the default: the process configuration's ``long_poll.timeout``, 30 s unless
    :func:`~eventpush.realtime.configure` changed it, read as each long-poll starts; see
    :attr:`Dispatcher.long_poll_timeout`) · ``consumer(scope)`` → Consumer / id str / None (fresh id) ·
    ``channel(scope)`` → str · ``verbose_logging`` · ``backend`` None (the process default), a registered name, an
    ``amqp://`` URL or a Backend · ``publish`` POST publishes (False) · ``cors_origins`` None, ``"*"`` or origins ·
    ``keepalive`` SSE comment interval (15) · ``max_message_size`` bytes per message (1 MiB; 413 beyond) ·
    ``max_batch_size`` bytes per publish request (16 MiB) · ``content_type`` of long-poll replies (none) ·
    ``queue_ttl`` for a backend built here by name (default: the configuration's 15 s) · ``publish_timeout`` for the
    broker's confirm (10 s): then 503 + ``Retry-After`` when no message reached the broker (they were withdrawn:
    not published, safe to retry), else 202 with ``X-Push-Unconfirmed`` / ``X-Push-Withdrawn`` (index ranges of
    the messages that may still be delivered / were not published) and a body that says so."""

    _FIELDS = (
        "timeout",
        "consumer",
        "channel",
        "verbose_logging",
        "backend",
        "publish",
        "cors_origins",
        "keepalive",
        "max_message_size",
        "max_batch_size",
        "content_type",
        "queue_ttl",
        "publish_timeout",
    )

    def __init__(
        self,
        *,
        timeout: Optional[float] = None,
        consumer: Callable[[Scope], Union[Consumer, str, None]] = default_consumer,
        channel: Callable[[Scope], str] = default_channel,
        verbose_logging: bool = False,
        backend: Union[None, str, Backend] = None,
        publish: bool = False,
        cors_origins: Union[None, str, Iterable[str]] = None,
        keepalive: float = 15.0,
        max_message_size: int = 1 << 20,
        max_batch_size: int = 16 << 20,
        content_type: Optional[str] = None,
        queue_ttl: Optional[float] = None,
        publish_timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self.consumer = consumer
        self.channel = channel
        self.verbose_logging = verbose_logging
        self.backend = backend
        self.publish = publish
        self.cors_origins = cors_origins
        self.keepalive = keepalive
        self.max_message_size = max_message_size
        self.max_batch_size = max_batch_size
        self.content_type = content_type
        self.queue_ttl = queue_ttl
        self.publish_timeout = publish_timeout

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._FIELDS:
            raise AttributeError(f"unknown Dispatcher setting {name!r} (known: {', '.join(self._FIELDS)})")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return "DispatcherConfig(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS) + ")"


class _Gone(Exception):
    """The client disconnected before its request was read."""


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Dispatcher:
    """The Push consumer server (ASGI). ``Dispatcher(configure=None, /, **settings)``; see :class:`DispatcherConfig`.

    Run it alone (``uvicorn module:app``; it answers ASGI lifespan) or mount it (the hub serves it at ``/push``)."""

    def __init__(self, configure: Optional[Callable[[DispatcherConfig], Any]] = None, /, **settings: Any) -> None:
        try:
            self.config = DispatcherConfig(**settings)
        except TypeError as exc:
            raise TypeError(f"Dispatcher: {exc}") from None
        if configure is not None:
            configure(self.config)
        self._backend: Optional[Backend] = None
        self._started = False
        self._start_lock: Optional[asyncio.Lock] = None
        self.dropped_non_utf8 = 0
        self._ending: Optional[asyncio.Future] = None  # set once the server shuts down: streams end
        _live.add(self)

    def end_streams(self) -> None:
        """The server is shutting down: SSE streams end, long-polls answer 204 now (their queues keep the messages
        for the next request, elsewhere). Called on the event loop by ``eventpush.hub.http.HubHttpProtocol`` when
        uvicorn begins a shutdown (a server otherwise waits for these open-ended requests)."""
        if self._ending is not None and not self._ending.done():
            self._ending.set_result(None)

    def _ending_future(self) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if self._ending is None or self._ending.get_loop() is not loop:
            self._ending = loop.create_future()
        return self._ending

    @property
    def long_poll_timeout(self) -> float:
        """Seconds a long-poll waits before its 204: ``config.timeout`` when set, else the current process
        configuration's ``long_poll.timeout`` (so a later :func:`~eventpush.realtime.configure` applies)."""
        t = self.config.timeout
        if t is None:
            from .config import get_config

            return get_config().long_poll.timeout
        return t

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The broker this Dispatcher consumes from (resolved from ``config.backend`` on first use)."""
        if self._backend is None:
            b = self.config.backend
            if b is None:
                from .config import default_backend

                self._backend = default_backend()
            elif isinstance(b, str):
                from .config import get_config

                cfg = get_config()
                ttl = self.config.queue_ttl if self.config.queue_ttl is not None else cfg.queue_ttl
                if b == "amqp":
                    self._backend = get_backend("amqp")(cfg.amqp.url, queue_ttl=ttl)
                elif b.startswith(("amqp://", "amqps://")):
                    self._backend = get_backend("amqp")(b, queue_ttl=ttl)
                else:
                    self._backend = get_backend(b)(queue_ttl=ttl)
            else:
                self._backend = b
        return self._backend

    async def startup(self) -> None:
        """Start the backend (connect to RabbitMQ); called by lifespan or lazily by the first request."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.backend.start()
                self._started = True
                if self._ending is not None and self._ending.done():
                    self._ending = None  # started again after a shutdown

    async def shutdown(self) -> None:
        """Stop the backend."""
        if self._backend is not None and self._started:
            self._started = False
            await self._backend.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t = scope["type"]
        if t == "http":
            await self._http(scope, receive, send)
        elif t == "websocket":
            await self._websocket(scope, receive, send)
        elif t == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- extraction -------------------------------------------------------------------------------------------------
    def _extract(self, scope: Scope) -> Tuple[str, str]:
        try:
            channel = check_channel(self.config.channel(scope))
            c = self.config.consumer(scope)
            cid = c.id if isinstance(c, Consumer) else (Consumer(c).id if c is None or isinstance(c, str) else str(c))
            check_consumer(cid)
        except (InvalidChannelError, InvalidConsumerError) as exc:
            raise _Reject(400, str(exc)) from None
        return cid, channel

    def _cors(self, scope: Scope) -> List[Tuple[bytes, bytes]]:
        origins = self.config.cors_origins
        if not origins:
            return []
        origin = _header(scope, b"origin")
        if origin is None:
            return []
        if origins == "*" or (not isinstance(origins, str) and "*" in origins):
            allowed = True
        else:
            allowed = origin in ((origins,) if isinstance(origins, str) else origins)
        if not allowed:
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]

    # -- HTTP -------------------------------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.config
        method = scope.get("method", "GET").upper()
        cors = self._cors(scope)
        if method == "OPTIONS" and cfg.cors_origins:
            await _respond(
                send,
                204,
                cors
                + [
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS" if cfg.publish else b"GET, OPTIONS"),
                    (b"access-control-allow-headers", b"Consumer-Id, Content-Type"),
                    (b"access-control-max-age", b"1728000"),
                ],
            )
            return
        try:
            is_publish = method == "POST" and cfg.publish
            body = await _read_body(receive, cfg.max_batch_size if is_publish else cfg.max_message_size)
            cid, channel = self._extract(scope)
            if is_publish:
                n = await self._publish(scope, body, channel)
                await _respond(send, 204, cors + [(b"x-push-published", str(n).encode())])
                return
            if method == "HEAD":
                # a HEAD response has no body: taking a message for it would consume it unseen (a link checker,
                # `curl -I`, a prefetching proxy); answer as a poll that found nothing
                await _respond(send, 204, cors)
                return
            if not self._started:
                await self.startup()
            accept = (_header(scope, b"accept") or "").lower()
            if cfg.verbose_logging:
                log.info("%s %s consumer=%s channel=%s", method, scope.get("path"), cid, channel)
            if "text/event-stream" in accept:
                await self._sse(scope, receive, send, cid, channel, cors)
            else:
                await self._long_poll(receive, send, cid, channel, cors)
        except _Gone:
            return
        except _Reject as r:
            await _respond(send, r.status, cors + [(b"content-type", b"text/plain; charset=utf-8")],
                           r.reason.encode("utf-8") + b"\n")
        except InvalidChannelError as exc:  # the broker refuses the channel (RabbitMQ: its exchange)
            log.warning("%s", exc)
            await _respond(send, 400, cors + [(b"content-type", b"text/plain; charset=utf-8")],
                           str(exc).encode("utf-8", "replace") + b"\n")
        except PublishUnconfirmedError as exc:
            # 202, not 503: the outcome is unknown, so the client must not be invited to publish them again
            log.warning("publish not confirmed: %s", exc)
            await _respond(
                send, 202,
                cors + [(b"content-type", b"text/plain; charset=utf-8"),
                        (b"x-push-published", b"0"),
                        (b"x-push-unconfirmed", _ranges(exc.unconfirmed).encode()),
                        (b"x-push-withdrawn", _ranges(exc.withdrawn).encode())],
                f"not confirmed: {exc}\n".encode("utf-8", "replace"),
            )
        except BrokerRefusedError as exc:  # the server's configuration, not the client's channel
            log.error("%s", exc)
            await _respond(send, 500, cors + [(b"content-type", b"text/plain; charset=utf-8")],
                           f"broker configuration error: {exc}\n".encode("utf-8", "replace"))
        except BrokerUnavailableError as exc:
            log.warning("broker unavailable: %s", exc)
            body = b"broker unavailable\n"
            if is_publish:
                body = b"broker unavailable: not published (safe to publish again)\n"
            await _respond(send, 503, cors + [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")],
                           body)

    async def _publish(self, scope: Scope, body: bytes, channel: str) -> int:
        cfg = self.config
        ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if ctype == BATCH_CONTENT_TYPE:
            messages = _split_batch(body, cfg.max_message_size)
        else:
            if len(body) > cfg.max_message_size:
                raise _Reject(413, f"message of {len(body)} bytes exceeds the limit of {cfg.max_message_size} bytes")
            messages = [body]
        if not self._started:
            await self.startup()
        b = self.backend
        if not b.publishable:
            raise _Reject(405, f"the {b.name} backend does not publish")
        # 204 means the broker has the messages: on RabbitMQ that is the publisher confirm. A backend that can
        # tell what it handed over (RabbitMQ) times out by itself: it withdraws the messages not yet handed to the
        # broker (503: not published) or says which may still be delivered (PublishUnconfirmedError: 202).
        if _takes_timeout(b.publish_async):
            await b.publish_async(messages, channel, timeout=cfg.publish_timeout)
        else:
            try:
                await asyncio.wait_for(b.publish_async(messages, channel), cfg.publish_timeout)
            except asyncio.TimeoutError:
                raise PublishUnconfirmedError(
                    f"the broker did not confirm within {cfg.publish_timeout} s; the messages may still be delivered",
                    unconfirmed=range(len(messages)), channel=channel,
                ) from None
        if cfg.verbose_logging:
            log.info("published %d message(s) to %s", len(messages), channel)
        return len(messages)

    async def _long_poll(self, receive: Receive, send: Send, cid: str, channel: str, cors: list) -> None:
        sub = await self.backend.subscribe(cid, channel)
        disc = asyncio.ensure_future(_wait_disconnect(receive))
        get = asyncio.ensure_future(sub.get(self.long_poll_timeout))
        delivery: Optional[Delivery] = None
        try:
            await asyncio.wait((get, disc, self._ending_future()), return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                if not disc.done():  # the server is shutting down: nothing yet, poll again (elsewhere)
                    await _respond(send, 204, cors)
                return  # client went away: the queue keeps its messages until queue_ttl
            delivery = get.result()
            if delivery is None:
                await _respond(send, 204, cors)
                return
            # Cancel the consumer BEFORE acking, so nothing else is delivered to this finished request.
            await sub.cancel()
            await asyncio.sleep(0)  # let the disconnect watcher see a connection that closed meanwhile
            if disc.done():
                await delivery.reject(requeue=True)
                return
            headers = cors + [(b"content-length", str(len(delivery.body)).encode())]
            if self.config.content_type:
                headers.append((b"content-type", self.config.content_type.encode("latin-1")))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": delivery.body})
            await delivery.ack()
        finally:
            await _finish(get, disc, sub, delivery)

    async def _sse(self, scope: Scope, receive: Receive, send: Send, cid: str, channel: str, cors: list) -> None:
        sub = await self.backend.subscribe(cid, channel)
        disc = asyncio.ensure_future(_wait_disconnect(receive))
        get: Optional[asyncio.Future] = None
        delivery: Optional[Delivery] = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": cors
                    + [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b":\n\n", "more_body": True})
            ending = self._ending_future()
            while True:
                get = asyncio.ensure_future(sub.get(self.config.keepalive))
                await asyncio.wait((get, disc, ending), return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    return  # the client went away, or the server is shutting down (the stream ends)
                delivery = get.result()
                get = None
                if delivery is None:
                    await send({"type": "http.response.body", "body": b":\n\n", "more_body": True})
                    continue
                try:
                    text = delivery.body.decode("utf-8")
                except UnicodeDecodeError:
                    # SSE carries text only: acked, skipped with a comment, counted (spec §6.2)
                    self.dropped_non_utf8 += 1
                    log.warning("SSE %s@%s: dropped a message that is not UTF-8", cid, channel)
                    await send({"type": "http.response.body", "body": b": dropped a non-UTF-8 message\n\n",
                                "more_body": True})
                    await delivery.ack()
                    delivery = None
                    continue
                event = "".join(f"data: {line}\n" for line in _LINE_SPLIT.split(text)) + "\n"
                if disc.done():
                    await delivery.reject(requeue=True)
                    delivery = None
                    return
                await send({"type": "http.response.body", "body": event.encode("utf-8"), "more_body": True})
                # A send blocked by a slow reader returns, without writing and without an error, when the client
                # goes away meanwhile (uvicorn): look at the connection before acking what may not be written.
                await asyncio.sleep(0)
                if disc.done():
                    await delivery.reject(requeue=True)  # (written after all: a rare duplicate, spec §3.1)
                    delivery = None
                    return
                await delivery.ack()
                delivery = None
        except OSError:
            pass  # the client went away mid-write
        finally:
            await _finish(get, disc, sub, delivery)
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except Exception:  # noqa: BLE001 - connection already closed
                pass

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        try:
            cid, channel = self._extract(scope)
            if not self._started:
                await self.startup()
            sub = await self.backend.subscribe(cid, channel)
        except (_Reject, InvalidChannelError, BrokerUnavailableError, BrokerRefusedError) as exc:
            log.info("WebSocket refused: %s", exc)
            await send({"type": "websocket.close",
                        "code": 1008 if isinstance(exc, (_Reject, InvalidChannelError)) else 1011})
            return
        if self.config.verbose_logging:
            log.info("WebSocket consumer=%s channel=%s", cid, channel)
        await send({"type": "websocket.accept"})
        closed = asyncio.ensure_future(_wait_ws_close(receive))
        get: Optional[asyncio.Future] = None
        delivery: Optional[Delivery] = None
        try:
            while True:
                get = asyncio.ensure_future(sub.get(None))
                await asyncio.wait((get, closed), return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    return
                delivery = get.result()
                get = None
                if delivery is None:
                    return
                body = delivery.body
                try:
                    frame = {"type": "websocket.send", "text": body.decode("utf-8")}
                except UnicodeDecodeError:
                    frame = {"type": "websocket.send", "bytes": body}
                if closed.done():
                    return
                await send(frame)
                await delivery.ack()
                delivery = None
        except Exception as exc:  # noqa: BLE001 - a send on a closed socket: the message is requeued below
            log.debug("WebSocket %s@%s ended: %r", cid, channel, exc)
        finally:
            await _finish(get, closed, sub, delivery)
            if not closed.done():
                try:
                    await send({"type": "websocket.close", "code": 1000})
                except Exception:  # noqa: BLE001
                    pass


#: every Dispatcher of the process (for :func:`end_all_streams`)
_live: "weakref.WeakSet[Dispatcher]" = weakref.WeakSet()


def end_all_streams() -> None:
    """End the open-ended requests (SSE, long-polls) of every Dispatcher of the process: the server is stopping."""
    for d in list(_live):
        d.end_streams()


async def _finish(
    get: Optional[asyncio.Future], watcher: asyncio.Future, sub: Subscription, delivery: Optional[Delivery]
) -> None:
    """End a request: stop waiting, cancel the subscription, then requeue what was not handed over. Cancel first:
    on RabbitMQ (single active consumer) the queue's next consumer is activated only once the messages this one
    holds are settled, so what is requeued here is the next consumer's first message — order is kept."""
    if get is not None and not get.done():
        get.cancel()
        try:
            await get
        except BaseException:  # noqa: BLE001 - cancelled on purpose
            pass
    watcher.cancel()
    try:
        await sub.cancel()
    finally:
        if get is not None and get.done() and not get.cancelled() and get.exception() is None:
            late = get.result()
            if late is not None and late is not delivery and not late.settled:
                await late.reject(requeue=True)
        if delivery is not None and not delivery.settled:
            await delivery.reject(requeue=True)


_TIMEOUT_PARAM: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _takes_timeout(method: Any) -> bool:
    """Whether a backend's ``publish_async`` accepts ``timeout=`` (and then withdraws what it did not hand over)."""
    func = getattr(method, "__func__", method)
    try:
        return _TIMEOUT_PARAM[func]
    except (KeyError, TypeError):
        pass
    try:
        ok = "timeout" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        ok = False
    try:
        _TIMEOUT_PARAM[func] = ok
    except TypeError:
        pass
    return ok


def _ranges(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"`` (the X-Push-Unconfirmed / X-Push-Withdrawn header form)."""
    out: List[str] = []
    run: List[int] = []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def _parse_ranges(value: Optional[str]) -> List[int]:
    """The indices of an X-Push-Unconfirmed / X-Push-Withdrawn header (``"0-2,5"`` → ``[0, 1, 2, 5]``)."""
    out: List[int] = []
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _wait_ws_close(receive: Receive) -> None:
    while True:
        message = await receive()  # client frames are ignored
        if message["type"] == "websocket.disconnect":
            return


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: List[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _Reject(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _split_batch(body: bytes, limit: int) -> List[bytes]:
    out: List[bytes] = []
    pos = 0
    n = len(body)
    while pos < n:
        if pos + 4 > n:
            raise _Reject(400, f"batch body truncated in the length of message {len(out)}")
        (size,) = struct.unpack_from(">I", body, pos)
        pos += 4
        if size > limit:
            raise _Reject(413, f"message {len(out)} of {size} bytes exceeds the limit of {limit} bytes")
        if pos + size > n:
            raise _Reject(400, f"batch body truncated in message {len(out)}")
        out.append(body[pos : pos + size])
        pos += size
    return out


def encode_batch(messages: Iterable[bytes]) -> bytes:
    """The ``application/x-eventpush-batch`` body of ``messages``."""
    parts = []
    for m in messages:
        parts.append(struct.pack(">I", len(m)))
        parts.append(m)
    return b"".join(parts)


async def _respond(send: Send, status: int, headers: List[Tuple[bytes, bytes]], body: bytes = b"") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"content-length", str(len(body)).encode())] if body or status != 204 else [])})
    await send({"type": "http.response.body", "body": body})
