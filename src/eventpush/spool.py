"""Spool: a durable, append-only, checksummed store of sealed batches that could not be delivered (yet).

Public API::

    Spool(directory, *, fsync="batch", segment_bytes=64 MiB, on_corrupt=None, dialects=None)
        dialects: custom Dialect objects to resolve record dialect names with (built-ins resolve by name)
        .append(batch) -> int            write one batch (an encoder Batch or a SpooledBatch); bytes written
        .append_many(batches) -> int     several, with one fsync under fsync="batch"
        .next_record() -> Record | None  the oldest unreplayed record (Record.batch, .events, .ack(), .release())
        .pending() -> (records, events)  what is waiting in the spool (a scan of the record headers)
        .sync(), .close()                context manager too
        .corrupt                         number of torn / corrupted records found so far
    SpooledBatch(dialect, body, spans, groups, tags)   a batch rebuilt from a record (same interface as Batch)
    frame(dialect, items) -> bytes       frame encoded events [(collection, bytes), …] the way the dialect does
    default_spool_dir(key) -> str        $EVENTPUSH_SPOOL_DIR, else the user cache dir, + /eventpush/spool/<key>
    spool_key(base_url, dialect, headers) -> str   the <key>: one directory per endpoint, dialect and credentials

Layout: ``<directory>/<ns>-<pid>.open`` is the segment a process is appending to (it holds an ``flock`` on it);
on rotation or close it is renamed ``.seg``. A ``.open`` left by a dead process (nobody holds its lock any more)
is adopted as a ``.seg`` by the next spool that opens the directory. Replay reads ``.seg`` files oldest first
(names sort by creation time), holding an ``flock`` on the one it reads so that two processes never replay the same
segment; after each record the replayer calls ``ack()``, which stores the offset reached in ``<segment>.ack``
(atomically, by rename), so a restart resumes after the last acknowledged record, never sending one twice; a fully
acknowledged segment is deleted.

Record: a 16-byte header ``b"EPS1" | u32 payload length | u32 CRC-32 of the payload | u32 CRC-32 of the first
12 header bytes`` and the payload ``u8 version | u16 len + dialect name | u32 event count | u32 len + spans
(u32 offset, u32 length per event) | u32 len + groups and tags as JSON | body``. A record that ends early (a
process killed while writing) or whose checksums do not match is **never sent**: it is reported as a
:class:`~eventpush.errors.SpoolCorruptError` through ``on_corrupt`` (and counted in ``corrupt``), and reading
resumes at the next intact record header (found by its magic and header checksum). Each bad region is
reported once: when it starts at the acknowledged offset (it always does for a replayer that acknowledges every
record it is handed), the acknowledged offset moves past it, since there is nothing there to deliver.

A write that fails part-way (a full disk) is cut off again: ``append_many`` either stores all of its batches or,
raising :class:`~eventpush.errors.SpoolError`, none of them, and a partial record never precedes intact ones. A
segment that is unlinked while being written (the spool directory removed by a cache cleaner) is detected before
the next write and at close: its records are copied into a new segment of the recreated directory; if that fails
they are reported as lost through ``on_corrupt``. ``on_corrupt`` is never called with the spool's lock held (the
callback may take other locks, e.g. read a batcher's ``stats``).

fsync policy: ``"always"`` fsyncs every record before ``append`` returns, and the directory after files are
created, renamed or removed; ``"batch"`` (default) fsyncs once per ``append`` / ``append_many`` call and at
``sync()`` / ``close()``; ``"never"`` leaves it to the OS (a killed process loses nothing, a power cut may).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import threading
import time
import zlib
from array import array
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import orjson

from .dialects import Dialect, get_dialect
from .errors import SpoolCorruptError, SpoolError

try:  # POSIX: segment ownership by advisory locks; elsewhere a spool directory must not be shared
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spool", "SpooledBatch", "Record", "frame", "default_spool_dir", "spool_key", "FSYNC_POLICIES"]

log = logging.getLogger("eventpush.spool")

MAGIC = b"EPS1"
_HEAD = struct.Struct("<4sIII")
_VERSION = 1
FSYNC_POLICIES = ("always", "batch", "never")
_MAX_PAYLOAD = 1 << 31


def default_spool_dir(key: str) -> str:
    """The default spool directory for ``key``: ``$EVENTPUSH_SPOOL_DIR/<key>``, else the user cache directory
    (``$XDG_CACHE_HOME`` or ``~/.cache``; ``%LOCALAPPDATA%`` on Windows) ``/eventpush/spool/<key>``."""
    root = os.environ.get("EVENTPUSH_SPOOL_DIR")
    if not root:
        base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
        base = base or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "eventpush", "spool")
    return os.path.join(root, key)


def spool_key(base_url: str, dialect: Dialect, headers: Optional[dict] = None) -> str:
    """A directory name per endpoint, dialect and credentials, so a replay never sends one project's events with
    another project's key."""
    h = hashlib.sha256()
    h.update(base_url.encode())
    h.update(b"\0" + dialect.name.encode())
    for k, v in sorted((headers or {}).items()):
        h.update(b"\0" + k.lower().encode() + b"=" + str(v).encode())
    return f"{dialect.name}-{h.hexdigest()[:16]}"


