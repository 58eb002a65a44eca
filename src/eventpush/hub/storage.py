"""Hub storage: SQLite (embedded default) and the no-storage sink.

Schema (one file, shared by every worker process)::

    collections(cid INTEGER PRIMARY KEY, api TEXT, project TEXT, name TEXT, UNIQUE(api, project, name))
    chunks(rid INTEGER PRIMARY KEY, cid INTEGER, n INTEGER, tag TEXT, body TEXT, ends BLOB, skip TEXT)
    INDEX chunks_cid ON chunks(cid)                    -- (cid, rid): a collection's newest events for GET
    ids(h INTEGER PRIMARY KEY, ref INTEGER)            -- duplicate detection: a row per stored Connect event
    ids_mid(h INTEGER PRIMARY KEY, ref INTEGER)        -- the same, for keys on their way into ids
    ids_recent(h INTEGER PRIMARY KEY, ref INTEGER)     -- the same, for the keys of the latest transactions
    ids_log(ref INTEGER PRIMARY KEY, keys TEXT)        -- the same, a row per chunk: its keys as a JSON array
    ids_collided(cid, eid TEXT, PRIMARY KEY (cid, eid)) WITHOUT ROWID   -- ids whose hash another id holds
    hub_meta(name TEXT PRIMARY KEY, value)             -- the id hash key, the layout version
    VIEW events(seq, cid, eid, body)                   -- one row per stored event, for people reading the file

A request's events of one collection are stored as one *chunk*: ``body`` is the JSON array of the events as
stored (each one compact JSON, in request order, byte for byte what GET returns), ``ends`` the end offset of each
one (little-endian uint32, cumulative lengths without separators), ``skip`` the JSON array of the positions that
were duplicates (not stored; ``NULL`` when none). An event's sequence number is ``rid << 24 | position``.

Duplicate detection by a unique index: ``ids`` is keyed by the top 48 bits of a SipHash-2-4 of (collection, id)
under a key kept in the file (``hub_id_hashes`` of the encoder core), and ``ref`` is the rid of the chunk that
holds the event that took the hash. An insert that finds the hash taken looks at that chunk: the same id in the
same collection is a duplicate; another one (a hash collision) is decided by the primary key of ``ids_collided``.
Why not the id text itself: ids are random (uuid4), so every insert lands on a random page of the index, and a
commit writes each page it touched to the WAL. A ~15-byte entry instead of ~50 makes the index a third as large,
so a commit touches and writes about a third as many pages; with one chunk row per request instead of a row per
event, the hub stores uuid4 events about 3× faster at 5,000 per request (README, side by side). A transaction of
a few thousand events would still touch most pages of ``ids``: it puts its keys in the small ``ids_recent``
instead (checking the others), which is moved on every 50,000 keys, so each page of the table below is written
once per 50,000 keys instead of once per transaction. Moving 50,000 random keys into ``ids`` still rewrites most of
its pages, and ``ids`` grows with what is stored: once it holds ``_MID_FROM`` keys, ``ids_recent`` moves into the
middle level ``ids_mid`` instead, which moves into ``ids`` when it holds about √(2 · 50,000 · n) keys (n: the keys
of ``ids``), the size at which the two moves rewrite as many bytes per event, each a few slices of the key range
at a time (``_SLICE_ROWS``) so that no transaction rewrites all of a large ``ids`` (an LSM tree of three levels).
Only a transaction of 50,000 keys or more (which would fill ``ids_recent`` at once; a group commit stops taking
requests at 25,000 events) and the executemany path insert into ``ids`` (checking the others). A key is in one of
the four tables, never in two. A new file gets 16 KiB pages (``_PAGE_SIZE``): a commit writes fewer, fuller WAL
frames.

Checking the other tables is a look-up of a random key in a large B-tree, which misses the CPU's caches, and it is
what made the cost per event grow with what is stored. Each process keeps the keys it stored, and those the file
held at start (loaded in the background), in a Bloom filter in memory (``HubKeyFilter`` of the core, 2 bytes per
key): the keys it never saw, nearly all of a request of new ids, are in none of the tables. They go into the
append-only ``ids_log``, one row per chunk, which a commit writes as a page or two at the end of the table, where
an insert into ``ids_recent`` rewrote most of its pages (~650 bytes of WAL per event at 500 events per request):
the process keeps the log's keys in memory too (``HubKeyLog`` of the core, key → rid, while it writes the log
itself), for the few keys the filter may have seen, and moves the log on with ``ids_recent``, every 50,000 keys.
The filter misses what other connections store, so it serves only while no other one writes the file (``PRAGMA
data_version``, in each transaction); with ``--workers N`` it is off and every key is looked up. A transaction
without the filter, or without the log in memory (after a restart or a rollback), first moves the log into
``ids_recent``.

Writes run on one dedicated writer thread per process, with one ``INSERT … SELECT … FROM json_each(?)`` per chunk
(executemany when SQLite lacks JSON1), so the event loop never waits on SQLite, and a handler answers only after
the commit of its request returned. Group commit: the requests that queue up while a transaction runs go into the
next one together (``BEGIN IMMEDIATE … COMMIT``), each request still all or nothing: when a grouped transaction
fails it is rolled back and its requests are committed one by one, so only the failing request sees the error.
``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so with ``--workers N`` the other processes wait
(``busy_timeout``) instead of failing half-way. Barchart events are stored under api ``"barchart"``, collection
``"events"``, with ``tag`` the request's batch id: their ids, ``"{batch}/{sequence}"``, are unique by construction
(a fresh uuid4 per request), so they take no ``ids`` rows. A database of layout 1 (one ``events`` row per event)
is converted once, at start; one of layout 2 (no ``ids_recent``), 3 (no ``ids_mid``) or 4 (no ``ids_log``) gains
the empty tables.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from array import array
from itertools import accumulate
from math import isqrt
from typing import TYPE_CHECKING, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import orjson

from .. import _impl
from ..errors import ClosedError

if TYPE_CHECKING:  # the compiled classes or their pure twins (_impl.core)
    from .._core_py import HubKeyFilter, HubKeyLog

__all__ = ["Storage", "SQLiteStorage", "SinkStorage", "init_db", "Group"]

log = logging.getLogger("eventpush.hub")

#: One collection's share of a request: (collection name, event ids, event bodies as compact JSON bytes).
Group = Tuple[str, List[str], List[bytes]]

Publish = Callable[[str, str, bytes], None]  # (api, collection, body)

#: The storage layout this version writes (``hub_meta``); 1 was one ``events`` row per event, 2 had no
#: ``ids_recent``, 3 no ``ids_mid`` and 4 no ``ids_log`` (a file of layout 2, 3 or 4 is brought to 5 by adding them).
LAYOUT = 5

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS collections (cid INTEGER PRIMARY KEY, api TEXT NOT NULL, project TEXT NOT NULL, "
    "name TEXT NOT NULL, UNIQUE (api, project, name))",
    "CREATE TABLE IF NOT EXISTS hub_meta (name TEXT PRIMARY KEY, value NOT NULL)",
    "CREATE TABLE IF NOT EXISTS chunks (rid INTEGER PRIMARY KEY, cid INTEGER NOT NULL, n INTEGER NOT NULL, "
    "tag TEXT, body TEXT NOT NULL, ends BLOB NOT NULL, skip TEXT)",
    "CREATE INDEX IF NOT EXISTS chunks_cid ON chunks (cid)",
    "CREATE TABLE IF NOT EXISTS ids (h INTEGER PRIMARY KEY, ref INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ids_recent (h INTEGER PRIMARY KEY, ref INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ids_mid (h INTEGER PRIMARY KEY, ref INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ids_log (ref INTEGER PRIMARY KEY, keys TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ids_collided (cid INTEGER NOT NULL, eid TEXT NOT NULL, PRIMARY KEY (cid, eid)) "
    "WITHOUT ROWID",
)

#: ``ids.h`` is the top 48 bits of the 64-bit hash: a positive key of 7 varint bytes (a negative one takes 9),
#: with ``ref`` the chunk's rid, an entry is ~15 bytes; a collision (once per ~2**48 / n inserts, n the events
#: stored) only costs a look at the holding chunk.
_HASH_SHIFT = 16
_HASH_BITS = 48
_HASH_MASK = (1 << _HASH_BITS) - 1

#: An event's sequence number is ``rid << _POS_BITS | position`` (a chunk holds at most 5,000 Connect events, or
#: what one Barchart body under the size limit holds).
_POS_BITS = 24

# One row per stored event (needs JSON1): ``SELECT body FROM events`` reads the file as the layout-1 table did.
_VIEW = (
    f"CREATE VIEW IF NOT EXISTS events (seq, cid, eid, body) AS SELECT (c.rid << {_POS_BITS}) | j.key, c.cid, "
    "CASE WHEN c.tag IS NULL THEN json_extract(j.value, '$.id') ELSE c.tag || '/' || j.key END, j.value "
    "FROM chunks c, json_each(c.body) j WHERE c.skip IS NULL OR j.key NOT IN (SELECT value FROM json_each(c.skip))"
)

_INSERT_CHUNK = "INSERT INTO chunks (cid, n, tag, body, ends) VALUES (?, ?, ?, CAST(? AS TEXT), ?)"
# PERF: one statement per chunk; SQLite walks the JSON array in C with the GIL released for the whole statement, so
# the event loop parses the next request on the other core meanwhile. executemany() releases and re-takes the GIL
# around every row, which convoys with the event loop thread.
#
# A key is in one of ``ids``, ``ids_mid`` and ``ids_recent``, never in two: each insert checks the others. A
# transaction inserts into the small ``ids_recent``; past _MERGE_AT rows it is moved on at once (see _merge).
# PERF: a commit writes every index page it touched, and a few thousand random keys touch most pages of ``ids``
# (1,500 pages of 4 KiB at 400,000 events): that was most of the writer's time. Through ``ids_recent`` a page of
# ``ids`` is written once per merge. Layout 3 first sent transactions of 4,000 events or more straight to ``ids``;
# with 16 KiB pages, 5,000-event requests through ``ids_recent`` cost the writer 2.2-2.9 us per event against
# 2.3-2.9 straight to ``ids`` and 3.2-4.5 with 4 KiB pages (bench_hub, interleaved; README).
_INSERT_IDS_JSON = ("INSERT OR IGNORE INTO ids (h, ref) SELECT value, ?1 FROM json_each(?2) "
                    "WHERE NOT EXISTS (SELECT 1 FROM ids_recent WHERE h = value) "
                    "AND NOT EXISTS (SELECT 1 FROM ids_mid WHERE h = value)")
_INSERT_RECENT_JSON = ("INSERT OR IGNORE INTO ids_recent (h, ref) SELECT value, ?1 FROM json_each(?2) "
                       "WHERE NOT EXISTS (SELECT 1 FROM ids_mid WHERE h = value) "
                       "AND NOT EXISTS (SELECT 1 FROM ids WHERE h = value)")
# the same while ids_mid is empty (below _MID_FROM): a look in an empty table still cost ~0.05 us per event
_INSERT_RECENT_JSON_IDS = ("INSERT OR IGNORE INTO ids_recent (h, ref) SELECT value, ?1 FROM json_each(?2) "
                           "WHERE NOT EXISTS (SELECT 1 FROM ids WHERE h = value)")
_MID_USED = "SELECT 1 FROM ids_mid LIMIT 1"
# keys the in-memory filter never saw (SQLiteStorage._filter), in none of the tables: a chunk's as one row of the log
_LOG_INSERT = "INSERT INTO ids_log (ref, keys) VALUES (?1, ?2)"
_LOG_ROWS = "SELECT j.value, l.ref FROM ids_log l, json_each(l.keys) j"
# a connection that does not hold the log's keys in memory moves them into ids_recent first (looked up there)
_LOG_FLUSH = "INSERT OR IGNORE INTO ids_recent (h, ref) " + _LOG_ROWS
_LOG_CLEAR = "DELETE FROM ids_log"
_LOG_MOVE = "INSERT OR IGNORE INTO {to} (h, ref) " + _LOG_ROWS + " ORDER BY 1"
_LOG_KEYS = "SELECT json_group_array(j.value) FROM ids_log l, json_each(l.keys) j"
_LOG_COUNT = "SELECT coalesce(sum(json_array_length(keys)), 0) FROM ids_log"
# what loads the filter: a table's keys above ?1, a page at a time, as the JSON text HubKeyFilter.add reads
_KEYS_AFTER = "SELECT json_group_array(h) FROM (SELECT h FROM {table} WHERE h > ?1 ORDER BY h LIMIT 65536)"
_ANY_KEY = ("SELECT EXISTS (SELECT 1 FROM ids) OR EXISTS (SELECT 1 FROM ids_mid) "
            "OR EXISTS (SELECT 1 FROM ids_recent) OR EXISTS (SELECT 1 FROM ids_log)")
_INSERT_IDS = ("INSERT OR IGNORE INTO ids (h, ref) SELECT ?1, ?2 "
               "WHERE NOT EXISTS (SELECT 1 FROM ids_recent WHERE h = ?1) "
               "AND NOT EXISTS (SELECT 1 FROM ids_mid WHERE h = ?1)")
_HOLDER = ("SELECT ref FROM ids WHERE h = ?1 UNION ALL SELECT ref FROM ids_mid WHERE h = ?1 "
           "UNION ALL SELECT ref FROM ids_recent WHERE h = ?1")
# the tables are disjoint: nothing is ignored
_MOVE = "INSERT OR IGNORE INTO {to} (h, ref) SELECT h, ref FROM ids_recent"
_MOVE_RANGE = "INSERT OR IGNORE INTO ids (h, ref) SELECT h, ref FROM ids_mid WHERE h >= ?1 AND h < ?2"
_DROP_RANGE = "DELETE FROM ids_mid WHERE h >= ?1 AND h < ?2"

#: ``ids_recent`` is moved on once it holds this many keys.
_MERGE_AT = 50_000
#: Once ``ids`` holds this many keys, ``ids_recent`` moves into ``ids_mid`` (below, straight into ``ids``).
#: PERF: a move of 50,000 random keys into ``ids`` rewrites most of its pages, so the writer's cost per event grew
#: with what was stored: 5,000 per request went from 371,589 events/s for the first million stored to 160,295 for
#: the sixth (bench_hub's client). A middle level moves each key once more, which costs more than it saves while
#: ``ids`` is small.
_MID_FROM = 1_000_000
#: ``ids_mid`` moves into ``ids`` in slices of the key range, each holding about this many keys of ``ids`` (the
#: pages one slice's transaction rewrites).
_SLICE_ROWS = 1_000_000
#: A transaction of fewer events than this inserts its keys into ``ids_recent``; a larger one would fill it at once.
_RECENT_BELOW = _MERGE_AT

#: The page size of a new database file (an existing file keeps its own; SQLite applies it before the first write).
#: PERF: a commit writes each page it touched as one WAL frame (a header, the page, a checksum over both, two
#: writes): with random keys a transaction touches most index pages whatever their size, and 16 KiB pages made the
#: writer's commits of 5,000-event requests about a third cheaper than 4 KiB ones. 64 KiB ones were slower again,
#: and make a lone event's commit write 64 KiB per page it touches.
_PAGE_SIZE = 16_384

_U32 = "I" if array("I").itemsize == 4 else "L"


def _mid_limit(ids_rows: int) -> int:
    """How many keys ``ids_mid`` holds before it moves into ``ids`` of ``ids_rows`` keys.

    Filling ``ids_mid`` up to m keys, each move of ``ids_recent`` rewrites about m/2 keys' worth of its pages, per
    _MERGE_AT events; moving it into ``ids`` rewrites n keys' worth per m events: per event m / (2 * _MERGE_AT) +
    n / m, least at m = sqrt(2 * _MERGE_AT * n)."""
    return max(_MERGE_AT, isqrt(2 * _MERGE_AT * ids_rows))


def _slices(ids_rows: int) -> List[Tuple[int, int]]:
    """The key ranges in which ``ids_mid`` moves into ``ids`` of ``ids_rows`` keys: about ``_SLICE_ROWS`` keys of
    ``ids`` each (the keys are uniform over ``[0, 2**_HASH_BITS)``)."""
    n = max(1, -(-ids_rows // _SLICE_ROWS))
    bounds = [(i << _HASH_BITS) // n for i in range(n + 1)]
    return list(zip(bounds, bounds[1:]))


def _id_keys(hashes: List[int]) -> str:
    """The ``ids`` keys of ``hashes`` (their top 48 bits) as a JSON array, in ascending order.

    PERF: in key order each insert lands at or after the previous one, on index pages already in the CPU's caches,
    and SQLite reads the keys as they are. Writing 400,000 uuid4 events, three requests of 5,000 per transaction,
    the ``ids`` statement took 0.66-0.89 us per event, against 1.05-1.30 with the hashes in request order and
    masked by SQLite. The compiled core sorts with the GIL released (the event loop calls this)."""
    return _impl.core.hub_index_keys(hashes, _HASH_SHIFT, _HASH_BITS)


def _pack(bodies: Sequence[bytes]) -> Tuple[bytes, bytes]:
    """A chunk's ``body`` (its events as one JSON array) and ``ends`` columns.

    PERF: one copy of the events: the brackets ride on the first and last of them. ``b"[" + joined + b"]"`` copied
    a 5,000-event chunk (1.4 MB) twice more, 1.5 ms against 0.1 for the join alone, on the event loop."""
    if len(bodies) < 2:
        return b"[" + b"".join(bodies) + b"]", _ends(bodies)
    parts = list(bodies)
    parts[0] = b"[" + parts[0]
    parts[-1] = parts[-1] + b"]"
    return b",".join(parts), _ends(bodies)


def _ends(bodies: Sequence[bytes]) -> bytes:
    """The ``ends`` column of a chunk: cumulative body lengths, little-endian uint32."""
    a = array(_U32, accumulate(map(len, bodies)))
    if sys.byteorder != "little":  # pragma: no cover - big-endian platforms
        a.byteswap()
    return a.tobytes()


def _split(body: bytes, ends: bytes) -> List[Tuple[int, int]]:
    """``(start, end)`` of each event of a chunk's ``body`` (its bytes), from its ``ends``."""
    a = array(_U32)
    a.frombytes(ends)
    if sys.byteorder != "little":  # pragma: no cover - big-endian platforms
        a.byteswap()
    spans = []
    prev = 0
    for i, end in enumerate(a):
        spans.append((1 + i + prev, 1 + i + end))
        prev = end
    return spans


