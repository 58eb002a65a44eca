"""Spool faults: a full disk mid-write, records left unacknowledged, bad records met again, callbacks and locks,
processes racing on one directory, the directory removed while running."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time

import orjson
import pytest

import eventpush
import eventpush.spool as spool_mod
from eventpush import CONNECT
from eventpush.batcher import Batcher
from eventpush.errors import SpoolCorruptError, SpoolError
from eventpush.spool import Spool
from eventpush.transport import Retry

from dl_helpers import drain_spool

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

#: the tests that fill the disk (RLIMIT_FSIZE, SIGXFSZ: POSIX only)
needs_rlimit = pytest.mark.skipif(resource is None or not hasattr(signal, "SIGXFSZ"),
                                  reason="needs RLIMIT_FSIZE and SIGXFSZ")


def batch_of(ids, pad=0):
    enc = eventpush.Encoder(CONNECT)
    for i in ids:
        enc.add({"id": i, "pad": "x" * pad} if pad else {"id": i}, "c", tag=i)
    return enc.seal()


def drain(spool):
    """The tags of every record, acknowledged one by one."""
    return [batch.tags() for batch in drain_spool(spool)]


def drain_dir(directory, reports=None):
    with Spool(directory, on_corrupt=None if reports is None else reports.append) as sp:
        return drain(sp)


def ids_in(batches):
    return {orjson.loads(b.event(i))["id"] for b in batches for i in range(b.count)}


@contextlib.contextmanager
def disk_full(limit):
    """No file of this process can grow past ``limit`` bytes: write() fails part-way with EFBIG, as on a full
    disk (SIGXFSZ ignored, so the process is not killed). The limit and the handler are restored after."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # "space is freed" (any thread)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def corrupt_first_record(directory):
    [seg] = [n for n in os.listdir(directory) if n.endswith(".seg")]
    path = os.path.join(directory, seg)
    data = bytearray(open(path, "rb").read())
    data[40] ^= 0xFF  # a payload byte of the first record
    open(path, "wb").write(bytes(data))


# -- a write that fails part-way ---------------------------------------------------------------------------------


@needs_rlimit
def test_a_write_that_fails_part_way_is_cut_off_and_later_records_stay_readable(spool_dir):
    reports = []
    sp = Spool(spool_dir, on_corrupt=reports.append)
    try:
        sp.append(batch_of(["a"]))
        with disk_full(4096):
            with pytest.raises(SpoolError):
                sp.append(batch_of(["big"], pad=20_000))  # torn at 4096 bytes
        sp.append(batch_of(["c1", "c2"]))  # space is free again: appended to the same open segment
        assert sp.pending() == (2, 3)
        assert drain(sp) == [["a"], ["c1", "c2"]]
    finally:
        sp.close()
    assert reports == []  # nothing torn is left behind to report


@needs_rlimit
def test_append_many_stores_all_or_none_of_its_batches(spool_dir):
    """The caller of a failed append_many reports or retries every batch: none of them may be stored."""
    with Spool(spool_dir) as sp:
        sp.append(batch_of(["a"]))
        with disk_full(4096):
            with pytest.raises(SpoolError):
                sp.append_many([batch_of(["small"]), batch_of(["big"], pad=20_000)])
        assert sp.pending() == (1, 1)
        sp.append_many([batch_of(["b"]), batch_of(["c"])])
        assert drain(sp) == [["a"], ["b"], ["c"]]


def test_a_torn_record_followed_by_intact_ones_is_reported_once_and_reading_resumes(spool_dir):
    """A segment with a torn record in the middle (written by an older version, say): the records after it are
    counted, replayed, and the torn one is reported once."""
    recs = [spool_mod.encode_record(batch_of(ids, pad)) for ids, pad in ((["a"], 0), (["big"], 5000), (["c"], 0),
                                                                         (["d1", "d2"], 0))]
    os.makedirs(spool_dir)
    with open(os.path.join(spool_dir, f"{time.time_ns():020d}-1.seg"), "wb") as f:
        f.write(recs[0] + recs[1][:1000] + recs[2] + recs[3])
    reports = []
    with Spool(spool_dir, on_corrupt=reports.append) as sp:
        assert sp.pending() == (3, 4)
        assert drain(sp) == [["a"], ["c"], ["d1", "d2"]]
    assert len(reports) == 1 and "torn record" in str(reports[0])
    assert os.listdir(spool_dir) == []


