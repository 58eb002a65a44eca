"""Transport behaviour against a real server: retries, Retry-After, no retry on 4xx, gzip, keep-alive, errors."""

from __future__ import annotations

import pickle
import time

import orjson
import pytest

import eventpush
from eventpush.errors import ClosedError, ConnectError, TimeoutError
from eventpush.transport import Limits, Retry, Timeout, Transport

from dl_helpers import FAST_RETRY, ScriptedEndpoint, free_port_local

BODY = orjson.dumps({"c": [{"id": "a", "v": 1}, {"id": "b", "v": 2}]})


def test_config_objects_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        Timeout(1.0, 2.0)  # type: ignore[misc]
    r = Retry(attempts=3)
    with pytest.raises(AttributeError):
        r.attempts = 4  # type: ignore[misc]
    assert r.replace(attempts=4).attempts == 4 and r.attempts == 3
    assert pickle.loads(pickle.dumps(r)) == r
    assert Retry.NONE.attempts == 1
    assert Limits(max_connections=3).max_connections == 3
    with pytest.raises(ValueError):
        Retry(attempts=0)


def test_full_jitter_stays_under_the_cap():
    r = Retry(backoff=0.5, backoff_max=2.0)
    delays = [r.delay(n) for n in range(1, 10) for _ in range(50)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert max(r.delay(1) for _ in range(200)) <= 0.5
    assert r.delay(3, retry_after=7.0) == 7.0


def test_retries_429_and_honours_retry_after(make_server):
    s = make_server("collections", fail_first=2, statuses=(429,), retry_after=0.2)
    with Transport(s.url, retry=Retry(attempts=5, backoff=0.001, backoff_max=0.001)) as t:
        start = time.monotonic()
        r = t.post("/events", BODY, headers={"Content-Type": "application/json"})
        elapsed = time.monotonic() - start
    assert r.status == 200 and r.attempts == 3
    assert orjson.loads(r.data) == {"c": [{"success": True}, {"success": True}]}
    # the jittered backoff alone is ≤ 1 ms: only Retry-After explains two waits of 0.2 s
    assert elapsed >= 0.38
    assert [e["status"] for e in s.log] == [429, 429, 200]
    assert s.unique == 2


def test_retries_5xx_until_attempts_run_out_and_returns_the_last_response(make_server):
    s = make_server("collections", error_rate=1.0, statuses=(503,), store_on_error=0.0)
    with Transport(s.url, retry=FAST_RETRY.replace(attempts=4)) as t:
        r = t.post("/events", BODY)
    assert r.status == 503 and r.attempts == 4
    assert len(s.log) == 4 and s.unique == 0


def test_never_retries_other_4xx(make_server):
    s = make_server("status", reject_key="bad")
    with Transport(s.url, retry=FAST_RETRY) as t:
        r = t.post("/", orjson.dumps([{"bad": 1}]))
    assert r.status == 400 and r.attempts == 1
    assert b"not allowed" in r.data
    assert len(s.log) == 1


def test_total_time_cap_stops_retrying(make_server):
    s = make_server("collections", error_rate=1.0, statuses=(429,), retry_after=0.3, store_on_error=0.0)
    with Transport(s.url, retry=Retry(attempts=100, total=0.5)) as t:
        r = t.post("/events", BODY)
    assert r.status == 429 and r.attempts == 2  # a third attempt would start after 0.6 s > total


def test_connection_refused_raises_connect_error_after_retries():
    port = free_port_local()
    with Transport(f"http://127.0.0.1:{port}/connect", retry=FAST_RETRY.replace(attempts=3)) as t:
        with pytest.raises(ConnectError) as info:
            t.post("/events", BODY)
    assert info.value.attempts == 3
    assert info.value.url == f"http://127.0.0.1:{port}/connect/events"  # the prefix once, not twice
    assert isinstance(info.value, OSError) and isinstance(info.value, eventpush.TransportError)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is ConnectError and again.url == info.value.url


def test_read_timeout_raises_timeout_error(make_server):
    s = make_server("collections", slow_rate=1.0, slow_delay=0.6)
    with Transport(s.url, timeout=Timeout(connect=1.0, read=0.1), retry=FAST_RETRY.replace(attempts=2)) as t:
        with pytest.raises(TimeoutError) as info:
            t.post("/events", BODY)
    assert info.value.attempts == 2


def test_connection_reset_mid_body_is_retried(make_server):
    s = make_server("collections", reset_rate=1.0)
    big = orjson.dumps({"c": [{"id": str(i), "pad": "x" * 200} for i in range(200)]})
    with Transport(s.url, retry=FAST_RETRY.replace(attempts=3)) as t:
        with pytest.raises(ConnectError):
            t.post("/events", big)
        s.faults.reset_rate = 0.0
        s.faults.fail_first = 0
        r = t.post("/events", big)
    assert r.status == 200 and s.unique == 200
    assert s.injected["reset"] == 3


def test_gzip_body(make_server):
    s = make_server("status")
    body = orjson.dumps([{"id": str(i), "text": "the same words again " * 5} for i in range(100)])
    with Transport(s.url, gzip=True) as t:
        r = t.post("/", body, headers={"Content-Type": "application/json"})
    assert r.status == 200
    entry = s.log[-1]
    assert entry["headers"]["content-encoding"] == "gzip"
    assert entry["length"] == len(body) and entry["raw_length"] < len(body) // 5
    assert s.unique == 100


def test_keep_alive_reuses_one_connection(server):
    with Transport(server.url) as t:
        for i in range(50):
            body = orjson.dumps({"c": [{"id": f"k{i}"}]})
            assert t.post("/events", body).status == 200
    assert server.requests == 50
    assert server.connections == 1


def test_batch_goes_out_as_its_exact_bytes(server):
    enc = eventpush.Encoder(eventpush.CONNECT)
    for i in range(20):
        enc.add({"n": i}, "things")
    batch = enc.seal()
    with Transport(server.url) as t:
        r = t.post("/events", batch, headers={"Content-Type": "application/json"})
    assert r.status == 200
    assert server.log[-1]["length"] == batch.nbytes
    assert sorted(e["n"] for e in server.events()) == list(range(20))


def test_closed_transport_refuses_posts(server):
    t = Transport(server.url)
    t.close()
    with pytest.raises(ClosedError):
        t.post("/events", BODY)


def test_rejects_non_http_urls():
    with pytest.raises(ValueError):
        Transport("ftp://example.invalid")


def _replies(*replies):
    """An endpoint answering the i-th POST with ``replies[i]`` ((status, headers); the last one repeats): exact
    status lines and headers (``Retry-After`` values the fault server would not send)."""
    return ScriptedEndpoint(lambda index, body: replies[min(index, len(replies) - 1)])


def test_retry_after_values_that_cannot_be_waited_for():
    """A Retry-After of ~3,000 years (seconds, or an HTTP-date) gives up with that response instead of sleeping
    (or raising OverflowError, without a time cap); one that is not a finite number is ignored (backoff)."""
    for value, status, attempts in (("99999999999", 503, 1), ("Fri, 31 Dec 9999 23:59:59 GMT", 503, 1),
                                    ("inf", 200, 2), ("1e400", 200, 2), ("nan", 200, 2)):
        s = _replies((503, [("Retry-After", value)]), (200, []))
        try:
            with Transport(s.url, retry=Retry(attempts=3, backoff=0.01, backoff_max=0.02, total=None)) as t:
                r = t.post("/events", BODY)
            assert (r.status, r.attempts) == (status, attempts), value
        finally:
            s.stop()


def test_retry_after_http_dates_are_gmt_in_every_form(monkeypatch):
    from email.utils import formatdate

    from eventpush.transport import _parse_retry_after

    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    try:
        for tz in ("America/New_York", "Asia/Tokyo", "UTC"):
            monkeypatch.setenv("TZ", tz)
            time.tzset()
            when = time.time() + 100
            g = time.gmtime(when)
            for value in (formatdate(when, usegmt=True), time.strftime("%A, %d-%b-%y %H:%M:%S GMT", g),
                          time.strftime("%a %b %d %H:%M:%S %Y", g)):  # IMF-fixdate, RFC 850, asctime
                assert 90 < _parse_retry_after(value) <= 100, (tz, value)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_total_time_cap_bounds_the_attempt_in_flight(make_server):
    """A retry started before the deadline gets only what is left of ``total`` as its timeouts."""
    s = make_server("collections", slow_rate=1.0, slow_delay=20.0)
    with Transport(s.url, timeout=Timeout(connect=1.0, read=3.0),
                   retry=Retry(attempts=10, backoff=0.01, backoff_max=0.01, total=3.2)) as t:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            t.post("/events", BODY)
    assert info.value.attempts == 2
    assert time.monotonic() - t0 < 5.0  # the second attempt had 0.2 s left, not another 3 s read timeout