#: The checkpoint thread copies the WAL at most this often (seconds): see _checkpoint_loop.
_CHECKPOINT_EVERY = 0.05

#: Past this WAL size the checkpoint thread holds the writer back between two transactions and copies the rest of
#: the WAL, so that the next transaction writes the WAL from its start again (see _checkpoint_loop).
_WAL_REWIND_BYTES = 16 << 20

#: Past this WAL size (other worker processes kept it from being rewound) the checkpoint thread restarts the WAL,
#: waiting for them (``_RESTART_WAIT`` at most), the writer held back meanwhile.
_WAL_RESTART_BYTES = 256 << 20

#: A rewound WAL file is cut back to this size when it grew past it (``journal_size_limit``); below it the file
#: keeps its size, and its pages stay allocated for the next round.
_WAL_KEEP_BYTES = 64 << 20

#: The longest the checkpoint thread waits for other writers (other worker processes) to let a RESTART through.
_RESTART_WAIT = 2.0

#: A group commit takes pending requests until it holds this many events (at least one request).
_GROUP_EVENTS = 25_000

# Where a request's write stands (changed under SQLiteStorage._lock only).
_QUEUED = 0  # in _pending: a cancelled handler takes it out
_TAKEN = 1  # in the writer thread's current group, not committed: a cancelled handler marks it withdrawn
_COMMITTING = 2  # its transaction's COMMIT runs (or ran): it can no longer be withdrawn