@needs_rlimit
def test_batcher_spool_write_failing_part_way_loses_no_later_batch(make_server, spool_dir):
    s = make_server("collections")
    s.down()
    errors = []
    b = Batcher(s.url, CONNECT, spool_dir=spool_dir, retry=Retry(attempts=1), interval=None, atexit=False,
                concurrency=1, on_error=lambda e, evs: errors.append((e, evs)))
    try:
        b.push({"id": "a"}, "c")
        assert b.flush(10)
        with disk_full(4096):
            b.push({"id": "big", "pad": "x" * 20_000}, "c")
            assert b.flush(10)
        for i in range(50):
            b.push({"id": f"later-{i}"}, "c")
        assert b.flush(10)
    finally:
        b.close(5)
    [(err, evs)] = errors  # the batch that did not fit is reported with its events, the others are spooled
    assert isinstance(err, SpoolError) and len(evs) == 1 and b'"big"' in evs[0]
    assert b.stats["spooled"] == 51
    s.up()
    errors2 = []
    with Batcher(s.url, CONNECT, spool_dir=spool_dir, retry=Retry(attempts=1), atexit=False,
                 on_error=lambda e, evs: errors2.append(e)) as b2:
        assert b2.flush(10)
    assert b2.stats["replayed"] == 51 and b2.stats["corrupt"] == 0 and errors2 == []
    assert s.ids() == {"a"} | {f"later-{i}" for i in range(50)}


# -- records handed out and not settled --------------------------------------------------------------------------


def test_next_record_hands_an_unsettled_record_out_again(spool_dir):
    """A record neither acked nor released is never skipped: acking the one after it would lose it."""
    with Spool(spool_dir) as sp:
        sp.append(batch_of(["r1"]))
        sp.append(batch_of(["r2"]))
        first = sp.next_record()
        assert first.batch.tags() == ["r1"]
        again = sp.next_record()  # the caller lost track of ``first`` (an exception, say)
        assert again.batch.tags() == ["r1"]
        again.ack()
        first.ack()  # a late ack of the same record changes nothing
        assert drain(sp) == [["r2"]]
    assert os.listdir(spool_dir) == []


@needs_rlimit
def test_replay_keeps_a_record_whose_retryable_events_cannot_be_spooled_again(make_server, spool_dir):
    """The replay of R1 gets per-event "try again" answers and re-spooling those events fails (a full disk): R1
    must stay in the spool and arrive later, not be skipped when R2 is acknowledged."""
    with Spool(spool_dir) as sp:
        sp.append(batch_of([f"r1-{i}" for i in range(5)]))
        sp.append(batch_of(["r2-0"]))
    s = make_server("collections", item_retry_rate=1.0, seed=1)
    failed_once = threading.Event()
    errors = []
    with disk_full(64) as free_space:

        class DiskRecovers(logging.Handler):  # runs in the replay thread, right after the failed replay
            def emit(self, record):
                if "spool replay failed" in record.getMessage() and not failed_once.is_set():
                    free_space()
                    s.faults.item_retry_rate = 0.0
                    failed_once.set()

        handler = DiskRecovers()
        logging.getLogger("eventpush.batcher").addHandler(handler)
        try:
            b = Batcher(s.url, CONNECT, spool_dir=spool_dir, atexit=False,
                        retry=Retry(attempts=2, backoff=0.05, backoff_max=0.2),
                        on_error=lambda e, evs: errors.append((e, evs)))
            try:
                assert failed_once.wait(10)
                assert s.wait_for(unique=6, timeout=20)  # the probe after the failure replays R1, then R2
                assert b.flush(10)
            finally:
                b.close(5)
        finally:
            logging.getLogger("eventpush.batcher").removeHandler(handler)
    assert s.ids() == {f"r1-{i}" for i in range(5)} | {"r2-0"}
    assert errors == []
    assert drain_dir(spool_dir) == []


# -- bad records: reported once, and never under the spool's lock ------------------------------------------------


