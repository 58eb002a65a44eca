"""The hub's HTTP/1.1 protocol for uvicorn: httptools' parser with limits on how requests start.

uvicorn bounds a request's body (the hub does: ``--max-body``, ``--body-timeout``) and the idle time between two
requests on a kept-alive connection (``--timeout-keep-alive``), but not how long a client may take to send a
request's headers, nor how large they may be (httptools has no header limit). A few hundred silent sockets could
then hold every file descriptor of the process, and one 20 MiB header went into memory whole. Here:

* a connection must complete each request's headers within ``header_timeout`` seconds of opening (or of the
  request's first byte): a client that started a request gets ``408`` and a log line; a connection that never
  sent a byte is closed quietly (browsers open spare connections);
* the request line and headers together may hold at most ``max_header_bytes``: past it the client gets ``431``,
  the connection is closed and nothing more of it is read or kept. httptools hands a header (or the request line)
  over only once it ends, so the bytes of one that has not ended yet are counted as they arrive: an endless header
  value is refused at the limit, not buffered whole;
* responses go out in request order: a ``431`` or ``408`` for a request pipelined behind one still being answered
  waits for that answer (the client would otherwise read it as the answer to the earlier request);
* after an early answer (``401``, ``413``, ``415``, ...: the reply went out before the request's body was read)
  uvicorn reads and discards the rest of the body to keep the connection; that rest must arrive within
  ``discard_timeout`` seconds (the hub's ``--body-timeout``), else the connection is closed. Once it is in, the
  connection gets uvicorn's keep-alive timeout again (the body's bytes had cancelled it);
* when uvicorn begins a graceful shutdown, the realtime Dispatchers end their SSE streams and answer their
  long-polls (204), which would otherwise hold the server until its graceful timeout. A Dispatcher served alone
  gets the same with ``uvicorn --http eventpush.hub.http:HubHttpProtocol``.

``eventpush serve`` selects this class (``http="eventpush.hub.http:HubHttpProtocol"``) and :func:`create_app`
sets the limits from the :class:`~eventpush.hub.config.HubConfig` in every worker process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, Optional, Tuple

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HubHttpProtocol", "DEFAULT_HEADER_TIMEOUT", "DEFAULT_MAX_HEADER_BYTES"]

log = logging.getLogger("eventpush.hub")

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_DISCARD_TIMEOUT = 30.0


class HubHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a header size limit (see the module docstring)."""

    #: seconds to complete a request's headers (set per process by the app factory)
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    #: bytes of request line and headers allowed per request
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: seconds for the rest of a body to arrive after an early answer (set per process by the app factory)
    discard_timeout: float = DEFAULT_DISCARD_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: Optional[asyncio.TimerHandle] = None
        self._header_bytes = 0  # bytes of the request line and headers httptools handed over
        self._raw_header_bytes = 0  # bytes received while this request's headers were not complete (see below)
        self._began = False  # the current request began in the data being parsed
        self._in_headers = False  # a request has started and its headers are not complete yet
        self._refused = False  # a 431 / 408 was sent (or is due): nothing more of this connection is read
        self._due: Optional[Tuple[int, bytes, str]] = None  # a refusal waiting for an earlier request's answer
        self._message_done = True  # the current request's body has been received in full
        self._discard_timer: Optional[asyncio.TimerHandle] = None

    # -- the header timer ------------------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        who = "%s:%d" % self.client if self.client else "a client"
        if self._in_headers:
            log.warning("408 from %s: request headers not complete within %g s", who, self.header_timeout)
            self._refuse(408, b"Request Timeout",
                         f"The request headers did not arrive within {self.header_timeout:g} s.")
        else:
            log.debug("closed an idle connection from %s: no request within %g s", who, self.header_timeout)
            self._refused = True
            self.transport.close()

    def _answer_pending(self) -> bool:
        """An earlier request on this connection is still being answered (or waits its turn)."""
        cycle = self.cycle
        return (cycle is not None and not cycle.response_complete) or bool(self.pipeline)

    def _refuse(self, status: int, reason: bytes, message: str) -> None:
        self._refused = True
        self._disarm()
        if self._answer_pending():
            self._due = (status, reason, message)  # sent by on_response_complete, after the earlier answers
            return
        self._send_refusal(status, reason, message)

    def _send_refusal(self, status: int, reason: bytes, message: str) -> None:
        body = orjson.dumps({"errorMessage": message})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, reason, len(body)) + body
        )
        self.transport.close()

    def _count(self, n: int) -> bool:
        """Count header bytes; False (and a 431 sent) once past the limit."""
        self._header_bytes += n
        if self._header_bytes <= self.max_header_bytes:
            return True
        self._too_large()
        return False

    def _too_large(self) -> None:
        who = "%s:%d" % self.client if self.client else "a client"
        log.warning("431 to %s: request line and headers over %d bytes", who, self.max_header_bytes)
        self._refuse(431, b"Request Header Fields Too Large",
                     f"The request line and headers exceed {self.max_header_bytes} bytes.")

    def _discard_expired(self) -> None:
        self._discard_timer = None
        if not self.transport.is_closing():
            who = "%s:%d" % self.client if self.client else "a client"
            log.warning("closed the connection from %s: the rest of a request body answered early did not arrive "
                        "within %g s", who, self.discard_timeout)
            self.transport.close()

    # -- uvicorn's hooks -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        if self._discard_timer is not None:
            self._discard_timer.cancel()
            self._discard_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._began = False
        super().data_received(data)
        if self._in_headers and not self._began and not self._refused:
            # The headers are still not complete, so all of this data belongs to them: count it now, since
            # httptools buffers a header until it ends (one endless value went into memory whole). The data in
            # which the request began is left out (part of it may be an earlier request's), so this never counts
            # more than the request sent.
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > self.max_header_bytes:
                self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._raw_header_bytes = 0
        self._began = True
        self._in_headers = True
        self._message_done = False
        self._arm()  # a request after a kept-alive one gets the same time for its headers

    def on_url(self, url: bytes) -> None:
        if not self._refused and self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused and self._count(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def shutdown(self) -> None:
        """uvicorn begins a graceful shutdown: besides finishing in-flight requests, end the open-ended ones (the
        realtime SSE streams and long-polls), which would otherwise hold the server until its timeout."""
        dispatcher = sys.modules.get("eventpush.realtime.dispatcher")
        if dispatcher is not None:
            dispatcher.end_all_streams()  # type: ignore[attr-defined]
        super().shutdown()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._message_done = True
        super().on_message_complete()
        if self._discard_timer is not None:
            # the body answered early is in: the connection is idle again, with uvicorn's keep-alive timeout
            self._discard_timer.cancel()
            self._discard_timer = None
            if self.timeout_keep_alive_task is None and not self.pipeline and not self.transport.is_closing():
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._due is not None:
            if not self._answer_pending():
                status, reason, message = self._due
                self._due = None
                self._send_refusal(status, reason, message)
            return
        if not self._message_done and self._discard_timer is None:
            # an early answer: uvicorn discards the rest of the body, which must come in time
            self._discard_timer = self.loop.call_later(self.discard_timeout, self._discard_expired)
