"""Framing, sealing, spans, subsets, encode_batch and the buffer protocol, on both cores."""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import json
import sys
import tracemalloc

import pytest

from eventpush.dialects import BARCHART, CONNECT, JSON_ARRAY, NDJSON, Dialect
from eventpush.errors import EventTooLargeError, EventTypeError, EventValidationError

TS = dt.datetime(2015, 8, 1)


def ev(n, **kw):
    out = {"n": n, "id": f"id{n}", "timestamp": TS}
    out.update(kw)
    return out


def spans_ok(batch):
    """Every span's bytes equal event(i), and the body parses."""
    body = batch.body()
    for i in range(batch.count):
        off, length = batch.span(i)
        assert body[off : off + length] == batch.event(i)
        json.loads(batch.event(i))
    return body


class TestFraming:
    def test_collections_grouped_first_seen(self, make):
        enc = make(CONNECT)
        for n, coll in enumerate(["b", "a", "b", "c", "a"]):
            assert enc.add(ev(n), coll, tag=f"t{n}") is None
        assert enc.pending == 5
        expected_size = enc.pending_bytes
        batch = enc.seal()
        assert enc.pending == 0 and enc.pending_bytes == 0 and enc.seal() is None
        body = spans_ok(batch)
        assert len(body) == batch.nbytes == expected_size
        parsed = json.loads(body)
        assert list(parsed) == ["b", "a", "c"]
        assert [e["n"] for e in parsed["b"]] == [0, 2] and [e["n"] for e in parsed["a"]] == [1, 4]
        assert batch.tags() == ["t0", "t2", "t1", "t4", "t3"]
        assert [batch.collection(i) for i in range(5)] == ["b", "b", "a", "a", "c"]
        assert batch.groups() == [("b", 0, 2), ("a", 2, 4), ("c", 4, 5)]
        assert batch.count == len(batch) == 5 and batch.dialect is CONNECT

    def test_one_collection(self, make):
        enc = make(CONNECT)
        enc.add(ev(1), "only")
        enc.add(ev(2), "only")
        batch = enc.seal()
        assert batch.body() == b'{"only":[' + batch.event(0) + b"," + batch.event(1) + b"]}"
        assert batch.groups() == [("only", 0, 2)]

    @pytest.mark.parametrize(
        "dialect, wrap",
        [
            (NDJSON, lambda es: b"".join(e + b"\n" for e in es)),
            (JSON_ARRAY, lambda es: b"[" + b",".join(es) + b"]"),
            (Dialect(name="ev", rules="none", framing="events"), lambda es: b'{"events":[' + b",".join(es) + b"]}"),
        ],
        ids=["ndjson", "array", "events"],
    )
    def test_other_framings(self, make, dialect, wrap):
        enc = make(dialect)
        values = [{"a": 1}, [1, 2], "s", None, 1.5]
        for i, v in enumerate(values):
            enc.add(v)
            single = wrap([enc.encode(x) for x in values[: i + 1]])
            assert enc.pending_bytes == len(single)
        batch = enc.seal()
        assert batch.body() == wrap([enc.encode(v) for v in values])
        spans_ok(batch)
        assert batch.tags() == [None] * 5 and batch.groups() == [(None, 0, 5)]

    def test_barchart_body(self, make):
        enc = make(BARCHART)
        event = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1, "context": []}
        enc.add(event)
        enc.add(event)
        body = enc.seal().body()
        assert json.loads(body) == {"events": [event, event]}


