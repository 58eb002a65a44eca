"""Batcher reliability against real sockets: faults, overflow policies, a down endpoint, the spool, fork."""

from __future__ import annotations

import os
import pickle
import shutil
import time

import orjson
import pytest

from eventpush import CONNECT, NDJSON
from eventpush.batcher import Batcher
from eventpush.errors import (BufferFullError, ClosedError, EventTooLargeError, EventValidationError,
                              SpoolCorruptError)
from eventpush.sender import RejectedError
from eventpush.spool import Spool
from eventpush.transport import Retry

from dl_helpers import FAST_RETRY, ScriptedEndpoint, free_port_local


def ids(n, prefix="ev"):
    return [f"{prefix}-{i}" for i in range(n)]


def spooled_ids(directory):
    """The ids in the intact records of a spool, read from a copy (reading acknowledges nothing)."""
    copy = directory.rstrip("/") + "-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(directory, copy)
    out = set()
    with Spool(copy) as sp:
        while True:
            rec = sp.next_record()
            if rec is None:
                break
            for i in range(rec.batch.count):
                out.add(orjson.loads(rec.batch.event(i))["id"])
            rec.ack()
    shutil.rmtree(copy, ignore_errors=True)
    return out


def test_100k_events_through_a_faulty_server_all_arrive_once_deduplicated(make_server, spool_dir):
    s = make_server("collections", error_rate=0.1, retry_after=0.01, reset_rate=0.03, slow_rate=0.05,
                    slow_delay=0.02, garbage_rate=0.03, item_retry_rate=0.002, seed=11)
    want = ids(100_000)
    b = Batcher(s.url, CONNECT, max_batch_events=500, concurrency=4, retry=FAST_RETRY, spool_dir=spool_dir,
                interval=0.2)
    with b:
        for i, ev_id in enumerate(want):
            b.push({"id": ev_id, "n": i}, "c%d" % (i % 3))
        assert b.flush(timeout=60)
    st = b.stats
    assert s.ids() == set(want)  # every id arrived at least once and is counted once after deduplication
    assert s.unique == 100_000 and s.received >= 100_000
    assert st["pushed"] == 100_000 and st["delivered"] == 100_000 and st["dropped"] == 0
    assert st["rejected"] == 0 and st["buffered"] == 0
    injected = s.injected
    assert injected["status"] and injected["reset"] and injected["garbage"] and injected["item_retry"]
    assert st["retried"] > 0
    assert b.spool_pending() == (0, 0)


def test_overflow_block_waits_and_loses_nothing(make_server):
    s = make_server("collections", slow_rate=1.0, slow_delay=0.01)
    b = Batcher(s.url, CONNECT, max_batch_events=100, max_buffered=300, overflow="block", concurrency=2,
                retry=FAST_RETRY, spool_dir=False)
    peak = 0
    with b:
        for ev_id in ids(3000):
            b.push({"id": ev_id}, "c")
            peak = max(peak, b.stats["buffered"])
        assert b.flush(30)
    assert peak <= 300
    assert s.unique == 3000 and b.stats["delivered"] == 3000 and b.stats["spooled"] == 0


def test_overflow_block_timeout_raises_buffer_full(make_server):
    s = make_server("collections", slow_rate=1.0, slow_delay=1.0)
    b = Batcher(s.url, CONNECT, max_batch_events=10, max_buffered=10, overflow="block", block_timeout=0.05,
                retry=FAST_RETRY, spool_dir=False, concurrency=1)
    with b:
        for ev_id in ids(10):
            b.push({"id": ev_id}, "c")
        with pytest.raises(BufferFullError):
            b.push({"id": "one-too-many"}, "c")  # the only batch is stuck in a slow request
        s.faults.slow_rate = 0.0
        assert b.flush(10)
    assert s.ids() == set(ids(10))
    assert b.stats["pushed"] == 10 == b.stats["delivered"]


def test_overflow_raise_refuses_and_every_accepted_event_arrives(make_server):
    s = make_server("collections")
    s.down()
    b = Batcher(s.url, CONNECT, max_batch_events=50, max_buffered=200, overflow="raise", concurrency=2,
                retry=Retry(attempts=1000, backoff=0.01, backoff_max=0.02, total=30), spool_dir=False)
    accepted = []
    refused = 0
    with b:
        for ev_id in ids(1000):
            try:
                b.push({"id": ev_id}, "c")
                accepted.append(ev_id)
            except BufferFullError:
                refused += 1
        assert refused > 0 and len(accepted) >= 200
        s.up()
        assert b.flush(30)
    assert s.ids() == set(accepted)
    assert b.stats["pushed"] == len(accepted) == b.stats["delivered"]


