"""A real HTTP/1.1 event server for tests, with fault injection on demand.

It is an asyncio server bound to 127.0.0.1 on a port chosen at run time, running in a background thread of the
test process (or as a subprocess: ``python tests/support/server.py --kind collections`` prints ``PORT <n>`` and
serves until killed; ``GET /_stats`` answers the counters as JSON). Import it from any test folder::

    from support import EventServer, Faults          # tests/ is on sys.path (tests/conftest.py lives there)
    from tests.support import EventServer, Faults    # when the repository root is on sys.path

API::

    EventServer(kind="collections", *, faults=None, id_key="id", port=0, auth=None)
        kind: "collections" (Connect: {coll: [events]} → per-event {"success","duplicate","message"} in request
              order; POST /events/<coll> for one event → 200 empty / 409 duplicate), "created" (Barchart:
              {"events": [...]} → the array of created events with "batch" and "sequence"), "status" (any of
              NDJSON, a JSON array, {"events": [...]}, {coll: [...]} → 200 with a small JSON body).
        auth: {header: value} that every request must carry, else 401.
        .start() / .stop()           (also a context manager); .url "http://127.0.0.1:<port>", .port
        .faults                      a Faults object, mutable while running (server.faults.error_rate = 0.2)
        .set_faults(**kw)            replace the faults at once
        .down() / .up()              stop listening (and drop open connections) / listen again on the same port
        .received                    events that arrived in readable requests (duplicates included)
        .unique                      distinct ids stored
        .duplicates                  events whose id was already stored
        .rejected                    events refused (Faults.reject_key)
        .requests                    readable requests; .connections accepted TCP connections
        .ids()                       a copy of the set of stored ids; .events() the stored events (id_key order)
        .log                         the last 1,000 requests: {"method","path","headers","length","raw_length",
                                     "events","status"} (raw_length is the body as sent, before gzip decoding)
        .injected                    {"status": n, "reset": n, "slow": n, "garbage": n, "item_retry": n}
        .reset_counts()
        .wait_for(unique=None, received=None, timeout=10.0) -> bool

    Faults(error_rate=0.0, statuses=(500, 503, 429), retry_after=None, store_on_error=0.5, reset_rate=0.0,
           slow_rate=0.0, slow_delay=0.05, garbage_rate=0.0, item_retry_rate=0.0, reject_key=None, seed=None,
           fail_first=0)
        fail_first       the next ``fail_first`` POSTs get ``statuses[0]`` (nothing stored), deterministically
        error_rate       probability that a request gets one of ``statuses`` (429 and 503 carry ``Retry-After:
                         retry_after`` when set); with probability ``store_on_error`` the events were stored
                         first (so the client's retry meets duplicates)
        reset_rate       probability that the connection is reset (RST) after reading half of the body
        slow_rate        probability that the server waits ``slow_delay`` seconds before reading the body
        garbage_rate     probability of a garbage reply after storing: half the time a 200 whose body is not
                         JSON, half the time bytes that are not HTTP at all (then the connection closes)
        item_retry_rate  (collections) probability that one event is answered "An error occurred inserting the
                         event please try again." without being stored
        reject_key       events that hold this key are refused: per item ({"success": false, "message":
                         "Property … is not allowed"}) for collections, 400 for the whole request otherwise

Counters are protected by a lock and safe to read from any thread. Nothing here is mocked: clients talk to it
over real sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

try:
    import orjson

    _loads = orjson.loads

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)
except ImportError:  # pragma: no cover
    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


__all__ = ["EventServer", "Faults", "RETRY_ITEM_MESSAGE"]

RETRY_ITEM_MESSAGE = "An error occurred inserting the event please try again."
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict",
            413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


class Faults:
    """What to break, and how often (see the module docstring)."""

    def __init__(
        self,
        error_rate: float = 0.0,
        statuses: Tuple[int, ...] = (500, 503, 429),
        retry_after: Optional[float] = None,
        store_on_error: float = 0.5,
        reset_rate: float = 0.0,
        slow_rate: float = 0.0,
        slow_delay: float = 0.05,
        garbage_rate: float = 0.0,
        item_retry_rate: float = 0.0,
        reject_key: Optional[str] = None,
        seed: Optional[int] = None,
        fail_first: int = 0,
    ) -> None:
        self.fail_first = fail_first
        self.error_rate = error_rate
        self.statuses = tuple(statuses)
        self.retry_after = retry_after
        self.store_on_error = store_on_error
        self.reset_rate = reset_rate
        self.slow_rate = slow_rate
        self.slow_delay = slow_delay
        self.garbage_rate = garbage_rate
        self.item_retry_rate = item_retry_rate
        self.reject_key = reject_key
        self.rng = random.Random(seed)

    def __repr__(self) -> str:
        keys = ("error_rate", "reset_rate", "slow_rate", "garbage_rate", "item_retry_rate", "reject_key")
        return "Faults(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in keys) + ")"


class _Reply(Exception):
    """Raised inside request handling to answer at once."""

    def __init__(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


class EventServer:
    """A fault-injecting HTTP/1.1 event server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        kind: str = "collections",
        *,
        faults: Optional[Faults] = None,
        id_key: str = "id",
        port: int = 0,
        auth: Optional[Dict[str, str]] = None,
    ) -> None:
        if kind not in ("collections", "created", "status"):
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.faults = faults or Faults()
        self.id_key = id_key
        self.auth = {k.lower(): v for k, v in (auth or {}).items()}
        self.port = port
        self._lock = threading.Lock()
        self._ids: Set[Any] = set()
        self._events: List[Any] = []
        self.log: Deque[Dict[str, Any]] = deque(maxlen=1000)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: Set[asyncio.StreamWriter] = set()
        self.reset_counts()

    # -- counters ---------------------------------------------------------------------------------------------

    def reset_counts(self) -> None:
        """Forget every stored id and zero every counter."""
        with self._lock:
            self.received = 0
            self.duplicates = 0
            self.rejected = 0
            self.requests = 0
            self.connections = 0
            self._ids = set()
            self._events = []
            self.injected = {"status": 0, "reset": 0, "slow": 0, "garbage": 0, "item_retry": 0}
            self.log.clear()

    @property
    def unique(self) -> int:
        with self._lock:
            return len(self._ids)

    def ids(self) -> Set[Any]:
        with self._lock:
            return set(self._ids)

    def events(self) -> List[Any]:
        with self._lock:
            return list(self._events)

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            return {"received": self.received, "unique": len(self._ids), "duplicates": self.duplicates,
                    "rejected": self.rejected, "requests": self.requests, "connections": self.connections,
                    "injected": dict(self.injected)}

    def wait_for(self, unique: Optional[int] = None, received: Optional[int] = None, timeout: float = 10.0) -> bool:
        """Wait until at least ``unique`` ids are stored / ``received`` events arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                ok = (unique is None or len(self._ids) >= unique) and (received is None or self.received >= received)
            if ok:
                return True
            time.sleep(0.01)
        return False

    # -- lifecycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_faults(self, **kw: Any) -> Faults:
        self.faults = Faults(**kw)
        return self.faults

    def start(self) -> "EventServer":
        ready = threading.Event()
        error: List[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                error.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"EventServer-{self.kind}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True,
                                                  backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self._server.wait_closed()
            self._server = None

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def down(self) -> None:
        """Stop accepting connections (clients get 'connection refused') and drop the open ones."""
        self._call(self._unlisten())

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._unlisten())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop = None

    def __enter__(self) -> "EventServer":
        return self.start() if self._loop is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if not await self._one_request(head, reader, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()

    async def _one_request(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        f = self.faults
        rng = f.rng
        length = int(headers.get("content-length", "0") or 0)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if method == "POST" and rng.random() < f.reset_rate:
            with self._lock:
                self.injected["reset"] += 1
            if length > 1:
                await reader.readexactly(length // 2)
            self._reset(writer)
            return False
        if rng.random() < f.slow_rate:
            with self._lock:
                self.injected["slow"] += 1
            await asyncio.sleep(f.slow_delay)
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            raw = b"".join(parts)
        else:
            raw = await reader.readexactly(length) if length else b""
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        entry: Dict[str, Any] = {"method": method, "path": target, "headers": headers, "raw_length": len(raw),
                                 "length": len(raw), "events": 0, "status": 0}
        try:
            status, body, extra = self._dispatch(method, target, headers, raw, entry)
        except _Reply as r:
            status, body, extra = r.status, r.body, r.headers
        entry["status"] = status
        with self._lock:
            self.log.append(entry)
        if status == -1:  # garbage that is not HTTP
            writer.write(b"\x00garbage\x7f not http at all\r\n\r\n")
            await writer.drain()
            self._reset(writer)
            return False
        out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Length: {len(body)}"]
        if body:
            out.append("Content-Type: application/json")
        for k, v in extra.items():
            out.append(f"{k}: {v}")
        if not keep_alive:
            out.append("Connection: close")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return keep_alive

    # -- the API ----------------------------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: Dict[str, str], raw: bytes,
                  entry: Dict[str, Any]) -> Tuple[int, bytes, Dict[str, str]]:
        path = target.split("?", 1)[0]
        if method == "GET" and path == "/_stats":
            return 200, _dumps(self.stats()), {}
        if method != "POST":
            return 404, b"", {}
        for k, v in self.auth.items():
            if headers.get(k) != v:
                return 401, _dumps({"errorMessage": "Unauthorised. Please check your Project Id and API Key"}), {}
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                return 400, _dumps({"errorMessage": "bad gzip body"}), {}
            entry["length"] = len(raw)
        f = self.faults
        rng = f.rng
        error_status = 0
        store = True
        if f.fail_first > 0:
            f.fail_first -= 1
            error_status = f.statuses[0]
            store = False
            with self._lock:
                self.injected["status"] += 1
        elif rng.random() < f.error_rate:
            error_status = rng.choice(f.statuses)
            store = rng.random() < f.store_on_error
            with self._lock:
                self.injected["status"] += 1
        garbage = rng.random() < f.garbage_rate
        status, body = self._ingest(path, raw, headers, entry, store)
        if error_status and status < 300:
            extra = {}
            if f.retry_after is not None and error_status in (429, 503):
                extra["Retry-After"] = f"{f.retry_after:g}"
            msg = {"errorMessage": "An error occurred while processing your request"}
            return error_status, _dumps(msg), extra
        if garbage and status < 300:
            with self._lock:
                self.injected["garbage"] += 1
            if rng.random() < 0.5:
                return 200, b"}{ this is not json", {}
            return -1, b"", {}
        return status, body, {}

    def _events_of(self, path: str, raw: bytes, headers: Dict[str, str]) -> List[Tuple[Optional[str], Any]]:
        """[(collection, event)] in request order, for the status and created kinds."""
        text = raw.strip()
        if not text:
            return []
        ctype = headers.get("content-type", "")
        if "ndjson" in ctype or (text[:1] == b"{" and b"\n" in text and self.kind == "status"):
            try:
                return [(None, _loads(line)) for line in text.split(b"\n") if line.strip()]
            except ValueError:
                pass
        try:
            doc = _loads(text)
        except ValueError:
            raise _Reply(400, _dumps({"errorMessage": "body is not JSON"}))
        if isinstance(doc, list):
            return [(None, e) for e in doc]
        if isinstance(doc, dict):
            if isinstance(doc.get("events"), list) and len(doc) == 1:
                return [(None, e) for e in doc["events"]]
            if all(isinstance(v, list) for v in doc.values()):
                return [(c, e) for c, evs in doc.items() for e in evs]
            return [(None, doc)]
        raise _Reply(400, _dumps({"errorMessage": "unexpected JSON body"}))

    def _store(self, event: Any, store: bool) -> str:
        """'new', 'dup' or 'rejected' (only counts when store is False, except rejections)."""
        f = self.faults
        if f.reject_key is not None and isinstance(event, dict) and f.reject_key in event:
            self.rejected += 1
            return "rejected"
        key = event.get(self.id_key) if isinstance(event, dict) else None
        if key is not None and key in self._ids:
            self.duplicates += 1
            return "dup"
        if store:
            if key is None:
                key = ("anon", len(self._events))
            self._ids.add(key)
            self._events.append(event)
        return "new"

    def _ingest(self, path: str, raw: bytes, headers: Dict[str, str], entry: Dict[str, Any],
                store: bool) -> Tuple[int, bytes]:
        f = self.faults
        if self.kind == "collections" and path.rstrip("/") != "/events" and path.startswith("/events/"):
            try:
                event = _loads(raw)
            except ValueError:
                return 400, _dumps({"errorMessage": "body is not JSON"})
            entry["events"] = 1
            with self._lock:
                self.requests += 1
                self.received += 1
                state = self._store(event, store)
            if state == "dup":
                return 409, _dumps({"errorMessage": "Duplicate event"})
            if state == "rejected":
                return 400, _dumps({"errorMessage": f"Property {f.reject_key} is not allowed"})
            return 200, b""
        if self.kind == "collections":
            try:
                doc = _loads(raw)
            except ValueError:
                return 400, _dumps({"errorMessage": "body is not JSON"})
            if not isinstance(doc, dict) or not all(isinstance(v, list) for v in doc.values()):
                return 400, _dumps({"errorMessage": "Events must be a list of dict objects"})
            reply: Dict[str, List[Dict[str, Any]]] = {}
            n = 0
            with self._lock:
                self.requests += 1
                for coll, evs in doc.items():
                    items = reply.setdefault(coll, [])
                    for ev in evs:
                        n += 1
                        self.received += 1
                        if f.item_retry_rate and f.rng.random() < f.item_retry_rate:
                            self.injected["item_retry"] += 1
                            items.append({"success": False, "message": RETRY_ITEM_MESSAGE})
                            continue
                        state = self._store(ev, store)
                        if state == "new":
                            items.append({"success": True})
                        elif state == "dup":
                            items.append({"success": False, "duplicate": True,
                                          "message": "Duplicate event based on the id property."})
                        else:
                            items.append({"success": False, "message": f"Property {f.reject_key} is not allowed"})
            entry["events"] = n
            return 200, _dumps(reply)
        events = self._events_of(path, raw, headers)
        entry["events"] = len(events)
        with self._lock:
            self.requests += 1
            self.received += len(events)
            if f.reject_key is not None and any(isinstance(e, dict) and f.reject_key in e for _, e in events):
                self.rejected += len(events)
                return 400, _dumps({"errorMessage": f"Property {f.reject_key} is not allowed"})
            for _, ev in events:
                self._store(ev, store)
        if self.kind == "created":
            batch = str(uuid.uuid4())
            created = []
            for seq, (_, ev) in enumerate(events):
                item = dict(ev) if isinstance(ev, dict) else {"value": ev}
                item["sequence"] = seq
                item["batch"] = batch
                created.append(item)
            return 200, _dumps(created)
        return 200, _dumps({"received": len(events)})


def main(argv: Optional[List[str]] = None) -> int:
    """Run a server as a subprocess: prints ``PORT <n>`` on stdout, serves until killed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", default="collections", choices=("collections", "created", "status"))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=None)
    p.add_argument("--reset-rate", type=float, default=0.0)
    p.add_argument("--garbage-rate", type=float, default=0.0)
    p.add_argument("--item-retry-rate", type=float, default=0.0)
    p.add_argument("--reject-key", default=None)
    args = p.parse_args(argv)
    faults = Faults(error_rate=args.error_rate, retry_after=args.retry_after, reset_rate=args.reset_rate,
                    garbage_rate=args.garbage_rate, item_retry_rate=args.item_retry_rate, reject_key=args.reject_key)
    server = EventServer(args.kind, faults=faults, port=args.port).start()
    print(f"PORT {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