def test_a_corrupt_record_is_reported_once_across_releases_and_restarts(spool_dir):
    with Spool(spool_dir) as sp:
        sp.append(batch_of(["bad"]))
        sp.append(batch_of(["good"]))
    corrupt_first_record(spool_dir)
    reports = []
    with Spool(spool_dir, on_corrupt=reports.append) as sp:
        for _ in range(5):  # the endpoint is down: every replay attempt releases the record
            rec = sp.next_record()
            assert rec.batch.tags() == ["good"]
            rec.release()
        assert sp.corrupt == 1
    with Spool(spool_dir, on_corrupt=reports.append) as sp:  # the next start
        assert sp.pending() == (1, 1)
        assert drain(sp) == [["good"]]
        assert sp.corrupt == 0
    assert len(reports) == 1 and "checksum" in str(reports[0])


def test_on_corrupt_runs_without_the_spool_lock(spool_dir):
    """The callback may wait for another thread that uses the spool (a batcher's on_error reads stats while a
    pusher spills into the spool): it must not be called with the spool's lock held."""
    with Spool(spool_dir) as sp:
        sp.append(batch_of(["bad"]))
        sp.append(batch_of(["good"]))
    corrupt_first_record(spool_dir)
    other_finished = []

    def on_corrupt(err):
        t = threading.Thread(target=lambda: sp.append(batch_of(["other"])), daemon=True)
        t.start()
        t.join(5)
        other_finished.append(not t.is_alive())

    sp = Spool(spool_dir, on_corrupt=on_corrupt)
    try:
        rec = sp.next_record()
        assert rec.batch.tags() == ["good"]
        rec.ack()
    finally:
        sp.close()
    assert other_finished == [True]
    assert drain_dir(spool_dir) == [["other"]]


def test_batcher_reports_a_corrupt_record_once_while_the_endpoint_is_down(make_server, spool_dir):
    with Spool(spool_dir) as sp:
        sp.append(batch_of(["bad"]))
        sp.append(batch_of(["good"]))
    corrupt_first_record(spool_dir)
    s = make_server("collections")
    s.down()
    errors = []
    b = Batcher(s.url, CONNECT, spool_dir=spool_dir, retry=Retry(attempts=1, backoff=0.01, backoff_max=0.05),
                on_error=lambda e, evs: errors.append(e), atexit=False)
    try:
        time.sleep(1.5)  # the replay probes the endpoint every 0.05 s meanwhile
        assert b.stats["corrupt"] == 1
        s.up()
        assert s.wait_for(unique=1, timeout=10)
        assert b.flush(10)
    finally:
        b.close(5)
    assert b.stats["corrupt"] == 1 and b.stats["replayed"] == 1
    assert sum(isinstance(e, SpoolCorruptError) for e in errors) == 1
    assert s.ids() == {"good"}


def test_on_error_reading_stats_during_a_spill_does_not_deadlock(make_server, spool_dir):
    """The replay reports a corrupt record through on_error, which reads ``stats``, while push() spills into the
    spool: neither may wait for a lock the other holds."""
    with Spool(spool_dir) as sp:
        sp.append(batch_of(["old-bad"]))
        sp.append(batch_of(["old-good"]))
    corrupt_first_record(spool_dir)
    s = make_server("collections", slow_rate=1.0, slow_delay=1.0)
    seen = []

    def on_error(exc, events):
        time.sleep(0.5)  # a slow logger: the pusher fills the buffer and spills meanwhile
        seen.append((type(exc), b.stats["pushed"]))

    b = Batcher(s.url, CONNECT, spool_dir=spool_dir, overflow="spill", max_buffered=20, max_batch_events=10,
                concurrency=1, interval=None, retry=Retry(attempts=1), on_error=on_error, atexit=False)

    def produce():
        for i in range(100):
            b.push({"id": f"new-{i}"}, "c")

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    producer.join(15)
    assert not producer.is_alive(), "push() deadlocked"
    s.faults.slow_rate = 0.0
    assert b.flush(60)
    b.close(10)
    assert [t for t, _ in seen] == [SpoolCorruptError]
    assert b.stats["corrupt"] == 1 and b.stats["spooled"] > 0
    assert s.ids() == {f"new-{i}" for i in range(100)} | {"old-good"}


# -- processes racing on one directory ---------------------------------------------------------------------------