class _Write:
    """One request's insert, queued for the writer thread."""

    __slots__ = ("api", "project", "groups", "seq_ids", "size", "future", "dups", "error", "state", "withdrawn",
                 "hashed", "packed")

    def __init__(self, api: str, project: str, groups: Sequence[Group], seq_ids: Optional[str],
                 future: "asyncio.Future[List[int]]") -> None:
        self.api = api
        self.project = project
        self.groups = groups
        self.seq_ids = seq_ids
        self.size = sum(len(eids) for _, eids, _ in groups)
        self.future = future
        self.dups: List[int] = []
        self.error: Optional[BaseException] = None
        self.state = _QUEUED
        self.withdrawn = False
        #: per group, ``(cid, (hashes, keys))`` computed on the event loop when the collection's id was known
        self.hashed: List[Optional[Tuple[int, Tuple[List[int], str]]]] = []
        #: per group, its chunk's ``body`` and ``ends`` columns (made on the event loop)
        self.packed: List[Tuple[bytes, bytes]] = []


def _resolve(writes: List[_Write]) -> None:
    """On the event loop: hand each request its result (a request whose handler was cancelled is skipped)."""
    for w in writes:
        if w.future.done():
            continue
        if w.error is not None:
            w.future.set_exception(w.error)
        else:
            w.future.set_result(w.dups)


def _has_json(conn: sqlite3.Connection) -> bool:
    """JSON1 is built into SQLite since 3.38 and usually compiled in before; verify what the statement relies on
    (json_each keeps each element's text byte for byte)."""
    try:
        row = conn.execute(
            "SELECT json_extract(value, '$.id'), value FROM json_each(?)", ('[{"id":"a","x":"\u00e9é","n":1.50}]',)
        ).fetchone()
    except sqlite3.Error:
        return False
    return row == ("a", '{"id":"a","x":"\u00e9é","n":1.50}')