# -- framing and batches rebuilt from records ------------------------------------------------------------------


def frame(dialect: Dialect, items: Sequence[Tuple[Optional[str], bytes]]) -> Tuple[bytes, List[Tuple[int, int]],
                                                                                 List[Tuple[Optional[str], int, int]]]:
    """Frame encoded events the way ``dialect.framing`` does; returns ``(body, spans, groups)``. Events keep their
    order within a collection; collections appear in first-seen order (Connect)."""
    body, spans, groups, _ = _frame(dialect, items)
    return body, spans, groups


def _frame(dialect: Dialect, items: Sequence[Tuple[Optional[str], bytes]]) -> Tuple[
        bytes, List[Tuple[int, int]], List[Tuple[Optional[str], int, int]], List[int]]:
    """:func:`frame` plus, per body position, the index of the item placed there."""
    parts: List[bytes] = []
    spans: List[Tuple[int, int]] = []
    groups: List[Tuple[Optional[str], int, int]] = []
    positions: List[int] = []
    pos = 0

    def put(b: bytes) -> None:
        nonlocal pos
        parts.append(b)
        pos += len(b)

    framing = dialect.framing
    if framing == "collections":
        order: List[Optional[str]] = []
        by: dict = {}
        for k, (coll, ev) in enumerate(items):
            if coll not in by:
                by[coll] = []
                order.append(coll)
            by[coll].append((k, ev))
        put(b"{")
        n = 0
        for gi, coll in enumerate(order):
            if gi:
                put(b",")
            put(orjson.dumps(coll) + b":[")
            start = n
            for k, (src, ev) in enumerate(by[coll]):
                if k:
                    put(b",")
                spans.append((pos, len(ev)))
                put(ev)
                positions.append(src)
                n += 1
            put(b"]")
            groups.append((coll, start, n))
        put(b"}")
    elif framing in ("events", "array"):
        put(b'{"events":[' if framing == "events" else b"[")
        for k, (_, ev) in enumerate(items):
            if k:
                put(b",")
            spans.append((pos, len(ev)))
            put(ev)
        put(b"]}" if framing == "events" else b"]")
        groups.append((None, 0, len(items)))
        positions = list(range(len(items)))
    else:  # ndjson
        for _, ev in items:
            spans.append((pos, len(ev)))
            put(ev)
            put(b"\n")
        groups.append((None, 0, len(items)))
        positions = list(range(len(items)))
    return b"".join(parts), spans, groups, positions


