"""The hub's SQLite storage on a real file, both insert paths (json_each and the executemany fallback)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import uuid

import pytest

from eventpush.errors import ClosedError
from eventpush.hub import storage
from eventpush.hub.storage import SQLiteStorage


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
                            "USING (cid) ORDER BY e.rowid").fetchall()
    assert rows[:4] == [
        ("connect", "p", "c", "1", '{"id":"1"}'),
        ("connect", "p", "c", "x\x00y", '{"id":"x\\u0000y"}'),
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
            conn.execute("CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.eid = 'bad' "
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
        assert conn.execute("SELECT eid FROM events ORDER BY rowid").fetchall() == [("1",), ("ok",)]
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
            conn.execute("CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.eid = 'bad' "
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
                            "ORDER BY e.rowid").fetchall()
    assert rows[:5] == [("c", "0", '{"id":"0"}'), ("c", "1", '{"id":"1"}'), ("c", "2", '{"id":"2"}'),
                        ("c", "3", '{"id":"3"}'), ("d", "1", '{"id":"1"}')]
    assert rows[5:] == [("e", str(i), '{"id":"%d"}' % i) for i in range(10)]  # nothing of the failed request


def test_background_checkpoint_bounds_the_wal(tmp_path, monkeypatch):
    """The writer does not checkpoint; the background checkpoint keeps the WAL bounded under continuous writes
    (restarting it past the cap) and every committed row is in the database."""
    monkeypatch.setattr(storage, "_WAL_RESTART_BYTES", 1 << 20)
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
        await st.close()
        assert not os.path.exists(db + "-wal") or os.stat(db + "-wal").st_size == 0

    asyncio.run(main())
    # without checkpoints the WAL would hold every page written: well over 13 MB
    assert max(wal_sizes) < 12 << 20, wal_sizes
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 30_000
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_collections_newest_events_come_from_an_index(tmp_path, caplog):
    """GET /connect/events/{collection} reads the newest rows of one collection through events_cid, not by sorting
    the whole collection; a database made before that index gets it when opened (and says so)."""
    db = str(tmp_path / "i.db")
    with sqlite3.connect(db) as conn:  # a database as an earlier version made it
        for stmt in storage._SCHEMA[:3]:
            conn.execute(stmt)
        conn.execute("INSERT INTO collections (api, project, name) VALUES ('connect', 'p', 'c')")
        conn.executemany("INSERT INTO events VALUES (1, ?, ?)", ((str(i), '{"n":%d}' % i) for i in range(100)))
    caplog.set_level("INFO", logger="eventpush.hub")

    async def main() -> None:
        st = SQLiteStorage(db)
        await st.start()
        assert await st.recent("connect", "p", "c", 3) == ['{"n":99}', '{"n":98}', '{"n":97}']
        await st.close()

    asyncio.run(main())
    assert "indexing the 100 stored events by collection" in caplog.text
    with sqlite3.connect(db) as conn:
        plan = " ".join(r[-1] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT body FROM events WHERE cid = ? ORDER BY rowid DESC LIMIT ?", (1, 3)))
    assert "events_cid " in plan + " " and "TEMP B-TREE" not in plan


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
            conn.execute("CREATE TRIGGER slow BEFORE INSERT ON events WHEN NEW.eid = 'hold' BEGIN SELECT hold(); END")
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
                           "ORDER BY e.rowid").fetchall()
    assert got == [("c", "hold"), ("c", "b"), ("d", "c"), ("c", "a1"), ("c", "e")]