class TestSealing:
    def test_by_count(self, make):
        enc = make(CONNECT, max_batch_events=3)
        results = [enc.add(ev(n), "c") for n in range(7)]
        sealed = [r for r in results if r is not None]
        assert [results.index(b) for b in sealed] == [2, 5]  # sealed by the event that filled it
        assert [b.count for b in sealed] == [3, 3] and enc.pending == 1

    def test_connect_limit_is_5000(self, make):
        enc = make(CONNECT)
        batches, errors = enc.encode_batch([ev(n) for n in range(5001)], "c")
        assert [b.count for b in batches] == [5000, 1] and errors == []

    def test_by_bytes(self, make):
        one = len(make(JSON_ARRAY).encode("x" * 10))  # 12 bytes
        enc = make(JSON_ARRAY, max_batch_bytes=2 + 3 * one + 2)  # three events and their commas
        out = [enc.add("x" * 10) for _ in range(4)]
        assert out[:3] == [None, None, None]
        sealed = out[3]
        assert sealed.count == 3 and sealed.nbytes == 2 + 3 * one + 2
        assert enc.pending == 1  # the fourth event opened the next batch

    def test_collections_size_counts_new_group(self, make):
        enc = make(CONNECT, max_batch_bytes=10_000)
        enc.add(ev(0), "a")
        size = enc.pending_bytes
        enc.add(ev(1), "bb")
        assert enc.pending_bytes == size + len(enc.encode(ev(1))) + len(b',"bb":[]')
        expected = enc.pending_bytes
        batch = enc.seal()
        assert batch.nbytes == len(batch.body()) == expected

    def test_oversized_event_gets_its_own_batch(self, make):
        enc = make(NDJSON, max_batch_bytes=20)
        assert enc.add("a") is None
        first = enc.add("b" * 50)  # would exceed: seals "a"
        assert first.body() == b'"a"\n'
        assert enc.pending == 1 and enc.pending_bytes == 53
        second = enc.add("c")
        assert second.body() == b'"' + b"b" * 50 + b'"\n'
        assert enc.seal().body() == b'"c"\n'

    def test_failed_event_leaves_no_bytes(self, make):
        enc = make(CONNECT)
        enc.add(ev(0), "c")
        before = enc.pending_bytes
        for bad in ({"x": float("nan")}, {"tp_x": 1}, {"x": "a" * 70000}, [1]):
            with pytest.raises((EventTypeError, EventValidationError)):
                enc.add(bad, "c")
        assert enc.pending == 1 and enc.pending_bytes == before
        enc.add(ev(1), "c")
        assert [e["n"] for e in json.loads(enc.seal().body())["c"]] == [0, 1]

    @pytest.mark.parametrize("dialect, coll", [(CONNECT, "c"), (BARCHART, None), (NDJSON, None),
                                               (JSON_ARRAY, None)])
    def test_add_encoded_frames_and_seals_as_add_does(self, make, dialect, coll):
        """``add_encoded(encode(e))`` builds the same batches as ``add(e)``: bodies, spans, collections, tags,
        sealing by count and by bytes (several collections for Connect)."""
        when = dt.datetime(2026, 12, 3, 10, 0, 0, 123456)
        if dialect is BARCHART:
            events = [{"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-SYMBOL-ADDED",
                       "timestamp": 1_600_000_000_000 + n, "context": ["u", str(n)]} for n in range(9)]
        else:
            events = [{"id": f"e{n}", "timestamp": when, "n": n, "s": "x" * n} for n in range(9)]
        colls = [None] * 9 if coll is None else ["a", "bb", "a"] * 3
        for limits in ({"max_batch_events": 4}, {"max_batch_bytes": 400}, {}):
            plain, pre = make(dialect, **limits), make(dialect, **limits)
            got_plain = [plain.add(e, c, tag=i) for i, (e, c) in enumerate(zip(events, colls))] + [plain.seal()]
            got_pre = [pre.add_encoded(pre.encode(e, c), c, tag=i) for i, (e, c) in enumerate(zip(events, colls))]
            got_pre.append(pre.seal())
            assert [b is None for b in got_plain] == [b is None for b in got_pre]
            for a, b in zip(got_plain, got_pre):
                if a is not None:
                    assert (a.body(), a.tags(), a.groups()) == (b.body(), b.tags(), b.groups())
                    assert [a.event(i) for i in range(a.count)] == [b.event(i) for i in range(b.count)]

    def test_add_encoded_refuses_what_add_would(self, make):
        enc = make(CONNECT)
        data = enc.encode({"n": 1}, "c")
        enc.add_encoded(data, "c")
        before = (enc.pending, enc.pending_bytes)
        for wrong in (bytearray(data), memoryview(data), data.decode(), None):
            with pytest.raises(TypeError, match="add_encoded takes the bytes encode"):
                enc.add_encoded(wrong, "c")
        for coll in (None, 1, b"c"):
            with pytest.raises(EventTypeError):
                enc.add_encoded(data, coll)
        with pytest.raises(EventTooLargeError):
            enc.add_encoded(b'{"s":"' + b"x" * 70_000 + b'"}', "c")
        assert (enc.pending, enc.pending_bytes) == before
        assert json.loads(enc.seal().body())["c"][0]["n"] == 1

    @pytest.mark.parametrize("kw", [{"max_batch_events": 0}, {"max_batch_bytes": -1}, {"max_batch_events": True},
                                    {"max_batch_events": 1.5}])
    def test_bad_limits(self, core, kw):
        with pytest.raises(ValueError):
            core.Encoder(CONNECT, **kw)

    def test_unlimited(self, make):
        enc = make(NDJSON, max_batch_events=None, max_batch_bytes=None)
        batches, _ = enc.encode_batch(list(range(20_000)))
        assert len(batches) == 1 and batches[0].count == 20_000

    def test_not_a_dialect(self, core):
        with pytest.raises(TypeError):
            core.Encoder("connect")


