"""The hub's SQLite storage on a real file, both insert paths (json_each and the executemany fallback)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from eventpush.errors import ClosedError
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
