"""EventBatcher against the real hub (spec §4, checklist §8), through a fault-injecting proxy where timing or
failures matter."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from collections import defaultdict

import orjson
import pytest

import eventpush
from eventpush.barchart import (
    BarchartError,
    BarchartStateError,
    BarchartValidationError,
    EventBatcher,
    EventGateway,
)
from eventpush.errors import BufferFullError, ClosedError
from eventpush.transport import Retry
from support.net import reap_child, wait_until

FAST = Retry(attempts=4, backoff=0.01, backoff_max=0.05)


def uid() -> str:
    return "user-" + uuid.uuid4().hex[:12]


def ev(user: str, n: object = 0):
    return {"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-ACCESSED",
            "timestamp": 1599482731026, "context": [user, str(n)]}  # fmt: skip


def mine(hub, user):
    return [e for e in hub.stored() if e["context"] and e["context"][0] == user]



@pytest.fixture
def gateway(hub, make_proxy):
    proxy = make_proxy()
    gw = EventGateway.for_endpoint(proxy.base_url, retry=FAST)
    gw.proxy = proxy
    try:
        yield gw
    finally:
        gw.dispose()


@pytest.fixture
def batchers():
    made = []

    def make(*args, **kw):
        b = EventBatcher(*args, **kw)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.close(timeout=5)


# -- construction and the stopped state -------------------------------------------------------------------------


def test_requires_gateway_callback_optional_new_batcher_is_stopped(gateway, batchers, tmp_path) -> None:
    with pytest.raises(TypeError, match="EventGateway"):
        EventBatcher("http://127.0.0.1:1/barchart")
    b = batchers(gateway, spool_dir=tmp_path)
    assert not b.running and b.interval == 5.0 and str(b) == "[EventBatcher]"
    user = uid()
    b.push(ev(user, 1))
    b.push(lambda: ev(user, 2))
    assert b.buffered == 2 and b.stats["pushed"] == 2
    time.sleep(0.3)
    assert gateway.proxy.requests == 0  # nothing is sent until start()
    assert b.flush().result(1) is None and b.buffered == 2  # flush is a no-op unless running
    disposed = EventGateway.for_endpoint(gateway.proxy.base_url)
    disposed.dispose()
    with pytest.raises(BarchartStateError, match="disposed"):
        batchers(disposed, spool_dir=tmp_path / "d").start()


def test_start_runs_first_cycle_at_once_and_sends_the_whole_buffer(hub, gateway, batchers, tmp_path) -> None:
    user = uid()
    got = []
    b = batchers(gateway, got.append, interval=60, spool_dir=tmp_path)
    for i in range(50):
        b.push(ev(user, i))
    # with a 60 s interval, only a first cycle that runs at once can settle within the 10 s given here
    assert b.start().result(10) is None
    assert len(gateway.proxy.bodies) == 1 and len(got) == 1 and len(got[0]) == 50  # the whole buffer, one request
    assert b.start().done()  # no-op when running
    assert [e["context"][1] for e in mine(hub, user)] == [str(i) for i in range(50)]


def test_next_cycle_is_interval_after_the_send_completed(hub, gateway, batchers, tmp_path) -> None:
    user = uid()
    gateway.proxy.plan = lambda n: "slow"  # each send takes 0.3 s
    b = batchers(gateway, interval=0.4, spool_dir=tmp_path)
    b.push(ev(user, 0))
    b.start().result(10)
    b.push(ev(user, 1))
    assert wait_until(lambda: len(gateway.proxy.done_times) == 2, 10)
    p = gateway.proxy
    # not fixed-rate: the next send starts at least `interval` after the previous one *completed*
    assert p.times[1] - p.done_times[0] >= 0.4 - 0.02
    assert [e["context"][1] for e in mine(hub, user)] == ["0", "1"]


def test_push_validates_at_once_and_good_events_go_out(hub, gateway, batchers, tmp_path, core, monkeypatch) -> None:
    monkeypatch.setattr(eventpush, "Encoder", core.Encoder)
    user = uid()
    b = batchers(gateway, interval=0.05, spool_dir=tmp_path)
    bad_cases = [
        dict(ev(user), type="NOT-A-TYPE"),
        dict(ev(user), timestamp=1.5),
        dict(ev(user), context="x"),
        dict(ev(user), customer=7),
        "not an event",
    ]
    b.push(ev(user, "a"))
    for k, bad in enumerate(bad_cases):
        with pytest.raises(BarchartValidationError) as info:
            b.push(bad)
        assert info.value.index == 1 + k and info.value.field  # the index of the push() call
    b.push(ev(user, "b"))
    b.start().result(10)
    assert wait_until(lambda: len(mine(hub, user)) == 2)
    assert [e["context"][1] for e in mine(hub, user)] == ["a", "b"]
    assert b.stats["pushed"] == 2


def test_a_plain_event_is_sent_as_it_was_pushed(hub, gateway, batchers, tmp_path, core, monkeypatch) -> None:
    # push() validates and encodes a plain event once; the cycle sends those bytes, so changing (or breaking) the
    # dict afterwards changes nothing (a callable is still evaluated at send time)
    monkeypatch.setattr(eventpush, "Encoder", core.Encoder)
    user = uid()
    b = batchers(gateway, interval=60, spool_dir=tmp_path)
    first, second = ev(user, "as pushed"), ev(user, "kept")
    b.push(first)
    b.push(second)
    first["context"][1] = "changed later"
    second["type"] = "NOT-A-TYPE"
    del second["customer"]
    b.start().result(10)
    assert [e["context"][1] for e in mine(hub, user)] == ["as pushed", "kept"]
    assert mine(hub, user)[1]["type"] == "WATCHLIST-ACCESSED"
    assert b.stats["rejected"] == 0


@pytest.mark.parametrize("validate_context", [False, True])
def test_push_takes_what_the_codec_normalizes_and_counts_every_call(
        hub, make_proxy, tmp_path, core, monkeypatch, validate_context) -> None:
    # push()'s own encoder takes the usual event; what it refuses (enum members, a datetime timestamp) goes
    # through the codec, which converts it as the SDK's Schema.format does, or raises naming this call's index;
    # with validate_context every event takes the codec's path (its transformers fill the context)
    import datetime as dt

    from eventpush.barchart import CustomerType, EventType

    monkeypatch.setattr(eventpush, "Encoder", core.Encoder)
    user = uid()
    when = dt.datetime(2020, 9, 7, 12, 45, 31, 26000, tzinfo=dt.timezone.utc)
    login = {"customer": CustomerType.BARCHART, "product": "CMDTYVIEW", "type": EventType.CMDTYVIEW_LOGIN,
             "timestamp": when, "context": [user, "s", "firefox"]}  # fmt: skip
    with EventGateway.for_endpoint(make_proxy().base_url, retry=FAST, validate_context=validate_context) as gw:
        b = EventBatcher(gw, interval=60, spool_dir=tmp_path)
        b.push(ev(user, "plain"))
        b.push(login)
        with pytest.raises(BarchartValidationError) as info:
            b.push(dict(ev(user), type="NOT-A-TYPE"))
        assert info.value.index == 2
        b.push(lambda: ev(user, "lazy"))
        b.start().result(10)
        b.close(timeout=10)
    got = mine(hub, user)
    assert [e["type"] for e in got] == ["WATCHLIST-ACCESSED", "CMDTYVIEW-LOGIN", "WATCHLIST-ACCESSED"]
    assert got[1]["customer"] == "BARCHART" and got[1]["timestamp"] == 1599482731026
    assert got[1]["context"] == ([user, "s", "firefox", ""] if validate_context else [user, "s", "firefox"])
    assert b.stats["pushed"] == 3 and b.stats["rejected"] == 0


def test_generators_are_called_at_send_time_and_a_bad_one_costs_only_itself(hub, gateway, batchers, tmp_path) -> None:
    user = uid()
    errors = []
    got = []
    b = batchers(gateway, got.append, spool_dir=tmp_path, error_callback=lambda e, evs: errors.append((e, evs)))
    calls = []

    def gen(n):
        def make():
            calls.append(n)
            return ev(user, n)

        return make

    def boom():
        raise RuntimeError("generator failed")

    bad_event = {"customer": "BARCHART"}
    b.push(gen(0))
    b.push(boom)
    b.push(lambda: bad_event)
    b.push(ev(user, 3))
    b.push(gen(4))
    assert calls == []  # not called at push time
    b.start().result(10)
    assert calls == [0, 4]
    assert [e["context"][1] for e in mine(hub, user)] == ["0", "3", "4"]
    assert [type(e).__name__ for e, _ in errors] == ["RuntimeError", "BarchartValidationError"]
    assert errors[0][1] == [boom] and errors[1][1] == [bad_event]
    assert errors[1][0].index == 2 and errors[1][0].field == "product"  # the third push() call
    assert b.stats["rejected"] == 2 and b.running
    b.push(ev(user, 5))
    assert b.flush().result(10) is None  # the loop is still alive
    assert len(mine(hub, user)) == 4 and sum(map(len, got)) == 4


def test_stop_cancels_timer_without_flushing_clear_discards(hub, gateway, batchers, tmp_path) -> None:
    user = uid()
    b = batchers(gateway, interval=0.2, spool_dir=tmp_path)
    b.start().result(10)
    b.stop()
    assert not b.running
    b.push(ev(user, 1))
    time.sleep(0.5)
    assert gateway.proxy.requests == 0 and b.buffered == 1  # no cycle ran, nothing flushed
    b.clear()
    assert b.buffered == 0
    b.push(ev(user, 2))
    b.start().result(10)
    assert [e["context"][1] for e in mine(hub, user)] == ["2"]


def test_flush_sends_and_clears_no_duplicates(hub, gateway, batchers, tmp_path) -> None:
    user = uid()
    b = batchers(gateway, interval=0.1, spool_dir=tmp_path)
    b.start().result(10)
    for i in range(10):
        b.push(ev(user, i))
    assert b.flush().result(10) is None
    assert b.buffered == 0 and len(mine(hub, user)) == 10
    time.sleep(0.3)  # several cycles later: nothing was sent twice (the original re-sent flushed events)
    assert len(mine(hub, user)) == 10
    b.push(ev(user, 10))
    assert b.flush(stop=True).result(10) is None
    assert not b.running and len(mine(hub, user)) == 11
    b.push(ev(user, 11))
    time.sleep(0.3)
    assert len(mine(hub, user)) == 11  # stopped by flush(True)
    with pytest.raises(TypeError):
        b.flush(stop=1)  # type: ignore[arg-type]


def test_one_send_loop_flush_serialised_and_restart_during_send(hub, gateway, batchers, tmp_path) -> None:
    user = uid()
    gateway.proxy.plan = lambda n: "slow"
    b = batchers(gateway, interval=0.05, spool_dir=tmp_path)
    b.push(ev(user, 0))
    b.start()
    assert wait_until(lambda: gateway.proxy.in_flight == 1, 5)
    b.stop()  # while the send is in flight ...
    b.start()  # ... and start again: the old cycle must not reschedule (the original then ran two loops)
    futures = []
    for i in range(1, 6):
        b.push(ev(user, i))
        futures.append(b.flush())
    for f in futures:
        f.result(20)
    time.sleep(0.5)
    b.stop()
    assert gateway.proxy.max_in_flight == 1  # never two sends at once
    assert [e["context"][1] for e in mine(hub, user)] == [str(i) for i in range(6)]
    starts, ends = gateway.proxy.times, gateway.proxy.done_times
    # idle cycles send nothing; each send starts after the previous one ended
    assert all(s >= e - 0.01 for s, e in zip(starts[1:], ends))


def test_callback_on_success_only_failures_retried_then_spooled_and_replayed(hub, make_proxy, tmp_path) -> None:
    user = uid()
    proxy = make_proxy(lambda n: "503")
    gw = EventGateway.for_endpoint(proxy.base_url, retry=FAST)
    got, errors = [], []
    b = EventBatcher(gw, got.append, spool_dir=tmp_path / "spool", error_callback=lambda e, x: errors.append(e))
    for i in range(20):
        b.push(ev(user, i))
    b.start().result(20)
    assert proxy.requests >= 4  # the retry policy's 4 attempts (the probe may add more)
    assert got == [] and errors == []  # the callback is not called on failure; nothing is rejected
    assert b.stats["failed"] == 20 and b.stats["spooled"] == 20 and b.spool_pending() == (1, 20)
    b.stop()
    b.close(timeout=2)
    gw.dispose()
    assert mine(hub, user) == []
    # the endpoint recovers: a new batcher on the same spool replays at start(), exactly once
    healthy = make_proxy()
    gw2 = EventGateway.for_endpoint(healthy.base_url, retry=FAST)
    got2 = []
    b2 = EventBatcher(gw2, got2.append, spool_dir=tmp_path / "spool")
    b2.push(ev(user, 20))
    b2.start().result(20)
    assert wait_until(lambda: len(mine(hub, user)) == 21)
    b2.close()
    gw2.dispose()
    stored = mine(hub, user)
    assert sorted(int(e["context"][1]) for e in stored) == list(range(21))
    assert b2.stats["replayed"] == 20 and b2.spool_pending() == (0, 0)
    assert sum(map(len, got2)) == 21  # replayed batches count as delivered: their callback fires


def test_spooled_batches_go_before_newer_ones_when_sends_succeed_again(hub, make_proxy, tmp_path) -> None:
    """spec/barchart.md §4.2: a spooled batch is "replayed, oldest first, before newer batches once sends succeed
    again"."""
    user = uid()
    down = [True]
    proxy = make_proxy(lambda n: "503" if down[0] else None)
    gw = EventGateway.for_endpoint(proxy.base_url, retry=FAST)
    got = []
    with EventBatcher(gw, got.append, interval=60, spool_dir=tmp_path / "spool") as b:
        b.start().result(20)
        b.push(ev(user, 1))
        b.flush().result(20)
        assert b.spool_pending() == (1, 1) and got == []
        b.push(ev(user, 2))
        b.flush().result(20)  # still down: the new batch is spooled after the old one
        assert b.spool_pending() == (2, 2)
        down[0] = False
        b.push(ev(user, 3))
        b.flush().result(20)
        assert wait_until(lambda: b.spool_pending() == (0, 0))
    gw.dispose()
    sent = [int(e["context"][1]) for body in proxy.bodies for e in orjson.loads(body)["events"]]
    assert sent == [1, 2, 3]
    assert [int(e["context"][1]) for created in got for e in created] == [1, 2, 3]
    assert sorted(int(e["context"][1]) for e in mine(hub, user)) == [1, 2, 3]