def test_overflow_spill_survives_a_slow_endpoint(make_server, spool_dir):
    s = make_server("collections", slow_rate=1.0, slow_delay=0.05)
    b = Batcher(s.url, CONNECT, max_batch_events=100, max_buffered=300, overflow="spill", concurrency=2,
                retry=FAST_RETRY, spool_dir=spool_dir)
    want = ids(5000)
    with b:
        for ev_id in want:
            b.push({"id": ev_id}, "c")
        s.faults.slow_rate = 0.0
        assert b.flush(60)
    st = b.stats
    assert st["spooled"] > 0 and st["replayed"] > 0
    assert s.ids() == set(want)
    assert st["delivered"] == 5000 and st["dropped"] == 0
    assert b.spool_pending() == (0, 0)
    assert b.settled_through == 5000  # the spilled batches count from the moment they are in the spool


def test_endpoint_down_for_the_whole_run_spools_everything(spool_dir):
    url = f"http://127.0.0.1:{free_port_local()}"
    errors = []
    b = Batcher(url, CONNECT, max_batch_events=500, retry=FAST_RETRY, spool_dir=spool_dir,
                on_error=lambda e, evs: errors.append(e))
    with b:
        for ev_id in ids(5000):
            b.push({"id": ev_id}, "c")
        assert b.flush(30)
    st = b.stats
    assert st["delivered"] == 0 and st["pushed"] == 5000
    assert st["failed"] == 5000 and st["spooled"] == 5000 and st["dropped"] == 0
    assert spooled_ids(spool_dir) == set(ids(5000))
    with Spool(spool_dir) as sp:
        assert sp.pending()[1] == 5000


def spool_while_down(s, spool_dir, n):
    """One run that pushes ``n`` events while the server ``s`` is down: all of them end in the spool."""
    s.down()
    with Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir) as b:
        for ev_id in ids(n):
            b.push({"id": ev_id}, "c")
        b.flush(30)
        assert b.stats["spooled"] == n


def replay_when_up(s, spool_dir, n):
    """The next run, with ``s`` up again: it replays the ``n`` spooled events, and the server has them all."""
    s.up()
    with Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir) as b:
        assert b.flush(30)
        assert b.stats["replayed"] == n
    assert s.ids() == set(ids(n))


def test_spool_replays_at_next_start(make_server, spool_dir):
    s = make_server("collections")
    spool_while_down(s, spool_dir, 1234)
    replay_when_up(s, spool_dir, 1234)
    assert os.listdir(spool_dir) == []


def test_a_replay_refused_for_its_credentials_keeps_the_spool(make_server, spool_dir):
    # the events were spooled by one run; the next run has a wrong key (401 for every request): the events are
    # not what is wrong, so they stay spooled (not rejected, not lost), and a run with the right key delivers them
    s = make_server("collections")
    spool_while_down(s, spool_dir, 300)
    for status in (401, 403):
        refusing = ScriptedEndpoint(lambda i, body, status=status: (status, [("Content-Type", "application/json")]))
        errors = []
        try:
            with Batcher(refusing.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir,
                         on_error=lambda e, evs: errors.append(e)) as b2:
                assert b2.flush(30)
                st = b2.stats
        finally:
            refusing.stop()
        assert refusing.count >= 1  # the replay was tried, and refused
        assert st["rejected"] == st["replayed"] == st["delivered"] == 0 and errors == []
        with Spool(spool_dir) as sp:
            assert sp.pending()[1] == 300
    replay_when_up(s, spool_dir, 300)


def test_replay_starts_when_the_endpoint_recovers(make_server, spool_dir):
    s = make_server("collections")
    s.down()
    b = Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir, interval=0.05)
    with b:
        for ev_id in ids(300):
            b.push({"id": ev_id}, "c")
        b.flush(30)
        assert b.stats["spooled"] == 300
        s.up()
        b.push({"id": "after"}, "c")  # the first success after recovery triggers the replay
        assert b.flush(30)
        assert s.wait_for(unique=301)
    assert b.stats["replayed"] == 300