class SpooledBatch:
    """A sealed batch rebuilt from its stored body and spans: the interface of ``Batch`` that the sender uses
    (``count``, ``nbytes``, ``dialect``, ``body()``, ``event(i)``, ``span(i)``, ``collection(i)``, ``tag(i)``,
    ``tags()``, ``groups()``, ``subset(indices)``, ``release()``)."""

    __slots__ = ("_dialect", "_body", "_spans", "_groups", "_tags", "_colls")

    def __init__(
        self,
        dialect: Dialect,
        body: bytes,
        spans: Sequence[Tuple[int, int]],
        groups: Sequence[Tuple[Optional[str], int, int]],
        tags: Optional[Sequence[Any]] = None,
    ) -> None:
        self._dialect = dialect
        self._body = bytes(body)
        self._spans: List[Tuple[int, int]] = [(int(s[0]), int(s[1])) for s in spans]
        self._groups: List[Tuple[Optional[str], int, int]] = [(g[0], int(g[1]), int(g[2])) for g in groups]
        self._tags = list(tags) if tags is not None else [None] * len(self._spans)
        colls: List[Optional[str]] = [None] * len(self._spans)
        for coll, start, stop in self._groups:
            for i in range(start, stop):
                colls[i] = coll
        self._colls = colls

    @classmethod
    def from_batch(cls, batch: Any) -> "SpooledBatch":
        """A copy of any batch (encoder ``Batch`` or ``SpooledBatch``)."""
        if isinstance(batch, SpooledBatch):
            return batch
        n = batch.count
        return cls(batch.dialect, batch.body(), [batch.span(i) for i in range(n)], batch.groups(), batch.tags())

    @classmethod
    def from_events(cls, dialect: Dialect, items: Sequence[Tuple[Optional[str], bytes]],
                    tags: Optional[Sequence[Any]] = None) -> "SpooledBatch":
        """Frame encoded events ``[(collection, bytes), …]`` into a batch (``tags`` in the order of ``items``)."""
        body, spans, groups, order = _frame(dialect, items)
        return cls(dialect, body, spans, groups, None if tags is None else [tags[i] for i in order])

    @property
    def count(self) -> int:
        return len(self._spans)

    @property
    def nbytes(self) -> int:
        return len(self._body)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def __len__(self) -> int:
        return len(self._spans)

    def __buffer__(self, flags: int) -> memoryview:  # Python 3.12+
        return memoryview(self._body)

    def body(self) -> bytes:
        return self._body

    def event(self, i: int) -> bytes:
        off, ln = self._spans[i]
        return self._body[off:off + ln]

    def span(self, i: int) -> Tuple[int, int]:
        return self._spans[i]

    def collection(self, i: int) -> Optional[str]:
        self._spans[i]  # IndexError for a bad index
        return self._colls[i]

    def tag(self, i: int) -> Any:
        return self._tags[i]

    def tags(self) -> List[Any]:
        return list(self._tags)

    def groups(self) -> List[Tuple[Optional[str], int, int]]:
        return list(self._groups)

    def subset(self, indices: Sequence[int]) -> "SpooledBatch":
        if not indices:
            raise ValueError("empty subset")
        items = [(self.collection(i), self.event(i)) for i in indices]
        return SpooledBatch.from_events(self._dialect, items, [self._tags[i] for i in indices])

    def release(self) -> None:
        self._body = b""
        self._spans = []
        self._groups = []
        self._tags = []
        self._colls = []

    def __repr__(self) -> str:
        return f"<SpooledBatch {self._dialect.name} {self.count} events {self.nbytes} bytes>"


# -- record codec ----------------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return list(obj)
    return repr(obj)


def encode_record(batch: Any) -> bytes:
    """One spool record (header + payload) for ``batch``."""
    n = batch.count
    name = batch.dialect.name.encode()
    spans = array("I")
    for i in range(n):
        off, ln = batch.span(i)
        spans.append(off)
        spans.append(ln)
    if spans.itemsize != 4:  # pragma: no cover - every supported platform has a 4-byte unsigned int
        raise SpoolError("unsupported platform: array('I') is not 4 bytes")
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
        spans.byteswap()
    try:
        meta = orjson.dumps({"groups": batch.groups(), "tags": batch.tags()}, default=_json_default)
    except TypeError:
        meta = orjson.dumps({"groups": batch.groups(), "tags": None}, default=_json_default)
    span_bytes = spans.tobytes()
    body = batch.body()
    payload = b"".join((
        struct.pack("<BH", _VERSION, len(name)), name, struct.pack("<I", n),
        struct.pack("<I", len(span_bytes)), span_bytes, struct.pack("<I", len(meta)), meta, body,
    ))
    head12 = struct.pack("<4sII", MAGIC, len(payload), zlib.crc32(payload))
    return head12 + struct.pack("<I", zlib.crc32(head12)) + payload


def _payload_count(payload: bytes) -> int:
    _, nlen = struct.unpack_from("<BH", payload, 0)
    return struct.unpack_from("<I", payload, 3 + nlen)[0]


