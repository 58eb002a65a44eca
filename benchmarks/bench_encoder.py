"""Encoder micro-benchmark: compiled core vs pure-Python twin vs one-call orjson vs stdlib json.

200,000 events of about 250 bytes, two shapes:

- **Connect** (rules ``connect_py``): validation of every key, ``id`` (UUID4) and ``timestamp`` stamped into each
  event, isoformat for datetimes, framed as ``{"purchases":[…]}`` batches of at most 5,000 events.
- **Barchart** (rules ``barchart``): codes checked against the enumerations, integer timestamp, list context, only
  the schema keys in schema order, framed as ``{"events":[…]}``.

Peers: ``orjson.dumps(events)`` of the whole list in one call (no validation, no stamping, no framing per batch:
the practical upper bound) and stdlib ``json.dumps``. Every variant's output is checked before it is timed.

Two ways to run::

    python -m pytest benchmarks/bench_encoder.py            # pytest-benchmark, events/s and MB/s in extra_info
    python benchmarks/bench_encoder.py [--events N] [--rounds R]   # a markdown table for the README

The machine is shared: quote ratios measured side by side in one run, not absolute numbers from different runs.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import orjson

N_EVENTS = 200_000
COLLECTION = "purchases"
FIXED_NOW = 1438387200_123456


# --------------------------------------------------------------------------------------------------------------
# Workloads


def connect_events(n: int) -> List[dict]:
    """Connect-shaped events (about 165 bytes before stamping, about 250 after)."""
    plans = ("free", "pro", "team", "enterprise")
    return [
        {
            "user": {"id": 100_000 + i, "name": f"user-{i:06d}", "plan": plans[i % 4]},
            "page": f"/products/{i % 9973}",
            "referrer": f"https://example.com/?q={i}",
            "amount": round(i * 1.37 % 1000, 2),
            "tags": ["web"],
            "ok": i % 7 != 0,
        }
        for i in range(n)
    ]


def barchart_events(n: int) -> List[dict]:
    """Barchart-shaped events (about 250 bytes each), valid codes, integer timestamps."""
    from eventpush.dialects import BARCHART

    types = sorted(t for t in BARCHART.codes["type"] if t.startswith("PORTFOLIO-"))  # type: ignore[index]
    return [
        {
            "customer": "BARCHART",
            "product": "PORTFOLIO",
            "type": types[i % len(types)],
            "version": "5.6.1-rc.2",
            "timestamp": 1_700_000_000_000 + i,
            "context": [f"user-{i:08d}", f"4f6c2a9e-8d1b-4c3e-9f7a-{i:012d}", f"position-{i % 977}", "AAPL",
                        "portfolio-overview"],
        }
        for i in range(n)
    ]


def _pattern_random(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


def fresh_connect(events: List[dict]) -> List[dict]:
    """Copies for one round: connect_py stamps id and timestamp into the caller's dicts."""
    return [dict(e, user=dict(e["user"]), tags=list(e["tags"])) for e in events]


def stamped_connect(events: List[dict]) -> List[dict]:
    """What the peers get: the same events already carrying an id and a timestamp (they cannot stamp)."""
    from eventpush import _core_py

    enc = _core_py.Encoder(_connect_dialect(), clock=lambda: FIXED_NOW, urandom=_pattern_random)
    out = fresh_connect(events)
    for e in out:
        enc.encode(e)
    return out


def _connect_dialect():
    from eventpush.dialects import CONNECT

    return CONNECT


# --------------------------------------------------------------------------------------------------------------
# Variants: name -> (prepare(events) -> args, run(args) -> output, size(output) -> bytes, check(output, events))


def _core(kind: str):
    if kind == "c":
        from eventpush import _core

        return _core
    from eventpush import _core_py

    return _core_py


def _encode_connect(core, events):
    enc = core.Encoder(_connect_dialect(), clock=lambda: FIXED_NOW, urandom=_pattern_random)
    batches, errors = enc.encode_batch({COLLECTION: events})
    assert not errors
    return batches


def _encode_barchart(core, events):
    from eventpush.dialects import BARCHART

    batches, errors = core.Encoder(BARCHART).encode_batch(events)
    assert not errors
    return batches


def _batches_nbytes(batches) -> int:
    return sum(b.nbytes for b in batches)


def _iso_default(o: Any) -> Any:
    return o.isoformat()


def variants(shape: str) -> Dict[str, Tuple[Callable, Callable, Callable]]:
    """``{name: (prepare, run, nbytes)}``; prepare runs outside the timing."""
    if shape == "connect":
        return {
            "eventpush compiled": (fresh_connect, lambda ev: _encode_connect(_core("c"), ev), _batches_nbytes),
            "eventpush twin": (fresh_connect, lambda ev: _encode_connect(_core("py"), ev), _batches_nbytes),
            "orjson.dumps(list)": (stamped_connect, orjson.dumps, len),
            "json.dumps(list)": (
                stamped_connect,
                lambda ev: json.dumps(ev, separators=(",", ":"), default=_iso_default).encode(),
                len,
            ),
        }
    return {
        "eventpush compiled": (list, lambda ev: _encode_barchart(_core("c"), ev), _batches_nbytes),
        "eventpush twin": (list, lambda ev: _encode_barchart(_core("py"), ev), _batches_nbytes),
        "orjson.dumps(list)": (list, orjson.dumps, len),
        "json.dumps(list)": (list, lambda ev: json.dumps(ev, separators=(",", ":")).encode(), len),
    }