def test_replay_starts_when_the_endpoint_recovers_without_new_traffic(make_server, spool_dir):
    s = make_server("collections")
    s.down()
    b = Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir)
    with b:
        for ev_id in ids(300):
            b.push({"id": ev_id}, "c")
        b.flush(30)
        assert b.stats["spooled"] == 300
        s.up()  # nothing new is pushed: the replay thread probes the endpoint on its own
        assert s.wait_for(unique=300, timeout=30)
        assert b.flush(30) and b.spool_pending() == (0, 0)
    assert b.stats["replayed"] == 300


def test_overflow_spill_never_waits_for_batches_in_flight(make_server, spool_dir):
    """The in-flight batches alone fill max_buffered (a hanging endpoint): push() keeps spilling, never waits."""
    s = make_server("collections", slow_rate=1.0, slow_delay=3.0)
    b = Batcher(s.url, CONNECT, max_batch_events=50, max_buffered=100, overflow="spill", concurrency=2,
                retry=FAST_RETRY, spool_dir=spool_dir, interval=None)
    want = ids(1000)
    with b:
        for ev_id in want[:100]:
            b.push({"id": ev_id}, "c")
        time.sleep(0.5)  # both workers take a batch: everything buffered is on the wire
        for ev_id in want[100:]:
            b.push({"id": ev_id}, "c")
        st = b.stats
        # had push() waited for room, the first (3 s) replies would have come back before it returned
        assert st["delivered"] == 0 and st["spooled"] >= 800
        s.faults.slow_rate = 0.0
        assert b.flush(60)
    assert s.ids() == set(want)
    assert b.stats["delivered"] == 1000 and b.stats["dropped"] == 0


def test_without_a_spool_every_batch_gets_the_retry_policy(make_server):
    """After a batch failed for good, the next one is not cut to a single attempt when there is no spool."""
    s = make_server("collections", fail_first=5, statuses=(500,))
    errors = []
    b = Batcher(s.url, CONNECT, max_batch_events=10, concurrency=1, spool_dir=False, interval=None,
                retry=Retry(attempts=4, backoff=0.001, backoff_max=0.005), on_error=lambda e, evs: errors.append(evs))
    with b:
        for ev_id in ids(20):
            b.push({"id": ev_id}, "c")
        assert b.flush(30)
    # the first batch: 4 attempts, all 500 (reported); the second: the 5th 500, then delivered on a retry
    assert b.stats["failed"] == 10 and b.stats["delivered"] == 10
    assert [len(evs) for evs in errors] == [10]
    assert s.ids() == set(ids(20)[10:])


def test_truncated_spool_is_detected_reported_and_not_sent(make_server, spool_dir):
    s = make_server("collections")
    s.down()
    with Batcher(s.url, CONNECT, max_batch_events=100, retry=FAST_RETRY, spool_dir=spool_dir) as b:
        for ev_id in ids(500):
            b.push({"id": ev_id}, "c")
        b.flush(30)
    segs = sorted(n for n in os.listdir(spool_dir) if n.endswith(".seg"))
    path = os.path.join(spool_dir, segs[-1])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    intact = spooled_ids(spool_dir)
    assert 0 < len(intact) < 500
    s.up()
    errors = []
    with Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir,
                 on_error=lambda e, evs: errors.append(e)) as b2:
        assert b2.flush(30)
        assert b2.stats["corrupt"] == 1 and b2.stats["replayed"] == len(intact)
    assert s.ids() == intact
    assert any(isinstance(e, SpoolCorruptError) for e in errors)


def test_rejected_events_are_reported_and_never_spooled(make_server, spool_dir):
    s = make_server("collections", reject_key="secret")
    seen = []
    with Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir,
                 on_error=lambda e, evs: seen.append((e, evs))) as b:
        b.push({"id": "ok-1"}, "c")
        b.push({"id": "bad-1", "secret": 1}, "c")
        b.push({"id": "ok-2"}, "c")
        assert b.flush(10)
    st = b.stats
    assert st["rejected"] == 1 and st["delivered"] == 2 and st["spooled"] == 0
    [(err, evs)] = seen
    assert isinstance(err, RejectedError) and "secret" in str(err)
    # refused inside a 200 batch reply: no reply came with the error's status, so none is attached
    assert err.status == 200 and err.headers is None and err.body == b""
    assert b'"bad-1"' in evs[0]
    assert s.ids() == {"ok-1", "ok-2"}


