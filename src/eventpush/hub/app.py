"""The hub's ASGI application (raw ASGI, no framework): routing, body limits, the two APIs, stats, realtime mount.

See :mod:`eventpush.hub` for the status codes and bodies.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs, unquote

import orjson

from . import barchart as bc
from . import connect as cn
from .config import HubConfig
from .jsonkeys import repeated_key
from .stats import Stats
from .storage import SinkStorage, SQLiteStorage, Storage
from .workers import WorkerLink, merge

__all__ = ["HubApp", "create_app", "configure_logging"]

log = logging.getLogger("eventpush.hub")
access_log = logging.getLogger("eventpush.hub.access")

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]
Headers = List[Tuple[bytes, bytes]]

_JSON = [(b"content-type", b"application/json")]
_JSON_CLOSE = _JSON + [(b"connection", b"close")]

MAX_GET_LIMIT = 10_000
DEFAULT_GET_LIMIT = 100
MAX_COLLECTION_LENGTH = 255
#: a GET reply over this many events is read and sent a page at a time (chunked): at most ~13 MB of 64 kB events
GET_PAGE_EVENTS = 200


class _Stream:
    """A reply body sent in chunks as they come (``Transfer-Encoding: chunked``)."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks


class HTTPError(Exception):
    """Ends a request with ``status`` and an already encoded body; ``close`` drops the keep-alive connection.

    Early answers (401, 413, 415) keep the connection: uvicorn then parses and discards the rest of the body
    without buffering it, so the client reads the answer instead of a TCP reset (closing a socket with unread
    data resets it). Only a stalled body (408) and an unparsable Content-Length close the connection."""

    def __init__(self, status: int, body: bytes, *, close: bool = False, reason: str = "",
                 headers: Optional[Headers] = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.body = body
        self.close = close
        self.reason = reason
        self.headers = headers or []

    def __reduce__(self) -> Any:
        return (_rebuild_http_error, (self.status, self.body, self.close, self.reason, self.headers))


def _rebuild_http_error(status: int, body: bytes, close: bool, reason: str,
                        headers: Optional[Headers] = None) -> HTTPError:
    return HTTPError(status, body, close=close, reason=reason, headers=headers)


class ClientGone(Exception):
    """The client disconnected before its request was complete."""


def _loggable(text: str) -> str:
    """``text`` for a plain log line: control characters (a percent-encoded newline in a path would start a forged
    line) and other unprintable ones escaped."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _connect_error(message: str) -> bytes:
    return orjson.dumps({"errorMessage": message})


def _not_found(message: str = "Not found.") -> HTTPError:
    return HTTPError(404, orjson.dumps({"errorMessage": message}), reason="not found")


class _Req:
    """What the access log line says about one request."""

    __slots__ = ("api", "collection", "events", "stored", "rejected", "bytes_in", "reason")

    def __init__(self) -> None:
        self.api: Optional[str] = None
        self.collection: Optional[str] = None
        self.events = 0
        self.stored = 0
        self.rejected = 0
        self.bytes_in = 0
        self.reason = ""


class HubApp:
    """One hub: ``await app(scope, receive, send)``. Build it with :func:`create_app`."""

    def __init__(self, config: Optional[HubConfig] = None) -> None:
        self.config = config or HubConfig()
        self.stats = Stats()
        self.storage: Storage = (
            SinkStorage()
            if self.config.sink
            else SQLiteStorage(self.config.db, busy_timeout=self.config.busy_timeout,
                               synchronous=self.config.synchronous)
        )
        self.realtime: Any = None
        self.realtime_error: Optional[str] = None
        self.started = False
        self._inflight = 0
        self._idle: Optional[asyncio.Event] = None
        self._channels: Dict[Tuple[str, str], str] = {}
        #: with ``eventpush serve --workers N``: the link to the supervisor and the other workers (hub.workers)
        self.link: Optional[WorkerLink] = None

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # ------------------------------------------------------------------ lifespan
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("hub startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Open the storage and start realtime (when ``eventpush.realtime`` is installed)."""
        cfg = self.config
        self._idle = asyncio.Event()
        self._idle.set()
        await self.storage.start()
        link = WorkerLink.from_env(self.stats.snapshot)
        if link is not None:
            await link.start()
            self.link = link
        if cfg.realtime:
            await self._start_realtime()
        if not cfg.projects:
            log.warning("no projects configured: any X-Project-Id / X-Api-Key is accepted (use --project ID:KEY)")
        log.info(
            "hub ready (pid %d): storage=%s, realtime=%s, root=%s, gc threshold=%d",
            os.getpid(),
            "sink" if cfg.sink else f"sqlite:{cfg.db}",
            "on" if self.realtime is not None else "off",
            cfg.root or "-",
            gc.get_threshold()[0],
        )
        self.started = True

    async def _start_realtime(self) -> None:
        try:
            from eventpush.realtime.hub_integration import build  # type: ignore[import-not-found]
        except ImportError as exc:
            self.realtime_error = f"eventpush.realtime is not available: {exc}"
            log.info("realtime disabled (%s); /push answers 404", self.realtime_error)
            return
        try:
            lp = self.config.long_poll_timeout
            rt = build(self.config.broker, queue_ttl=self.config.queue_ttl, **({} if lp is None else {"timeout": lp}))
            await rt.startup()
        except Exception as exc:
            # Ingestion matters more than live channels: keep serving the APIs, say so loudly, /push answers 503.
            self.realtime_error = f"realtime failed to start: {exc!r}"
            log.exception("realtime failed to start (broker %s); /push answers 503", self.config.broker)
            return
        self.realtime = rt
        channels = self._channels
        rt_publish = rt.publish

        def publish(api: str, collection: str, body: bytes) -> None:
            ch = channels.get((api, collection))
            if ch is None:
                ch = channels[(api, collection)] = f"/collections/{api}/{collection}"
            rt_publish(ch, body)

        self.storage.publish = publish

    async def shutdown(self) -> None:
        """Wait for in-flight requests (uvicorn has stopped accepting), close the database, stop realtime."""
        self.started = False
        if self._idle is not None and self._inflight:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=30)
            except asyncio.TimeoutError:
                log.warning("shutdown: %d requests still in flight after 30 s", self._inflight)
        await self.storage.close()
        if self.realtime is not None:
            try:
                await self.realtime.shutdown()
            except Exception:
                log.exception("realtime shutdown failed")
        if self.link is not None:
            await self.link.close()
            self.link = None
        log.info("hub stopped (pid %d); database closed", os.getpid())

    # ------------------------------------------------------------------ websocket
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        child = self._push_scope(scope)
        if child is not None and self.realtime is not None:
            await self.realtime.app(child, receive, send)
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403

    @staticmethod
    def _push_scope(scope: Scope) -> Optional[Scope]:
        path = scope["path"]
        if path != "/push" and not path.startswith("/push/"):
            return None
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + "/push"
        child["path"] = path[5:]
        raw = scope.get("raw_path")
        if raw is not None and raw.startswith(b"/push"):
            child["raw_path"] = raw[5:]
        return child

    # ------------------------------------------------------------------ http
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        path = scope["path"]
        if path == "/push" or path.startswith("/push/"):
            if self.realtime is not None:
                await self.realtime.app(self._push_scope(scope), receive, send)
                return
        req = _Req()
        self._inflight += 1
        if self._idle is not None:
            self._idle.clear()
        headers: Headers = _JSON
        bytes_out = 0
        cancelled: Optional[asyncio.CancelledError] = None
        try:
            try:
                status, body, headers = await self._route(scope, receive, req)
            except HTTPError as exc:
                status, body = exc.status, exc.body
                headers = _JSON_CLOSE if exc.close else _JSON
                if exc.headers:
                    headers = headers + exc.headers
                req.reason = exc.reason
            except cn.TooDeepToCheck as exc:  # (Connect: integers beyond 64 bits in a body too deep to re-parse)
                status, body = 400, _connect_error(str(exc))
                req.reason = "too deep to check integers"
            except ClientGone:
                status, body = 499, b""
                req.reason = "client disconnected"
            except (Exception, asyncio.CancelledError) as exc:
                status = 500
                if isinstance(exc, asyncio.CancelledError):
                    # The server cancelled the request (uvicorn: --graceful-timeout ran out). Its write was
                    # withdrawn (SQLiteStorage.insert): nothing of it is stored, which the hub's own 500 says;
                    # the cancellation goes on once it is sent.
                    cancelled = exc
                    req.reason = "cancelled by the server (graceful shutdown timeout?); nothing stored"
                else:
                    log.exception("request failed: %s %s", scope["method"], _loggable(path))
                    req.reason = f"internal error: {exc!r}"
                if req.api == "barchart":
                    body = orjson.dumps([bc.reason("REQUEST_GENERAL_FAILURE", bc.MSG_GENERAL_FAILURE)])
                else:
                    body = _connect_error(cn.MSG_SERVER_ERROR)
            if status != 499:
                # counted before the answer goes out: a /stats read after it (any worker) includes this request
                self.stats.request(req.bytes_in, status >= 400)
            if type(body) is _Stream:
                await send({"type": "http.response.start", "status": status, "headers": headers})  # chunked
                sent = 0
                try:
                    async for chunk in body.chunks:
                        sent += len(chunk)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except Exception:  # the reply started: the connection is cut, so the client sees it incomplete
                    log.exception("%s %s failed after its reply started", scope["method"], _loggable(path))
                    raise
                await send({"type": "http.response.body", "body": b""})
                bytes_out = sent
            elif status != 499:
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": headers + [(b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                bytes_out = len(body)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()
        if status == 499:
            self.stats.request(req.bytes_in, True)
        if status >= 400 and status != 404:
            log.info("%s %s -> %d: %s", scope["method"], _loggable(path), status, _loggable(req.reason or "rejected"))
        if self.config.access_log and access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info(
                orjson.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "client": f"{client[0]}:{client[1]}" if client else None,
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "bytes_in": req.bytes_in,
                        "bytes_out": bytes_out,
                        "ms": round((time.perf_counter() - t0) * 1000, 3),
                        "api": req.api,
                        "collection": req.collection,
                        "events": req.events,
                        "stored": req.stored,
                        "rejected": req.rejected,
                        "reason": req.reason or None,
                    }
                ).decode()
            )
        if cancelled is not None:
            raise cancelled

    async def _route(self, scope: Scope, receive: Receive, req: _Req) -> Tuple[int, bytes, Headers]:
        method = scope["method"]
        path = scope["path"]
        root = self.config.root
        if path.startswith("/connect/") or (root == "connect" and path.startswith("/events")):
            req.api = "connect"
            rest = path[8:] if path.startswith("/connect/") else path
            if rest in ("/events", "/events/"):
                self._allow(method, ("POST",))
                return await self._connect_batch(scope, receive, req)
            if rest.startswith("/events/"):
                collection = self._collection(scope, path, len(path) - len(rest) + 8)
                req.collection = collection
                self._allow(method, ("POST", "GET"))
                if method in ("GET", "HEAD"):
                    return await self._connect_get(scope, collection, req)
                return await self._connect_single(scope, receive, collection, req)
            raise _not_found()
        if path.startswith("/barchart/") or (root == "barchart" and path.startswith(("/events", "/service"))):
            req.api = "barchart"
            rest = path[9:] if path.startswith("/barchart/") else path
            if rest == "/events":
                self._allow(method, ("POST",))
                return await self._barchart_events(scope, receive, req)
            if rest == "/service/version":
                self._allow(method, ("GET",))
                from .. import __version__

                return 200, orjson.dumps({"service": {"version": __version__, "name": "eventpush-hub",
                                                      "description": "eventpush hub (Barchart API)",
                                                      "environment": "hub"}}), _JSON
            raise HTTPError(404, bc.failure(f"No route for {path}."), reason="not found")
        if path == "/health":
            self._allow(method, ("GET", "HEAD"))
            ok = self.started
            return (200 if ok else 503), orjson.dumps(
                {"status": "ok" if ok else "starting", "pid": os.getpid(),
                 "storage": "sink" if self.config.sink else "sqlite",
                 "realtime": self.realtime is not None}), _JSON
        if path == "/stats":
            self._allow(method, ("GET",))
            doc = self.stats.snapshot(
                storage="sink" if self.config.sink else "sqlite",
                db=None if self.config.sink else self.config.db,
                realtime=self.realtime is not None,
                realtime_error=self.realtime_error,
            )
            if self.link is not None:  # --workers N: the whole hub, every worker's counts
                return 200, orjson.dumps(merge(doc, await self.link.others())), _JSON
            doc["workers"] = 1
            doc["pids"] = [doc["pid"]]
            return 200, orjson.dumps(doc), _JSON
        if path == "/push.js":
            self._allow(method, ("GET", "HEAD"))
            if self.realtime is None:
                raise _not_found(self.realtime_error or "realtime is not enabled")
            return 200, bytes(self.realtime.js), [(b"content-type", b"application/javascript")]
        if path == "/push" or path.startswith("/push/"):
            if self.realtime_error and "failed" in self.realtime_error:
                raise HTTPError(503, _connect_error(self.realtime_error), reason="realtime unavailable")
            raise _not_found(self.realtime_error or "realtime is not enabled")
        raise _not_found()

    @staticmethod
    def _allow(method: str, allowed: Tuple[str, ...]) -> None:
        if "GET" in allowed and "HEAD" not in allowed:
            allowed += ("HEAD",)  # HEAD is GET without the body (uvicorn leaves the body out)
        if method not in allowed:
            listed = ", ".join(allowed)
            raise HTTPError(405, _connect_error(f"Method {method} not allowed; use {listed}."),
                            reason="method not allowed", headers=[(b"allow", listed.encode())])

    @staticmethod
    def _collection(scope: Scope, path: str, offset: int) -> str:
        # The raw path keeps %2F inside a collection name (clients encode it as one segment).
        raw = scope.get("raw_path")
        if raw is not None:
            # the name is what follows the route's segments in the raw path (whatever of them a client encoded)
            slashes = path.count("/", 0, offset)
            parts = raw.split(b"/", slashes)
            try:
                name = unquote(parts[-1].decode("ascii"), errors="strict") if len(parts) > slashes else ""
            except UnicodeError:
                raise HTTPError(400, _connect_error("The collection name in the path is not valid UTF-8."),
                                reason="bad collection encoding") from None
        else:
            name = path[offset:]
        if not name or len(name) > MAX_COLLECTION_LENGTH:
            raise HTTPError(
                422,
                orjson.dumps({"errors": [{"field": "collection", "description":
                              f"Collection names must be 1 to {MAX_COLLECTION_LENGTH} characters long"}]}),
                reason="bad collection name",
            )
        return name

    # ------------------------------------------------------------------ shared request plumbing
    def _project(self, scope: Scope) -> str:
        project = key = None
        for name, value in scope["headers"]:
            if name == b"x-project-id":
                project = value.decode("latin-1")
            elif name == b"x-api-key":
                key = value.decode("latin-1")
        projects = self.config.projects
        if projects:
            keys = projects.get(project) if project is not None else None
            if keys is None or key not in keys:
                raise HTTPError(401, _connect_error(cn.MSG_UNAUTHORISED), reason="bad credentials")
        return project or ""

    @staticmethod
    def _content_type_ok(scope: Scope) -> Optional[str]:
        """``None`` when acceptable, else the offending value. A missing Content-Type is taken as JSON."""
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value.decode("latin-1")
                media, _, params = ctype.partition(";")
                media = media.strip().lower()
                if media != "application/json" and not (media.startswith("application/") and
                                                        media.endswith("+json")):
                    return ctype
                for param in params.split(";"):
                    k, _, v = param.partition("=")
                    if k.strip().lower() == "charset" and v.strip().strip('"').lower() not in ("utf-8", "utf8"):
                        return ctype
                return None
        return None

    async def _read(self, scope: Scope, receive: Receive, req: _Req, err: Callable[[str], bytes]) -> bytes:
        bad = self._content_type_ok(scope)
        if bad is not None:
            raise HTTPError(415, err(f"Content-Type must be application/json (got {bad!r})."),
                            reason="wrong content type")
        for name, value in scope["headers"]:
            # neither API documents a compressed body: a coding the hub would not undo is refused, not misread
            if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                raise HTTPError(415, err(f"Content-Encoding {value.decode('latin-1')!r} is not supported; send the "
                                         "body uncompressed."), reason="unsupported content encoding")
        limit = self.config.max_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise HTTPError(400, err("Invalid Content-Length header."), close=True,
                                    reason="bad content-length") from None
                if declared > limit:
                    raise HTTPError(413, err(f"Request body of {declared} bytes exceeds the maximum of {limit} bytes."),
                                    reason="body too large (content-length)")
        chunks: List[bytes] = []
        size = 0
        timeout = self.config.body_timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(0.001, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                req.bytes_in = size
                raise HTTPError(408, err(f"The request body was not received within {timeout:g} s."), close=True,
                                reason="body timeout") from None
            if msg["type"] == "http.disconnect":
                req.bytes_in = size
                raise ClientGone
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                req.bytes_in = size
                raise HTTPError(413, err(f"Request body exceeds the maximum of {limit} bytes."),
                                reason="body too large")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        req.bytes_in = size
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _parse(body: bytes, err: Callable[[str], bytes]) -> Any:
        if not body:
            raise HTTPError(400, err("The request body is empty; a JSON document is required."), reason="empty body")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, err(f"The request body is not valid JSON: {exc}"), reason=f"bad json: {exc}") from None

    # ------------------------------------------------------------------ Connect
    async def _connect_single(self, scope: Scope, receive: Receive, collection: str, req: _Req) -> Tuple[int, bytes, Headers]:
        project = self._project(scope)
        self.stats.api_request("connect")
        raw = await self._read(scope, receive, req, _connect_error)
        doc = self._parse(raw, _connect_error)
        req.events = 1
        exact = cn.exact_document(raw)  # integers beyond 64 bits kept exact
        if exact is not None:
            doc = exact
        err = cn.validate_event(doc)
        eid = None
        if err is None:
            eid, body, err = cn.stamp_and_encode(doc, cn.server_timestamp())
        if err is not None:
            req.rejected = 1
            self.stats.events("connect", collection, 0, 0, 1, 0)
            status, detail = err
            req.reason = cn.error_message(err)
            if status == 422:
                return 422, orjson.dumps({"errors": detail}), _JSON
            return status, _connect_error(detail), _JSON
        dups = await self.storage.insert("connect", project, [(collection, [eid], [body])])  # type: ignore[list-item]
        if dups:
            self.stats.events("connect", collection, 0, 1, 0, 0)
            req.reason = "duplicate id"
            return 409, _connect_error(
                f"Duplicate event: an event with id {eid!r} already exists in collection {collection!r}."), _JSON
        req.stored = 1
        self.stats.events("connect", collection, 1, 0, 0, len(body))
        # Empty body, but typed as JSON: the Ruby gem parses a JSON-typed empty body as "{}" and merges the event in
        # (spec/connect.md §4.4); untyped, its response data would be the raw empty string.
        return 200, b"", _JSON

    async def _connect_batch(self, scope: Scope, receive: Receive, req: _Req) -> Tuple[int, bytes, Headers]:
        project = self._project(scope)
        self.stats.api_request("connect")
        raw = await self._read(scope, receive, req, _connect_error)
        prepared = cn.scan_batch(raw)  # the usual body, without parsing it into objects (compiled core)
        doc: Any = None
        if prepared is None:
            doc = self._parse(raw, _connect_error)
            if type(doc) is not dict or any(type(v) is not list for v in doc.values()):
                raise HTTPError(400, _connect_error(
                    "A batch must be a JSON object mapping each collection name to an array of events."),
                    reason="batch not an object of arrays")
            names: Iterable[str] = doc
            total = sum(len(v) for v in doc.values())
        else:
            names = [p[0] for p in prepared]
            total = sum(len(p[1]) for p in prepared)
        req.events = total
        if total > cn.MAX_BATCH_EVENTS:
            raise HTTPError(413, _connect_error(
                f"Maximum batch size of {cn.MAX_BATCH_EVENTS} events exceeded ({total} events); "
                "split the batch into several requests."), reason="batch too large")
        for name in names:
            if not name or len(name) > MAX_COLLECTION_LENGTH:
                raise HTTPError(400, _connect_error(
                    f"Collection names must be 1 to {MAX_COLLECTION_LENGTH} characters long."),
                    reason="bad collection name")
        rejected = 0
        if prepared is None:
            twice = repeated_key(raw, doc)  # {"c": [...], "\u0063": [...]}: the parser kept only the last array
            if twice is not None:
                raise HTTPError(400, _connect_error(
                    f"Collection {twice!r} appears twice in the batch; send its events in one array."),
                    reason="collection named twice")
            prepared, rejected = cn.prepare_batch(doc, cn.server_timestamp(), raw)
            # PERF: the parsed events (thousands of GC-tracked dicts) go now, not after the commit: alive across
            # the await they survived collections into the older generations, whose walks cost the event loop a
            # sixth of its time with storage on
            del doc
        groups = [(coll, eids, bodies) for coll, eids, bodies, _, _ in prepared if eids]
        dups = await self.storage.insert("connect", project, groups) if groups else []
        body, stored, ndup = cn.batch_response(prepared, dups)
        req.stored = stored
        req.rejected = rejected
        stats = self.stats
        dupset = set(dups)
        flat = 0
        for coll, eids, bodies, positions, results in prepared:
            if not dupset:
                n_ok = len(bodies)
                n_bytes = sum(map(len, bodies))
            else:
                n_ok = n_bytes = 0
                for b in bodies:
                    if flat not in dupset:
                        n_ok += 1
                        n_bytes += len(b)
                    flat += 1
            n_dup = results.count(cn.RESULT_DUP)
            stats.events("connect", coll, n_ok, n_dup, len(results) - n_ok - n_dup, n_bytes)
        return 200, body, _JSON

    async def _connect_get(self, scope: Scope, collection: str, req: _Req) -> Tuple[int, bytes, Headers]:
        project = self._project(scope)
        limit = DEFAULT_GET_LIMIT
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "limit" in qs:
            raw = qs["limit"][-1]
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= MAX_GET_LIMIT:
                raise HTTPError(422, orjson.dumps({"errors": [{"field": "limit", "description":
                                f"limit must be an integer from 1 to {MAX_GET_LIMIT}"}]}), reason="bad limit")
            limit = int(raw)
        first = min(limit, GET_PAGE_EVENTS)
        rows, cursor = await self.storage.recent_page("connect", project, collection, first)
        req.events = len(rows)
        head = ('{"results":[' + ",".join(rows)).encode()
        if cursor is None or limit <= first:
            return 200, head + b"]}", _JSON
        return 200, _Stream(self._get_pages(project, collection, limit, head, cursor, req)), _JSON  # type: ignore

    async def _get_pages(self, project: str, collection: str, limit: int, head: bytes, cursor: Optional[int],
                         req: _Req) -> AsyncIterator[bytes]:
        """A long GET reply, a page of events at a time: memory stays one page whatever ``limit`` is, and a
        client that does not read holds only what the transport buffers."""
        yield head
        while cursor is not None and req.events < limit:
            rows, cursor = await self.storage.recent_page("connect", project, collection,
                                                          min(GET_PAGE_EVENTS, limit - req.events), cursor)
            if not rows:
                break
            req.events += len(rows)
            yield ("," + ",".join(rows)).encode()
        yield b"]}"

    # ------------------------------------------------------------------ Barchart
    async def _barchart_events(self, scope: Scope, receive: Receive, req: _Req) -> Tuple[int, bytes, Headers]:
        self.stats.api_request("barchart")
        req.collection = "events"
        raw = await self._read(scope, receive, req, bc.failure)
        doc = self._parse(raw, bc.failure)
        if type(doc) is dict:
            twice = repeated_key(raw, doc)
            if twice is not None:  # {"events": [...], "events": [...]}: the parser kept only the last array
                raise HTTPError(400, bc.failure(bc.msg_named_twice(twice), [bc.field_reason(twice)]),
                                reason="field named twice")
        batch = str(uuid.uuid4())
        bodies, failure, invalid = bc.prepare_events(doc, self.config.strict_context, batch)
        if bodies is None:
            n = len(doc["events"]) if type(doc) is dict and type(doc.get("events")) is list else 0
            req.events = n
            req.rejected = n
            req.reason = f"{invalid} invalid events" if invalid else "bad request body"
            self.stats.events("barchart", "events", 0, 0, n, 0)
            return 400, failure, _JSON  # type: ignore[return-value]
        req.events = len(bodies)
        if bodies:
            await self.storage.insert("barchart", "", [("events", [f"{batch}/{i}" for i in range(len(bodies))],
                                                         bodies)], seq_ids=batch)
        req.stored = len(bodies)
        self.stats.events("barchart", "events", len(bodies), 0, 0, sum(map(len, bodies)))
        return 200, b"[" + b",".join(bodies) + b"]", _JSON


