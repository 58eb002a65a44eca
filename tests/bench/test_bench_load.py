"""``eventpush bench --to URL`` against the real hub and scripted servers on 127.0.0.1: the closed and open models
deliver what the server counts, the open model keeps its rate and measures from the intended send time, errors
are counted and reported, duplicates and invalid events are reported, replay and gzip reach the server."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from eventpush.bench.embedded import fetch_stats
from eventpush.bench.runner import is_loopback


def _core_name(core):
    return "cython" if core.__name__.endswith("._core") else "python"


def _valid(doc, schema):
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)
    return doc


def test_closed_model_delivers_what_the_hub_counts(sink_hub, bench_cli, bench_schema, core):
    before = sink_hub.events()
    r = bench_cli("--to", sink_hub.base + "/connect", "--events", "30000", "--batch", "500", "--concurrency", "3",
                  "--core", _core_name(core), "--json", "--quiet")
    assert r.code == 0, r
    doc = _valid(r.json(), bench_schema)
    counted = sink_hub.events() - before
    ev = doc["events"]
    assert counted == 30000
    assert ev["sent"] == ev["delivered"] == ev["server_counted"] == 30000
    assert ev["rejected"] == ev["failed"] == ev["invalid"] == ev["duplicates"] == 0
    assert doc["requests"] == {"sent": 60, "completed": 60, "ok": 60, "retries": 0}
    assert doc["latency_ms"]["count"] == 60
    assert doc["encoder"] == _core_name(core)
    assert doc["config"]["model"] == "closed" and doc["errors"]["total"] == 0
    assert sum(c for _, _, c in doc["latency_buckets"]) == 60
    assert doc["throughput"]["bytes_sent"] > 30000 * 200  # ~250-byte events


def test_a_hub_with_several_workers_counts_every_event(hub_factory, bench_cli, bench_schema):
    # /stats of `eventpush serve --workers 2` adds up both workers' counts (any worker may answer): the bench
    # compares what it delivered with the whole hub's count, not one worker's share
    hub = hub_factory("--sink", "--workers", "2")
    deadline = time.monotonic() + 60
    while (fetch_stats(hub.base + "/stats") or {}).get("workers") != 2:  # the second worker may still be starting
        assert time.monotonic() < deadline, "the second worker did not start"
        time.sleep(0.1)
    before = hub.events()
    r = bench_cli("--to", hub.base + "/connect", "--events", "20000", "--batch", "200", "--concurrency", "4",
                  "--json", "--quiet")
    assert r.code == 0, r
    ev = _valid(r.json(), bench_schema)["events"]
    assert ev["sent"] == ev["delivered"] == ev["server_counted"] == hub.events() - before == 20000


def test_closed_model_duration_against_storage(db_hub, bench_cli, bench_schema):
    before = db_hub.events()
    r = bench_cli("--to", db_hub.base + "/barchart", "--dialect", "barchart", "--duration", "1.5", "--batch", "200",
                  "--concurrency", "2", "--json", "--quiet")
    assert r.code == 0, r
    doc = _valid(r.json(), bench_schema)
    ev = doc["events"]
    assert ev["sent"] > 0 and ev["sent"] % 200 == 0
    assert ev["sent"] == ev["delivered"] == ev["server_counted"] == db_hub.events() - before
    assert doc["elapsed_s"] >= 1.5
    assert len(doc["timeline"]) >= 3


def test_open_model_keeps_the_requested_rate(sink_hub, bench_cli, bench_schema):
    before = sink_hub.events()
    r = bench_cli("--to", sink_hub.base + "/connect", "--rate", "2000", "--duration", "3", "--batch", "20",
                  "--concurrency", "4", "--json", "--quiet")
    assert r.code == 0, r
    doc = _valid(r.json(), bench_schema)
    ev = doc["events"]
    # the timetable: 3 s at 2,000 events/s in batches of 20 = 300 requests, no more, no less
    assert doc["requests"]["sent"] == 300
    assert ev["sent"] == ev["delivered"] == ev["server_counted"] == sink_hub.events() - before == 6000
    th = doc["throughput"]
    assert th["offered_rate"] == 2000
    # the timetable was kept: requests issued at the offered rate, measured over the whole run
    assert th["achieved_rate"] == pytest.approx(2000, rel=0.05)
    # and the server kept up: delivered events per second over the run (until the last reply) within a few percent
    assert th["events_per_s"] == pytest.approx(2000, rel=0.10)
    assert doc["send_lag_ms"]["count"] == 300
    assert doc["config"]["model"] == "open"


def test_open_model_charges_queueing_to_latency(scripted_server, bench_cli, bench_schema):
    """No coordinated omission: the server takes 0.1 s per request and serves one at a time while the timetable
    asks for one every 25 ms, so request k waits for the k before it; its latency is counted from its intended
    send time (about 0.1 + 0.075 k s), not from when a connection finally took it (always about 0.1 s)."""
    server = scripted_server(lambda n, body: (200, {}, b"", 0.1))
    r = bench_cli("--to", server.base + "/ingest", "--dialect", "ndjson", "--rate", "400", "--batch", "10",
                  "--duration", "0.5", "--concurrency", "1", "--no-stats", "--json", "--quiet")
    assert r.code == 0, r
    doc = _valid(r.json(), bench_schema)
    assert doc["requests"]["sent"] == server.requests == 20
    lat = doc["latency_ms"]
    assert lat["p50"] >= 500  # ~0.85 s for the median request; a closed-loop measurement would say ~100 ms
    assert lat["max"] >= 1200  # ~1.5 s for the last one
    # the timetable was kept (requests queued on time) but the server could not keep up, and the report says so
    assert doc["throughput"]["achieved_rate"] == pytest.approx(400, rel=0.05)
    assert doc["throughput"]["events_per_s"] < 200


def test_errors_are_counted_by_status_and_kind(scripted_server, bench_cli, bench_schema, tmp_path):
    def script(n, body):
        if n % 4 == 1:
            return 500, {"Content-Type": "application/json"}, b'{"errorMessage":"boom"}', 0
        if n % 4 == 2:
            return 429, {"Retry-After": "0"}, b"slow down", 0
        return 200, {}, b"", 0

    server = scripted_server(script)
    r = bench_cli("--to", server.base + "/ingest", "--dialect", "ndjson", "--events", "2000", "--batch", "50",
                  "--concurrency", "1", "--retries", "0", "--no-stats", "--json", "--quiet")
    assert r.code == 1, r  # not everything was delivered
    doc = _valid(r.json(), bench_schema)
    err, ev = doc["errors"], doc["events"]
    assert err["by_status"] == {"429": 10, "500": 10}
    assert err["by_kind"] == {"http_status": 20}
    assert err["total"] == 20
    assert {m["message"] for m in err["messages"]} == {"HTTP 500: boom", "HTTP 429: slow down"}
    assert ev["sent"] == 2000
    assert ev["delivered"] == server.events_by_status[200] == 1000
    assert ev["failed"] == 1000 and ev["rejected"] == 0
    assert doc["requests"]["ok"] == 20 and doc["requests"]["retries"] == 0

    # the text summary says the same, it does not hide it
    server2 = scripted_server(script)
    report = tmp_path / "errors.html"
    r = bench_cli("--to", server2.base + "/ingest", "--dialect", "ndjson", "--events", "400", "--batch", "50",
                  "--concurrency", "1", "--retries", "0", "--no-stats", "--quiet", "--report", str(report))
    assert r.code == 1
    assert "HTTP 500: 2" in r.out and "HTTP 429: 2" in r.out and "200 delivered" in r.out
    page = report.read_text()
    assert "HTTP 500: boom" in page and "<td class=\"\">HTTP 429</td>" in page and "No errors." not in page


def test_retries_are_counted_and_deliver(scripted_server, bench_cli, bench_schema):
    server = scripted_server(lambda n, body: (503, {"Retry-After": "0"}, b"", 0) if n % 2 == 0 else (200, {}, b"", 0))
    r = bench_cli("--to", server.base + "/ingest", "--dialect", "ndjson", "--events", "1000", "--batch", "100",
                  "--concurrency", "1", "--retries", "2", "--no-stats", "--json", "--quiet")
    assert r.code == 0, r
    doc = _valid(r.json(), bench_schema)
    assert doc["events"]["delivered"] == 1000 == server.events_by_status[200]
    assert server.requests == 20
    assert doc["requests"]["sent"] == 10 and doc["requests"]["retries"] == 10
    assert doc["events"]["retried"] == 1000


def test_connection_refused_is_an_error_not_a_hang(bench_cli, bench_schema):
    from eventpush.bench.embedded import free_port

    r = bench_cli("--to", f"http://127.0.0.1:{free_port()}/connect", "--events", "1000", "--batch", "500",
                  "--retries", "0", "--json", "--quiet")
    assert r.code == 1
    doc = _valid(r.json(), bench_schema)
    assert doc["errors"]["by_kind"] == {"connect": 2}
    assert doc["events"]["failed"] == 1000 and doc["events"]["delivered"] == 0


def test_duplicates_and_invalid_events_are_reported(db_hub, bench_cli, bench_schema, tmp_path):
    path = tmp_path / "events.ndjson"
    with open(path, "w") as f:
        for i in range(100):
            f.write(json.dumps({"id": f"evt-{i}", "n": i}) + "\n")
        f.write(json.dumps({"tp_reserved": 1}) + "\n")  # refused by the Connect rules, never sent
    before = db_hub.events()
    # 202 events from a 101-line file: the file twice (the second pass repeats ids) and 0 more
    r = bench_cli("--to", db_hub.base + "/connect", "--events-file", str(path), "--events", "202", "--batch", "50",
                  "--concurrency", "1", "--json", "--quiet")
    assert r.code == 1, r
    doc = _valid(r.json(), bench_schema)
    ev = doc["events"]
    assert ev["sent"] == 202 and ev["invalid"] == 2
    assert ev["delivered"] == 100 == ev["server_counted"] == db_hub.events() - before
    assert ev["duplicates"] == 100 and ev["rejected"] == 100
    assert doc["errors"]["by_kind"] == {"duplicate_events": 100, "invalid_event": 2}
    assert "cycled" in doc["source"]


def test_replay_ndjson_with_gzip(scripted_server, bench_cli, bench_schema, tmp_path):
    server = scripted_server(lambda n, body: (200, {}, b"", 0))
    path = tmp_path / "events.ndjson"
    lines = [json.dumps({"id": i, "kind": "replayed", "tags": ["a", i]}, separators=(",", ":")) for i in range(300)]
    path.write_text("\n".join(lines) + "\n\n")
    r = bench_cli("--to", server.base + "/ingest", "--dialect", "ndjson", "--events-file", str(path), "--gzip",
                  "--batch", "64", "--no-stats", "--json", "--quiet")
    assert r.code == 0, r
    doc = _valid(r.json(), bench_schema)
    assert doc["events"]["sent"] == doc["events"]["delivered"] == 300
    assert server.content_encodings == {"gzip": 5}
    assert set(server.paths) == {"/ingest"}  # exactly the URL named, no "/" appended
    assert sorted(json.loads(x)["id"] for x in server.lines) == list(range(300))
    assert "300 events replayed" in doc["source"]


def test_synthetic_events_are_deterministic_per_seed():
    from eventpush.bench.events import SyntheticSource

    def contents(seed):
        src = SyntheticSource("connect", size=300, seed=seed)
        return [json.dumps(e, sort_keys=True) for e in src.take_many(50)]

    assert contents(7) == contents(7)
    assert contents(7) != contents(8)
    # --event-size is the size on the wire: the template plus the id and timestamp the encoder stamps
    from eventpush import CONNECT, EncoderPy

    batches, errors = EncoderPy(CONNECT).encode_batch(SyntheticSource("connect", size=300).take_many(256), "c")
    sizes = [len(b.event(i)) for b in batches for i in range(b.count)]
    assert not errors and len(sizes) == 256
    assert sum(sizes) / len(sizes) == pytest.approx(300, rel=0.03)


@pytest.mark.parametrize("url,expected", [
    ("http://127.0.0.1:8787/connect", True),
    ("http://127.9.9.9/", True),
    ("http://[::1]:80/", True),
    ("http://localhost:1/", True),
    ("https://LOCALHOST/", True),
    ("http://0.0.0.0:8787/", False),
    ("http://10.0.0.5/", False),
    ("https://api.example.com/events", False),
    ("http://127.0.0.1.example.com/", False),
])
def test_is_loopback(url, expected):
    assert is_loopback(url) is expected


def test_non_loopback_target_needs_yes(bench_cli):
    r = bench_cli("--to", "https://api.example.com/connect", "--events", "10")
    assert r.code == 2
    assert "refusing to load api.example.com" in r.err and "--yes" in r.err
    assert r.out == ""


def test_usage_errors(bench_cli, sink_hub):
    r = bench_cli("--to", sink_hub.base + "/connect", "--batch", "6000", "--events", "10")
    assert r.code == 2 and "5000" in r.err
    r = bench_cli("--rate", "100")
    assert r.code == 2 and "needs a target" in r.err
    r = bench_cli("--to", "ftp://127.0.0.1/x")
    assert r.code == 2
    r = bench_cli("--to", sink_hub.base + "/connect", "--gzip", "--events", "10")
    assert r.code == 2 and "compressed" in r.err


def test_connect_credentials_are_sent(hub_factory, bench_cli, bench_schema):
    hub = hub_factory("--sink", "--project", "proj-7:secret")
    r = bench_cli("--to", hub.base + "/connect", "--events", "1000", "--project-id", "proj-7", "--api-key", "wrong",
                  "--json", "--quiet")
    assert r.code == 1
    doc = _valid(r.json(), bench_schema)
    assert doc["errors"]["by_status"] == {"401": 2}
    assert doc["events"]["rejected"] == 1000 and doc["events"]["server_counted"] == 0
    assert "Unauthorised" in doc["errors"]["messages"][0]["message"]
    r = bench_cli("--to", hub.base + "/connect", "--events", "1000", "--project-id", "proj-7", "--api-key", "secret",
                  "--json", "--quiet")
    assert r.code == 0, r
    assert r.json()["events"]["server_counted"] == 1000