class TestEncodeBatch:
    def test_list_with_errors(self, make):
        enc = make(CONNECT)
        enc.add(ev(99), "open")
        events = [ev(0), {"x": float("nan")}, ev(2), "nope", {"tp_a": 1}, ev(5)]
        batches, errors = enc.encode_batch(events, "c")
        assert enc.pending == 1  # the open batch is not touched
        assert len(batches) == 1 and batches[0].tags() == [0, 2, 5]
        assert [(type(e), e.index, e.collection) for e in errors] == [
            (EventTypeError, 1, "c"), (EventTypeError, 3, "c"), (EventValidationError, 4, "c")]
        assert errors[0].field == "x" and errors[1].message == "Event must be a dict object"

    def test_mapping(self, make):
        enc = make(CONNECT)
        batches, errors = enc.encode_batch({"a": [ev(0), [1], ev(2)], "b": [ev(3)], "c": []})
        (batch,) = batches
        assert batch.tags() == [("a", 0), ("a", 2), ("b", 0)]
        assert [batch.tag(i) for i in range(3)] == batch.tags()
        assert batch.groups() == [("a", 0, 2), ("b", 2, 3)]
        assert [(e.index, e.collection) for e in errors] == [(1, "a")]
        parsed = json.loads(batch.body())
        assert [e["n"] for e in parsed["a"]] == [0, 2]

    def test_stop_at_error(self, make):
        """``stop_at_error``: nothing after the first bad event is stamped or encoded (connect-python stops
        there), in a later collection neither; the good batch path is unchanged."""
        enc = make(CONNECT)
        later, other = {"y": 2}, {"z": 3}
        batches, errors = enc.encode_batch({"a": [{"x": 1}, {"tp_x": 1}, later], "b": [other]}, stop_at_error=True)
        assert batches == [] and [(type(e), e.index, e.collection) for e in errors] == [(EventValidationError, 1, "a")]
        assert later == {"y": 2} and other == {"z": 3}
        first = {"x": 1}
        batches, errors = enc.encode_batch([first, "nope", {"w": 1}], "c", stop_at_error=True)
        assert batches == [] and [(e.index, e.collection) for e in errors] == [(1, "c")]
        assert set(first) == {"x", "id", "timestamp"}  # the events before it were processed (and stamped)
        batches, errors = enc.encode_batch({"a": [ev(0), ev(1)]}, stop_at_error=True)
        assert errors == [] and batches[0].tags() == [("a", 0), ("a", 1)]

    def test_mapping_split_by_limits(self, make):
        enc = make(CONNECT, max_batch_events=2)
        batches, _ = enc.encode_batch({"a": [ev(0), ev(1), ev(2)], "b": [ev(3)]})
        assert [b.tags() for b in batches] == [[("a", 0), ("a", 1)], [("a", 2), ("b", 0)]]

    def test_mapping_value_not_a_list(self, make):
        enc = make(CONNECT)
        with pytest.raises(EventTypeError) as info:
            enc.encode_batch({"a": [ev(0)], "b": {"n": 1}})
        assert info.value.message == "Events must be a list of dict objects" and info.value.collection == "b"

    def test_not_a_list(self, make):
        with pytest.raises(EventTypeError) as info:
            make(CONNECT).encode_batch("events", "c")
        assert info.value.message == "Events must be a list of dict objects"

    def test_mapping_with_collection(self, make):
        with pytest.raises(ValueError):
            make(CONNECT).encode_batch({"a": []}, "c")

    def test_missing_collection(self, make):
        batches, errors = make(CONNECT).encode_batch([ev(0), ev(1)])
        assert batches == [] and [e.index for e in errors] == [0, 1]
        assert all(isinstance(e, EventTypeError) for e in errors)

    def test_too_large_is_per_event(self, make):
        batches, errors = make(CONNECT).encode_batch([ev(0), ev(1, big="x" * 70000), ev(2)], "c")
        assert batches[0].tags() == [0, 2]
        assert isinstance(errors[0], EventTooLargeError) and errors[0].index == 1

    def test_empty(self, make):
        assert make(NDJSON).encode_batch([]) == ([], [])


