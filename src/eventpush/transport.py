"""Transport: one pooled, keep-alive HTTP client per endpoint, with explicit retries.

Public API::

    Timeout(*, connect=10.0, read=60.0)
    Retry(*, attempts=5, backoff=0.5, backoff_max=30.0, total=120.0)
        Retry.NONE                        a single attempt
        .delay(attempt, retry_after=None) the sleep before attempt ``attempt + 1`` (full jitter)
    Limits(*, max_connections=10)
    Transport(base_url, *, headers=None, timeout=Timeout(), retry=Retry(), limits=Limits(), gzip=False,
              gzip_level=1, verify=True)
        .post(path, body, *, headers=None, retry=None, gzip=None) -> Response
        .interrupt()                      stop sleeping between retries (pending posts give up at once)
        .close()                          context manager too
    Response: .status, .headers, .data (bytes), .attempts

Retries are decided here, not by urllib3 (its ``Retry`` leaves POST out, and rightly so in general): a POST of
events is safe to repeat only because every event carries an id that the server deduplicates. We retry connection
errors, timeouts, 429 and 5xx with exponential backoff and full jitter (``uniform(0, min(backoff_max,
backoff * 2**n))``), sleep what a ``Retry-After`` header asks for, and stop after ``attempts`` attempts or when
``total`` seconds would be exceeded. Other statuses are returned at once: the caller decides what a 4xx means.
After the last attempt a connection problem raises :class:`~eventpush.errors.ConnectError` or
:class:`~eventpush.errors.TimeoutError` (with ``.attempts``); a failing status is returned as the final
:class:`Response`.

The body may be ``bytes``, a ``memoryview`` or a sealed ``Batch``; a batch goes to the socket through its buffer
without a copy (unless gzip is on). One ``urllib3`` pool (bounded by ``Limits.max_connections``, blocking when
all connections are busy) is shared by all threads; TLS is verified by default (certifi is not required: the
system store is used unless ``verify`` is a CA bundle path).
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import math
import random
import threading
import time
import zlib
from typing import Any, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import urllib3
from urllib3 import exceptions as u3exc

from .errors import ClosedError, ConnectError
from .errors import TimeoutError as EPTimeoutError
from .errors import TransportError

__all__ = ["Timeout", "Retry", "Limits", "Transport", "Response", "RETRYABLE_STATUSES"]

log = logging.getLogger("eventpush.transport")

#: statuses that are retried besides every 5xx
RETRYABLE_STATUSES = frozenset({429})


class _Frozen:
    """Keyword-only, immutable settings (``dataclass(kw_only=)`` needs 3.10)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use .replace(...)")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _fields(self) -> dict:
        names: Tuple[str, ...] = self.__slots__  # type: ignore[assignment]
        return {k: getattr(self, k) for k in names}

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed."""
        fields = self._fields()
        fields.update(changes)
        return type(self)(**fields)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(self._fields().items())))

    def __reduce__(self) -> Any:
        return (_rebuild_frozen, (type(self), self._fields()))


def _rebuild_frozen(cls: Any, fields: dict) -> Any:
    return cls(**fields)


class Timeout(_Frozen):
    """Connect and read timeouts in seconds (``None`` waits forever)."""

    __slots__ = ("connect", "read")
    connect: Optional[float]
    read: Optional[float]

    def __init__(self, *, connect: Optional[float] = 10.0, read: Optional[float] = 60.0) -> None:
        self._set("connect", connect)
        self._set("read", read)


class Retry(_Frozen):
    """Retry policy: at most ``attempts`` attempts in all (1 = no retry), exponential backoff from ``backoff``
    seconds doubling up to ``backoff_max`` with full jitter, and at most ``total`` seconds from the first attempt
    (``None``: no time cap; a retry gets only what is left of it as its timeouts). A server's ``Retry-After``
    (seconds or an HTTP-date, always GMT) wins over the backoff; one that would end past ``total`` (or, without a
    cap, ~12 days away) ends the retries with that response, and one that is no finite number is ignored."""

    __slots__ = ("attempts", "backoff", "backoff_max", "total")
    attempts: int
    backoff: float
    backoff_max: float
    total: Optional[float]
    NONE: "Retry"

    def __init__(
        self,
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        total: Optional[float] = 120.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("Retry(attempts=) must be at least 1")
        if backoff < 0 or backoff_max < 0:
            raise ValueError("Retry backoff must not be negative")
        self._set("attempts", int(attempts))
        self._set("backoff", float(backoff))
        self._set("backoff_max", float(backoff_max))
        self._set("total", None if total is None else float(total))

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based). A ``Retry-After`` wins over the
        jittered backoff (the server knows better when it will have room)."""
        if retry_after is not None:
            return max(0.0, retry_after)
        cap = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        return random.uniform(0.0, cap)


