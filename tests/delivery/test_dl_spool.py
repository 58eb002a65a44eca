"""Spool: durable records, replay oldest first, acknowledgements, torn and corrupted records."""

from __future__ import annotations

import os

import pytest

import eventpush
from eventpush import CONNECT, NDJSON
from eventpush.errors import SpoolCorruptError
from eventpush.spool import Spool, SpooledBatch, frame

from dl_helpers import drain_spool as drain


def batch_of(ids, dialect=CONNECT, coll="c"):
    enc = eventpush.Encoder(dialect)
    for i in ids:
        enc.add({"id": i, "v": 1}, coll if dialect.needs_collection else None, tag=i)
    return enc.seal()


def test_roundtrip_keeps_bytes_spans_groups_and_tags(spool_dir):
    b = batch_of(["a", "b", "c"])
    with Spool(spool_dir) as sp:
        sp.append(b)
        assert sp.pending() == (1, 3)
        [got] = drain(sp)
        assert sp.pending() == (0, 0)
    assert got.body() == b.body() and got.count == 3
    assert [got.span(i) for i in range(3)] == [b.span(i) for i in range(3)]
    assert got.groups() == b.groups() and got.tags() == ["a", "b", "c"]
    assert got.subset([2, 0]).body() == b.subset([2, 0]).body()
    assert os.listdir(spool_dir) == []  # fully acknowledged segments are removed


def test_frame_matches_the_encoder_for_every_framing():
    for dialect, coll in ((CONNECT, "c"), (NDJSON, None), (eventpush.JSON_ARRAY, None)):
        enc = eventpush.Encoder(dialect)
        for i in range(3):
            enc.add({"id": str(i)}, coll)
        b = enc.seal()
        body, spans, groups = frame(dialect, [(b.collection(i), b.event(i)) for i in range(3)])
        assert body == b.body() and spans == [b.span(i) for i in range(3)] and groups == b.groups()


def test_replay_is_oldest_first_and_acks_survive_a_restart(spool_dir):
    with Spool(spool_dir) as sp:
        for k in range(5):
            sp.append(batch_of([f"{k}-{j}" for j in range(3)]))
        rec = sp.next_record()
        assert rec.batch.tags() == ["0-0", "0-1", "0-2"]
        rec.ack()
        rec = sp.next_record()
        assert rec.batch.tags()[0] == "1-0"
        rec.release()  # not delivered: stays
    with Spool(spool_dir) as sp:  # a new process, say
        assert sp.pending() == (4, 12)
        assert [b.tags()[0] for b in drain(sp)] == ["1-0", "2-0", "3-0", "4-0"]


def test_truncated_segment_is_detected_and_never_sent(spool_dir):
    reports = []
    with Spool(spool_dir) as sp:
        for k in range(3):
            sp.append(batch_of([f"{k}-{j}" for j in range(4)]))
    [seg] = [n for n in os.listdir(spool_dir) if n.endswith(".seg")]
    path = os.path.join(spool_dir, seg)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 25)  # the last record is torn, as by a kill during the write
    with Spool(spool_dir, on_corrupt=reports.append) as sp:
        got = drain(sp)
        assert sp.corrupt == 1
    assert [b.tags()[0] for b in got] == ["0-0", "1-0"]
    assert len(reports) == 1 and isinstance(reports[0], SpoolCorruptError)
    assert "torn record" in str(reports[0])


def test_corrupted_record_in_the_middle_is_skipped(spool_dir):
    reports = []
    with Spool(spool_dir, fsync="always") as sp:
        for k in range(3):
            sp.append(batch_of([f"{k}-{j}" for j in range(4)]))
    [seg] = [n for n in os.listdir(spool_dir) if n.endswith(".seg")]
    path = os.path.join(spool_dir, seg)
    data = bytearray(open(path, "rb").read())
    second = data.find(b"EPS1", 4)
    data[second + 40] ^= 0xFF  # flip a payload byte of the second record
    open(path, "wb").write(bytes(data))
    with Spool(spool_dir, on_corrupt=reports.append) as sp:
        assert sp.pending() == (2, 8)
        got = drain(sp)
    assert [b.tags()[0] for b in got] == ["0-0", "2-0"]
    assert "checksum" in str(reports[0])


def test_segment_of_a_dead_writer_is_adopted(spool_dir):
    sp = Spool(spool_dir)
    sp.append(batch_of(["x"]))
    # simulate a crash: the descriptor goes away without close() renaming the segment
    os.close(sp._wfd)
    sp._wfd = None
    assert any(n.endswith(".open") for n in os.listdir(spool_dir))
    with Spool(spool_dir) as sp2:
        assert [b.tags() for b in drain(sp2)] == [["x"]]


def test_spooled_batch_interface():
    b = SpooledBatch.from_events(CONNECT, [("a", b'{"id":"1"}'), ("b", b'{"id":"2"}'), ("a", b'{"id":"3"}')],
                                 tags=[1, 2, 3])
    assert b.body() == b'{"a":[{"id":"1"},{"id":"3"}],"b":[{"id":"2"}]}'
    assert b.tags() == [1, 3, 2] and b.collection(2) == "b"
    assert b.count == 3 and b.nbytes == len(b.body())
    with pytest.raises(ValueError):
        b.subset([])
