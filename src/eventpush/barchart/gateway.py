"""``EventGateway``: immediate capture (``POST {base}/events``), spec/barchart.md §3.

The gateway validates and encodes on the caller's thread with the engine's encoder (rules ``"barchart"``), so a
bad event fails the call before any I/O; the request goes out from a :class:`~eventpush.sender.Sender` worker over
the engine's :class:`~eventpush.transport.Transport` (keep-alive pool, timeouts, retries with backoff and jitter on
connection errors, 429 and 5xx, honouring ``Retry-After``; never other 4xx). ``create_events`` returns an
:class:`~eventpush.barchart.futures.AwaitableFuture`: ``.result()`` blocks, ``await`` works in asyncio.

Because the Barchart API has no idempotency key, a retried request whose first attempt was stored stores its events
twice: delivery through the gateway is at-least-once (spec §1.1, §3).

Fork: in a forked child a gateway starts with a fresh lock, connection pool and sender (the parent's sender threads
do not exist there).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

import orjson

from .. import _fork
from ..dialects import BARCHART
from ..errors import ConnectError, TransportError
from ..errors import TimeoutError as EPTimeoutError
from ..transport import Limits, Retry, Timeout, Transport
from ._encoding import EventCodec
from .errors import (
    AUTHORIZATION_FAILURE_MESSAGE,
    DISPOSED_MESSAGE,
    GENERAL_FAILURE_MESSAGE,
    NOT_STARTED_MESSAGE,
    REQUEST_AUTHORIZATION_FAILURE,
    REQUEST_GENERAL_FAILURE,
    BarchartError,
    BarchartStateError,
    BarchartValidationError,
    failure_reason,
    malformed_reasons,
)
from .futures import AwaitableFuture

__all__ = ["EventGateway", "STAGING_HOST", "PRODUCTION_HOST", "DEVELOPMENT_HOST"]

log = logging.getLogger("eventpush.barchart")

#: ``Configuration.js`` of @barchart/events-client-js 6.0.0.
STAGING_HOST = "events-stage.aws.barchart.com"
PRODUCTION_HOST = "events.aws.barchart.com"
DEVELOPMENT_HOST = STAGING_HOST

_DEFAULT_PORTS = {"HTTP": 80, "HTTPS": 443}
_EMPTY_BODY = b'{"events":[]}'

def _netloc_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 literal in brackets (RFC 3986 §3.2.2)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


class EventGateway:
    """Sends events to the Barchart Event Tracking Service (or any server speaking its API, such as the hub).

    ``EventGateway(protocol, host, port)``: ``protocol`` is ``"http"`` or ``"https"`` (any case); ``port`` defaults
    to the protocol's port and is left out of the URL when it is that default. Keyword-only engine settings:
    ``timeout`` (:class:`~eventpush.transport.Timeout`), ``retry`` (:class:`~eventpush.transport.Retry`),
    ``max_connections``, ``concurrency`` (sender threads), ``validate_context`` (apply the event types'
    context transformers and validators before sending; off by default, as in the SDK), ``path_prefix`` (a path
    before ``/events``; see :meth:`for_endpoint`).

    A new gateway must be started (:meth:`start`, no I/O) before :meth:`create_events`; the factories
    (:meth:`for_staging`, :meth:`for_production`, :meth:`for_development`, :meth:`for_stage`,
    :meth:`for_endpoint`) return started gateways. :meth:`dispose` (or ``with``) releases the connections.
    """

    def __init__(
        self,
        protocol: str,
        host: str,
        port: Optional[int] = None,
        *,
        path_prefix: str = "",
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        max_connections: int = 10,
        concurrency: int = 4,
        validate_context: bool = False,
    ) -> None:
        if not isinstance(protocol, str) or protocol.upper() not in _DEFAULT_PORTS:
            raise ValueError(f"protocol must be 'http' or 'https', not {protocol!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty str, not {host!r}")
        self._protocol = protocol.upper()
        default = _DEFAULT_PORTS[self._protocol]
        if port is None:
            port = default
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int between 1 and 65535, not {port!r}")
        self._host = host
        self._port = port
        prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        netloc = _netloc_host(host) if port == default else f"{_netloc_host(host)}:{port}"
        self._base_url = f"{self._protocol.lower()}://{netloc}{prefix}"
        self._timeout = timeout
        self._retry = retry
        self._max_connections = max_connections
        self._concurrency = concurrency
        self._codec = EventCodec(validate_context=validate_context)
        self._lock = threading.Lock()
        self._started = False
        self._disposed = False
        self._transport: Optional[Transport] = None
        self._sender: Any = None
        _fork.reinit_after_fork(self)

    def _reinit_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._sender = None  # the parent's sender threads do not exist here: a new sender on first use
        if self._transport is not None:
            self._transport._after_fork_in_child()  # never share the parent's sockets

    # -- factories --------------------------------------------------------------------------------------------

    @classmethod
    def for_staging(cls, **settings: Any) -> "EventGateway":
        """A started gateway for ``https://events-stage.aws.barchart.com`` (test data)."""
        return cls("https", STAGING_HOST, 443, **settings).start()

    @classmethod
    def for_production(cls, **settings: Any) -> "EventGateway":
        """A started gateway for ``https://events.aws.barchart.com`` ("real" data)."""
        return cls("https", PRODUCTION_HOST, 443, **settings).start()

    @classmethod
    def for_development(cls, **settings: Any) -> "EventGateway":
        """A started gateway for the development host (the staging host)."""
        return cls("https", DEVELOPMENT_HOST, 443, **settings).start()

    @classmethod
    def for_stage(cls, stage: Any, **settings: Any) -> Optional["EventGateway"]:
        """``for_staging()`` for exactly ``'staging'``, ``for_production()`` for exactly ``'production'``, else
        ``None`` (never an error) — the JS ``EventGateway.for(stage)``."""
        if type(stage) is str and stage == "staging":
            return cls.for_staging(**settings)
        if type(stage) is str and stage == "production":
            return cls.for_production(**settings)
        return None

    @classmethod
    def for_endpoint(cls, base_url: str, **settings: Any) -> "EventGateway":
        """A started gateway on any base URL, e.g. ``"http://127.0.0.1:8787/barchart"`` (the hub): events go to
        ``base_url + "/events"``."""
        parts = urlsplit(base_url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"base_url must not have a query or fragment, got {base_url!r}")
        return cls(parts.scheme, parts.hostname, parts.port, path_prefix=parts.path, **settings).start()

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> "EventGateway":
        """Mark the gateway started and return it. No network I/O; idempotent."""
        self._started = True
        return self

    def dispose(self) -> None:
        """Release the connections and sender threads; every later ``create_events`` fails. Idempotent.
        Requests already in flight complete first."""
        with self._lock:
            if self._disposed:
                return
            self._disposed = True
            sender, transport = self._sender, self._transport
        if sender is not None:
            sender.close()
        if transport is not None:
            transport.close()

    @property
    def is_disposed(self) -> bool:
        """True once :meth:`dispose` was called."""
        return self._disposed

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._started

    def __enter__(self) -> "EventGateway":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.dispose()

    # -- endpoint ---------------------------------------------------------------------------------------------

    @property
    def protocol(self) -> str:
        """``"HTTP"`` or ``"HTTPS"``."""
        return self._protocol

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``{protocol}://{host}[:{port}]{prefix}`` (no trailing slash)."""
        return self._base_url

    @property
    def url(self) -> str:
        """The create-events URL: ``base_url + "/events"``."""
        return self._base_url + BARCHART.batch_path

    @property
    def validate_context(self) -> bool:
        """Whether the context transformers and validators are applied client-side."""
        return self._codec.validate_context

    @property
    def codec(self) -> EventCodec:
        """The validating encoder front (shared with batchers on this gateway)."""
        return self._codec

    @property
    def transport(self) -> Transport:
        """The engine transport (created on first use; shared with batchers on this gateway)."""
        with self._lock:
            if self._disposed:
                raise BarchartStateError(DISPOSED_MESSAGE)
            if self._transport is None:
                self._transport = Transport(
                    self._base_url,
                    timeout=self._timeout,
                    retry=self._retry,
                    limits=Limits(max_connections=self._max_connections),
                )
            return self._transport

    def _get_sender(self) -> Any:
        from ..sender import Sender

        transport = self.transport
        with self._lock:
            if self._sender is None:
                self._sender = Sender(transport, BARCHART, concurrency=self._concurrency)
            return self._sender

    # -- the call ---------------------------------------------------------------------------------------------

    def create_events(self, events: List[Any]) -> AwaitableFuture:
        """Send ``events`` in one request; the future resolves to the created events as plain dicts (codes,
        timestamp, context, ``batch``, ``sequence``) or fails with :class:`BarchartError`.

        Events may use enum members or code strings; only customer, product, type, version (when present and not
        None), timestamp (int epoch ms; a datetime or Timestamp-like value is converted) and context (a list) are
        sent, in that order. A bad event fails the future with :class:`BarchartValidationError` before any I/O
        (nothing is sent; every bad event is named by index). An empty list is sent as it is.
        """
        if self._disposed:
            return AwaitableFuture.failed(BarchartStateError(DISPOSED_MESSAGE))
        if not self._started:
            return AwaitableFuture.failed(BarchartStateError(NOT_STARTED_MESSAGE))
        if not isinstance(events, list):
            return AwaitableFuture.failed(
                BarchartError("The events argument must be a list.", malformed_reasons(["events"]))
            )
        try:
            batch = self._codec.encode_events(events)
        except BarchartValidationError as exc:
            log.debug("create_events: %s", exc)
            return AwaitableFuture.failed(exc)
        body: Any = _EMPTY_BODY if batch is None else batch
        try:
            inner = self._get_sender().send_body(BARCHART.batch_path, body)
        except Exception as exc:  # closed under our feet (dispose raced) -> the same rejection as above
            if batch is not None:
                batch.release()
            err = (BarchartStateError(DISPOSED_MESSAGE) if self._disposed else
                   BarchartError(GENERAL_FAILURE_MESSAGE, _general(), None))
            err.__cause__ = exc  # what actually went wrong stays visible in the traceback
            return AwaitableFuture.failed(err)
        out = AwaitableFuture()

        def done(f: Any) -> None:
            try:
                resp = f.result()
            except BaseException as exc:  # noqa: BLE001 - every outcome must settle `out`
                out.set_exception(_network_error(exc))
            else:
                try:
                    out.set_result(_created(resp))
                except BarchartError as err:
                    out.set_exception(err)
            finally:
                if batch is not None:
                    try:
                        batch.release()
                    except BufferError:
                        pass

        inner.add_done_callback(done)
        return out

    def __str__(self) -> str:
        return "[EventGateway]"

    def __repr__(self) -> str:
        state = "disposed" if self._disposed else ("started" if self._started else "new")
        return f"<EventGateway {self.url} {state}>"


