"""The hub's life cycle on the real server: what a cancelled request leaves behind, what refuses to start (keys
files, a read-only database), worker processes and their supervisor, and /stats over every worker."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest

from hub_support import Hub
from support.net import wait_until

BARCHART_EVENT = {"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-SYMBOL-ADDED", "timestamp": 1,
                  "context": ["x"]}


def rows(db: str, api: str = "connect") -> List[str]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return [eid for (eid,) in conn.execute(
            "SELECT e.eid FROM events e JOIN collections c USING (cid) WHERE c.api = ? ORDER BY e.seq", (api,))]


def serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eventpush.cli.serve", *args], capture_output=True, text=True,
                          timeout=timeout)



# ---------------------------------------------------------------------------------------------------- defect 1
def test_a_request_cancelled_by_the_graceful_timeout_stores_nothing(hub_factory):
    """Another process holds the SQLite write lock; the hub gets SIGTERM and cancels its requests when the
    graceful timeout runs out. Each gets the hub's own JSON 500, and none of their events is committed once the
    lock is free again (the write that waited in the writer thread's transaction, and the one still queued)."""
    hub = hub_factory("--graceful-timeout", "1", "--busy-timeout", "120", "--no-realtime")
    assert hub.post("/connect/events/c", {"id": "warm"}, headers={}).status == 200
    locker = sqlite3.connect(hub.db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    results: Dict[str, Any] = {}

    def post(name: str, path: str, body: Any) -> None:
        try:
            results[name] = hub.request("POST", path, body, {"Content-Type": "application/json"}, timeout=60)
        except Exception as exc:  # reported by the assertion below
            results[name] = exc

    try:
        connect = threading.Thread(target=post, args=("connect", "/connect/events",
                                                      {"c": [{"id": f"x{i}"} for i in range(10)]}))
        connect.start()
        time.sleep(0.5)  # the writer thread has taken it and waits for the lock
        barchart = threading.Thread(target=post, args=("barchart", "/barchart/events",
                                                       {"events": [BARCHART_EVENT] * 5}))
        barchart.start()
        time.sleep(0.5)  # queued behind it
        hub.proc.send_signal(signal.SIGTERM)
        connect.join(60)
        barchart.join(60)
        # answered while the lock is still held: the hub did not wait for the commit it gave up
        r = results["connect"]
        assert (r.status, r.json()) == (500, {"errorMessage": "An error occurred while processing your request"})
        r = results["barchart"]
        assert r.status == 500 and r.json()[0]["value"]["code"] == "REQUEST_GENERAL_FAILURE"
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert hub.proc.wait(60) is not None
    assert rows(hub.db) == ["warm"]
    assert rows(hub.db, "barchart") == []
    assert "withdrawn, nothing of it stored" in hub.logs()


# ---------------------------------------------------------------------------------------------------- defect 2
@pytest.mark.parametrize("content", ["", "\n\n", "# no keys yet\n\n   # still none\n", "{}", "\ufeff# bom\n"],
                         ids=["empty", "blank", "comments", "json-empty", "bom-comment"])
def test_a_keys_file_without_keys_is_a_startup_error(tmp_path, content):
    """An empty keys file used to configure no project, which means "accept any key": authentication off."""
    path = tmp_path / "keys"
    path.write_text(content, encoding="utf-8")
    r = serve("--keys-file", str(path), "--db", str(tmp_path / "k.db"), "--no-realtime", "--port", "0")
    assert r.returncode == 2, r.stderr
    assert "holds no project keys" in r.stderr and str(path) in r.stderr


# ---------------------------------------------------------------------------------------------------- defect 6
@pytest.mark.parametrize("fmt", ["lines", "json"])
def test_a_keys_file_with_a_byte_order_mark(hub_factory, tmp_path, fmt):
    path = tmp_path / "keys"
    text = "p1:k1\np2:k2\n" if fmt == "lines" else json.dumps({"p1": "k1", "p2": ["k2"]})
    path.write_bytes("\ufeff".encode() + text.encode())
    hub = hub_factory("--keys-file", str(path))
    for pid, key in (("p1", "k1"), ("p2", "k2")):
        assert hub.post("/connect/events/bom", {"a": 1}, headers={"X-Project-Id": pid, "X-Api-Key": key}).status == 200
    assert hub.post("/connect/events/bom", {"a": 1}, headers={"X-Project-Id": "p1", "X-Api-Key": "k2"}).status == 401


# ---------------------------------------------------------------------------------------------------- defect 4
@contextlib.contextmanager
def read_only(path: str) -> Iterator[None]:
    """``path`` read-only for the hub, in its writable directory (root ignores file modes: a read-only bind
    mount of the file, as the review did)."""
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        try:
            yield
        finally:
            os.chmod(path, 0o644)
        return
    if subprocess.run(["mount", "--bind", path, path], capture_output=True).returncode != 0:
        pytest.skip("running as root without mount: cannot make a file read-only")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", path], capture_output=True).returncode != 0:
            pytest.skip("cannot remount the file read-only")
        yield
    finally:
        subprocess.run(["umount", path], capture_output=True)


def test_a_read_only_database_file_refuses_to_start(tmp_path):
    from eventpush.hub.storage import init_db

    db = str(tmp_path / "ro.db")
    init_db(db)
    with read_only(db):
        r = serve("--db", db, "--no-realtime", "--port", "0")
        assert r.returncode == 2, r.stderr
        assert f"cannot open the database {db!r}" in r.stderr and "not writable" in r.stderr
        assert "readonly" in r.stderr


# ---------------------------------------------------------------------------------------------------- defect 3
@pytest.fixture
def supervisor_tmpdir(monkeypatch: Any) -> Iterator[pathlib.Path]:
    """The TMPDIR of the hubs started by the test: where a supervisor makes its private directory (short: the
    workers' Unix socket paths must fit in sockaddr_un)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="ep-", dir="/tmp" if os.path.isdir("/tmp") else None))
    monkeypatch.setenv("TMPDIR", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def children(pid: int) -> List[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
def test_workers_exit_when_the_supervisor_is_killed(hub_factory, tmp_path, supervisor_tmpdir):
    tmpdir = supervisor_tmpdir
    hub = hub_factory("--workers", "2", "--no-realtime", "--no-access-log")
    assert wait_until(lambda: hub.logs().count("hub ready") == 2, 20)
    workers = children(hub.proc.pid)
    assert len(workers) >= 2
    made = list(tmpdir.iterdir())  # the supervisor's directory for its workers
    assert hub.post("/connect/events/k", {"id": "before"}, headers={}).status == 200
    hub.proc.kill()  # SIGKILL: the supervisor cannot stop its workers
    hub.proc.wait()
    try:
        assert wait_until(lambda: not any(running(p) for p in workers), timeout=30), \
            f"orphaned workers still running: {[p for p in workers if running(p)]}"
    finally:
        for p in workers:  # (before the fix: the orphans kept serving)
            if running(p):
                os.kill(p, signal.SIGKILL)
    assert "the supervisor" in hub.logs() or "Shutting down" in hub.logs()
    assert len(made) == 1 and list(tmpdir.iterdir()) == []  # the last worker out removed it
    again = Hub(tmp_path, "--workers", "2", "--no-realtime", db=hub.db, port=hub.port)
    try:
        again.start()  # the port is free again
        assert again.post("/connect/events/k", {"id": "after"}, headers={}).status == 200
        assert again.stop() == 0
    finally:
        again.stop()
    assert rows(hub.db) == ["before", "after"]


# ---------------------------------------------------------------------------------------------------- defect 5
def test_stats_count_every_worker(hub_factory, supervisor_tmpdir):
    """With --workers 2, /stats on either worker reports the whole hub; each answer includes every request
    acknowledged before it."""
    tmpdir = supervisor_tmpdir
    hub = hub_factory("--workers", "2", "--no-realtime", "--no-access-log")
    assert wait_until(lambda: hub.logs().count("hub ready") == 2, 20)
    stored = 0
    answered_by = set()
    for i in range(30):  # a fresh connection each: the kernel spreads them over the workers
        assert hub.post("/connect/events", {"w": [{"id": f"{i}-a"}, {"id": f"{i}-b"}], "v": [{"id": str(i)}]},
                        headers={}).status == 200
        assert hub.post("/connect/events/w", {"id": f"{i}-a"}, headers={}).status == 409
        stored += 3
        st = hub.stats()  # right after an acknowledgement, whichever worker answers
        answered_by.add(st["pid"])
        assert st["workers"] == 2 and len(st["pids"]) == 2 and st["pids"] == sorted(st["pids"])
        assert st["pid"] in st["pids"]
        assert st["events"] == stored
        w = st["apis"]["connect"]["collections"]["w"]
        assert (w["events"], w["duplicates"]) == (2 * (i + 1), i + 1)
        assert st["apis"]["connect"]["collections"]["v"]["events"] == i + 1
        assert st["apis"]["connect"]["requests"] == 2 * (i + 1)
        assert st["rejected_requests"] == i + 1  # the 409s
    ev = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": []}
    assert hub.request("POST", "/barchart/events", {"events": [ev] * 4}).status == 200
    st = hub.stats()
    assert st["apis"]["barchart"]["events"] == 4 and st["events"] == stored + 4
    assert st["events_per_second_1m"] > 0 and st["uptime_s"] > 0
    assert {hub.request("GET", "/health").json()["pid"] for _ in range(20)} <= set(st["pids"])
    assert len(list(tmpdir.iterdir())) == 1  # the supervisor's private directory ...
    assert hub.stop() == 0
    assert list(tmpdir.iterdir()) == []  # ... removed at exit
    assert len(rows(hub.db)) == stored


def test_stats_of_one_process_name_it(hub_factory):
    hub = hub_factory("--no-realtime")
    assert hub.post("/connect/events/one", {"id": "1"}, headers={}).status == 200
    st = hub.stats()
    assert st["workers"] == 1 and st["pids"] == [st["pid"]] == [hub.request("GET", "/health").json()["pid"]]
    assert st["events"] == 1 and st["apis"]["connect"]["collections"]["one"]["events"] == 1
