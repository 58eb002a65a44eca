"""The hub's SQLite storage on a real file, both insert paths (json_each and the executemany fallback)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import uuid
from typing import Awaitable

import orjson
import pytest

from eventpush.errors import ClosedError
from eventpush.hub import storage
from eventpush.hub.storage import SQLiteStorage


def put(st: SQLiteStorage, eids: list) -> "Awaitable[list]":
    """Store ``eids`` as one request of Connect events ``{"id": ...}`` in project ``p``, collection ``c``."""
    return st.insert("connect", "p", [("c", eids, [b'{"id":"%s"}' % e.encode() for e in eids])])


async def put_settled(st: SQLiteStorage, r: int) -> None:
    """Store request ``r`` (30 new ids), then wait until the writer thread is done with it: the index moves run
    after the reply."""
    assert await put(st, [f"r{r}-{i}" for i in range(30)]) == []
    await asyncio.get_running_loop().run_in_executor(st._writer, lambda: None)


_LOG_KEYS = "SELECT j.value FROM ids_log l, json_each(l.keys) j"


def index_counts(db: str) -> tuple:
    """The keys in ``ids``, ``ids_mid`` and the recent level (``ids_recent`` and ``ids_log``), and the distinct keys
    over them all."""
    with sqlite3.connect(db) as conn:
        counts = tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("ids", "ids_mid"))
        recent = sum(log_counts(db))
        keys = conn.execute("SELECT count(DISTINCT h) FROM (SELECT h FROM ids UNION ALL SELECT h FROM ids_mid "
                            f"UNION ALL SELECT h FROM ids_recent UNION ALL {_LOG_KEYS})").fetchone()[0]
    return counts + (recent, keys)


def log_counts(db: str) -> tuple:
    """The keys in ``ids_recent`` and in ``ids_log``."""
    with sqlite3.connect(db) as conn:
        return (conn.execute("SELECT count(*) FROM ids_recent").fetchone()[0],
                conn.execute(f"SELECT count(*) FROM ({_LOG_KEYS})").fetchone()[0])


@pytest.mark.parametrize("json_path", [True, False], ids=["json_each", "executemany"])
def test_insert_duplicates_publish_and_close(tmp_path, json_path):
    db = str(tmp_path / "s.db")
    published = []

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert st._json is True  # this SQLite has JSON1; the fallback is forced below
        st._json = json_path
        st.publish = lambda api, coll, body: published.append((api, coll, body))
        assert await st.insert("connect", "p", [("c", ["1", "x\x00y"], [b'{"id":"1"}', b'{"id":"x\\u0000y"}'])]) == []
        groups = [
            ("c", ["1", "2", "x\x00y"], [b'{"id":"1","v":2}', b'{"id":"2"}', b'{"id":"x\\u0000y"}']),
            ("d", ["1"], [b'{"id":"1"}']),
        ]
        assert await st.insert("connect", "p", groups) == [0, 2]
        assert await st.insert("connect", "other", groups) == []  # projects do not share ids
        assert await st.insert("barchart", "", [("events", ["b/0", "b/1"], [b'{"a":0}', b'{"a":1}'])],
                               seq_ids="b") == []
        assert await st.recent("connect", "p", "c", 2) == ['{"id":"2"}', '{"id":"x\\u0000y"}']
        await st.close()
        with pytest.raises(ClosedError):
            await st.insert("connect", "p", groups)
        with pytest.raises(ClosedError):
            await st.recent("connect", "p", "c", 1)

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT c.api, c.project, c.name, e.eid, e.body FROM events e JOIN collections c "
                            "USING (cid) ORDER BY e.seq").fetchall()
    # the events view names each id (SQLite's json_extract cuts an id at U+0000: the body has it whole)
    assert rows[:4] == [
        ("connect", "p", "c", "1", '{"id":"1"}'),
        ("connect", "p", "c", "x", '{"id":"x\\u0000y"}'),
        ("connect", "p", "c", "2", '{"id":"2"}'),
        ("connect", "p", "d", "1", '{"id":"1"}'),
    ]
    assert rows[-2:] == [("barchart", "", "events", "b/0", '{"a":0}'), ("barchart", "", "events", "b/1", '{"a":1}')]
    # published after commit, duplicates left out
    assert [(a, c, b) for a, c, b in published[:4]] == [
        ("connect", "c", b'{"id":"1"}'), ("connect", "c", b'{"id":"x\\u0000y"}'),
        ("connect", "c", b'{"id":"2"}'), ("connect", "d", b'{"id":"1"}'),
    ]
    assert len(published) == 4 + 4 + 2


def test_failed_transaction_rolls_back_everything(tmp_path):
    db = str(tmp_path / "r.db")

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        await st.insert("connect", "p", [("c", ["1"], [b'{"id":"1"}'])])
        with sqlite3.connect(db) as conn:  # another process breaks the table under the hub
            conn.execute("CREATE TRIGGER boom BEFORE INSERT ON chunks WHEN NEW.body LIKE '%\"bad\"%' "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(sqlite3.DatabaseError):
            await st.insert("connect", "p", [("new-coll", ["ok"], [b'{"id":"ok"}']), ("c", ["bad"], [b'{"id":"bad"}'])])
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER boom")
        # nothing of the failed request stayed, and the collection cache did not keep the rolled-back row
        assert await st.insert("connect", "p", [("new-coll", ["ok"], [b'{"id":"ok"}'])]) == []
        await st.close()

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT eid FROM events ORDER BY seq").fetchall() == [("1",), ("ok",)]
        assert conn.execute("SELECT count(*) FROM collections WHERE name = 'new-coll'").fetchone()[0] == 1


def test_group_commit_keeps_each_request_all_or_nothing(tmp_path):
    """Requests that queue up while the writer is busy share one transaction; their results are what they would
    be one after the other, and a request that fails inside a group fails alone."""
    db = str(tmp_path / "g.db")

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        await st.insert("connect", "p", [("c", ["0"], [b'{"id":"0"}'])])
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TRIGGER boom BEFORE INSERT ON chunks WHEN NEW.body LIKE '%\"bad\"%' "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        before = st.transactions
        gate = threading.Event()
        st._writer.submit(gate.wait)  # the writer is busy: the next requests queue up behind it
        tasks = [
            asyncio.ensure_future(st.insert("connect", "p", [("c", ["1", "2"], [b'{"id":"1"}', b'{"id":"2"}'])])),
            asyncio.ensure_future(st.insert("connect", "p", [("c", ["2", "3", "0"], [b'{"id":"2","n":2}',
                                                                                  b'{"id":"3"}', b'{"id":"0"}'])])),
            asyncio.ensure_future(st.insert("connect", "p", [("c", ["4", "bad"], [b'{"id":"4"}', b'{"id":"bad"}'])])),
            asyncio.ensure_future(st.insert("connect", "p", [("d", ["1"], [b'{"id":"1"}'])])),
        ]
        await asyncio.sleep(0.05)
        assert st.transactions == before  # nothing committed while the writer was held
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == [] and results[1] == [0, 2] and results[3] == []
        assert isinstance(results[2], sqlite3.DatabaseError) and "refused" in str(results[2])
        # the grouped transaction failed on 'bad', so the three good requests were committed one by one
        assert st.transactions == before + 3
        # without a failing request, the queued requests share one transaction
        gate.clear()
        st._writer.submit(gate.wait)
        tasks = [asyncio.ensure_future(st.insert("connect", "p", [("e", [str(i)], [b'{"id":"%d"}' % i])]))
                 for i in range(10)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(*tasks) == [[]] * 10
        assert st.transactions == before + 4
        await st.close()

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT c.name, e.eid, e.body FROM events e JOIN collections c USING (cid) "
                            "ORDER BY e.seq").fetchall()
    assert rows[:5] == [("c", "0", '{"id":"0"}'), ("c", "1", '{"id":"1"}'), ("c", "2", '{"id":"2"}'),
                        ("c", "3", '{"id":"3"}'), ("d", "1", '{"id":"1"}')]
    assert rows[5:] == [("e", str(i), '{"id":"%d"}' % i) for i in range(10)]  # nothing of the failed request


@pytest.mark.parametrize("restart_bytes", [256 << 20, 1 << 20], ids=["rewind", "restart"])
def test_background_checkpoint_bounds_the_wal(tmp_path, monkeypatch, restart_bytes):
    """The writer does not checkpoint; the background checkpoint keeps the WAL bounded under continuous writes
    (holding the writer back to rewind it past the cap: with a passive checkpoint, or with a RESTART past the
    second cap) and every committed row is in the database."""
    monkeypatch.setattr(storage, "_WAL_REWIND_BYTES", 1 << 20)
    monkeypatch.setattr(storage, "_WAL_RESTART_BYTES", restart_bytes)
    monkeypatch.setattr(storage, "_WAL_KEEP_BYTES", 1 << 20)
    monkeypatch.setattr(storage, "_CHECKPOINT_EVERY", 0.01)
    db = str(tmp_path / "w.db")
    body = b'{"id":"%s","pad":"' + b"x" * 400 + b'"}'
    wal_sizes = []

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        n = 0
        for _ in range(60):  # ~60 x 500 x 430 bytes: ~13 MB of rows, plus the index
            ids = [str(uuid.uuid4()) for _ in range(500)]
            await st.insert("connect", "p", [("c", ids, [body % i.encode() for i in ids])])
            n += 500
            wal_sizes.append(os.stat(db + "-wal").st_size)
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        assert st.checkpoints > 0
        assert st.rewinds > 0
        assert st.key_filter == "on"  # this process's own checkpoints are no other writer (PRAGMA data_version)
        await st.close()
        assert not os.path.exists(db + "-wal") or os.stat(db + "-wal").st_size == 0

    asyncio.run(main())
    # without rewinds the WAL would hold every page written: well over 13 MB
    assert max(wal_sizes) < 12 << 20, wal_sizes
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 30_000
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_checkpoint_thread_holds_the_writer_between_transactions(tmp_path, monkeypatch):
    """``_writer_held`` waits for the transaction the writer runs to end, and no transaction starts until it is
    let go: what the WAL rewind relies on."""
    db = str(tmp_path / "h.db")
    in_txn = threading.Event()
    gate = threading.Event()
    insert = SQLiteStorage._insert

    def slow_insert(self, *args):
        in_txn.set()
        gate.wait(5)
        return insert(self, *args)

    monkeypatch.setattr(SQLiteStorage, "_insert", slow_insert)
    held = threading.Event()
    release = threading.Event()

    def hold(st: SQLiteStorage) -> None:
        with st._writer_held():
            held.set()
            release.wait(5)

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        first = asyncio.ensure_future(put(st, ["a"]))
        assert await asyncio.to_thread(in_txn.wait, 5)
        holder = threading.Thread(target=hold, args=(st,))
        holder.start()
        assert not await asyncio.to_thread(held.wait, 0.2)  # the transaction runs: the hold waits for it
        gate.set()
        assert await first == []
        assert await asyncio.to_thread(held.wait, 5)
        before = st.transactions
        second = asyncio.ensure_future(put(st, ["b"]))
        done, _ = await asyncio.wait([second], timeout=0.3)
        assert not done and st.transactions == before  # held: no transaction starts
        release.set()
        assert await second == []
        await asyncio.to_thread(holder.join)
        assert st.transactions == before + 1
        await st.close()

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT eid FROM events ORDER BY seq").fetchall() == [("a",), ("b",)]


_LAYOUT_1 = (  # the schema of storage layout 1 (one row per event), as an earlier version made it
    "CREATE TABLE collections (cid INTEGER PRIMARY KEY, api TEXT NOT NULL, project TEXT NOT NULL, "
    "name TEXT NOT NULL, UNIQUE (api, project, name))",
    "CREATE TABLE events (cid INTEGER NOT NULL, eid TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE UNIQUE INDEX events_cid_eid ON events (cid, eid)",
    "CREATE INDEX events_cid ON events (cid)",
)


def test_a_layout_1_database_is_converted_once(tmp_path, caplog):
    """A database of layout 1 (one ``events`` row per event) is converted when opened: every event kept, in
    order, per collection; GET reads them newest first; their ids still count as duplicates; said in the log."""
    db = str(tmp_path / "old.db")
    with sqlite3.connect(db) as conn:
        for stmt in _LAYOUT_1:
            conn.execute(stmt)
        conn.execute("INSERT INTO collections (api, project, name) VALUES ('connect', 'p', 'c')")
        conn.execute("INSERT INTO collections (api, project, name) VALUES ('barchart', '', 'events')")
        conn.execute("INSERT INTO collections (api, project, name) VALUES ('connect', 'p', 'd')")
        conn.executemany("INSERT INTO events VALUES (1, ?, ?)",
                         ((str(i), '{"id":"%d","n":%d}' % (i, i)) for i in range(7000)))
        conn.executemany("INSERT INTO events VALUES (2, ?, ?)",
                         ((f"{b}/{i}", '{"b":"%s","i":%d}' % (b, i)) for b in ("B1", "B2") for i in range(3)))
        conn.execute("""INSERT INTO events VALUES (3, 'é', '{"id":"é"}')""")
    caplog.set_level("INFO", logger="eventpush.hub")

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert await st.recent("connect", "p", "c", 3) == ['{"id":"6999","n":6999}', '{"id":"6998","n":6998}',
                                                           '{"id":"6997","n":6997}']
        assert await st.recent("connect", "p", "d", 5) == ['{"id":"é"}']
        # the converted ids are still known: duplicates, while a new id is stored
        dups = await st.insert("connect", "p", [("c", ["5", "new", "6999"], [b'{"id":"5"}', b'{"id":"new"}',
                                                                             b'{"id":"6999"}'])])
        assert dups == [0, 2]
        assert await st.insert("connect", "p", [("d", ["é"], [b'{"id":"\xc3\xa9"}'])]) == [0]
        await st.close()

    asyncio.run(main())
    assert f"converting 7007 stored events to storage layout {storage.LAYOUT}" in caplog.text
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT cid, eid, body FROM events ORDER BY seq").fetchall()
        assert [r for r in rows if r[0] == 1] == [(1, str(i), '{"id":"%d","n":%d}' % (i, i)) for i in range(7000)] + [
            (1, "new", '{"id":"new"}')]
        assert [r[1:] for r in rows if r[0] == 2] == [(f"{b}/{i}", '{"b":"%s","i":%d}' % (b, i))
                                                      for b in ("B1", "B2") for i in range(3)]
        assert conn.execute("SELECT count(*) FROM chunks WHERE cid = 1").fetchone()[0] == 3  # 5,000 + 2,000 + 1
        # the converted keys in ids, the later request's (a small transaction) in the recent level
        assert conn.execute("SELECT count(*) FROM ids").fetchone()[0] == 7001
        assert sum(log_counts(db)) == 1
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'events_%'").fetchone()[0] == 0
        plan = " ".join(r[-1] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT body FROM chunks WHERE cid = ? ORDER BY rid DESC", (1,)))
        assert "chunks_cid" in plan and "TEMP B-TREE" not in plan
    caplog.clear()

    async def again() -> None:  # opened again: nothing left to convert
        st = SQLiteStorage(db)
        await st.start()
        assert len(await st.recent("connect", "p", "c", 10_000)) == 7001
        await st.close()

    asyncio.run(again())
    assert "converting" not in caplog.text


def test_a_cancelled_request_is_left_out_of_its_group(tmp_path):
    """A request whose handler is cancelled is withdrawn: taken out of the queue, or, when the writer thread
    already holds it in an open grouped transaction, left out of what that transaction commits; the other
    requests of the group are committed, each whole."""
    db = str(tmp_path / "w.db")

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        entered, release = threading.Event(), threading.Event()

        def hold() -> int:  # called by a trigger inside the transaction, on the writer thread
            if not release.is_set():
                entered.set()
                release.wait(30)
            return 0

        st._writer.submit(lambda: st._local.conn.create_function("hold", 0, hold)).result()
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TRIGGER slow BEFORE INSERT ON chunks WHEN NEW.body LIKE '%\"hold\"%' "
                         "BEGIN SELECT hold(); END")
        gate = threading.Event()
        st._writer.submit(gate.wait)  # the writer is busy: the next requests queue up and form one group
        a = asyncio.ensure_future(st.insert("connect", "p", [("c", ["a1", "a2"], [b'{"id":"a1"}', b'{"id":"a2"}'])]))
        b = asyncio.ensure_future(st.insert("connect", "p", [("c", ["hold", "b"], [b'{"id":"hold"}', b'{"id":"b"}'])]))
        c = asyncio.ensure_future(st.insert("connect", "p", [("d", ["c"], [b'{"id":"c"}'])]))
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 30)
        # a's rows are in the open transaction, b's are being inserted; d queues behind the group
        d = asyncio.ensure_future(st.insert("connect", "p", [("c", ["d"], [b'{"id":"d"}'])]))
        await asyncio.sleep(0.05)
        a.cancel()
        d.cancel()
        await asyncio.gather(a, d, return_exceptions=True)
        release.set()
        assert await b == [] and await c == []
        assert a.cancelled() and d.cancelled()
        assert await st.insert("connect", "p", [("c", ["a1", "e"], [b'{"id":"a1"}', b'{"id":"e"}'])]) == []
        await st.close()

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        got = conn.execute("SELECT c.name, e.eid FROM events e JOIN collections c USING (cid) "
                           "ORDER BY e.seq").fetchall()
    assert got == [("c", "hold"), ("c", "b"), ("d", "c"), ("c", "a1"), ("c", "e")]


@pytest.mark.parametrize("keyfilter", ["on", "off"])
@pytest.mark.parametrize("index", ["ids", "ids_recent", "both", "three"])
@pytest.mark.parametrize("bits", [2, 64], ids=["4-hashes", "full-hash"])
def test_duplicates_are_exact_whatever_the_hashes_collide(tmp_path, monkeypatch, bits, index, keyfilter):
    """The ids index holds 64-bit hashes: a taken hash is a duplicate only when the stored event holding it has the
    same collection and id; another id with that hash (a collision) is still stored, once. With the hashes cut to
    2 bits nearly every insert collides; duplicates, GET and the events view must still be exactly those of a
    plain set of (project, collection, id), for ids repeated within a request, across requests and collections.
    ``index``: every transaction's keys go to ``ids``, or to ``ids_recent`` (never merged), or small transactions
    to ``ids_recent`` and larger ones to ``ids``, with ``ids_recent`` merged into ``ids`` every 25 keys, or
    (``three``) every transaction's keys to ``ids_recent``, moved into ``ids_mid`` every 25 keys, which moves into
    ``ids`` in slices of the key range. ``keyfilter="off"``: every key is looked up in SQLite, as while the
    filter loads or when another process writes."""
    from eventpush import _impl

    if keyfilter == "off":
        monkeypatch.setattr(SQLiteStorage, "_filter_complete", lambda self, conn: False)

    below, merge_at = {"ids": (0, 10 ** 9), "ids_recent": (10 ** 9, 10 ** 9), "both": (15, 25),
                       "three": (10 ** 9, 25)}[index]
    monkeypatch.setattr(storage, "_RECENT_BELOW", below)
    monkeypatch.setattr(storage, "_MERGE_AT", merge_at)
    monkeypatch.setattr(storage, "_MID_FROM", 0 if index == "three" else 10 ** 9)
    monkeypatch.setattr(storage, "_SLICE_ROWS", 20)

    real = _impl.core.hub_id_hashes
    if bits < 64:
        monkeypatch.setattr(_impl.core, "hub_id_hashes",
                            lambda key, cid, ids: [h & ((1 << bits) - 1) for h in real(key, cid, ids)])
    db = str(tmp_path / "h.db")
    rng = __import__("random").Random(7)
    seen: set = set()
    stored: dict = {}

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        for r in range(60):
            project = rng.choice(["p", "q"])
            groups, want, pos = [], [], 0
            for coll in rng.sample(["c", "d", "é"], rng.randint(1, 3)):
                eids = [f"id{rng.randint(0, 40)}" for _ in range(rng.randint(1, 12))]
                groups.append((coll, eids, [b'{"id":"%s","r":%d}' % (e.encode(), r) for e in eids]))
                for e in eids:
                    if (project, coll, e) in seen:
                        want.append(pos)
                    else:
                        seen.add((project, coll, e))
                        stored.setdefault((project, coll), []).append('{"id":"%s","r":%d}' % (e, r))
                    pos += 1
            assert await st.insert("connect", project, groups) == want, r
        assert st.key_filter == "on"  # (its splits unused with "off")
        for (project, coll), bodies in stored.items():
            assert await st.recent("connect", project, coll, 1000) == bodies[::-1]
            # paged, three at a time, through the cursor
            got, cursor = await st.recent_page("connect", project, coll, 3)
            while cursor is not None:
                page, cursor = await st.recent_page("connect", project, coll, 3, cursor)
                got += page
            assert got == bodies[::-1]
        await st.close()

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT c.project, c.name, e.eid, e.body FROM events e JOIN collections c USING (cid) "
                            "ORDER BY e.seq").fetchall()
        collided = conn.execute("SELECT count(*) FROM ids_collided").fetchone()[0]
    in_main, in_mid, in_recent, keys = index_counts(db)
    assert keys == in_main + in_mid + in_recent  # a key is in one of the three tables only
    assert (in_main > 0, in_mid > 0, in_recent > 0) == {
        "ids": (True, False, False), "ids_recent": (False, False, True), "both": (True, False, in_recent > 0),
        "three": (in_main > 0 if bits < 64 else True, in_mid > 0, in_recent > 0)}[index]  # 4 keys may stay in mid
    assert sorted((p, c, e) for p, c, e, _ in rows) == sorted(seen)
    for (project, coll), bodies in stored.items():
        assert [b for p, c, _, b in rows if (p, c) == (project, coll)] == bodies
    assert (collided > 0) == (bits < 64)


def test_a_database_of_another_layout_is_refused(tmp_path):
    """A file whose hub_meta says another storage layout (a newer eventpush wrote it) is refused at start, with the
    layout named, and left as it was."""
    db = str(tmp_path / "new.db")
    storage.init_db(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE hub_meta SET value = 6 WHERE name = 'layout'")
    with pytest.raises(sqlite3.DatabaseError, match="storage layout 6"):
        storage.init_db(db)

    async def main() -> None:
        st = SQLiteStorage(db)
        with pytest.raises(sqlite3.DatabaseError, match="storage layout 6"):
            await st.start()
        await st.close()

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM hub_meta WHERE name = 'layout'").fetchone()[0] == 6


@pytest.mark.parametrize("layout", [2, 3, 4])
def test_a_layout_2_3_or_4_database_gets_the_new_tables_and_keeps_its_duplicates(tmp_path, caplog, layout):
    """Layout 2 had no ``ids_recent``, layout 3 no ``ids_mid`` and layout 4 no ``ids_log``: such a file is brought
    to layout 5 by adding the (empty) tables, and the ids it holds are still duplicates; new keys go to one table,
    never two."""
    db = str(tmp_path / "old.db")

    async def first() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert await put(st, [f"a{i}" for i in range(20)]) == []
        await st.close()

    asyncio.run(first())
    assert log_counts(db) == (0, 20)  # a new file, the filter complete: the keys went into the log
    with sqlite3.connect(db) as conn:  # what layout 2 was: its keys in ids; layouts 3 and 4: in ids and ids_recent
        conn.execute("INSERT INTO ids_recent (h, ref) " + _LOG_KEYS.replace("j.value", "j.value, l.ref"))
        conn.execute("DROP TABLE ids_log")
        conn.execute("INSERT INTO ids SELECT h, ref FROM ids_recent WHERE h % 2 = 1 OR ?", (layout == 2,))
        conn.execute("DELETE FROM ids_recent WHERE h IN (SELECT h FROM ids)")
        in_ids = conn.execute("SELECT count(*) FROM ids").fetchone()[0]
        assert in_ids == 20 if layout == 2 else 0 < in_ids < 20  # layout 3: in both tables (odd keys in ids)
        if layout < 4:
            conn.execute("DROP TABLE ids_mid")
        if layout == 2:
            conn.execute("DROP TABLE ids_recent")
        conn.execute("UPDATE hub_meta SET value = ? WHERE name = 'layout'", (layout,))

    async def second() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert await put(st, ["a3", "b1", "a19", "b2"]) == [0, 2]
        assert await put(st, ["b1", "a0", "b3"]) == [0, 1]
        assert await st.recent("connect", "p", "c", 3) == ['{"id":"b3"}', '{"id":"b2"}', '{"id":"b1"}']
        await st.close()

    with caplog.at_level("INFO", logger="eventpush.hub"):
        asyncio.run(second())
    assert f"storage layout {layout} brought to 5" in caplog.text
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM hub_meta WHERE name = 'layout'").fetchone()[0] == 5
        counts = index_counts(db)
        assert sum(counts[:3]) == 23 and counts[1] == 0 and counts[2] >= 3
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 23


def test_ids_recent_is_merged_into_ids(tmp_path, monkeypatch):
    """Past _MERGE_AT keys, ``ids_recent`` moves into ``ids`` between two transactions; duplicates of ids on both
    sides of the merge are found, and a transaction of _RECENT_BELOW keys or more goes straight to ``ids``."""
    monkeypatch.setattr(storage, "_MERGE_AT", 100)
    monkeypatch.setattr(storage, "_RECENT_BELOW", 200)
    db = str(tmp_path / "m.db")

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        for r in range(6):  # 6 x 30 keys: merged after the 4th request
            assert await put(st, [f"r{r}-{i}" for i in range(30)]) == []
        assert st.merges == 1
        assert await put(st, ["r0-1", "r5-2", "new-1", "r3-29"]) == [0, 1, 3]
        big = [f"big-{i}" for i in range(storage._RECENT_BELOW)] + ["r4-0", "r5-0", "new-1"]
        assert await put(st, big) == [len(big) - 3, len(big) - 2, len(big) - 1]
        await st.close()

    asyncio.run(main())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM ids").fetchone()[0] == 120 + storage._RECENT_BELOW
    assert sum(log_counts(db)) == 61


def test_past_mid_from_ids_recent_moves_through_ids_mid_into_ids_in_slices(tmp_path, monkeypatch):
    """Once ``ids`` holds _MID_FROM keys, ``ids_recent`` moves into ``ids_mid``, and ``ids_mid``, past
    √(2 · _MERGE_AT · keys of ids), into ``ids``: a slice of the key range after each later request. Every key
    stays a duplicate wherever it is, and is in one table only."""
    monkeypatch.setattr(storage, "_MERGE_AT", 100)
    monkeypatch.setattr(storage, "_MID_FROM", 150)
    monkeypatch.setattr(storage, "_SLICE_ROWS", 100)
    db = str(tmp_path / "l.db")
    sizes = []

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        for r in range(19):
            await put_settled(st, r)
            sizes.append((st.merges, st.slices, index_counts(db)[:3]))
        # 4 requests fill ids_recent: moves 1 and 2 go into ids (120, then 240 keys: past _MID_FROM), moves 3 and 4
        # into ids_mid, which then holds 240 keys, past isqrt(2 * 100 * 240) = 219: three slices of ids's 240 keys
        assert sizes[3] == (1, 0, (120, 0, 0)) and sizes[7] == (2, 0, (240, 0, 0))
        assert sizes[11] == (3, 0, (240, 120, 0))
        assert sizes[15] == (4, 0, (240, 240, 0))
        assert [s[1] for s in sizes[16:]] == [1, 2, 3]  # a slice after each later request
        assert sizes[18][2] == (480, 0, 90)
        again = [f"r{r}-{i}" for r in range(19) for i in (0, 29)] + ["new"]
        assert await put(st, again) == list(range(len(again) - 1))
        await st.close()

    asyncio.run(main())
    assert index_counts(db)[3] == 19 * 30 + 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_failed_move_leaves_every_key_where_it_still_counts(tmp_path, monkeypatch, caplog):
    """A move of ``ids_recent`` or of an ``ids_mid`` slice that fails is rolled back and logged: the writer goes
    on, every key stays in the table it was in (and a duplicate), and the move is tried again later."""
    monkeypatch.setattr(storage, "_MERGE_AT", 100)
    monkeypatch.setattr(storage, "_MID_FROM", 0)
    monkeypatch.setattr(storage, "_SLICE_ROWS", 100)
    good_move, good_range = storage._MOVE, storage._MOVE_RANGE
    db = str(tmp_path / "f.db")

    def counts() -> tuple:
        return index_counts(db)[:3]

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()

        monkeypatch.setattr(storage, "_MOVE", "INSERT INTO no_such_table SELECT 1")
        for r in range(4):
            await put_settled(st, r)
        assert st.merges == 0 and counts() == (0, 0, 120)  # the failed move: all in ids_recent
        monkeypatch.setattr(storage, "_MOVE", good_move)
        monkeypatch.setattr(storage, "_MOVE_RANGE", "INSERT INTO no_such_table SELECT 1")
        for r in range(4, 6):  # tried again after _MERGE_AT // 2 more keys: into ids_mid
            await put_settled(st, r)
        assert st.merges == 1 and counts() == (0, 180, 0)
        await put_settled(st, 6)  # then the slice into ids fails
        assert st.slices == 0 and counts() == (0, 180, 30)
        monkeypatch.setattr(storage, "_MOVE_RANGE", good_range)
        for r in range(7, 11):  # the slice is planned again at the next move of ids_recent, then done
            await put_settled(st, r)
        assert st.merges == 2 and st.slices == 1 and counts() == (300, 0, 30)
        again = [f"r{r}-{i}" for r in range(11) for i in (0, 29)]
        assert await put(st, again) == list(range(len(again)))
        await st.close()

    with caplog.at_level("WARNING", logger="eventpush.hub"):
        asyncio.run(main())
    assert "moving the recent ids into the index failed" in caplog.text
    assert "moving ids into the index failed" in caplog.text
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def writer_statements(st: SQLiteStorage) -> list:
    """The SQL the writer thread runs from now on (its connection's trace)."""
    statements: list = []
    await asyncio.get_running_loop().run_in_executor(
        st._writer, lambda: st._local.conn.set_trace_callback(statements.append))
    return statements


async def filter_loaded(st: SQLiteStorage) -> None:
    for _ in range(500):
        if st.key_filter != "loading":
            break
        await asyncio.sleep(0.01)
    assert st.key_filter == "on"


def test_the_key_filter_skips_the_index_for_new_ids_and_is_loaded_at_start(tmp_path, monkeypatch, caplog):
    """New ids of a small transaction go into ``ids_log`` without a look in ``ids``, ``ids_mid`` or ``ids_recent``
    (the filter never saw them); an id it may have seen is looked up. Reopened, the hub loads the keys of all four
    tables in the background (looking every id up meanwhile, the log moved into ``ids_recent``), and then finds
    every stored id a duplicate wherever its key is, and skips the look for new ones again."""
    monkeypatch.setattr(storage, "_MERGE_AT", 100)
    monkeypatch.setattr(storage, "_MID_FROM", 150)
    monkeypatch.setattr(storage, "_SLICE_ROWS", 100)
    db = str(tmp_path / "k.db")
    plain = "INSERT OR IGNORE INTO ids_recent (h, ref) SELECT value"

    def inserts(statements: list) -> list:
        """For each insert of keys: whether it looked in ids (or ids_mid); one into ids_log looks nowhere."""
        return ["NOT EXISTS" in q for q in statements if q.startswith((plain, "INSERT INTO ids_log "))]

    async def first() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert st.key_filter == "on"  # a new file: nothing to load
        statements = await writer_statements(st)
        for r in range(14):
            await put_settled(st, r)
        assert inserts(statements) == [False] * 14
        statements.clear()
        assert await put(st, ["r0-0", "new-a"]) == [0]  # r0-0 is in ids: looked up, new-a not
        assert inserts(statements) == [False, True]
        await st.close()

    async def again(slow: bool) -> None:
        tag = "slow" if slow else "fast"
        st = SQLiteStorage(db)
        if slow:  # the loader waits on each page: the writer looks every id up meanwhile
            gate = threading.Event()
            real = storage._KEYS_AFTER
            monkeypatch.setattr(storage, "_KEYS_AFTER", real.replace("WHERE h > ?1", "WHERE wait() AND h > ?1"))
            orig_connect = storage._connect

            def connect(*a):
                conn = orig_connect(*a)
                conn.create_function("wait", 0, lambda: gate.wait(10))
                return conn
            monkeypatch.setattr(storage, "_connect", connect)
        await st.start()
        statements = await writer_statements(st)
        if slow:
            assert st.key_filter == "loading"
            assert await put(st, ["r1-1", "new-b"]) == [0]
            assert inserts(statements) == [True]  # every id looked up in SQLite
            gate.set()
        await filter_loaded(st)
        statements.clear()
        counts = index_counts(db)
        assert all(counts[:3]), counts  # keys in ids, ids_mid and ids_recent
        again = [f"r{r}-{i}" for r in range(14) for i in (0, 29)] + ["new-a", f"new-c-{tag}"]
        assert await put(st, again) == list(range(len(again) - 1))
        assert await put(st, [f"new-d-{tag}", f"new-e-{tag}"]) == []
        assert inserts(statements)[-1] is False
        await st.close()

    asyncio.run(first())
    with caplog.at_level("INFO", logger="eventpush.hub"):
        asyncio.run(again(slow=False))
    in_main, in_mid, in_recent, keys = index_counts(db)
    assert in_main + in_mid + in_recent == keys  # a key the filter missed would be in two tables
    assert "key filter loaded: 421 ids" in caplog.text
    monkeypatch.setattr(storage, "_MERGE_AT", 10 ** 6)  # the third opening keeps every key where it is
    asyncio.run(again(slow=True))
    in_main, in_mid, in_recent, keys = index_counts(db)
    assert keys == 14 * 30 + 1 + 3 + 4
    assert in_main + in_mid + in_recent == keys  # a key the filter missed would be in two tables


def test_new_ids_go_into_the_log_and_stay_duplicates_after_a_restart(tmp_path):
    """With the filter complete, a request's new ids go into ``ids_log`` as one row per chunk (an id twice in it
    once), the process keeping them in memory: a later id of the log is a duplicate, also within one request.
    Reopened (as after a crash: the log is what the file holds), the hub moves the log into ``ids_recent`` before
    its first use, and every id is still a duplicate."""
    db = str(tmp_path / "log.db")

    async def first() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert await put(st, ["a", "b", "a", "c"]) == [2]
        assert await put(st, ["d", "b", "e", "d"]) == [1, 3]
        assert log_counts(db) == (0, 5)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT ref, keys FROM ids_log ORDER BY ref").fetchall()
        assert [len(orjson.loads(k)) for _, k in rows] == [3, 2]  # per chunk, each key once
        logged = [(k, ref) for ref, keys in rows for k in orjson.loads(keys)]
        assert len(st._keylog) == 5 and all(st._keylog.get(k) == ref for k, ref in logged)
        await st.close()

    async def again() -> None:
        st = SQLiteStorage(db)
        await st.start()
        await filter_loaded(st)
        assert await put(st, ["e", "f", "a", "f"]) == [0, 2, 3]
        assert log_counts(db) == (5, 1)  # the old log moved into ids_recent, the new id logged
        assert await put(st, ["f", "c", "g"]) == [0, 1]
        await st.close()

    asyncio.run(first())
    asyncio.run(again())
    in_main, in_mid, in_recent, keys = index_counts(db)
    assert (in_main, in_mid, in_recent, keys) == (0, 0, 7, 7)


def test_a_rolled_back_transaction_takes_its_keys_out_of_the_log_in_memory(tmp_path, monkeypatch):
    """A transaction that fails after it logged keys is rolled back: the keys the process keeps in memory for the
    log go with it, so that the ids are new when sent again (no holder that was never committed)."""
    db = str(tmp_path / "rb.db")
    real = storage._store_chunk

    def failing(conn, key, cid, eids, *a, **k):
        dups = real(conn, key, cid, eids, *a, **k)
        if "boom" in eids:
            raise sqlite3.OperationalError("disk I/O error (a test)")
        return dups

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert await put(st, ["a"]) == []
        monkeypatch.setattr(storage, "_store_chunk", failing)
        with pytest.raises(sqlite3.OperationalError, match="a test"):
            await put(st, ["x", "y", "boom"])
        assert len(st._keylog) == 0  # cleared with the rollback: the log is moved before its next use
        monkeypatch.setattr(storage, "_store_chunk", real)
        assert await put(st, ["y", "x", "a", "boom", "x"]) == [2, 4]
        assert await st.recent("connect", "p", "c", 10) == ['{"id":"boom"}', '{"id":"x"}', '{"id":"y"}', '{"id":"a"}']
        await st.close()

    asyncio.run(main())
    assert index_counts(db)[2:] == (4, 4)


def test_another_writer_turns_the_key_filter_off(tmp_path, monkeypatch, caplog):
    """With ``--workers N`` each process has its own filter, which misses what the others store: the first
    transaction after another connection's commit (PRAGMA data_version) turns it off for good, so that an id the
    other one put straight into ``ids`` is still found a duplicate."""
    monkeypatch.setattr(storage, "_RECENT_BELOW", 50)
    db = str(tmp_path / "two.db")

    async def main() -> None:
        a, b = SQLiteStorage(db), SQLiteStorage(db)
        await a.start()
        await b.start()
        assert await put(a, ["a-1", "a-2"]) == []
        assert a.key_filter == "on"
        assert log_counts(db) == (0, 2)  # a's keys in the log, which b does not hold in memory
        big = [f"b-{i}" for i in range(60)]  # a large transaction: its keys go into ids
        assert await put(b, big) == []
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM ids").fetchone()[0] == 60
        assert log_counts(db) == (2, 0)  # b moved the log into ids_recent first, where it looked them up
        assert await put(a, ["b-7", "a-3", "b-59", "a-1"]) == [0, 2, 3]
        in_main, in_mid, in_recent, keys = index_counts(db)
        assert (in_main, in_recent, keys) == (60, 3, 63)  # b-7 and b-59 were looked up: not in ids_recent too
        assert a.key_filter == "off"
        assert b.key_filter == "off"  # a wrote before b's first transaction
        assert await put(a, ["b-8", "a-4"]) == [0]
        await a.close()
        await b.close()

    with caplog.at_level("INFO", logger="eventpush.hub"):
        asyncio.run(main())
    assert caplog.text.count("the key filter is off") == 2
    assert index_counts(db) == (60, 0, 4, 64)


def test_a_key_filter_that_fails_to_load_leaves_every_look_to_sqlite(tmp_path, monkeypatch, caplog):
    db = str(tmp_path / "fail.db")

    async def main(broken: bool) -> None:
        if broken:
            monkeypatch.setattr(storage, "_KEYS_AFTER", "SELECT no_such_column FROM ids")
        st = SQLiteStorage(db)
        await st.start()
        if broken:
            await asyncio.get_running_loop().run_in_executor(None, st._filter_loader.join)
            assert st.key_filter == "loading"  # never complete: never used
            assert await put(st, ["x-1", "x-3"]) == [0]
        else:
            assert await put(st, ["x-1", "x-2"]) == []
        await st.close()

    asyncio.run(main(False))
    with caplog.at_level("WARNING", logger="eventpush.hub"):
        asyncio.run(main(True))
    assert "loading the key filter failed" in caplog.text
    assert index_counts(db)[3] == 3


def test_a_new_file_gets_16_kib_pages_and_an_older_one_keeps_its_own(tmp_path, monkeypatch):
    """SQLite sets the page size when it makes the file: a new database gets ``_PAGE_SIZE``; a file made with 4 KiB
    pages (as before) keeps them, and storing, duplicates and GET work the same in it."""
    new, old = str(tmp_path / "new.db"), str(tmp_path / "old.db")

    async def session(db: str, eids: list, want: list) -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert await put(st, eids) == want
        assert await st.recent("connect", "p", "c", 1) == ['{"id":"%s"}' % eids[-1]]
        await st.close()

    asyncio.run(session(new, ["a", "b"], []))
    with monkeypatch.context() as m:
        m.setattr(storage, "_PAGE_SIZE", 4096)
        asyncio.run(session(old, ["a", "b"], []))
    asyncio.run(session(old, ["b", "c"], [0]))  # reopened by this version: the duplicate is found
    for db, size in ((new, 16384), (old, 4096)):
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA page_size").fetchone()[0] == size
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert [r[0] for r in conn.execute("SELECT eid FROM events ORDER BY seq")] == (
                ["a", "b"] if db == new else ["a", "b", "c"])


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5000])
def test_a_chunk_is_the_json_array_of_its_events_and_split_gives_them_back(n):
    bodies = [b'{"id":"e%d","v":[%d]}' % (i, i) for i in range(n)]
    body, ends = storage._pack(bodies)
    assert body == b"[" + b",".join(bodies) + b"]"
    assert orjson.loads(body) == [orjson.loads(b) for b in bodies]
    assert [body[a:b] for a, b in storage._split(body, ends)] == bodies
