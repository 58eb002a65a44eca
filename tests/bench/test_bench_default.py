"""The target-less ``eventpush bench`` (the newcomer's first command), in a reduced form: a real embedded hub in a
child process, every row's events counted by it, the hub stopped at the end, also when interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

import eventpush


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie that its parent has not reaped yet is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _env():
    # the same environment as the test run (EVENTPUSH_PURE included): the child sees the same cores we check
    return dict(os.environ)


def test_default_bench_reduced(bench_schema, tmp_path):
    report = tmp_path / "compare.html"
    proc = subprocess.run([sys.executable, "-m", "eventpush", "bench", "--events", "4000", "--json", "--report",
                           str(report)], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(bench_schema, format_checker=jsonschema.FormatChecker()).validate(doc)
    assert doc["mode"] == "compare" and doc["all_delivered"] is True
    rows = {r["kind"]: r for r in doc["rows"]}
    assert set(rows) == {"eventpush-cython", "eventpush-python", "baseline"}
    compiled_built = eventpush.EncoderC is not None
    assert (rows["eventpush-cython"]["skipped"] is None) is compiled_built
    for r in rows.values():
        if r["skipped"]:
            continue
        # what the hub counted during the row is what the row sent and saw acknowledged
        assert r["events"] == r["delivered"] == r["server_counted"] == 4000
        assert r["events_per_s"] > 0 and r["client_cpu_per_million"] > 0
    assert rows["baseline"]["speedup"] == 1.0 and rows["baseline"]["cpu_ratio"] == 1.0
    assert not _alive(doc["hub"]["pid"])  # the embedded hub was stopped
    assert 'data-plot="rate"' in report.read_text()
    assert "embedded hub: eventpush serve --sink on http://127.0.0.1:" in proc.stderr


def test_default_bench_text_table():
    proc = subprocess.run([sys.executable, "-m", "eventpush", "bench", "--events", "1000", "--quiet"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    assert "1,000 synthetic Connect events" in out
    for name in ("eventpush (pure-Python twin)", "requests + json (baseline)", "eventpush (compiled core)"):
        assert name in out
    assert out.count("1,000 ✓") == (3 if eventpush.EncoderC is not None else 2)
    assert proc.stderr == ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_embedded_hub(sig):
    # SIGINT (Ctrl-C) lands in the middle of the first row; SIGTERM as soon as the hub is up
    proc = subprocess.Popen([sys.executable, "-m", "eventpush", "bench", "--events", "50000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        hub_pid = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if "embedded hub:" in line:
                hub_pid = int(line.rsplit("(pid ", 1)[1].rstrip(")\n"))
                if sig == signal.SIGTERM:
                    break
            if "pushing" in line:
                break
        assert hub_pid is not None and _alive(hub_pid)
        if sig == signal.SIGINT:
            time.sleep(0.5)  # in the middle of the first row
        proc.send_signal(sig)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 130, proc.stderr.read() if code is not None else f"still running 30 s after {sig.name}"
        deadline = time.monotonic() + 10
        while _alive(hub_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(hub_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_default_bench_without_requests_skips_the_baseline(tmp_path, bench_schema):
    # an import of `requests` that fails, as on a machine where it is not installed
    blocker = tmp_path / "blocker" / "requests"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('requests is not installed (test blocker)')\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "blocker")] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-m", "eventpush", "bench", "--events", "1000", "--json", "--quiet"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(bench_schema).validate(doc)
    rows = {r["kind"]: r for r in doc["rows"]}
    assert rows["baseline"]["skipped"] == "requests is not installed (pip install requests)"
    assert rows["eventpush-python"]["server_counted"] == 1000 and rows["eventpush-python"]["speedup"] is None
    assert doc["all_delivered"] is True