def test_4xx_is_not_retried_and_reported(hub, make_proxy, tmp_path) -> None:
    proxy = make_proxy(lambda n: "400json")
    gw = EventGateway.for_endpoint(proxy.base_url, retry=FAST)
    got, errors = [], []
    with EventBatcher(gw, got.append, spool_dir=tmp_path, error_callback=lambda e, x: errors.append((e, x))) as b:
        user = uid()
        b.push(ev(user, 1))
        b.flush().result(10)
        assert proxy.requests == 1 and got == []
        assert len(errors) == 1 and isinstance(errors[0][0], BarchartError) and errors[0][0].status == 400
        assert errors[0][1] == [ev(user, 1)]  # the refused events, as dicts
        assert b.stats["rejected"] == 1 and b.stats["spooled"] == 0
    gw.dispose()


def test_close_and_context_manager_drain(hub, gateway, tmp_path) -> None:
    user = uid()
    with EventBatcher(gateway, spool_dir=tmp_path) as b:  # starts on entry
        assert b.running
        for i in range(5):
            b.push(ev(user, i))
    assert b.closed and len(mine(hub, user)) == 5
    with pytest.raises(ClosedError):
        b.push(ev(user))
    b2 = EventBatcher(gateway, spool_dir=tmp_path)  # never started: close() still drains
    b2.push(ev(user, 5))
    b2.close()
    assert len(mine(hub, user)) == 6