def check(shape: str, name: str, output: Any, events: List[dict]) -> None:
    """The output of every variant parses back to the events it was given (batches: concatenated in order)."""
    if isinstance(output, (bytes, bytearray)):
        parsed = orjson.loads(output)
    else:
        key = COLLECTION if shape == "connect" else "events"
        parsed = [e for b in output for e in orjson.loads(b.body())[key]]
    assert len(parsed) == len(events), (name, len(parsed))
    sample = range(0, len(events), max(1, len(events) // 1000))
    for i in sample:
        got, want = parsed[i], events[i]
        if shape == "connect":
            assert got["user"] == want["user"] and got["page"] == want["page"] and got["amount"] == want["amount"]
            assert len(got["id"]) == 36 and got["timestamp"].startswith("2015-08-01T00:00:00.123456")
            assert list(got)[-2:] == ["id", "timestamp"]
        else:
            assert got == {k: want[k] for k in ("customer", "product", "type", "version", "timestamp", "context")}


def same_bytes(shape: str, events: List[dict]) -> None:
    """Compiled and twin produce identical bodies for the benchmark workload."""
    prep = fresh_connect if shape == "connect" else list
    enc = _encode_connect if shape == "connect" else _encode_barchart
    small = events[:20_000]
    a = [b.body() for b in enc(_core("c"), prep(small))]
    b = [b.body() for b in enc(_core("py"), prep(small))]
    assert a == b


# --------------------------------------------------------------------------------------------------------------
# pytest-benchmark

try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.mark.parametrize("name", ["eventpush compiled", "eventpush twin", "orjson.dumps(list)", "json.dumps(list)"])
    @pytest.mark.parametrize("shape", ["connect", "barchart"])
    def test_encode(benchmark, shape, name, connect_events, barchart_events):
        events = connect_events if shape == "connect" else barchart_events
        prepare, run, nbytes = variants(shape)[name]
        benchmark.group = f"encode {shape} ({len(events):,} events)"
        if name == "eventpush compiled":
            same_bytes(shape, events)
        output = run(prepare(events))
        check(shape, name, output, events)
        size = nbytes(output)
        del output
        rounds = 2 if name in ("eventpush twin", "json.dumps(list)") else 5
        benchmark.pedantic(run, setup=lambda: ((prepare(events),), {}), rounds=rounds, iterations=1)
        best = benchmark.stats.stats.min
        benchmark.extra_info["events_per_s"] = round(len(events) / best)
        benchmark.extra_info["MB_per_s"] = round(size / best / 1e6, 1)
        benchmark.extra_info["bytes_per_event"] = round(size / len(events), 1)


# --------------------------------------------------------------------------------------------------------------
# Script mode


def measure(shape: str, events: List[dict], rounds: int) -> Dict[str, Tuple[float, int]]:
    """Best-of-``rounds`` seconds and output size per variant, measured interleaved (round-robin)."""
    table = variants(shape)
    same_bytes(shape, events)
    sizes = {}
    for name, (prepare, run, nbytes) in table.items():
        out = run(prepare(events))
        check(shape, name, out, events)
        sizes[name] = nbytes(out)
        del out
    best = {name: float("inf") for name in table}
    for r in range(rounds):
        for name, (prepare, run, _nbytes) in table.items():
            if name in ("eventpush twin", "json.dumps(list)") and r >= max(2, rounds // 2):
                continue  # the slow baselines: fewer rounds
            args = prepare(events)
            gc.collect()
            t0 = time.perf_counter()
            out = run(args)
            elapsed = time.perf_counter() - t0
            best[name] = min(best[name], elapsed)
            del out, args
    return {name: (best[name], sizes[name]) for name in table}


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=N_EVENTS)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import eventpush

    print(f"{args.events:,} events per shape, best of {args.rounds} rounds (interleaved); "
          f"CPython {platform.python_version()}, orjson {orjson.__version__}, "
          f"eventpush {eventpush.__version__} ({platform.machine()}, {platform.system()})\n")
    results = {}
    for shape, make in (("connect", connect_events), ("barchart", barchart_events)):
        events = make(args.events)
        results[shape] = measure(shape, events, args.rounds)
    print("| shape | encoder | events/s | MB/s | bytes/event | vs orjson.dumps(list) | vs twin |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape, rows in results.items():
        base = rows["orjson.dumps(list)"][0]
        twin = rows["eventpush twin"][0]
        for name, (secs, size) in rows.items():
            print(f"| {shape} | {name} | {args.events / secs:,.0f} | {size / secs / 1e6:,.1f} | "
                  f"{size / args.events:.0f} | {base / secs:.2f}× | {twin / secs:.1f}× |")
    c = results["barchart"]
    ratio_bc = c["orjson.dumps(list)"][0] / c["eventpush compiled"][0]
    k = results["connect"]
    ratio_cn = k["eventpush twin"][0] / k["eventpush compiled"][0]
    print(f"\nTargets: Barchart compiled vs one-call orjson.dumps = {ratio_bc:.2f}× (target ≥ 0.5×); "
          f"Connect compiled vs twin = {ratio_cn:.1f}× (target ≥ 10×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