def test_a_whole_request_4xx_is_rejected_not_spooled(make_server, spool_dir):
    s = make_server("status", reject_key="secret")
    seen = []
    with Batcher(s.url, NDJSON, retry=FAST_RETRY, spool_dir=spool_dir, on_error=lambda e, evs: seen.append(e)) as b:
        b.push({"id": "x", "secret": 1})
        assert b.flush(10)
    assert b.stats["rejected"] == 1 and b.stats["spooled"] == 0
    assert seen[0].status == 400 and len(s.log) == 1
    # the error carries the reply that refused the batch: its body and headers, as the server sent them
    assert orjson.loads(seen[0].body) == {"errorMessage": "Property secret is not allowed"}
    assert seen[0].headers["content-type"] == "application/json"
    # and keeps them through pickling (errors cross process boundaries in user code)
    again = pickle.loads(pickle.dumps(seen[0]))
    assert type(again) is RejectedError and (again.status, again.body) == (400, seen[0].body)
    assert again.headers["content-type"] == "application/json"


def test_bad_input_raises_at_the_call_site_and_costs_nothing_else(server):
    with Batcher(server.url, CONNECT, retry=FAST_RETRY, spool_dir=False) as b:
        with pytest.raises(EventValidationError) as info:
            b.push({"tp_secret": 1}, "c")
        assert info.value.field is not None
        errs = b.push_many([{"id": "a"}, {"_id": 1}, {"id": "b"}], "c")
        assert [e.index for e in errs] == [1]
        assert b.flush(10)
    assert server.ids() == {"a", "b"}
    assert b.stats["pushed"] == 2


def test_push_encoded_delivers_the_bytes_as_they_are(server):
    """``push_encoded`` takes what ``Encoder.encode`` returned: delivered unchanged (no second stamping), counted,
    and refused with the encoder's errors when it is not bytes or too large, at the call site."""
    from eventpush import Encoder

    enc = Encoder(CONNECT)
    data = [enc.encode({"n": i}, "c") for i in range(50)]
    with Batcher(server.url, CONNECT, max_batch_events=20, retry=FAST_RETRY, spool_dir=False) as b:
        for d in data:
            b.push_encoded(d, "c")
        with pytest.raises(TypeError):
            b.push_encoded(bytearray(data[0]), "c")
        with pytest.raises(EventTooLargeError):
            b.push_encoded(b'{"s":"' + b"x" * 70_000 + b'"}', "c")
        b.push({"n": 50}, "c")
        assert b.flush(10)
    got = {e["n"]: e for e in server.events()}
    assert sorted(got) == list(range(51))
    assert [orjson.dumps(got[i]) for i in range(50)] == data  # the ids and timestamps stamped by encode()
    assert b.stats["pushed"] == 51 and b.stats["delivered"] == 51


def test_closed_batcher_refuses_pushes(server):
    b = Batcher(server.url, CONNECT, spool_dir=False)
    b.close()
    with pytest.raises(ClosedError):
        b.push({"id": "late"}, "c")