def test_close_timeout_spools_leftovers(hub, make_proxy, tmp_path) -> None:
    user = uid()
    proxy = make_proxy(lambda n: "503")
    gw = EventGateway.for_endpoint(proxy.base_url, retry=Retry(attempts=50, backoff=0.2, backoff_max=0.2))
    b = EventBatcher(gw, spool_dir=tmp_path / "spool")
    b.start()
    for i in range(7):
        b.push(ev(user, i))
    t0 = time.monotonic()
    b.close(timeout=1.0)
    assert time.monotonic() - t0 < 8  # far less than the 10 s retry schedule: close() gave up in time
    assert b.stats["spooled"] == 7 and b.spool_pending()[1] == 7
    gw.dispose()


def test_atexit_drains_in_a_real_interpreter(hub, tmp_path) -> None:
    user = uid()
    script = textwrap.dedent(f"""
        from eventpush.barchart import EventBatcher, EventGateway
        gw = EventGateway.for_endpoint({hub.base_url!r})
        b = EventBatcher(gw, spool_dir={str(tmp_path)!r})
        for i in range(3):
            b.push({{"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-ACCESSED",
                    "timestamp": 1, "context": [{user!r}, str(i)]}})
        # no start(), no close(): the exit hook delivers
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert [e["context"][1] for e in mine(hub, user)] == ["0", "1", "2"]


def test_overflow_policies(hub, gateway, tmp_path) -> None:
    user = uid()
    b = EventBatcher(gateway, max_buffered=3, overflow="raise", spool_dir=tmp_path / "a")
    for i in range(3):
        b.push(ev(user, i))
    with pytest.raises(BufferFullError):
        b.push(ev(user, 3))
    b.close()
    blk = EventBatcher(gateway, max_buffered=3, spool_dir=tmp_path / "b")  # block, stopped: no one to make room
    for i in range(3):
        blk.push(ev(user, 10 + i))
    with pytest.raises(BufferFullError, match="not running"):
        blk.push(ev(user, 13))
    blk.close()
    sp = EventBatcher(gateway, max_buffered=4, overflow="spool", spool_dir=tmp_path / "c")
    for i in range(10):
        sp.push(ev(user, 20 + i))  # never blocks, never raises
    sp.close()
    stored = sorted(int(e["context"][1]) for e in mine(hub, user))
    assert stored == [0, 1, 2, 10, 11, 12] + list(range(20, 30))


def test_max_batch_events_seals_early(hub, gateway, batchers, tmp_path) -> None:
    user = uid()
    got = []
    b = batchers(gateway, got.append, max_batch_events=10, spool_dir=tmp_path)
    for i in range(25):
        b.push(ev(user, i))
    b.start().result(10)
    assert [len(c) for c in got] == [10, 10, 5]
    assert [e["context"][1] for e in mine(hub, user)] == [str(i) for i in range(25)]


# -- the big one ------------------------------------------------------------------------------------------------


def test_100k_events_from_threads_exactly_once_in_order_across_failures(hub, make_proxy, tmp_path) -> None:
    """100,000 events pushed by 4 threads arrive exactly once, in push order within every batch, while the
    proxy fails every 7th request (503, dropped connection, 500 with the JSON error body, 429). Every fault
    happens before the hub sees the request, so a retry never meets a stored batch: the Barchart API has no
    idempotency key, and a failure *after* storing would be re-sent and stored twice (at-least-once)."""
    kinds = ["503", "drop", "500json", "429"]
    proxy = make_proxy(lambda n: kinds[(n // 7) % 4] if n % 7 == 3 else None)
    proxy.keep_bodies = False
    run = uid()
    gw = EventGateway.for_endpoint(proxy.base_url, retry=Retry(attempts=6, backoff=0.01, backoff_max=0.05))
    created = []
    errors = []
    b = EventBatcher(gw, lambda c: created.append(len(c)), interval=0.05, max_batch_events=2500,
                     spool_dir=tmp_path / "spool", error_callback=lambda e, x: errors.append(e))
    b.start().result(10)
    threads_n, per = 4, 25_000
    bad_raised = []

    def producer(t: int) -> None:
        for i in range(per):
            b.push({"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-ACCESSED",
                    "timestamp": 1599482731026, "context": [run, f"{t}:{i}"]})  # fmt: skip
            if i % 5000 == 0:
                try:
                    b.push({"customer": "BARCHART", "product": "WATCHLIST", "type": "NOPE", "timestamp": 1,
                            "context": [run, f"bad{t}:{i}"]})  # fmt: skip
                except BarchartValidationError as exc:
                    bad_raised.append(exc)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    b.flush().result(120)
    b.close()
    gw.dispose()

    assert len(bad_raised) == threads_n * (per // 5000) and errors == []
    stored = mine(hub, run)
    assert len(stored) == threads_n * per
    keys = [e["context"][1] for e in stored]
    assert len(set(keys)) == len(keys) == threads_n * per  # exactly once
    by_batch = defaultdict(list)
    for e in stored:
        by_batch[e["batch"]].append(e)
    for batch_events in by_batch.values():
        batch_events.sort(key=lambda e: e["sequence"])
        assert [e["sequence"] for e in batch_events] == list(range(len(batch_events)))
        last = {}
        for e in batch_events:  # push order within the batch, per producing thread
            t, i = map(int, e["context"][1].split(":"))
            assert i > last.get(t, -1)
            last[t] = i
    assert sum(proxy.faults.values()) > 0 and set(proxy.faults) == set(kinds)
    s = b.stats
    assert s["delivered"] == threads_n * per and s["failed"] == 0 and s["rejected"] == 0
    assert sum(created) == threads_n * per


def test_close_with_a_disposed_gateway_reports_the_buffer(hub, make_proxy, tmp_path) -> None:
    gw = EventGateway.for_endpoint(make_proxy().base_url)
    errors = []
    b = EventBatcher(gw, spool_dir=tmp_path, error_callback=lambda e, x: errors.append((e, x)))
    b.push(ev("u", 1))
    gw.dispose()
    b.close()
    assert len(errors) == 1 and isinstance(errors[0][0], BarchartStateError) and errors[0][1] == [ev("u", 1)]
    assert b.stats["rejected"] == 1  # reported, never dropped silently


# -- locking, fork, close timeout, error reports, threads ---------------------------------------------------------


def _call_in_thread(fn, *args, hang_after=20.0):
    """Run ``fn(*args)`` in a daemon thread; fail (instead of hanging the suite) if it is still running after
    ``hang_after`` seconds."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(hang_after)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} deadlocked (still running after {hang_after} s)"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_overflow_spool_runs_generators_and_callbacks_outside_the_lock(hub, gateway, tmp_path) -> None:
    # A failing generator at the head of a full buffer: making room hands it off, which rejects it. That used to
    # happen with the batcher's (non-reentrant) lock held, so the pushing thread deadlocked on itself.
    user = uid()
    errors = []

    def on_error(exc, events):
        b.stats  # takes the batcher's lock: must not be held while user code runs
        errors.append((exc, events))

    b = EventBatcher(gateway, max_buffered=2, overflow="spool", spool_dir=tmp_path, error_callback=on_error)

    def boom():
        raise ZeroDivisionError("generator failed")

    def reads_stats():
        b.stats  # a generator that looks at the batcher (the lock again)
        return ev(user, "gen")

    b.push(boom)
    b.push(ev(user, 1))
    _call_in_thread(b.push, ev(user, 2))  # full: boom is handed off (and rejected)
    assert len(errors) == 1 and isinstance(errors[0][0], ZeroDivisionError) and errors[0][1] == [boom]
    b.push(reads_stats)
    _call_in_thread(b.push, ev(user, 3))  # full again: ev 1 goes, then reads_stats
    b.push(lambda: {"customer": "nobody"})  # returns a bad event
    _call_in_thread(b.push, ev(user, 4))
    _call_in_thread(b.push, ev(user, 5))
    _call_in_thread(b.close, 10)
    assert len(errors) == 2 and isinstance(errors[1][0], BarchartValidationError)
    assert b.stats["rejected"] == 2
    assert sorted(e["context"][1] for e in mine(hub, user)) == ["1", "2", "3", "4", "5", "gen"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_with_its_own_executor(hub, tmp_path) -> None:
    user = uid()
    gw = EventGateway.for_endpoint(hub.base_url, retry=FAST)
    got = []
    b = EventBatcher(gw, lambda created: got.extend(created), interval=0.2, spool_dir=tmp_path / "spool")
    b.start().result(10)
    b.push(ev(user, "parent-1"))
    b.flush().result(10)
    b.stop()
    b.push(ev(user, "parent-buffered"))  # buffered at the fork: stays the parent's
    b.start()  # running at the fork (its first cycle may or may not have taken the event yet)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            got.clear()
            b.push(ev(user, "child"))
            b.flush().result(20)  # used to hang: the parent's executor thread does not exist here
            delivered = len(got)
            b.close(timeout=20)
            report = {"delivered": delivered, "stats": b.stats}
            os.write(wfd, orjson.dumps(report))
            code = 0
        except BaseException as exc:  # noqa: BLE001
            os.write(wfd, orjson.dumps({"error": repr(exc)}))
        finally:
            os._exit(code)
    os.close(wfd)
    status = reap_child(pid)
    if status is None:
        pytest.fail("the forked child hung")
    with os.fdopen(rfd, "rb") as f:
        report = orjson.loads(f.read() or b"{}")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, report
    assert report["delivered"] == 1 and report["stats"]["delivered"] == 1 and report["stats"]["spooled"] == 0
    b.flush().result(10)
    b.close()
    gw.dispose()
    sent = sorted(e["context"][1] for e in mine(hub, user))
    assert sent == ["child", "parent-1", "parent-buffered"]  # each once: the child did not send the parent's


def test_error_callback_gets_the_reply_like_create_events(hub_factory, make_proxy, tmp_path) -> None:
    # a 4xx reply with content-type application/json: error_callback's BarchartError carries the parsed body
    # (.reasons) and .status, exactly as create_events does for the same reply (spec §3.6)
    strict = hub_factory("--strict-context")
    tgam = {"customer": "TGAM", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1,
            "context": ["u", "not-a-uuid", "AAPL"]}  # fmt: skip
    gw = EventGateway.for_endpoint(strict.base_url, retry=FAST)
    with pytest.raises(BarchartError) as direct:
        gw.create_events([tgam]).result(10)
    errors = []
    with EventBatcher(gw, spool_dir=tmp_path / "a", error_callback=lambda e, x: errors.append((e, x))) as b:
        b.push(tgam)
        b.flush().result(10)
    gw.dispose()
    assert len(errors) == 1
    err, events = errors[0]
    assert type(err) is BarchartError and err.status == 400 and events == [tgam]
    assert err.reasons == direct.value.reasons and err.reasons[0]["value"]["code"] == "REQUEST_INPUT_MALFORMED"
    assert str(err) == str(direct.value)

    for fault, reasons in (
        ("400json", {"message": "bad"}),  # whatever JSON the server sent
        ("400text", [{"value": {"code": "REQUEST_GENERAL_FAILURE",
                                "message": "An attempt to create events failed for unspecified reason(s)."},
                      "children": []}]),  # not application/json: REQUEST_GENERAL_FAILURE
    ):  # fmt: skip
        proxy = make_proxy(lambda n, fault=fault: fault)
        gw = EventGateway.for_endpoint(proxy.base_url, retry=FAST)
        with pytest.raises(BarchartError) as direct:
            gw.create_events([ev("u", 1)]).result(10)
        errors.clear()
        with EventBatcher(gw, spool_dir=tmp_path / fault, error_callback=lambda e, x: errors.append((e, x))) as b:
            b.push(ev("u", 2))
            b.flush().result(10)
            assert b.stats["rejected"] == 1
        gw.dispose()
        assert len(errors) == 1 and errors[0][1] == [ev("u", 2)]
        assert errors[0][0].status == 400 and errors[0][0].reasons == reasons == direct.value.reasons, fault


def test_close_timeout_spools_what_is_still_being_handed_over(hub, gateway, tmp_path) -> None:
    # close(timeout) runs out while the executor is still resolving a slow generator: what it hands over
    # afterwards goes to the spool (spec §4.2), counted as spooled, not reported as rejected
    user = uid()
    errors = []
    release = threading.Event()
    spool = tmp_path / "spool"

    def slow():
        release.wait(30)  # slower than close()'s timeout
        return ev(user, "slow")

    b = EventBatcher(gateway, spool_dir=spool, error_callback=lambda e, x: errors.append((e, x)))
    b.push(slow)
    for i in range(10):
        b.push(ev(user, i))
    _call_in_thread(b.close, 0.3)
    release.set()
    assert wait_until(lambda: b.stats["spooled"] == 11, 20), b.stats
    assert errors == [] and b.stats["rejected"] == 0 and mine(hub, user) == []
    # the real spool: the next batcher on it replays them
    got = []
    b2 = EventBatcher(gateway, lambda created: got.extend(created), spool_dir=spool)
    b2.start().result(20)
    assert wait_until(lambda: len(mine(hub, user)) == 11, 20)
    b2.close()
    assert sorted(e["context"][1] for e in mine(hub, user)) == sorted([str(i) for i in range(10)] + ["slow"])


def test_a_never_started_batcher_holds_no_thread_and_is_collected(gateway, tmp_path) -> None:
    def executors():
        return [t for t in threading.enumerate() if t.name == "eventpush-barchart-batcher"]

    before = len(executors())
    refs = []
    for i in range(20):
        b = EventBatcher(gateway, spool_dir=tmp_path / str(i))
        b.push(ev("u", i))
        b.clear()
        refs.append(weakref.ref(b))
        del b
    gc.collect()
    assert len(executors()) == before
    assert all(r() is None for r in refs)
    started = EventBatcher(gateway, spool_dir=tmp_path / "s")
    started.start().result(10)
    assert len(executors()) == before + 1
    started.close()
    assert wait_until(lambda: len(executors()) == before, 10)