def decode_payload(payload: bytes, dialects: Optional[Dict[str, Dialect]] = None) -> SpooledBatch:
    """The batch stored in a record payload (already checksummed). ``dialects`` resolves dialect names first (for
    custom dialects), then :func:`eventpush.dialects.get_dialect`."""
    version, nlen = struct.unpack_from("<BH", payload, 0)
    if version != _VERSION:
        raise SpoolCorruptError(f"unknown spool record version {version}")
    pos = 3
    name = payload[pos:pos + nlen].decode()
    pos += nlen
    (count,) = struct.unpack_from("<I", payload, pos)
    pos += 4
    (slen,) = struct.unpack_from("<I", payload, pos)
    pos += 4
    spans = array("I")
    spans.frombytes(payload[pos:pos + slen])
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover
        spans.byteswap()
    pos += slen
    (mlen,) = struct.unpack_from("<I", payload, pos)
    pos += 4
    meta = orjson.loads(payload[pos:pos + mlen])
    pos += mlen
    body = payload[pos:]
    pairs = [(spans[2 * i], spans[2 * i + 1]) for i in range(count)]
    groups = [(g[0], g[1], g[2]) for g in meta["groups"]]
    tags = meta.get("tags")
    tags = [tuple(t) if isinstance(t, list) else t for t in tags] if tags is not None else None
    dialect = (dialects or {}).get(name) or get_dialect(name)
    return SpooledBatch(dialect, body, pairs, groups, tags)


# -- the spool -------------------------------------------------------------------------------------------------


class Record:
    """One stored batch handed out by :meth:`Spool.next_record`: ``batch`` (a :class:`SpooledBatch`), ``events``;
    call ``ack()`` once it is delivered (or rejected for good), or ``release()`` to leave it for a later replay."""

    __slots__ = ("batch", "events", "_spool", "_segment", "_end")

    def __init__(self, spool: "Spool", segment: "_Reader", end: int, batch: SpooledBatch) -> None:
        self.batch = batch
        self.events = batch.count
        self._spool = spool
        self._segment = segment
        self._end = end

    def ack(self) -> None:
        """Mark this record done: it is never replayed again (durably, per the fsync policy). Raises
        :class:`~eventpush.errors.SpoolError` when the acknowledgement cannot be stored (the record then stays
        outstanding: release it)."""
        self._spool._ack(self)

    def release(self) -> None:
        """Leave this record (and the rest of its segment) for a later replay."""
        self._spool._release_reader()


class _Reader:
    __slots__ = ("path", "fd", "offset", "acked", "data")

    def __init__(self, path: str, fd: int, offset: int, data: bytes) -> None:
        self.path = path
        self.fd = fd
        self.offset = offset  # where parsing goes on (past a record handed out but not yet acknowledged)
        self.acked = offset  # the offset stored in <segment>.ack
        self.data = data