def test_interval_seals_and_sends_in_the_background(server):
    with Batcher(server.url, CONNECT, interval=0.05, spool_dir=False) as b:
        b.push({"id": "lonely"}, "c")
        assert server.wait_for(unique=1, timeout=5)  # no flush(): the interval sealed and sent it
        deadline = time.monotonic() + 5
        while b.stats["delivered"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.stats["delivered"] == 1


def test_close_timeout_spools_what_could_not_go(make_server, spool_dir):
    s = make_server("collections")
    s.down()
    # one batch on the wire, six queued behind it
    b = Batcher(s.url, CONNECT, retry=Retry(attempts=1000, backoff=0.05, backoff_max=0.1, total=None),
                spool_dir=spool_dir, max_batch_events=100, concurrency=1)
    for ev_id in ids(700):
        b.push({"id": ev_id}, "c")
    b.close(timeout=0.5)
    assert b.stats["spooled"] == 700 and b.settled_through == 700
    assert spooled_ids(spool_dir) == set(ids(700))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_fork_child_starts_empty_with_its_own_pool(server):
    b = Batcher(server.url, CONNECT, interval=None, spool_dir=False)
    try:
        for ev_id in ids(100, "parent"):
            b.push({"id": ev_id}, "c")
        pid = os.fork()
        if pid == 0:  # the child: its own events only
            code = 1
            try:
                if b.stats["buffered"] == 0:
                    for ev_id in ids(50, "child"):
                        b.push({"id": ev_id}, "c")
                    code = 0 if b.flush(10) and b.stats["delivered"] == 50 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert b.flush(10)
    finally:
        b.close(5)
    assert server.ids() == set(ids(100, "parent")) | set(ids(50, "child"))
    assert server.received == 150  # nothing was sent twice


def test_default_spool_location_is_keyed_by_endpoint_and_credentials(tmp_path):
    url = f"http://127.0.0.1:{free_port_local()}"
    with Batcher(url, CONNECT, retry=FAST_RETRY, headers={"X-Api-Key": "k1"}) as b:
        b.push({"id": "a"}, "c")
        b.flush(10)
        where = b.spool.directory
    assert where.startswith(str(tmp_path / "default-spool"))  # $EVENTPUSH_SPOOL_DIR (set by the conftest)
    with Batcher(url, CONNECT, retry=FAST_RETRY, headers={"X-Api-Key": "k2"}, atexit=False) as other:
        assert other.spool is None  # another key never replays the first key's events
    with Spool(where) as sp:
        assert sp.pending() == (1, 1)


def test_stats_snapshot_has_every_counter(server):
    with Batcher(server.url, CONNECT, spool_dir=False) as b:
        b.push({"id": "s"}, "c")
        b.flush(10)
        st = b.stats
    for key in ("pushed", "sent", "delivered", "retried", "failed", "rejected", "spooled", "replayed", "dropped",
                "bytes", "batches", "duplicates", "corrupt", "buffered"):
        assert key in st
    assert st["pushed"] == st["sent"] == st["delivered"] == 1 and st["batches"] == 1 and st["bytes"] > 0


def test_no_threads_at_interpreter_shutdown_flush_sends_inline(make_server, spool_dir, monkeypatch):
    """Python 3.12.0-3.12.1 refuse new threads in atexit handlers, where a batcher may first be made (EventBatcher's
    exit hook): the batcher then sends from the thread that flushes it, replaying the spool too; nothing is lost."""
    import threading

    s = make_server("collections")
    s.down()
    with Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir) as b:  # an earlier run left 300 spooled
        for ev_id in ids(300, "old"):
            b.push({"id": ev_id}, "c")
        b.flush(30)
        assert b.stats["spooled"] == 300
    s.up()

    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", refuse)
        b = Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir, max_batch_events=100, max_buffered=250)
    assert b._threads == []
    for ev_id in ids(200):
        b.push({"id": ev_id}, "c")
    assert s.received == 0  # nothing sends in the background
    for ev_id in ids(800, "more"):  # a full buffer (overflow="block"): the pushing thread sends to make room
        b.push({"id": ev_id}, "c")
    assert 0 < s.received < 1000
    b.close(30)
    st = b.stats
    assert (st["delivered"], st["replayed"], st["spooled"], st["dropped"]) == (1300, 300, 0, 0)
    assert s.ids() == set(ids(200)) | set(ids(800, "more")) | set(ids(300, "old"))
    assert os.listdir(spool_dir) == []


def test_other_thread_start_failures_still_raise(make_server, monkeypatch):
    import threading

    s = make_server("collections")

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        Batcher(s.url, CONNECT, atexit=False)