def _general() -> List[Dict[str, Any]]:
    return [failure_reason(REQUEST_GENERAL_FAILURE, GENERAL_FAILURE_MESSAGE)]


def _network_error(exc: BaseException) -> BarchartError:
    """No reply. A connection failure is the SDK's "Network Error" → ``REQUEST_AUTHORIZATION_FAILURE``; anything
    else (a timeout, a closed transport) → ``REQUEST_GENERAL_FAILURE``."""
    if isinstance(exc, ConnectError):
        err = BarchartError(AUTHORIZATION_FAILURE_MESSAGE,
                            [failure_reason(REQUEST_AUTHORIZATION_FAILURE, AUTHORIZATION_FAILURE_MESSAGE)], None)
    else:
        err = BarchartError(GENERAL_FAILURE_MESSAGE, _general(), None)
    err.__cause__ = exc
    if not isinstance(exc, (TransportError, EPTimeoutError)):
        log.warning("create_events failed unexpectedly: %r", exc)
    return err


def reply_error(status: int, headers: Any, data: bytes) -> BarchartError:
    """``ErrorInterceptor.GENERAL``: a body with content-type exactly ``application/json`` is the rejection;
    otherwise ``REQUEST_GENERAL_FAILURE``. ``status`` is kept either way."""
    ctype = headers.get("Content-Type") if headers is not None else None
    if ctype == "application/json" and data:
        try:
            return BarchartError(None, orjson.loads(data), status)
        except orjson.JSONDecodeError:
            pass
    return BarchartError(GENERAL_FAILURE_MESSAGE, _general(), status)


def _created(resp: Any) -> Any:
    if not 200 <= resp.status < 300:
        raise reply_error(resp.status, resp.headers, resp.data)
    try:
        return orjson.loads(resp.data)
    except orjson.JSONDecodeError:
        raise BarchartError(GENERAL_FAILURE_MESSAGE, _general(), resp.status) from None