def _lock_nb(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _same_file(fd: int, path: str) -> bool:
    """``path`` still names the file open as ``fd`` (not removed or renamed by another process meanwhile)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_ino, own.st_dev) == (st.st_ino, st.st_dev)


def _pread_all(fd: int, size: int) -> bytes:
    if not hasattr(os, "pread"):  # pragma: no cover - Windows (where an open file cannot be removed anyway)
        raise OSError("os.pread is not available")
    parts: List[bytes] = []
    pos = 0
    while pos < size:
        chunk = os.pread(fd, min(size - pos, 1 << 20), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


class Spool:
    """A durable spool directory; see the module docstring. Thread-safe."""

    def __init__(
        self,
        directory: str,
        *,
        fsync: str = "batch",
        segment_bytes: int = 64 * 1024 * 1024,
        on_corrupt: Optional[Callable[[SpoolCorruptError], None]] = None,
        dialects: Optional[Sequence[Dialect]] = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.directory = os.path.abspath(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.on_corrupt = on_corrupt
        self._dialects = {d.name: d for d in (dialects or ())}
        self.corrupt = 0
        self._lock = threading.RLock()
        self._closed = False
        self._wfd: Optional[int] = None
        self._wpath: Optional[str] = None
        self._wsize = 0
        self._wrecords = self._wevents = 0  # what the segment being written holds (for a report if it is lost)
        self._reader: Optional[_Reader] = None
        self._outstanding: Optional[Record] = None  # handed out by next_record(), neither acked nor released
        self._reports: List[str] = []  # corruption found under the lock, reported once it is released
        self._reported: set = set()  # (segment path, offset) of the bad regions reported already
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool directory {self.directory}: {exc}") from exc
        self._adopt_orphans()

    # -- writing ----------------------------------------------------------------------------------------------

    def _sync_dir(self) -> None:
        if self.fsync != "always" or os.name == "nt":
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _open_segment(self) -> None:
        """Create, lock and start writing a new ``.open`` segment. A process starting up adopts every unlocked
        ``.open`` (see :meth:`_adopt_orphans`), and ours has no lock for a moment after its creation: if an adopter
        took it in that moment (its lock fails, or the name no longer leads to our file), it is left to the
        adopter (it is empty) and another one is created. Raises ``OSError``."""
        for _ in range(100):
            path = os.path.join(self.directory, f"{time.time_ns():020d}-{os.getpid()}.open")
            try:
                # read-write: a segment unlinked under us can still be read back (_check_segment)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except FileNotFoundError:  # the spool directory was removed (a cache cleaner, a tmp reaper)
                os.makedirs(self.directory, exist_ok=True)
                continue
            if _lock_nb(fd) and _same_file(fd, path):  # the lock marks the segment as ours while we live
                self._wfd, self._wpath, self._wsize = fd, path, 0
                self._wrecords = self._wevents = 0
                self._sync_dir()
                return
            os.close(fd)
        raise OSError(f"cannot create a segment that stays ours in {self.directory}")

    def _check_segment(self) -> None:
        """The segment being written was unlinked (the spool directory removed while we run): what we wrote to it
        would go with our descriptor. Copy it into a new segment (in the directory, recreated); if that is not
        possible, report its records as lost. Raises ``OSError`` when no new segment can be written."""
        if self._wfd is None or os.fstat(self._wfd).st_nlink:
            return
        fd, path, size = self._wfd, self._wpath, self._wsize
        records, events = self._wrecords, self._wevents
        self._wfd = self._wpath = None
        self._wsize = self._wrecords = self._wevents = 0
        try:
            data = _pread_all(fd, size)
        except OSError:
            data = b""
        finally:
            os.close(fd)
        name = os.path.basename(path or "")
        lost = (f"spool {name}: the segment being written was removed ({records} record(s), {events} event(s) "
                f"written to it are lost)")
        if not size:
            return
        if len(data) != size:
            self._report(lost)
            return
        try:
            self._open_segment()
            self._write_all(data)
            if self.fsync != "never":
                os.fsync(self._wfd)  # type: ignore[arg-type]
        except OSError:
            if self._wfd is not None:
                self._cut_back(0)
            self._report(lost)
            raise
        self._wsize, self._wrecords, self._wevents = size, records, events
        log.warning("spool segment %s was removed while being written: its %d record(s) were written again to %s",
                    name, records, os.path.basename(self._wpath or ""))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._wfd, view)  # type: ignore[arg-type]
            view = view[n:]

    def _cut_back(self, size: int) -> None:
        """A write failed part-way: truncate the segment to ``size`` (its last good size), so that a partial
        record never precedes the records written after it. If even that fails, seal the segment (its torn tail is
        reported once when it is read) or, failing that too, let it go: an unlocked ``.open`` is adopted at the
        next start."""
        try:
            os.ftruncate(self._wfd, size)  # type: ignore[arg-type]
            self._wsize = size
            return
        except OSError as exc:
            log.error("cannot cut a failed write off the spool segment %s: %s", self._wpath, exc)
        self._wsize = max(self._wsize, 1)  # keep what is there for the reader to sort out
        try:
            self._close_segment()
        except OSError:
            pass

    def _close_segment(self) -> None:
        """Seal the segment being written (``.open`` → ``.seg``; an empty one is removed). Raises ``OSError``."""
        if self._wfd is None:
            return
        self._check_segment()
        if self._wfd is None:  # it was removed and nothing could be saved (reported)
            return
        fd, path = self._wfd, self._wpath
        self._wfd = self._wpath = None
        try:
            if self.fsync != "never":
                os.fsync(fd)
            if self._wsize:
                os.rename(path, path[: -len(".open")] + ".seg")  # type: ignore[index, arg-type]
            else:
                os.unlink(path)  # type: ignore[arg-type]
            self._sync_dir()
        finally:
            os.close(fd)  # releases our lock

    def append(self, batch: Any) -> int:
        """Store ``batch``; returns the bytes written. Raises :class:`~eventpush.errors.SpoolError`."""
        return self.append_many([batch])

    def append_many(self, batches: Iterable[Any]) -> int:
        """Store several batches (one fsync for all under ``fsync="batch"``); returns the bytes written. All or
        nothing: on :class:`~eventpush.errors.SpoolError` none of them is stored (a failed write is cut off again),
        so the caller may report or retry every one. The records of one call go into one segment (a call may
        make it exceed ``segment_bytes``)."""
        batches = list(batches)
        records = [encode_record(b) for b in batches]
        total = sum(len(rec) for rec in records)
        try:
            with self._lock:
                if self._closed:
                    raise SpoolError("the spool is closed")
                if not records:
                    return 0
                try:
                    self._check_segment()
                    if self._wfd is None or (self._wsize and self._wsize + total > self.segment_bytes):
                        self._close_segment()
                        self._open_segment()
                except OSError as exc:
                    raise SpoolError(f"cannot write to the spool {self.directory}: {exc}") from exc
                good = self._wsize
                try:
                    for rec in records:
                        self._write_all(rec)
                        self._wsize += len(rec)
                        if self.fsync == "always":
                            os.fsync(self._wfd)  # type: ignore[arg-type]
                    if self.fsync == "batch":
                        os.fsync(self._wfd)  # type: ignore[arg-type]
                except OSError as exc:
                    self._cut_back(good)
                    raise SpoolError(f"cannot write to the spool {self.directory}: {exc}") from exc
                self._wrecords += len(records)
                self._wevents += sum(b.count for b in batches)
                return total
        finally:
            self._deliver_reports()

    def sync(self) -> None:
        """fsync the segment being written (unless ``fsync="never"``). Raises
        :class:`~eventpush.errors.SpoolError`."""
        with self._lock:
            if self._wfd is not None and self.fsync != "never":
                try:
                    os.fsync(self._wfd)
                except OSError as exc:
                    raise SpoolError(f"cannot sync the spool {self.directory}: {exc}") from exc

    # -- reading ----------------------------------------------------------------------------------------------

    def _adopt_orphans(self) -> None:
        """Rename the ``.open`` segments of dead writers to ``.seg`` so they can be replayed. Other processes work
        in the directory meanwhile: a segment that its writer sealed, or another adopter took, between our
        ``listdir`` and our lock is left alone."""
        try:
            names = sorted(os.listdir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            if not name.endswith(".open"):
                continue
            path = os.path.join(self.directory, name)
            if path == self._wpath:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if not _lock_nb(fd):
                    continue  # a live process is still writing it
                if not _same_file(fd, path):
                    continue  # sealed by its writer, or taken by another adopter, before we got the lock
                try:
                    if os.fstat(fd).st_size == 0:
                        os.unlink(path)
                    else:
                        os.rename(path, path[: -len(".open")] + ".seg")
                except FileNotFoundError:
                    continue
                log.info("adopted the spool segment %s of a process that ended", name)
            finally:
                os.close(fd)

    def _segments(self) -> List[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if n.endswith(".seg"))
        except (FileNotFoundError, NotADirectoryError):  # the directory was removed: nothing to replay here
            # (it is recreated on the next write)
            return []

    def _report(self, message: str) -> None:
        """Count a torn / corrupted / lost record and queue its report: ``on_corrupt`` runs in
        :meth:`_deliver_reports`, once the lock is released (the callback may take other locks)."""
        self.corrupt += 1
        log.error("%s", message)
        self._reports.append(message)

    def _deliver_reports(self) -> None:
        """Call ``on_corrupt`` for the reports queued so far. Called by the public methods after releasing the
        lock, never with it held."""
        if not self._reports:
            return
        with self._lock:
            reports, self._reports = self._reports, []
        for message in reports:
            if self.on_corrupt is not None:
                try:
                    self.on_corrupt(SpoolCorruptError(message))
                except Exception:  # a failing callback must not stop the replay
                    log.exception("on_corrupt callback failed")

    def _read_ack(self, path: str) -> int:
        try:
            with open(path + ".ack", "rb") as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _open_reader(self) -> Optional[_Reader]:
        for name in self._segments():
            path = os.path.join(self.directory, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            if not _lock_nb(fd):
                os.close(fd)
                continue  # another process replays it
            if not os.path.exists(path):  # finished by another replayer between listdir and lock
                os.close(fd)
                continue
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            return _Reader(path, fd, self._read_ack(path), data)
        return None

    def _finish_reader(self, r: _Reader) -> None:
        for p in (r.path, r.path + ".ack"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        self._sync_dir()
        os.close(r.fd)
        self._reported = {k for k in self._reported if k[0] != r.path}
        if self._reader is r:
            self._reader = None
            self._outstanding = None

    def _release_reader(self) -> None:
        with self._lock:
            if self._reader is not None:
                os.close(self._reader.fd)
                self._reader = None
            self._outstanding = None

    def next_record(self) -> Optional[Record]:
        """The oldest record not yet acknowledged, or ``None`` when the spool is empty. Records written by this
        process so far become readable (its open segment is rotated first). Corrupt records are reported and
        skipped, never returned. A record handed out earlier and neither acknowledged nor released is handed out
        again (reading rewinds to the last acknowledged offset): a record is never skipped unacknowledged."""
        try:
            with self._lock:
                if self._closed:
                    raise SpoolError("the spool is closed")
                r = self._reader
                if r is not None and self._outstanding is not None:
                    log.warning("spool %s: a record at offset %d was neither acknowledged nor released: "
                                "replaying it again", os.path.basename(r.path), r.acked)
                    r.offset = r.acked
                    self._outstanding = None
                while True:
                    if self._reader is None:
                        r = self._open_reader()
                        if r is None and self._wfd is not None and self._wsize:
                            try:
                                self._close_segment()  # make our own records replayable
                            except OSError as exc:
                                raise SpoolError(f"cannot seal a segment of the spool {self.directory}: {exc}") from exc
                            r = self._open_reader()
                        if r is None:
                            return None
                        self._reader = r
                    r = self._reader
                    rec = self._parse_at(r)
                    if rec is not None:
                        self._outstanding = rec
                        return rec
                    self._finish_reader(r)
        finally:
            self._deliver_reports()

    def _bad_region(self, r: _Reader, pos: int, nxt: int, message: str) -> None:
        """Report the bad bytes ``[pos, nxt)`` of the segment being read (once) and move past them. When they start
        at the acknowledged offset, the acknowledgement moves past them too (durably): nothing there can ever be
        delivered, and a later read (after a release, or a restart) must not report them again."""
        key = (r.path, pos)
        if key not in self._reported:
            self._reported.add(key)
            self._report(message)
        r.offset = nxt
        if pos == r.acked and nxt < len(r.data):  # (at the end, the whole segment is finished instead)
            try:
                self._write_ack(r.path, nxt)
                r.acked = nxt
            except OSError as exc:
                log.warning("cannot store the spool offset past a bad region of %s: %s", r.path, exc)

    def _parse_at(self, r: _Reader) -> Optional[Record]:
        data = r.data
        name = os.path.basename(r.path)
        while r.offset < len(data):
            pos = r.offset
            if len(data) - pos < _HEAD.size:
                self._bad_region(r, pos, len(data),
                                 f"spool {name}: torn record at offset {pos} ({len(data) - pos} bytes of a header)")
                break
            magic, plen, pcrc, hcrc = _HEAD.unpack_from(data, pos)
            if magic != MAGIC or zlib.crc32(data[pos:pos + 12]) != hcrc or plen > _MAX_PAYLOAD:
                nxt = self._resync(data, pos + 1)
                self._bad_region(r, pos, nxt, f"spool {name}: corrupted record header at offset {pos} "
                                              f"({nxt - pos} bytes skipped)")
                continue
            end = pos + _HEAD.size + plen
            if end > len(data):
                # a record cut short; when intact records follow (a write that failed part-way, by an older
                # version, or a copy), reading goes on at the next one
                nxt = self._resync(data, pos + 1)
                self._bad_region(r, pos, nxt, f"spool {name}: torn record at offset {pos} "
                                              f"({nxt - pos - _HEAD.size} of {plen} payload bytes)")
                continue
            payload = data[pos + _HEAD.size:end]
            if zlib.crc32(payload) != pcrc:
                nxt = self._resync(data, pos + 1)
                self._bad_region(r, pos, nxt, f"spool {name}: corrupted record at offset {pos} (checksum mismatch)")
                continue
            try:
                batch = decode_payload(payload, self._dialects)
            except (SpoolCorruptError, ValueError, KeyError, TypeError, struct.error, orjson.JSONDecodeError) as exc:
                self._bad_region(r, pos, end, f"spool {name}: unreadable record at offset {pos}: {exc}")
                continue
            r.offset = end  # provisional: acked durably by Record.ack()
            return Record(self, r, end, batch)
        return None

    @staticmethod
    def _resync(data: bytes, start: int) -> int:
        pos = start
        while True:
            pos = data.find(MAGIC, pos)
            if pos < 0 or len(data) - pos < _HEAD.size:
                return len(data)
            if zlib.crc32(data[pos:pos + 12]) == _HEAD.unpack_from(data, pos)[3]:
                return pos
            pos += 1

    def _write_ack(self, path: str, end: int) -> None:
        tmp = path + ".ack.tmp"
        with open(tmp, "wb") as f:
            f.write(str(end).encode())
            if self.fsync != "never":
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path + ".ack")

    def _ack(self, rec: Record) -> None:
        r, end = rec._segment, rec._end
        with self._lock:
            current = self._reader is r
            # (a record of a reader released meanwhile: its segment may be read again, or finished, by now)
            floor = r.acked if current else self._read_ack(r.path)
            if end > floor and (current or os.path.exists(r.path)):  # never move an acknowledgement back
                try:
                    self._write_ack(r.path, end)
                except OSError as exc:
                    raise SpoolError(f"cannot store the spool offset of {r.path}: {exc}") from exc
            r.acked = max(r.acked, end)
            if self._outstanding is rec:
                self._outstanding = None
            if current and end >= len(r.data):
                self._finish_reader(r)

    def pending(self) -> Tuple[int, int]:
        """``(records, events)`` waiting in the spool (all segments, including the one being written; corrupt
        records are not counted)."""
        records = events = 0
        with self._lock:
            try:
                names = sorted(n for n in os.listdir(self.directory) if n.endswith((".seg", ".open")))
            except (FileNotFoundError, NotADirectoryError):  # removed: what it held is gone (see _check_segment)
                names = []
            for name in names:
                path = os.path.join(self.directory, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue
                pos = self._read_ack(path) if name.endswith(".seg") else 0
                if self._reader is not None and self._reader.path == path:
                    pos = max(pos, self._reader.offset)
                while len(data) - pos >= _HEAD.size:
                    magic, plen, pcrc, hcrc = _HEAD.unpack_from(data, pos)
                    if magic != MAGIC or zlib.crc32(data[pos:pos + 12]) != hcrc or plen > _MAX_PAYLOAD:
                        pos = self._resync(data, pos + 1)
                        continue
                    end = pos + _HEAD.size + plen
                    if end > len(data):  # torn: intact records may follow (as the reader does)
                        pos = self._resync(data, pos + 1)
                        continue
                    payload = data[pos + _HEAD.size:end]
                    if zlib.crc32(payload) == pcrc:
                        records += 1
                        events += _payload_count(payload)
                    pos = end
        return records, events

    def close(self) -> None:
        """Seal the segment being written (it becomes replayable) and release every lock. Raises
        :class:`~eventpush.errors.SpoolError` if the segment cannot be sealed (the spool is closed all the
        same)."""
        try:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._release_reader()
                try:
                    self._close_segment()
                except OSError as exc:
                    if self._wfd is not None:  # (a new segment that could not be filled: empty, cut back)
                        fd, path = self._wfd, self._wpath
                        self._wfd = self._wpath = None
                        with contextlib.suppress(OSError):
                            if not self._wsize:
                                os.unlink(path)  # type: ignore[arg-type]
                        os.close(fd)
                    raise SpoolError(f"cannot seal the spool segment in {self.directory}: {exc}") from exc
        finally:
            self._deliver_reports()

    def _after_fork_in_child(self) -> None:
        # The parent's descriptors stay the parent's: closing our copies keeps its locks (flock is per open
        # file description) and the child writes its own segment from now on.
        for fd in (self._wfd, self._reader.fd if self._reader else None):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._lock = threading.RLock()
        self._wfd = self._wpath = None
        self._wsize = self._wrecords = self._wevents = 0
        self._reader = None
        self._outstanding = None
        self._reports = []
        self._reported = set()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Spool {self.directory}>"