def configure_logging(level: str = "info") -> None:
    """Send ``eventpush`` logs to stderr (once per process): plain lines, and the access log as bare JSON lines."""
    import sys

    root = logging.getLogger("eventpush")
    if any(not isinstance(h, logging.NullHandler) for h in root.handlers):
        return
    lvl = getattr(logging, level.upper(), logging.INFO)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(lvl)
    ah = logging.StreamHandler(sys.stderr)
    ah.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(ah)
    access_log.propagate = False


def create_app(config: Optional[HubConfig] = None) -> HubApp:
    """The app factory uvicorn calls (``eventpush.hub.app:create_app``, ``factory=True``); without an argument it
    reads the configuration that ``eventpush serve`` put in the environment."""
    cfg = config or HubConfig.from_env()
    configure_logging(cfg.log_level)
    if cfg.gc_threshold:
        # PERF: every request body becomes thousands of GC-tracked dicts and lists, alive until the reply; with
        # the default threshold (700) the collector runs every few events and keeps re-walking them (a fifth of
        # the event loop's time at 5,000-event batches). They hold no reference cycles.
        gc.set_threshold(cfg.gc_threshold, *gc.get_threshold()[1:])
    try:
        from .http import HubHttpProtocol
    except ImportError:  # no httptools: uvicorn uses h11 (whose own header limit is 16 KiB)
        pass
    else:
        HubHttpProtocol.header_timeout = cfg.header_timeout
        HubHttpProtocol.max_header_bytes = cfg.max_header_bytes
        HubHttpProtocol.discard_timeout = cfg.body_timeout
    return HubApp(cfg)