def test_a_new_segment_taken_by_a_starting_process_before_it_is_locked_is_not_written_to(spool_dir,
                                                                                       monkeypatch):
    """Another process starts (and adopts orphaned segments) just after our new ``.open`` was created and before
    we locked it: it sees an empty unlocked segment and removes it. Our records must go to a segment that is
    read."""
    sp = Spool(spool_dir)
    real_lock = spool_mod._lock_nb
    armed = [True]

    def racing_lock(fd):
        if armed and armed.pop():
            Spool(spool_dir).close()  # the other process's Spool(): it adopts (here: removes) the empty .open
        return real_lock(fd)

    monkeypatch.setattr(spool_mod, "_lock_nb", racing_lock)
    try:
        sp.append(batch_of(["x"]))
    finally:
        sp.close()
    assert armed == []  # the race did happen
    assert drain_dir(spool_dir) == [["x"]]


def test_a_segment_sealed_while_another_process_adopts_does_not_crash_it(spool_dir, monkeypatch):
    """A starting process lists an ``.open`` of a live writer, which seals it (renames it ``.seg``) and lets go of
    its lock before the adopter locks it: the adopter must leave it alone, not crash with FileNotFoundError."""
    writer = Spool(spool_dir)
    writer.append(batch_of(["x"]))
    real_lock = spool_mod._lock_nb
    armed = [True]

    def racing_lock(fd):
        if armed and armed.pop():
            writer.close()  # between the adopter's open() and its lock
        return real_lock(fd)

    monkeypatch.setattr(spool_mod, "_lock_nb", racing_lock)
    Spool(spool_dir).close()
    assert armed == []
    monkeypatch.setattr(spool_mod, "_lock_nb", real_lock)
    assert drain_dir(spool_dir) == [["x"]]


# -- the directory removed while running -------------------------------------------------------------------------


def test_spool_directory_removed_between_appends_loses_nothing(spool_dir):
    reports = []
    sp = Spool(spool_dir, on_corrupt=reports.append)
    sp.append(batch_of(["a"]))
    shutil.rmtree(spool_dir)  # a cache cleaner
    sp.append(batch_of(["b"]))
    sp.close()
    assert drain_dir(spool_dir) == [["a"], ["b"]]
    assert reports == []


def test_batcher_spool_directory_removed_while_running(make_server, spool_dir):
    s = make_server("collections")
    s.down()
    errors = []
    # (the replay probes a down endpoint every 4 s: the first records are still in the open segment at the rmtree)
    retry = Retry(attempts=1, backoff=1.0, backoff_max=5.0)
    b = Batcher(s.url, CONNECT, spool_dir=spool_dir, retry=retry, interval=None, atexit=False,
                on_error=lambda e, evs: errors.append(e))
    for i in range(10):
        b.push({"id": f"a{i}"}, "c")
    assert b.flush(10)
    shutil.rmtree(spool_dir)
    for i in range(10):
        b.push({"id": f"b{i}"}, "c")
    assert b.flush(10)
    b.close(5)  # no FileNotFoundError
    assert b.stats["spooled"] == 20 and errors == []
    s.up()
    with Batcher(s.url, CONNECT, spool_dir=spool_dir, retry=Retry(attempts=1), atexit=False) as b2:
        assert b2.flush(10)
    assert b2.stats["replayed"] == 20
    assert s.ids() == {f"a{i}" for i in range(10)} | {f"b{i}" for i in range(10)}


def test_batcher_close_reports_a_spool_it_cannot_save_and_still_closes(make_server, spool_dir):
    """The spool directory is replaced by a file: the segment being written cannot be saved. close() reports it
    (on_error, ``corrupt``), raises nothing, and closes the transport all the same."""
    s = make_server("collections")
    s.down()
    errors = []
    b = Batcher(s.url, CONNECT, spool_dir=spool_dir, retry=Retry(attempts=1, backoff=1.0, backoff_max=5.0),
                interval=None, atexit=False, on_error=lambda e, evs: errors.append(e))
    for i in range(10):
        b.push({"id": f"a{i}"}, "c")
    assert b.flush(10)
    shutil.rmtree(spool_dir)
    open(spool_dir, "w").close()
    b.close(5)
    assert b.transport.closed
    [err] = errors
    assert isinstance(err, SpoolCorruptError) and "10 event(s)" in str(err) and "lost" in str(err)
    assert b.stats["corrupt"] == 1