class _HoldFirst(ScriptedEndpoint):
    """An NDJSON endpoint on 127.0.0.1 that answers every request at once except the first, which waits until
    ``release()``; ``lines`` counts the events that arrived."""

    def __init__(self):
        import threading

        self.gate = threading.Event()
        self.lines = 0
        lock = threading.Lock()

        def answer(index, body):
            if index == 0:
                self.gate.wait(30)
            with lock:
                self.lines += body.count(b"\n")
            return 200, []

        super().__init__(answer)

    def release(self):
        self.gate.set()

    def stop(self):
        self.gate.set()
        super().stop()


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_settled_through_counts_only_the_unbroken_run_from_the_first_event():
    """Batches settle out of order: ``settled_through`` stops at the oldest batch still on the wire, and counts
    neither the open batch nor anything after the gap."""
    s = _HoldFirst()
    try:
        with Batcher(s.url, NDJSON, max_batch_events=10, concurrency=2, interval=None, spool_dir=False) as b:
            for i in range(10):
                b.push({"n": i})  # batch 1 (events 0-9): its request is held
            assert _wait(lambda: b.stats["sent"] == 10)
            for i in range(10, 20):
                b.push({"n": i})  # batch 2 (events 10-19): answered at once
            assert _wait(lambda: b.stats["delivered"] == 10)
            for i in range(20, 25):
                b.push({"n": i})  # the open batch
            assert b.settled_through == 0  # batch 2 is delivered, but batch 1 is not settled
            s.release()
            assert _wait(lambda: b.stats["delivered"] == 20)
            assert b.settled_through == 20  # the open batch is not settled
            assert b.flush(10)
            assert b.settled_through == 25 and s.lines == 25
    finally:
        s.stop()


def test_settled_through_counts_spooled_and_rejected_events(make_server, spool_dir):
    """An event in the spool is settled (the spool replays it); so is one rejected by the server."""
    s = make_server("status", reject_key="bad")
    with Batcher(s.url, NDJSON, max_batch_events=10, concurrency=1, interval=None, spool_dir=spool_dir) as b:
        for i in range(25):
            b.push({"n": i, "bad": True} if i < 10 else {"n": i})  # the first batch gets a 400
        assert b.flush(10)
        assert b.stats["rejected"] == 10 and b.stats["delivered"] == 15 and b.settled_through == 25
    down = f"http://127.0.0.1:{free_port_local()}"
    with Batcher(down, NDJSON, max_batch_events=10, concurrency=1, interval=None, spool_dir=spool_dir,
                 retry=Retry(attempts=1)) as b:
        for i in range(25):
            b.push({"n": i})
        assert b.flush(10)
        assert b.stats["spooled"] == 25 and b.settled_through == 25


def test_close_counts_a_batch_still_in_flight_once(make_server, spool_dir):
    """close(timeout) spools a batch whose request is still on the wire: it counts as spooled, nothing stays
    buffered, and the reply that comes back later is not counted (nor reported) a second time."""
    s = make_server("collections", slow_rate=1.0, slow_delay=3.0)  # the reply comes after close() returned
    delivered = []
    b = Batcher(s.url, CONNECT, spool_dir=spool_dir, interval=None, atexit=False,
                on_delivered=lambda res: delivered.append(res.delivered))
    b.push({"id": "x"}, "c")
    b.close(timeout=0.2)
    st = b.stats
    assert (st["pushed"], st["spooled"], st["delivered"], st["failed"], st["buffered"]) == (1, 1, 0, 0, 0)
    assert b.settled_through == 1
    assert s.wait_for(unique=1, timeout=10)  # the slow request arrives after all
    for t in b._threads:  # the worker that was left behind gets its (late) reply
        t.join(10)
        assert not t.is_alive()
    st = b.stats
    assert (st["pushed"], st["spooled"], st["delivered"], st["failed"], st["buffered"]) == (1, 1, 0, 0, 0)
    assert delivered == []
    assert spooled_ids(spool_dir) == {"x"}  # replayed at the next start (the id makes the second copy harmless)


def test_close_timeout_bound_holds_with_a_hanging_request(make_server, spool_dir):
    """close(timeout) does not wait for a request in flight that never finishes in time, and the batch is spooled
    and counted once. (The bound it promises, timeout + 2 s from its start, is not asserted to the tenth of a
    second here: on a loaded machine that would be flaky.)"""
    s = make_server("collections", slow_rate=1.0, slow_delay=20.0)
    b = Batcher(s.url, CONNECT, spool_dir=spool_dir, interval=None, atexit=False)
    b.push({"id": "x"}, "c")
    t0 = time.monotonic()
    b.close(timeout=0.5)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.5 + 2.0 + 5.0  # far below the 20 s the request would take
    assert b.stats["spooled"] == 1 and b.stats["buffered"] == 0
    assert spooled_ids(spool_dir) == {"x"}