class TestSubset:
    def test_reframed_from_stored_bytes(self, make):
        enc = make(CONNECT)
        batches, _ = enc.encode_batch({"a": [ev(0), ev(1)], "b": [ev(2)], "c": [ev(3)]})
        (batch,) = batches
        sub = batch.subset([3, 1, 2])
        assert sub.tags() == [("c", 0), ("a", 1), ("b", 0)]
        assert sub.groups() == [("c", 0, 1), ("a", 1, 2), ("b", 2, 3)]
        assert [sub.event(i) for i in range(3)] == [batch.event(3), batch.event(1), batch.event(2)]
        assert json.loads(sub.body()) == {
            "c": [json.loads(batch.event(3))], "a": [json.loads(batch.event(1))], "b": [json.loads(batch.event(2))]}
        spans_ok(sub)

    def test_ndjson_subset_and_tags(self, make):
        enc = make(NDJSON)
        for i in range(4):
            enc.add(i, tag=("t", i))
        batch = enc.seal()
        sub = batch.subset([0, 2])
        assert sub.body() == b"0\n2\n" and sub.tags() == [("t", 0), ("t", 2)]

    @pytest.mark.parametrize("indices, exc", [([5], IndexError), ([-1], IndexError), ([], ValueError),
                                              (["0"], TypeError)])
    def test_bad_indices(self, make, indices, exc):
        enc = make(NDJSON)
        enc.add(1)
        with pytest.raises(exc):
            enc.seal().subset(indices)

    def test_bad_index_accessors(self, make):
        enc = make(NDJSON)
        enc.add(1)
        batch = enc.seal()
        for method in (batch.event, batch.span, batch.collection, batch.tag):
            with pytest.raises(IndexError):
                method(1)


class TestBuffer:
    def test_memoryview_zero_copy_read_only(self, make, core):
        enc = make(NDJSON)
        enc.add({"a": 1})
        batch = enc.seal()
        view = memoryview(batch)
        assert view.readonly and view.nbytes == batch.nbytes and bytes(view) == batch.body()
        if core.__name__.endswith("_py") and sys.version_info >= (3, 12):
            # a Python-level __buffer__ (PEP 688, the twin's export counting) is wrapped by CPython
            assert type(view.obj).__name__ == "_buffer_wrapper"
        else:
            assert view.obj is batch
        again = memoryview(batch)
        # zero-copy: every view shows the same memory, the batch's own
        assert _address(view) == _address(again) == _address(batch)
        with pytest.raises(TypeError):
            view[0] = 1
        view.release()
        again.release()

    def test_release_refused_while_view_alive(self, make, core):
        if core.__name__.endswith("_py") and sys.version_info < (3, 12):
            pytest.skip("a pure-Python class can count its buffer exports only from Python 3.12 (PEP 688)")
        enc = make(NDJSON)
        enc.add({"a": 1})
        batch = enc.seal()
        view = memoryview(batch)
        with pytest.raises(BufferError):
            batch.release()
        assert batch.count == 1 and bytes(view) == b'{"a":1}\n'
        view.release()
        batch.release()
        assert batch.count == 0 and batch.nbytes == 0 and batch.body() == b""
        with pytest.raises(IndexError):
            batch.event(0)

    def test_release_twice(self, make):
        enc = make(NDJSON)
        enc.add(1)
        batch = enc.seal()
        batch.release()
        batch.release()
        assert len(batch) == 0

    def test_not_picklable(self, make):
        import pickle

        enc = make(NDJSON)
        enc.add(1)
        with pytest.raises(TypeError):
            pickle.dumps(enc.seal())

    def test_no_leak_over_thousands_of_batches(self, make):
        enc = make(CONNECT, max_batch_events=10)
        events = [{"n": i, "payload": "x" * 200, "id": "i", "timestamp": TS} for i in range(10)]

        def cycle(k):
            for _ in range(k):
                batches, _ = enc.encode_batch({"a": events[:5], "b": events[5:]})
                for b in batches:
                    memoryview(b).release()
                    b.subset([0, 1]).release()
                    b.release()
                batches, _ = enc.encode_batch(events, "c")  # dropped without release()

        cycle(200)  # warm up caches and free lists
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            cycle(3000)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        # 6,000 batches of ~2.6 kB each went through; a leak of even one buffer per batch would be > 15 MB
        assert after - before < 1_000_000


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


def _address(obj) -> int:
    """The address of the memory an object exports through the buffer protocol."""
    view = _PyBuffer()
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    if get(obj, ctypes.byref(view), 0) != 0:
        raise RuntimeError("no buffer")
    try:
        return view.buf
    finally:
        release = ctypes.pythonapi.PyBuffer_Release
        release.argtypes = [ctypes.POINTER(_PyBuffer)]
        release(ctypes.byref(view))
