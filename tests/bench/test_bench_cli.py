"""``eventpush bench`` as a user runs it (a child process, real servers on 127.0.0.1): usage errors are refused
before any load is sent, an interrupted open-model run stops at once, the report path is checked up front, an
events file is read as ``eventpush push`` reads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def bench(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "eventpush", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def ok_server(scripted_server, delay=0.0):
    return scripted_server(lambda n, body: (200, {}, b"", delay))


@pytest.mark.parametrize("opt,value", [("--rate", "inf"), ("--rate", "nan"), ("--rate", "-inf"),
                                       ("--duration", "nan"), ("--duration", "inf"), ("--timeout", "nan"),
                                       ("--timeout", "inf"), ("--duration", "1e300")])
def test_non_finite_numbers_are_usage_errors(scripted_server, opt, value):
    server = ok_server(scripted_server)
    extra = ["--duration", "1"] if opt == "--rate" else []
    r = bench("--to", server.base + "/ingest", "--dialect", "ndjson", "--no-stats", "--quiet", f"{opt}={value}", *extra)
    assert r.returncode == 2, r.stderr
    assert f"argument {opt}: must be" in r.stderr and "Traceback" not in r.stderr
    assert server.requests == 0  # refused before any load


def test_zero_concurrency_and_events_are_refused_not_replaced_by_defaults(scripted_server):
    server = ok_server(scripted_server)
    r = bench("--to", server.base + "/ingest", "--dialect", "ndjson", "--no-stats", "--quiet", "--events", "100",
              "--concurrency", "0")
    assert r.returncode == 2 and "--concurrency must be at least 1" in r.stderr, r.stderr
    assert server.requests == 0
    # the embedded comparison: refused before its hub starts
    r = bench("--events", "0", "--quiet", timeout=60)
    assert r.returncode == 2 and "--events must be at least 1" in r.stderr, r.stderr
    assert "embedded hub" not in r.stderr
    r = bench("--events", "100", "--concurrency", "0", "--quiet", timeout=60)
    assert r.returncode == 2 and "--concurrency must be at least 1" in r.stderr, r.stderr


def test_report_path_is_checked_before_the_run(scripted_server, tmp_path):
    server = ok_server(scripted_server)
    r = bench("--to", server.base + "/ingest", "--dialect", "ndjson", "--no-stats", "--quiet", "--events", "100",
              "--json", "--report", str(tmp_path / "missing" / "r.html"))
    assert r.returncode == 2, r.stderr
    assert "--report" in r.stderr and "no such directory" in r.stderr and "Traceback" not in r.stderr
    assert server.requests == 0 and r.stdout == ""
    r = bench("--to", server.base + "/ingest", "--dialect", "ndjson", "--no-stats", "--quiet", "--events", "100",
              "--report", str(tmp_path))
    assert r.returncode == 2 and "is a directory" in r.stderr
    assert server.requests == 0


def test_a_report_that_cannot_be_written_at_the_end_still_prints_the_results(scripted_server, tmp_path):
    server = ok_server(scripted_server)
    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, "-m", "eventpush", "bench", "--to", server.base + "/ingest", "--dialect", "ndjson",
            "--no-stats", "--quiet", "--duration", "3", "--batch", "10", "--concurrency", "1", "--json",
            "--report", str(out / "r.html")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while server.requests == 0 and proc.poll() is None:  # the checks are done: the load is under way
            time.sleep(0.05)
        out.rmdir()  # the report can no longer be written
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1, stderr
    doc = json.loads(stdout)  # the results are there all the same
    assert doc["events"]["sent"] == doc["events"]["delivered"] > 0
    assert "cannot write the report" in stderr and "Traceback" not in stderr


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_in_the_open_model_stops_sending_at_once(scripted_server):
    """The server takes 0.2 s per request, the timetable asks for 200 a second: hundreds queue up. Ctrl-C must not
    send them (only the requests in flight finish), and the result counts them as not sent."""
    import time

    server = ok_server(scripted_server, delay=0.2)
    args = [sys.executable, "-m", "eventpush", "bench", "--to", server.base + "/ingest", "--dialect", "ndjson",
            "--no-stats", "--quiet", "--rate", "20000", "--batch", "100", "--duration", "60", "--concurrency", "2",
            "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while server.requests < 6:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        time.sleep(0.5)  # the queue grows behind the two connections
        at_signal = server.requests
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)  # not the minutes the queued requests would take
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, stderr
    assert server.requests <= at_signal + 4  # the 2 in flight (and at most a couple on their way)
    doc = json.loads(stdout)
    ev = doc["events"]
    assert doc["interrupted"] is True
    assert doc["requests"]["sent"] == doc["requests"]["completed"] == server.requests  # sent = what was sent
    assert ev["sent"] == ev["delivered"] == server.events_by_status[200]
    assert doc["errors"]["by_kind"]["not_sent"] > 0
    assert any("were not sent" in m["message"] for m in doc["errors"]["messages"])


def test_events_file_is_read_as_push_reads_it(scripted_server, tmp_path):
    """A UTF-8 byte order mark, CRLF line ends and an integer beyond 64 bits: replayed exactly."""
    server = ok_server(scripted_server)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "big": 123456789012345678901234567890}\r\n\r\n{"id": 2}\r\n')
    r = bench("--to", server.base + "/ingest", "--dialect", "ndjson", "--events-file", str(path), "--no-stats",
              "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stdout and json.loads(r.stdout)["events"]["delivered"] == 2
    got = sorted((json.loads(line) for line in server.lines), key=lambda e: e["id"])
    assert got == [{"id": 1, "big": 123456789012345678901234567890}, {"id": 2}]
    assert b"123456789012345678901234567890" in b"".join(server.lines)  # all the digits, not a float