Retry.NONE = Retry(attempts=1)


class Limits(_Frozen):
    """Connection pool bounds: at most ``max_connections`` open connections to the endpoint (callers beyond that
    wait for a free one)."""

    __slots__ = ("max_connections",)
    max_connections: int

    def __init__(self, *, max_connections: int = 10) -> None:
        if max_connections < 1:
            raise ValueError("Limits(max_connections=) must be at least 1")
        self._set("max_connections", int(max_connections))


class Response:
    """The final HTTP response of a POST: ``status``, ``headers`` (case-insensitive), ``data`` (bytes) and
    ``attempts`` (how many requests it took)."""

    __slots__ = ("status", "headers", "data", "attempts")

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes, attempts: int = 1) -> None:
        self.status = status
        self.headers = headers
        self.data = data
        self.attempts = attempts

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON."""
        import orjson

        return orjson.loads(self.data)

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.data)} bytes, {self.attempts} attempt(s)>"


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` value (delay-seconds or an HTTP-date); ``None`` when unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None  # ("inf", "1e400", "nan": unreadable)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # the asctime form (and "-0000") carry no zone: an HTTP-date is always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    try:
        return max(0.0, when.timestamp() - time.time())
    except (OverflowError, OSError, ValueError):
        return None


#: A Retry-After longer than this (about 12 days) is not waited for, even without a time cap: the request gives up
#: with the last response (Event.wait cannot wait much longer than threading.TIMEOUT_MAX anyway).
_LONGEST_WAIT = 1e6


def _is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_STATUSES


Body = Union[bytes, bytearray, memoryview, Any]


class Transport:
    """A pooled keep-alive HTTP client for one base URL, shared by all threads. See the module docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        limits: Limits = Limits(),
        gzip: bool = False,
        gzip_level: int = 1,
        verify: Union[bool, str] = True,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if not 0 <= gzip_level <= 9:
            raise ValueError("gzip_level must be between 0 and 9")
        self.base_url = base_url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"  # error messages: origin + the path actually requested
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.retry = retry
        self.limits = limits
        self.gzip = bool(gzip)
        self.gzip_level = gzip_level
        self.verify = verify
        self._closed = False
        self._interrupt = threading.Event()
        self._pool = self._make_pool()

    def _make_pool(self) -> "urllib3.HTTPConnectionPool":
        kw: dict = dict(
            maxsize=self.limits.max_connections,
            block=True,  # bounded: a caller beyond max_connections waits for a free connection
            retries=False,  # we decide (STYLE 13)
            timeout=urllib3.Timeout(connect=self.timeout.connect, read=self.timeout.read),
        )
        if self.base_url.startswith("https"):
            if self.verify is False:
                kw["cert_reqs"] = "CERT_NONE"
            else:
                kw["cert_reqs"] = "CERT_REQUIRED"
                if isinstance(self.verify, str):
                    kw["ca_certs"] = self.verify
        return urllib3.connection_from_url(self.base_url, **kw)

    def _after_fork_in_child(self) -> None:
        # The parent's sockets must never be shared with a child: start with a fresh pool.
        self._interrupt = threading.Event()
        self._pool = self._make_pool()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def url(self, path: str) -> str:
        """The absolute URL of ``path``."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def interrupt(self) -> None:
        """Make every pending retry give up now (used by a closing batcher whose time is up)."""
        self._interrupt.set()

    def post(
        self,
        path: str,
        body: Body,
        *,
        headers: Optional[Mapping[str, str]] = None,
        retry: Optional[Retry] = None,
        gzip: Optional[bool] = None,
    ) -> Response:
        """POST ``body`` to ``path`` (relative to the base URL), retrying per the policy; see the module docstring."""
        if self._closed:
            raise ClosedError("the transport is closed")
        policy = self.retry if retry is None else retry
        hdrs = dict(self.headers)
        if headers:
            hdrs.update(headers)
        use_gzip = self.gzip if gzip is None else gzip
        view: Optional[memoryview] = None
        if type(body) is bytes or type(body) is bytearray:  # not isinstance: a Batch may subclass bytes
            payload: Any = body
        elif isinstance(body, memoryview):
            payload = body
        else:
            try:
                view = memoryview(body)  # PERF: zero-copy; the batch refuses release() while we hold it
            except TypeError:
                payload = body.body()  # type: ignore[union-attr]  # a Batch without the buffer protocol (the twin before Python 3.12)
            else:
                payload = view
        try:
            if use_gzip:
                comp = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)  # 31: gzip container
                payload = comp.compress(payload) + comp.flush()
                hdrs["Content-Encoding"] = "gzip"
            return self._post_with_retries(self._prefix + (path if path.startswith("/") else "/" + path),
                                           payload, hdrs, policy)
        finally:
            if view is not None:
                view.release()

    def _post_with_retries(self, url: str, payload: Any, headers: dict, policy: Retry) -> Response:
        start = time.monotonic()
        deadline = None if policy.total is None else start + policy.total
        attempt = 0
        while True:
            attempt += 1
            error: Optional[TransportError] = None
            retry_after: Optional[float] = None
            timeout: Any = urllib3.util.Timeout.DEFAULT_TIMEOUT  # the pool's
            if deadline is not None and attempt > 1:
                # a retry must not run past the total time either (the first attempt has the whole of it)
                left = max(0.001, deadline - time.monotonic())
                connect, read = self.timeout.connect, self.timeout.read
                timeout = urllib3.Timeout(connect=left if connect is None else min(connect, left),
                                          read=left if read is None else min(read, left))
            try:
                r = self._pool.urlopen(
                    "POST", url, body=payload, headers=headers, retries=False, redirect=False,
                    preload_content=True, assert_same_host=False, timeout=timeout,
                )
            except u3exc.NewConnectionError as exc:  # before ConnectTimeoutError: it subclasses it in urllib3 2
                error = ConnectError(f"cannot connect: {exc}", method="POST", url=self._origin + url)
            except (u3exc.ConnectTimeoutError, u3exc.ReadTimeoutError, u3exc.TimeoutError) as exc:
                error = EPTimeoutError(f"timed out: {exc}", method="POST", url=self._origin + url)
            except u3exc.SSLError as exc:
                # a certificate problem does not heal by retrying
                err = ConnectError(f"TLS error: {exc}", method="POST", url=self._origin + url)
                err.attempts = attempt  # type: ignore[attr-defined]
                raise err from exc
            except (u3exc.ProtocolError, u3exc.HTTPError, OSError) as exc:
                error = ConnectError(f"connection failed: {exc}", method="POST", url=self._origin + url)
            else:
                status = r.status
                if not _is_retryable_status(status) or attempt >= policy.attempts:
                    return Response(status, r.headers, r.data, attempt)
                retry_after = _parse_retry_after(r.headers.get("Retry-After"))
                log.debug("POST %s: HTTP %d (attempt %d), retrying", url, status, attempt)
                last_response = Response(status, r.headers, r.data, attempt)
            if error is not None:
                log.debug("POST %s: %s (attempt %d)", url, error, attempt)
                if attempt >= policy.attempts:
                    error.attempts = attempt  # type: ignore[attr-defined]
                    raise error
            delay = policy.delay(attempt, retry_after)
            if (deadline is not None and time.monotonic() + delay > deadline) or delay > _LONGEST_WAIT:
                give_up = True
            else:
                give_up = self._interrupt.wait(delay) if delay > 0 else self._interrupt.is_set()
            if give_up:
                if error is not None:
                    error.attempts = attempt  # type: ignore[attr-defined]
                    raise error
                return last_response

    def close(self) -> None:
        """Close every pooled connection; further posts raise :class:`~eventpush.errors.ClosedError`."""
        if self._closed:
            return
        self._closed = True
        self._interrupt.set()
        self._pool.close()

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Transport {self.base_url}{' closed' if self._closed else ''}>"