def _connect(path: str, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (one transaction per group of requests).
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # before journal_mode: a new file is made with it
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def _ensure_schema(conn: sqlite3.Connection) -> bool:
    """The schema, made or completed; a database of layout 1 is converted (once, in one transaction, logged).
    Returns whether this SQLite has JSON1 (the view and the json_each inserts need it)."""
    for stmt in _SCHEMA:
        conn.execute(stmt)
    conn.execute("INSERT OR IGNORE INTO hub_meta (name, value) VALUES ('id_hash_key', randomblob(16))")
    json1 = _has_json(conn)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone():
        _convert_layout_1(conn, json1)
    if json1:
        conn.execute(_VIEW)
    conn.execute("INSERT OR IGNORE INTO hub_meta (name, value) VALUES ('layout', ?)", (LAYOUT,))
    was = conn.execute("SELECT value FROM hub_meta WHERE name = 'layout'").fetchone()[0]
    if was in (2, 3, 4) and conn.execute("UPDATE hub_meta SET value = ? WHERE name = 'layout' AND value = ?",
                                         (LAYOUT, was)).rowcount:
        log.info("storage layout %d brought to %d (the %s added)", was, LAYOUT,
                 {2: "ids_recent, ids_mid and ids_log tables", 3: "ids_mid and ids_log tables"}.get(
                     was, "ids_log table"))
    layout = conn.execute("SELECT value FROM hub_meta WHERE name = 'layout'").fetchone()[0]
    if layout != LAYOUT:
        raise sqlite3.DatabaseError(f"the database has storage layout {layout!r}, written by another version of "
                                    f"eventpush; this one reads layout {LAYOUT}")
    return json1


def _hash_key(conn: sqlite3.Connection) -> bytes:
    key = conn.execute("SELECT value FROM hub_meta WHERE name = 'id_hash_key'").fetchone()[0]
    if type(key) is not bytes or len(key) != 16:
        raise sqlite3.DatabaseError("hub_meta.id_hash_key is not 16 bytes: the database was changed by hand")
    return key


def _convert_layout_1(conn: sqlite3.Connection, json1: bool) -> None:
    """Move the events of a layout-1 database (``events(cid, eid, body)``, one row per event) into chunks of up to
    5,000 events per collection (Barchart: one chunk per batch), in stored order, with their ``ids`` rows."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone():
            conn.execute("ROLLBACK")  # another worker process converted it meanwhile
            return
        n = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        log.info("converting %d stored events to storage layout %d (once)", n, LAYOUT)
        key = _hash_key(conn)
        apis = dict(conn.execute("SELECT cid, api FROM collections"))
        for (cid,) in conn.execute("SELECT DISTINCT cid FROM events ORDER BY cid").fetchall():
            barchart = apis.get(cid) == "barchart"
            tag: Optional[str] = None
            eids: List[str] = []
            bodies: List[bytes] = []
            for eid, body in conn.execute("SELECT eid, body FROM events WHERE cid = ? ORDER BY rowid", (cid,)):
                this = eid.rsplit("/", 1)[0] if barchart else None
                if bodies and (len(bodies) >= 5000 or this != tag):
                    _store_chunk(conn, key, cid, eids, bodies, tag, json1)
                    eids, bodies = [], []
                tag = this
                eids.append(eid)
                bodies.append(body.encode() if isinstance(body, str) else body)
            if bodies:
                _store_chunk(conn, key, cid, eids, bodies, tag, json1)
        conn.execute("DROP TABLE events")  # its indexes go with it
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _store_chunk(conn: sqlite3.Connection, key: bytes, cid: int, eids: List[str], bodies: List[bytes],
                 tag: Optional[str], json1: bool = True,
                 hashed: Optional[Tuple[List[int], str]] = None,
                 packed: Optional[Tuple[bytes, bytes]] = None, recent: bool = False,
                 mid: bool = True, keyfilter: Optional[HubKeyFilter] = None,
                 keylog: Optional[HubKeyLog] = None) -> List[int]:
    """Store one chunk (inside the open transaction); returns the positions that were duplicates (not stored).
    ``tag``: Barchart's batch id (its events take no ``ids`` rows); ``None`` for Connect events. ``hashed``: the
    ids' ``hub_id_hashes`` under ``key`` and ``cid`` and their ``_id_keys``, and ``packed`` the chunk's ``body`` and
    ``ends`` (:func:`_pack`), when the caller has them already. ``recent``: the keys go to ``ids_recent`` (needs
    JSON1); ``mid=False``: ``ids_mid`` is empty (the caller looked, in this transaction). ``keyfilter``: the
    keys are added to it (needs JSON1). ``keylog`` (with ``recent`` and ``keyfilter``, which the caller checked is
    complete): the keys of ``ids_log`` and their chunks, which this connection keeps in step with the table; the
    keys the filter never saw, in none of the tables, go into the log as one row, without a look anywhere."""
    body, ends = packed if packed is not None else _pack(bodies)
    rid: int = conn.execute(_INSERT_CHUNK, (cid, len(bodies), tag, body, ends)).lastrowid  # type: ignore[assignment]
    if tag is not None:
        return []
    if hashed is not None:
        hashes, keys = hashed
    else:
        hashes = _impl.core.hub_id_hashes(key, cid, eids)
        keys = _id_keys(hashes) if json1 else ""
    if json1:
        stmt = (_INSERT_RECENT_JSON if mid else _INSERT_RECENT_JSON_IDS) if recent else _INSERT_IDS_JSON
        # the keys go into the filter before the commit: a key of a transaction rolled back only costs a look
        if keylog is not None and recent and keyfilter is not None:
            # PERF: one look at each key's block of the filter for both (split, then add: half the cache misses)
            new, maybe = keyfilter.split_add(keys)  # a key twice in the chunk is maybe the second time
            inserted = 0
            if new != "[]":
                inserted = keylog.add(new, rid)
                conn.execute(_LOG_INSERT, (rid, new))
            if maybe != "[]":
                rest = keylog.absent(maybe)  # a key of the log is taken
                if rest != "[]":
                    inserted += conn.execute(stmt, (rid, rest)).rowcount
        else:
            inserted = conn.execute(stmt, (rid, keys)).rowcount
            if keyfilter is not None:
                keyfilter.add(keys)
    else:
        rows = (((h >> _HASH_SHIFT) & _HASH_MASK, rid) for h in hashes)
        inserted = conn.executemany(_INSERT_IDS, rows).rowcount
    if inserted == len(hashes):
        return []
    # Slow path: some hash was taken, by the same id in the same collection (a duplicate) or by another id.
    dups: List[int] = []
    first: Dict[str, int] = {}
    mine: set = set()  # hashes this chunk inserted (its first position with each hash did)
    holders: Dict[int, Tuple[int, set]] = {}
    for i, h in enumerate(hashes):
        eid = eids[i]
        if eid in first:  # an id repeated within the request
            dups.append(i)
            continue
        first[eid] = i
        h = (h >> _HASH_SHIFT) & _HASH_MASK
        holder = keylog.get(h) if keylog is not None else None
        if holder is None:
            holder = conn.execute(_HOLDER, (h,)).fetchone()[0]
        if holder == rid and h not in mine:
            mine.add(h)  # this position inserted it
            continue
        if holder != rid:
            if holder not in holders:
                hcid, hbody = conn.execute("SELECT cid, CAST(body AS BLOB) FROM chunks WHERE rid = ?",
                                           (holder,)).fetchone()
                holders[holder] = (hcid, {ev.get("id") for ev in orjson.loads(hbody)} if hcid == cid else set())
            hcid, held = holders[holder]
            if hcid == cid and eid in held:  # the id is stored (a chunk holds each id it stored, or a repeat of it)
                dups.append(i)
                continue
        # another id holds the hash (a collision): the unique key of ids_collided decides
        if not conn.execute("INSERT OR IGNORE INTO ids_collided (cid, eid) VALUES (?, ?)", (cid, eid)).rowcount:
            dups.append(i)
    if dups:
        conn.execute("UPDATE chunks SET skip = ? WHERE rid = ?", (orjson.dumps(dups).decode(), rid))
    return dups


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any, after a failure: a rollback that fails too (the connection is
    gone) must not hide the error being handled."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _check_writable(conn: sqlite3.Connection, path: str) -> None:
    """Raise ``sqlite3.OperationalError`` unless this connection can write the database.

    SQLite opens a file it may not write (a read-only file or mount in a writable directory) read-only without a
    word, and the schema statements (``IF NOT EXISTS``) pass on an existing database: the hub would start
    "healthy" and answer every write with 500. So a write is tried in a transaction that is rolled back (it
    takes the write lock for a moment: with another writer busy, it waits up to the busy timeout)."""
    if path == ":memory:":
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {int(version)}")  # writes the header page: refused when read-only
    except sqlite3.OperationalError as exc:
        raise sqlite3.OperationalError(f"the database is not writable ({exc})") from None
    finally:
        conn.execute("ROLLBACK")


def init_db(path: str, *, busy_timeout: float = 30.0) -> None:
    """Create the schema and switch the file to WAL (done once by ``serve`` before workers start); raise
    ``sqlite3.Error`` when the database cannot be opened, or not written."""
    conn = _connect(path, busy_timeout, "normal")
    try:
        _check_writable(conn, path)
        _ensure_schema(conn)
    finally:
        conn.close()


class Storage:
    """What the app needs from a store. ``insert`` returns, per request, the flat positions (over all groups, in
    order) of the events that were duplicates of stored ones; everything else was committed."""

    sink = False

    def __init__(self) -> None:
        self.publish: Optional[Publish] = None

    async def start(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def insert(  # pragma: no cover
        self, api: str, project: str, groups: Sequence[Group], seq_ids: Optional[str] = None
    ) -> List[int]:
        raise NotImplementedError

    async def recent(self, api: str, project: str, collection: str, limit: int) -> List[str]:  # pragma: no cover
        raise NotImplementedError

    async def recent_page(self, api: str, project: str, collection: str, limit: int,
                          before: Optional[int] = None) -> Tuple[List[str], Optional[int]]:
        """Up to ``limit`` of a collection's events, newest first, older than the cursor ``before`` (``None``:
        from the newest); returns them and the cursor for the next page (``None`` when there is none)."""
        return await self.recent(api, project, collection, limit), None


class SinkStorage(Storage):
    """``--sink``: nothing is stored; every event that passed validation counts as accepted."""

    sink = True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def insert(self, api: str, project: str, groups: Sequence[Group], seq_ids: Optional[str] = None) -> List[int]:
        return []

    async def recent(self, api: str, project: str, collection: str, limit: int) -> List[str]:
        return []


class SQLiteStorage(Storage):
    """SQLite in WAL mode, written by one dedicated thread per process (reads on a second thread)."""

    def __init__(self, path: str, *, busy_timeout: float = 30.0, synchronous: str = "normal") -> None:
        super().__init__()
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._writer: Optional[ThreadPoolExecutor] = None
        self._reader: Optional[ThreadPoolExecutor] = None
        self._local = threading.local()
        self._conns: List[sqlite3.Connection] = []
        # written by the writer thread only; the event loop reads it (hashes ids ahead, _insert checks the cid)
        self._cids: Dict[Tuple[str, str, str], int] = {}
        self._closed = False
        self._json = False
        self._key = b""  # the id hash key (hub_meta), read by the writer thread at start
        self._lock = threading.Lock()
        self._pending: Deque[_Write] = deque()
        self._draining = False
        #: committed transactions (a transaction holds one or more requests: group commit)
        self.transactions = 0
        self.checkpoints = 0
        #: checkpoints that copied the whole WAL with the writer held back, so that it rewinds (_checkpoint_loop)
        self.rewinds = 0
        #: moves of ``ids_recent`` (into ``ids_mid`` or ``ids``) and of ``ids_mid`` slices into ``ids``; the keys
        #: this process put in ``ids_recent`` since the last move, the keys of ``ids`` (counted at the first move,
        #: then what this process moved there), and the key ranges of ``ids_mid`` left to move into ``ids``
        self.merges = 0
        self.slices = 0
        self._recent_rows = 0
        self._ids_rows: Optional[int] = None
        self._slices: List[Tuple[int, int]] = []
        self._checkpointer: Optional[threading.Thread] = None
        self._checkpoint_wake = threading.Event()
        self._closed_event = threading.Event()  # set by close(): the checkpoint thread stops waiting
        # the checkpoint thread holds the writer back between two transactions (_writer_held): it clears
        # _writes_open, so the writer starts no new one, and takes _turn, which the writer holds through each
        self._writes_open = threading.Event()
        self._writes_open.set()
        self._turn = threading.Lock()
        # Every key this process put in ids, ids_mid or ids_recent, and those the file held at start (loaded by
        # _load_filter meanwhile): a key it never saw is in none of them (_store_chunk). It is complete only
        # while no other connection writes the file (with --workers N, another process): the writer thread
        # compares PRAGMA data_version with what it read at start in each transaction (_filter_complete) and
        # drops the filter for good at the first difference.
        self._filter: Optional[HubKeyFilter] = None
        self._filter_loaded = False
        # The keys of ids_log and their chunks' rids, while _log_synced: this connection's transactions with the
        # complete filter write the log, and keep this in step (cleared at a rollback, with _log_synced, so that
        # the next transaction moves the log into ids_recent first, as one without the filter does each time).
        self._keylog: HubKeyLog = _impl.core.HubKeyLog()
        self._log_synced = False
        self._data_version = 0
        self._filter_loader: Optional[threading.Thread] = None

    def _open(self) -> None:
        conn = _connect(self.path, self.busy_timeout, self.synchronous)
        self._local.conn = conn
        self._conns.append(conn)

    async def start(self) -> None:
        """Open the connections (in their threads) and make sure the schema exists."""
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="eventpush-hub-writer", initializer=self._open)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._create_schema)
        if self.path == ":memory:":
            self._reader = self._writer  # a second connection would open a different, empty database
        else:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="eventpush-hub-reader", initializer=self._open)
            # the writer no longer checkpoints on commit (see _create_schema): this thread does
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="eventpush-hub-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()
            if self._filter is not None and not self._filter_loaded:
                self._filter_loader = threading.Thread(target=self._load_filter, name="eventpush-hub-filter",
                                                       daemon=True)
                self._filter_loader.start()

    @property
    def key_filter(self) -> str:
        """``"on"`` (new ids skip the look in the index), ``"loading"`` (the keys stored at start are being
        read) or ``"off"`` (another connection writes the file, or SQLite lacks JSON1)."""
        return "off" if self._filter is None else "on" if self._filter_loaded else "loading"

    def _load_filter(self) -> None:
        """Filter thread: add the keys the file held at start to the filter, in one read transaction (a move
        between the tables meanwhile must not hide a key); the writer adds its own meanwhile."""
        t0 = time.monotonic()
        keyfilter = self._filter
        if keyfilter is None:  # pragma: no cover - started only with one
            return
        try:
            conn = _connect(self.path, self.busy_timeout, self.synchronous)
        except sqlite3.Error as exc:  # pragma: no cover - the writer opened the same file a moment ago
            log.warning("cannot open a connection to load the key filter (ids are looked up in SQLite): %s", exc)
            return
        try:
            conn.execute("BEGIN")
            keyfilter.add(conn.execute(_LOG_KEYS).fetchone()[0])  # at most what one move takes (_MERGE_AT)
            for table in ("ids", "ids_mid", "ids_recent"):
                last = -1
                while True:
                    if self._filter is None or self._closed:  # turned off (_filter_complete), or closing
                        return
                    last = keyfilter.add(conn.execute(_KEYS_AFTER.format(table=table), (last,)).fetchone()[0])
                    if last < 0:
                        break
            self._filter_loaded = True
            log.info("key filter loaded: %d ids in %.1f s (%d KiB)", keyfilter.keys, time.monotonic() - t0,
                     keyfilter.nbytes >> 10)
        except Exception as exc:
            log.warning("loading the key filter failed (ids are looked up in SQLite): %s", exc)
        finally:
            _rollback_quietly(conn)
            conn.close()

    def _filter_complete(self, conn: sqlite3.Connection) -> bool:
        """Writer thread, in a write transaction: whether the filter holds every key of the four tables."""
        if self._filter is None:
            return False
        if conn.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
            self._filter = None
            log.info("another connection writes %s: the key filter is off (ids are looked up in SQLite)", self.path)
            return False
        return self._filter_loaded

    def _checkpoint_loop(self) -> None:
        """Copy committed WAL frames into the database file in the background.

        With SQLite's automatic checkpoint, the commit that crosses 1,000 WAL pages copies them and syncs the
        database file before its request can be answered; under a steady stream of random-id inserts that was
        half of the writer's time. Here a checkpoint (``PASSIVE``: it never blocks the writer) follows commits on
        its own connection, at most once per ``_CHECKPOINT_EVERY`` seconds.

        SQLite writes the WAL from its start again only when a transaction begins after a checkpoint copied all
        of it, which a passive checkpoint racing a busy writer never does: the WAL would grow without end. So
        when it holds more than ``_WAL_REWIND_BYTES``, the writer is held back between two transactions while a
        second checkpoint copies what the first left (little), and its next transaction rewinds the WAL. Past
        ``_WAL_RESTART_BYTES`` (with ``--workers N`` other processes write too, and may keep it from rewinding)
        the second checkpoint is a ``RESTART``, which waits for them."""
        try:
            # a short wait: with --workers N another process's writer can keep a RESTART waiting, and this
            # process's writer is held back meanwhile; a RESTART that times out is tried again after a later commit
            conn = _connect(self.path, min(self.busy_timeout, _RESTART_WAIT), self.synchronous)
        except sqlite3.Error:  # pragma: no cover - the writer opened the same file a moment ago
            log.exception("cannot open the checkpoint connection; the WAL is checkpointed on close only")
            return
        wake = self._checkpoint_wake
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            while True:
                wake.wait(1.0)
                if self._closed:
                    return
                # PERF: a random-id commit rewrites most pages of the ids index; copying the WAL after every
                # commit copied those pages once per commit, a checkpoint a second copies them once (this
                # thread's CPU per event fell 4x, side by side)
                self._closed_event.wait(_CHECKPOINT_EVERY)
                wake.clear()
                if self._closed:
                    return
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # a transient failure: next time
                    log.debug("WAL checkpoint failed: %s", exc)
                    continue
                self.checkpoints += 1
                size = frames * page_size
                if size > _WAL_REWIND_BYTES:
                    # PERF: a rewound WAL is written over pages of the file that are allocated and cached; a
                    # growing one makes the kernel allocate, zero and write back new ones. With 500 events per
                    # request (a commit every few ms, each rewriting the ids_recent pages it touched) the writer
                    # thread took 2.1-3.2 us per event against 1.7-1.8 rewinding at 16 MiB, and the hub stored
                    # 241k-345k events/s against 323k-361k (six runs each, interleaved; README).
                    mode = "RESTART" if size > _WAL_RESTART_BYTES else "PASSIVE"
                    with self._writer_held():
                        try:
                            busy, frames, copied = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                        except sqlite3.Error as exc:
                            log.debug("WAL %s checkpoint failed: %s", mode, exc)
                        else:
                            if not busy and frames == copied:  # another process may have written meanwhile
                                self.rewinds += 1
        finally:
            conn.close()

    @contextmanager
    def _writer_held(self) -> Iterator[None]:
        """Checkpoint thread: hold the writer thread back between two transactions (the one it runs ends)."""
        self._writes_open.clear()
        try:
            with self._turn:
                yield
        finally:
            self._writes_open.set()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Writer thread: a turn to run one transaction (unless the checkpoint thread holds the writer back)."""
        self._writes_open.wait()
        with self._turn:
            yield

    def _create_schema(self) -> None:
        _check_writable(self._local.conn, self.path)  # a read-only database fails the start, not every write
        self._json = _ensure_schema(self._local.conn)
        if self.path != ":memory:":
            self._local.conn.execute("PRAGMA wal_autocheckpoint = 0")  # _checkpoint_loop does it
            # a rewound WAL is cut back to this size (the file would otherwise keep its high-water mark)
            self._local.conn.execute(f"PRAGMA journal_size_limit = {_WAL_KEEP_BYTES}")
        self._key = _hash_key(self._local.conn)
        self._recent_rows = self._local.conn.execute("SELECT count(*) FROM ids_recent").fetchone()[0]
        if self._json:
            self._recent_rows += self._local.conn.execute(_LOG_COUNT).fetchone()[0]
            # the version first: a write by another connection after it turns the filter off (_filter_complete)
            self._data_version = self._local.conn.execute("PRAGMA data_version").fetchone()[0]
            self._filter = _impl.core.HubKeyFilter()
            self._filter_loaded = not self._local.conn.execute(_ANY_KEY).fetchone()[0]
        if not self._json:
            log.info("SQLite %s without JSON1: inserting with executemany", sqlite3.sqlite_version)

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for ex in {id(e): e for e in (self._writer, self._reader) if e is not None}.values():
            await asyncio.get_running_loop().run_in_executor(None, ex.shutdown, True)
        if self._checkpointer is not None:
            self._closed_event.set()
            self._checkpoint_wake.set()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
        if self._filter_loader is not None:  # it stops at its next page of keys
            await asyncio.get_running_loop().run_in_executor(None, self._filter_loader.join)
        for conn in self._conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                log.exception("closing the database failed")

    async def insert(self, api: str, project: str, groups: Sequence[Group], seq_ids: Optional[str] = None) -> List[int]:
        """Store ``groups`` atomically; returns the positions of duplicates. ``seq_ids``: the events' ids are
        ``"{seq_ids}/{position}"`` (Barchart), else each event's root ``id``. Returns after the commit.

        Cancelled (e.g. by the server's graceful-shutdown timeout), the request is withdrawn: taken out of the
        queue, or, when the writer thread already holds it in an open transaction, left out of what that
        transaction commits (the others of its group are still committed). Nothing of it is stored, and the
        cancellation goes on. Only when its COMMIT is already running is it too late to withdraw: then the
        commit's outcome is awaited and returned as if there had been no cancellation (the request is answered
        for what happened to it)."""
        loop = asyncio.get_running_loop()
        write = _Write(api, project, groups, seq_ids, loop.create_future())
        # PERF: what the rows need is made here, on the event loop (it has time to spare), not on the writer
        # thread, whose transactions are the hub's bottleneck with storage on: the chunks' columns, and the ids'
        # hashes (a collection whose id the writer has not resolved yet, in its first request, is hashed there)
        write.packed = [_pack(bodies) for _, _, bodies in groups]
        if seq_ids is None and self._key:
            cids = self._cids
            hash_ids = _impl.core.hub_id_hashes
            for coll, eids, _ in groups:
                cid = cids.get((api, project, coll))
                if cid is None:
                    write.hashed.append(None)
                else:
                    hashes = hash_ids(self._key, cid, eids)
                    write.hashed.append((cid, (hashes, _id_keys(hashes) if self._json else "")))
        with self._lock:
            if self._writer is None or self._closed:
                raise ClosedError("the hub storage is not open (closed, or the app was started without its lifespan)")
            self._pending.append(write)
            if not self._draining:
                self._draining = True
                self._writer.submit(self._drain)
        try:
            # shielded: a cancellation must not cancel the future the writer thread resolves (see below)
            return await asyncio.shield(write.future)
        except asyncio.CancelledError:
            if self._withdraw(write):
                write.future.cancel()  # nobody waits for it any more (_resolve skips it)
                log.warning("a %s request was cancelled before its commit: withdrawn, nothing of it stored", api)
                raise
        # Too late to withdraw: its transaction is committing. Its outcome decides the answer.
        log.warning("a %s request was cancelled while its transaction committed: answered as committed", api)
        absorbed = 1
        while True:
            try:
                result = await asyncio.shield(write.future)
                break
            except asyncio.CancelledError:
                absorbed += 1
        uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+: mark them handled
        if uncancel is not None:
            for _ in range(absorbed):
                uncancel()
        return result

    def _withdraw(self, write: _Write) -> bool:
        """Take a cancelled request back before its commit; ``False`` when its COMMIT already runs."""
        with self._lock:
            if write.state == _QUEUED:
                try:
                    self._pending.remove(write)
                except ValueError:  # pragma: no cover - a queued write is in _pending
                    pass
                return True
            if write.state == _TAKEN:
                write.withdrawn = True  # the writer thread leaves it out of the transaction (_transaction)
                return True
            return False

    def _drain(self) -> None:
        """Writer thread: commit what is pending, a group of requests per transaction, until nothing is left."""
        while True:
            with self._lock:
                if not self._pending:
                    self._draining = False
                    return
                group = [self._pending.popleft()]
                n = group[0].size
                while self._pending and n < _GROUP_EVENTS:
                    n += self._pending[0].size
                    group.append(self._pending.popleft())
                for w in group:
                    w.state = _TAKEN
            try:
                with self._writing():
                    self._commit(group)
            except BaseException as exc:  # a request alone failed (or the thread is being torn down)
                for w in group:
                    if w.error is None:
                        w.error = exc
            # one wake-up of the event loop per group
            by_loop: Dict[asyncio.AbstractEventLoop, List[_Write]] = {}
            for w in group:
                by_loop.setdefault(w.future.get_loop(), []).append(w)
            for loop, writes in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, writes)
                except RuntimeError:  # pragma: no cover - that loop is closed: nobody waits for these results
                    pass
            if self._recent_rows >= _MERGE_AT:
                self._merge()
            elif self._slices:
                self._move_slice()  # one slice between two groups: the requests queued meanwhile wait for one

    def _merge(self) -> None:
        """Writer thread: move the keys of ``ids_recent`` into ``ids_mid`` (or, while ``ids`` holds fewer than
        ``_MID_FROM`` keys, into ``ids``), in one transaction between two groups (the requests of the last one are
        answered already); when ``ids_mid`` has grown past its limit, plan its move into ``ids``. With ``--workers
        N`` each process counts only its own inserts and moves, so it may move a table another process has just
        emptied (which costs little)."""
        conn: sqlite3.Connection = self._local.conn
        try:
            with self._writing():
                conn.execute("BEGIN IMMEDIATE")
                if self._ids_rows is None:
                    self._ids_rows = conn.execute("SELECT count(*) FROM ids").fetchone()[0]
                ids_rows: int = self._ids_rows
                to = "ids_mid" if ids_rows >= _MID_FROM else "ids"
                moved = conn.execute(_MOVE.format(to=to)).rowcount
                conn.execute("DELETE FROM ids_recent")
                if self._json:
                    moved += conn.execute(_LOG_MOVE.format(to=to)).rowcount
                    conn.execute(_LOG_CLEAR)
                mid = conn.execute("SELECT count(*) FROM ids_mid").fetchone()[0]
                conn.execute("COMMIT")
        except Exception as exc:  # the writer goes on draining: the keys stay in ids_recent, where they count
            _rollback_quietly(conn)
            self._recent_rows = _MERGE_AT // 2  # tried again after as many inserts again
            log.warning("moving the recent ids into the index failed (tried again later): %s", exc)
            return
        self._recent_rows = 0
        self._keylog.clear()  # the log is empty, as it is (or moved into ids_recent before its next use)
        self.merges += 1
        if to == "ids":
            ids_rows += moved
            self._ids_rows = ids_rows
        # ids_mid also moves when ids_recent no longer goes there (a file another process or an interrupted move
        # left keys in)
        if mid and not self._slices and (to == "ids" or mid >= _mid_limit(ids_rows)):
            self._slices = _slices(ids_rows)
        self._checkpoint_wake.set()

    def _move_slice(self) -> None:
        """Writer thread: move one key range of ``ids_mid`` into ``ids``, in one transaction between two groups."""
        conn: sqlite3.Connection = self._local.conn
        lo, hi = self._slices[0]
        try:
            with self._writing():
                conn.execute("BEGIN IMMEDIATE")
                moved = conn.execute(_MOVE_RANGE, (lo, hi)).rowcount
                conn.execute(_DROP_RANGE, (lo, hi))
                conn.execute("COMMIT")
        except Exception as exc:  # the keys stay in ids_mid, where they count: planned again at the next _merge
            _rollback_quietly(conn)
            self._slices = []
            log.warning("moving ids into the index failed (tried again later): %s", exc)
            return
        del self._slices[0]
        self._ids_rows = (self._ids_rows or 0) + moved
        self.slices += 1
        self._checkpoint_wake.set()

    def _commit(self, group: List["_Write"]) -> None:
        """Group commit: every request of ``group`` in one transaction (one WAL write and one sync for all).
        When the transaction fails, it is rolled back and each request is retried alone, so that only the
        request that fails sees the error."""
        try:
            self._transaction(group)
            return
        except Exception:
            if len(group) == 1:
                raise
            log.warning("a grouped transaction of %d requests failed; committing them one by one", len(group))
        for w in group:
            try:
                self._transaction([w])
            except Exception as exc:
                w.error = exc

    def _cid(self, conn: sqlite3.Connection, key: Tuple[str, str, str]) -> int:
        cid = self._cids.get(key)
        if cid is None:
            conn.execute("INSERT OR IGNORE INTO collections (api, project, name) VALUES (?, ?, ?)", key)
            cid = conn.execute(
                "SELECT cid FROM collections WHERE api = ? AND project = ? AND name = ?", key
            ).fetchone()[0]
            self._cids[key] = cid
        return cid

    def _live(self, writes: List["_Write"]) -> List["_Write"]:
        """The writes of ``writes`` whose handlers still wait (not withdrawn)."""
        with self._lock:
            return [w for w in writes if not w.withdrawn]

    def _transaction(self, writes: List["_Write"]) -> None:
        """One transaction for ``writes``, each all or nothing. A write withdrawn (its handler was cancelled)
        before the COMMIT is left out: the transaction is rolled back and run again without it."""
        conn: sqlite3.Connection = self._local.conn
        writes = self._live(writes)
        if not writes:
            return
        recent = self._json and sum(w.size for w in writes) < _RECENT_BELOW
        conn.execute("BEGIN IMMEDIATE")  # may wait long for the write lock: withdrawals are checked after it
        try:
            while True:
                writes = self._live(writes)
                split = self._filter_complete(conn) and recent  # looks at the data version in every transaction
                # with the log only the few keys the filter may have seen are looked up: in ids_mid too, empty or not
                mid = not recent or split or conn.execute(_MID_USED).fetchone() is not None
                if not (split and self._log_synced):
                    self._flush_log(conn)  # (its keys were counted in _recent_rows when logged)
                    self._log_synced = split
                keylog = self._keylog if split else None
                for w in writes:
                    w.dups = self._insert(conn, w, recent, mid, keylog)
                with self._lock:
                    if not any(w.withdrawn for w in writes):
                        for w in writes:  # past this point a cancelled handler waits for the outcome
                            w.state = _COMMITTING
                        break
                # a handler was cancelled meanwhile: its rows must not commit with the others
                conn.execute("ROLLBACK")
                self._rolled_back()
                conn.execute("BEGIN IMMEDIATE")  # this connection held the write lock a moment ago
            if not writes:
                conn.execute("ROLLBACK")
                return
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            self._rolled_back()
            with self._lock:  # nothing was committed: a retry alone (_commit) may still leave a withdrawn one out
                for w in writes:
                    if w.state == _COMMITTING:
                        w.state = _TAKEN
            raise
        self.transactions += 1
        if recent:
            self._recent_rows += sum(w.size - len(w.dups) for w in writes if w.seq_ids is None)
        self._checkpoint_wake.set()
        publish = self.publish
        if publish is not None:
            for w in writes:
                skip = set(w.dups)
                pos = 0
                try:
                    for coll, _, bodies in w.groups:
                        for body in bodies:
                            if pos not in skip:
                                publish(w.api, coll, body)
                            pos += 1
                except Exception:  # the events are committed: a realtime failure must not fail the request
                    log.exception("realtime publish failed after commit (api %s)", w.api)

    def _rolled_back(self) -> None:
        """Writer thread, after a rollback: what this connection cached of the file may be gone with it."""
        self._cids.clear()  # a rolled-back collection row must not stay cached
        self._keylog.clear()  # the next transaction moves the log into ids_recent (_flush_log)
        self._log_synced = False

    def _flush_log(self, conn: sqlite3.Connection) -> None:
        """Writer thread, in a write transaction: move the keys of ``ids_log`` into ``ids_recent``, where a
        transaction without the log in memory looks them up."""
        self._keylog.clear()
        if self._json:
            conn.execute(_LOG_FLUSH)
        else:  # SQLite without JSON1 (a file another one wrote): the log's rows read here
            for ref, keys in conn.execute("SELECT ref, keys FROM ids_log").fetchall():
                conn.executemany("INSERT OR IGNORE INTO ids_recent (h, ref) VALUES (?, ?)",
                                 [(k, ref) for k in orjson.loads(keys)])
        conn.execute(_LOG_CLEAR)

    def _insert(self, conn: sqlite3.Connection, w: "_Write", recent: bool = False, mid: bool = True,
                keylog: Optional[HubKeyLog] = None) -> List[int]:
        """One request's chunks, inside the open transaction; returns the positions of its duplicates."""
        dups: List[int] = []
        offset = 0
        for g, (coll, eids, bodies) in enumerate(w.groups):
            cid = self._cid(conn, (w.api, w.project, coll))
            pre = w.hashed[g] if g < len(w.hashed) else None
            hashed = pre[1] if pre is not None and pre[0] == cid else None  # hashed under the cid the loop saw
            packed = w.packed[g] if g < len(w.packed) else None
            dups.extend(offset + i for i in _store_chunk(conn, self._key, cid, eids, bodies, w.seq_ids,
                                                         self._json, hashed, packed, recent, mid,
                                                         self._filter, keylog))
            offset += len(eids)
        return dups

    async def recent(self, api: str, project: str, collection: str, limit: int) -> List[str]:
        if self._reader is None or self._closed:
            raise ClosedError("the hub storage is not open (closed, or the app was started without its lifespan)")
        return await asyncio.get_running_loop().run_in_executor(
            self._reader, self._recent, api, project, collection, limit
        )

    def _recent(self, api: str, project: str, collection: str, limit: int) -> List[str]:
        return self._recent_page(api, project, collection, limit, None)[0]

    async def recent_page(self, api: str, project: str, collection: str, limit: int,
                          before: Optional[int] = None) -> Tuple[List[str], Optional[int]]:
        if self._reader is None or self._closed:
            raise ClosedError("the hub storage is not open (closed, or the app was started without its lifespan)")
        return await asyncio.get_running_loop().run_in_executor(
            self._reader, self._recent_page, api, project, collection, limit, before
        )

    def _recent_page(self, api: str, project: str, collection: str, limit: int,
                     before: Optional[int]) -> Tuple[List[str], Optional[int]]:
        conn: sqlite3.Connection = self._local.conn
        row = conn.execute(
            "SELECT cid FROM collections WHERE api = ? AND project = ? AND name = ?", (api, project, collection)
        ).fetchone()
        if row is None:
            return [], None
        if before is None:
            top_rid, top_pos = -1, 0
            cur = conn.execute("SELECT rid, CAST(body AS BLOB), ends, skip FROM chunks WHERE cid = ? "
                               "ORDER BY rid DESC", (row[0],))
        else:
            top_rid, top_pos = divmod(before, 1 << _POS_BITS)
            cur = conn.execute("SELECT rid, CAST(body AS BLOB), ends, skip FROM chunks WHERE cid = ? AND rid <= ? "
                               "ORDER BY rid DESC", (row[0], top_rid))
        out: List[str] = []
        try:
            for rid, body, ends, skip in cur:
                spans = _split(body, ends)
                skipped = set(orjson.loads(skip)) if skip else ()
                for i in range(top_pos - 1 if rid == top_rid else len(spans) - 1, -1, -1):
                    if i in skipped:
                        continue
                    start, end = spans[i]
                    out.append(body[start:end].decode())
                    if len(out) == limit:
                        return out, (rid << _POS_BITS) | i
        finally:
            cur.close()
        return out, None
