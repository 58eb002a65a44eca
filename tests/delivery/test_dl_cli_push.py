"""``eventpush push`` end to end: real processes, a real server, files on disk."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time

import orjson
import pytest

from dl_helpers import free_port_local


def push(*args, input=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "eventpush", "push", *args], capture_output=True, text=True,
                          input=input, timeout=timeout)


def write_ndjson(path, n, start=0, extra=b""):
    with open(path, "wb") as f:
        for i in range(start, start + n):
            f.write(orjson.dumps({"id": f"e-{i}", "n": i}) + b"\n")
        f.write(extra)
    return str(path)


def write_numbered(path, n):
    """``{"n": i}`` per line, no ids: with --spool the CLI derives them from the run and the line."""
    with open(path, "wb") as f:
        for i in range(n):
            f.write(b'{"n":%d}\n' % i)
    return path


@contextlib.contextmanager
def running(args, **popen):
    """``eventpush push`` in a child process (output discarded unless ``popen`` says otherwise), killed on the way
    out if it is still running."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    proc = subprocess.Popen(args, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def settled_received(server):
    """The server's event count once it stops moving (requests on the wire when a pusher died still land)."""
    last = -1
    while last != server.received:
        last = server.received
        time.sleep(0.2)
    return last


def test_pushes_files_and_reports_malformed_lines_without_stopping(server, tmp_path):
    a = tmp_path / "a.ndjson"
    with open(a, "wb") as f:
        f.write(b'{"id": "a-1"}\n{"id": broken\n\n{"id": "a-2", "tp_x": 1}\n{"id": "a-3"}\n')
    b = tmp_path / "b.json"
    b.write_bytes(orjson.dumps([{"id": "b-1"}, {"id": "b-2"}]))
    out = push(str(a), str(b), "--to", server.url, "--collection", "things")
    assert out.returncode == 1  # something was refused
    assert f"{a}:2: malformed JSON" in out.stderr
    assert f"{a}:4: invalid event" in out.stderr and "tp_" in out.stderr
    assert "4 delivered" in out.stderr and "1 invalid" in out.stderr and "1 malformed" in out.stderr
    assert server.ids() == {"a-1", "a-3", "b-1", "b-2"}


def test_input_detection_blank_lead_bom_and_ndjson_starting_with_an_array(server, tmp_path):
    lead = tmp_path / "lead.json"  # far more leading blank lines than one peek sees
    lead.write_bytes(b"\n" * 300 + b"  \t[" + b",".join(orjson.dumps({"id": f"l-{i}"}) for i in range(3)) + b"]\n")
    bom = tmp_path / "bom.ndjson"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"id": "b-1"}\r\n{"id": "b-2"}\r\n')
    bom_array = tmp_path / "bom.json"
    bom_array.write_bytes(b"\xef\xbb\xbf\n[\n" + b",\n".join(orjson.dumps({"id": f"a-{i}"}) for i in range(2)) + b"\n]")
    mixed = tmp_path / "mixed.ndjson"  # NDJSON whose first value is an array: that line alone is refused
    mixed.write_bytes(b'[{"id": "m-0"}]\n{"id": "m-1"}\n\n{"id": "m-2"}\n')
    broken = tmp_path / "broken.json"  # a pretty-printed array with an error is one array, reported once
    broken.write_bytes(b'\n[\n{"id": "x-1"},\n{"id": "x-2"}\n{"id": "x-3"}\n]\n')
    out = push(str(lead), str(bom), str(bom_array), str(mixed), str(broken), "--to", server.url,
               "--collection", "c")
    assert out.returncode == 1, out.stderr
    assert server.ids() == {"l-0", "l-1", "l-2", "b-1", "b-2", "a-0", "a-1", "m-1", "m-2"}
    assert f"{mixed}:1: invalid event" in out.stderr
    assert f"{broken}:5: malformed JSON" in out.stderr and out.stderr.count(f"{broken}:") == 1


def test_batch_over_the_dialect_limit_is_a_usage_error(server, tmp_path):
    src = write_ndjson(tmp_path / "in.ndjson", 10)
    out = push(src, "--to", server.url, "--collection", "c", "--batch", "5001")
    assert out.returncode == 2 and "over the connect dialect's limit of 5000" in out.stderr
    out = push(src, "--to", server.url, "--collection", "c", "--spool", str(tmp_path / "spool"),
               "--checkpoint-interval", "0")
    assert out.returncode == 2 and "argument --checkpoint-interval: must be above 0 seconds" in out.stderr
    assert server.received == 0


def test_stdin_all_good_exits_zero_with_connect_credentials(make_server, tmp_path):
    from support import EventServer

    s = EventServer("collections", auth={"X-Project-Id": "p1", "X-Api-Key": "k1"}).start()
    try:
        data = "".join(json.dumps({"id": f"s-{i}"}) + "\n" for i in range(500))
        out = push("-", "--to", s.url, "--collection", "c", "--project-id", "p1", "--api-key", "k1", input=data)
        assert out.returncode == 0, out.stderr
        assert s.unique == 500
        bad = push("-", "--to", s.url, "--collection", "c", "--project-id", "p1", "--api-key", "nope", input=data)
        assert bad.returncode == 1 and "500 rejected by the server" in bad.stderr
        assert "Unauthorised" in bad.stderr
    finally:
        s.stop()


def test_endpoint_down_spools_everything_and_says_so_then_resumes(make_server, tmp_path):
    s = make_server("collections")
    s.down()
    src = write_ndjson(tmp_path / "in.ndjson", 3000)
    spool = str(tmp_path / "spool")
    out = push(src, "--to", s.url, "--collection", "c", "--spool", spool, "--retries", "2", "--backoff", "0.01")
    assert out.returncode == 3, out.stderr
    assert "3,000 spooled" in out.stderr and "3,000 left in the spool" in out.stderr and "0 delivered" in out.stderr
    s.up()
    again = push(src, "--to", s.url, "--collection", "c", "--spool", spool)
    assert again.returncode == 0, again.stderr
    assert "3,000 replayed from the spool" in again.stderr and "already pushed" in again.stderr
    assert s.ids() == {f"e-{i}" for i in range(3000)} and s.received == 3000


def test_no_spool_and_endpoint_down_fails_loudly(tmp_path):
    src = write_ndjson(tmp_path / "in.ndjson", 100)
    out = push(src, "--to", f"http://127.0.0.1:{free_port_local()}", "--dialect", "ndjson", "--retries", "1")
    assert out.returncode == 1
    assert "100 failed after retries" in out.stderr and "cannot connect" in out.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")
def test_killed_before_the_first_checkpoint_resumes_without_storing_anything_twice(make_server, tmp_path):
    """The ids derived from the run must survive a kill that comes before any checkpoint."""
    s = make_server("collections", slow_rate=1.0, slow_delay=0.01)
    n = 20_000
    src = write_numbered(tmp_path / "in.ndjson", n)
    spool = tmp_path / "spool"
    args = [sys.executable, "-m", "eventpush", "push", str(src), "--to", s.url, "--collection", "c",
            "--spool", str(spool), "--batch", "200", "--concurrency", "1",
            "--checkpoint-interval", "1000"]  # no record of the position before the kill
    with running(args) as proc:
        assert s.wait_for(received=1000, timeout=60), "nothing arrived"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    first = settled_received(s)
    assert 0 < first < n
    s.faults.slow_rate = 0.0
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(e["n"] for e in s.events()) == list(range(n))  # stored exactly once each
    assert f"{first:,} duplicates" in out.stderr  # everything sent before the kill was recognised


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_interrupted_run_records_how_far_it_got(make_server, tmp_path, signame):
    """Ctrl-C delivers or spools what was read and records the line reached: the rerun sends nothing twice, even
    for a dialect without ids (NDJSON). SIGTERM (`timeout`, `kill`, docker stop, a CI cancellation) does the same:
    the summary printed, exit 130."""
    if not hasattr(signal, signame):
        pytest.skip(f"needs {signame}")
    s = make_server("status", slow_rate=1.0, slow_delay=0.01)
    n = 150_000  # more than the batcher buffers (100,000): the reader waits for room when the interrupt comes
    src = write_numbered(tmp_path / "in.ndjson", n)
    spool = tmp_path / "spool"
    args = [sys.executable, "-m", "eventpush", "push", str(src), "--to", s.url, "--dialect", "ndjson",
            "--spool", str(spool), "--batch", "200", "--concurrency", "1"]
    with running(args, stderr=subprocess.PIPE, text=True) as proc:
        assert s.wait_for(received=1000, timeout=60), "nothing arrived"
        proc.send_signal(getattr(signal, signame))
        s.faults.slow_rate = 0.0  # what was read gets delivered within the interrupt's grace time
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and " events pushed in " in err
    line = max(e["line"] for e in json.loads((spool / "push-progress.json").read_text())["inputs"].values())
    assert 0 < line < n and s.received == line  # everything read was delivered, and the line says how far
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert s.received == n  # nothing sent twice
    assert sorted(e["n"] for e in s.events()) == list(range(n))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")
def test_killed_run_resumes_without_storing_anything_twice(make_server, tmp_path):
    s = make_server("collections", slow_rate=1.0, slow_delay=0.01)
    n = 60_000
    src = write_numbered(tmp_path / "in.ndjson", n)
    spool = tmp_path / "spool"
    args = [sys.executable, "-m", "eventpush", "push", str(src), "--to", s.url, "--collection", "c",
            "--spool", str(spool), "--checkpoint-interval", "0.05", "--batch", "1000"]
    with running(args) as proc:
        deadline = time.monotonic() + 60
        progress = spool / "push-progress.json"
        line = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists():
                try:
                    line = max(e.get("line", 0) for e in json.loads(progress.read_text())["inputs"].values())
                except (ValueError, KeyError):
                    pass
                if line >= 10_000:
                    break
            time.sleep(0.01)
        assert proc.poll() is None and line >= 10_000, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    first = settled_received(s)
    assert first < n
    s.faults.slow_rate = 0.0
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert s.unique == n
    ns = sorted(e["n"] for e in s.events())
    assert ns == list(range(n))  # stored exactly once each
    # the resume started at the last checkpoint, not at the beginning
    assert s.received - n <= first - line


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")
def test_killed_run_without_ids_sends_again_only_what_was_not_settled(make_server, tmp_path):
    """NDJSON events carry no ids, so whatever a resumed run sends again is stored twice. The position is
    recorded as delivery goes on, without pausing the pipeline: after a hard kill, only the events of batches not
    yet answered (or answered since the last record) go out again."""
    s = make_server("status", slow_rate=1.0, slow_delay=0.01)
    n = 60_000
    src = write_numbered(tmp_path / "in.ndjson", n)
    spool = tmp_path / "spool"
    args = [sys.executable, "-m", "eventpush", "push", str(src), "--to", s.url, "--dialect", "ndjson",
            "--spool", str(spool), "--batch", "500", "--concurrency", "2", "--checkpoint-interval", "0.05"]
    with running(args) as proc:
        assert s.wait_for(received=20_000, timeout=60), "not enough arrived"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    first = settled_received(s)
    assert 20_000 <= first < n
    progress = json.loads((spool / "push-progress.json").read_text())
    line = max(e.get("line", 0) for e in progress["inputs"].values())
    assert 0 < line <= first  # a recorded line was settled: everything up to it had arrived
    s.faults.slow_rate = 0.0
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ns = [e["n"] for e in s.events()]
    assert sorted(set(ns)) == list(range(n))  # every event arrived
    again = len(ns) - n
    assert again == first - line  # the rerun started at the recorded line
    # at most: the 2 batches on the wire and 1 answered out of order, the events answered in the last 0.05 s at
    # this server's pace (2 batches of 500 per 10 ms), the spacing of the marks (128) and scheduling slack
    assert again <= 10_000, (again, first, line)


# -- the defects found by driving the command for real ----------------------------------------------------------


def _summary(stderr):
    """The numbers of the summary line: {"pushed": n, "delivered": n, "spooled": n, "rejected": n, ...}."""
    import re

    line = next(ln for ln in stderr.splitlines() if " events pushed in " in ln)
    num = lambda pat: int(re.search(pat, line).group(1).replace(",", ""))  # noqa: E731
    return {"pushed": num(r"([\d,]+) events pushed"), "delivered": num(r"([\d,]+) delivered"),
            "rejected": num(r"([\d,]+) rejected by the server"), "failed": num(r"([\d,]+) failed after retries"),
            "spooled": num(r"([\d,]+) spooled,")}


@pytest.mark.parametrize("dialect", ["ndjson", "json-array"])
def test_dialects_without_a_path_post_to_exactly_the_url_given(make_server, tmp_path, dialect):
    s = make_server("status")
    src = write_ndjson(tmp_path / "in.ndjson", 5)
    out = push(src, "--to", s.url + "/ingest?token=t1", "--dialect", dialect)
    assert out.returncode == 0, out.stderr
    assert s.ids() == {f"e-{i}" for i in range(5)}
    assert {e["path"] for e in s.log} == {"/ingest?token=t1"}  # not /ingest/


def test_refused_credentials_stop_the_run_and_the_rerun_delivers_everything(tmp_path):
    from support import EventServer

    s = EventServer("collections", auth={"X-Project-Id": "p1", "X-Api-Key": "k1"}).start()
    try:
        n = 3000
        src = write_numbered(tmp_path / "in.ndjson", n)
        spool = tmp_path / "spool"
        args = [str(src), "--to", s.url, "--collection", "c", "--project-id", "p1", "--spool", str(spool),
                "--batch", "500"]
        bad = push(*args, "--api-key", "WRONG")
        assert bad.returncode == 1, bad.stderr
        assert "refused the credentials (HTTP 401)" in bad.stderr and "stopped" in bad.stderr
        progress = json.loads((spool / "push-progress.json").read_text())
        assert not any(e.get("done") for e in progress["inputs"].values())
        assert s.received == 0
        good = push(*args, "--api-key", "k1")
        assert good.returncode == 0, good.stderr
        assert "already pushed" not in good.stderr
        assert sorted(e["n"] for e in s.events()) == list(range(n))  # every event, once

        # without --spool: the run stops reading instead of sending the whole file into 401s
        big = write_numbered(tmp_path / "big.ndjson", 400_000)
        s.log.clear()
        out = push(str(big), "--to", s.url, "--collection", "c", "--project-id", "p1", "--api-key", "WRONG",
                   "--batch", "5000", "--concurrency", "1")
        assert out.returncode == 1 and "refused the credentials" in out.stderr
        refused = sum(1 for e in s.log if e["status"] == 401)
        assert 0 < refused < 40, refused  # the whole file is 80 requests of 5,000
    finally:
        s.stop()


def test_non_finite_or_out_of_range_numbers_are_usage_errors(server, tmp_path):
    src = write_ndjson(tmp_path / "in.ndjson", 10)
    for opt, value in (("--timeout", "nan"), ("--timeout", "inf"), ("--checkpoint-interval", "inf"),
                       ("--checkpoint-interval", "nan"), ("--backoff", "nan"), ("--backoff", "-1"),
                       ("--timeout", "1e300")):
        out = push(src, "--to", server.url, "--collection", "c", "--spool", str(tmp_path / "spool"), opt, value)
        assert out.returncode == 2, (opt, value, out.stderr)
        assert f"argument {opt}: must be" in out.stderr, out.stderr
    assert server.received == 0


def test_progress_follows_delivery_and_moves_while_the_last_batches_drain(make_server, tmp_path):
    """The whole file fits the buffer at once: reading ends at the start, delivery takes the run. The progress
    line says how much is settled (not read), and keeps being rewritten until the end."""
    import re

    s = make_server("status", slow_rate=1.0, slow_delay=0.05)
    n = 20_000
    src = write_numbered(tmp_path / "in.ndjson", n)
    out = push(str(src), "--to", s.url, "--dialect", "ndjson", "--batch", "500", "--concurrency", "1", "--progress")
    assert out.returncode == 0, out.stderr
    lines = [ln.strip() for ln in re.split(r"[\r\n]", out.stderr) if "events settled" in ln]
    parsed = []
    for ln in lines:
        m = re.match(r"\s*([\d.]+)%\s+([\d,]+) of ([\d,]+) events settled", ln)
        assert m, ln
        parsed.append((float(m.group(1)), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))))
    draining = {p for p in parsed if p[2] == n and p[1] < n}
    assert len(draining) >= 2, lines  # updated while everything read waited for delivery
    for pct, settled, _ in parsed:
        assert pct <= settled / n * 100 + 1.0, (pct, settled)  # the share of the input that is settled
    assert parsed[-1][:2] == (100.0, n)


def test_array_elements_are_reported_at_the_line_they_start_on(server, tmp_path):
    src = tmp_path / "arr.json"
    src.write_bytes(b'\n\n[\n  {"id": "a"},\n  {"id": "b"},\n  5,\n  {"id": "c"},\n  {"id": "d",\n   "x": 1},\n'
                    b'  "x"\n]\n')
    out = push(str(src), "--to", server.url, "--collection", "c")
    assert out.returncode == 1, out.stderr
    assert f"{src}:6: invalid event" in out.stderr and f"{src}:10: invalid event" in out.stderr
    assert server.ids() == {"a", "b", "c", "d"}


def test_a_changed_input_is_pushed_again_and_a_warning_says_so(server, tmp_path):
    import os

    src = tmp_path / "in.ndjson"
    src.write_bytes(b'{"a": 1}\n{"a": 2}\nnot json\n{"a": 4}\n')
    spool = tmp_path / "spool"
    args = [str(src), "--to", server.url, "--collection", "c", "--spool", str(spool)]
    first = push(*args)
    assert first.returncode == 1 and f"{src}:3: malformed JSON" in first.stderr
    assert "changed since" not in first.stderr
    src.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n')
    os.utime(src, (time.time() + 5, time.time() + 5))
    again = push(*args)
    assert again.returncode == 0, again.stderr
    assert f"warning: {src} changed since the run recorded in --spool" in again.stderr
    assert "pushed again from its first line, with new ids" in again.stderr
    assert server.received == 7  # what the warning announced: the 3 delivered before were sent again
    unchanged = push(*args)
    assert unchanged.returncode == 0 and "changed since" not in unchanged.stderr
    assert "already pushed" in unchanged.stderr


def test_inputs_that_cannot_be_read_are_refused_before_anything_is_sent(server, tmp_path):
    good = write_ndjson(tmp_path / "in.ndjson", 10)
    folder = tmp_path / "adir"
    folder.mkdir()
    out = push(good, str(folder), str(tmp_path / "missing.ndjson"), "--to", server.url, "--collection", "c")
    assert out.returncode == 2, out.stderr
    assert f"{folder}: is a directory" in out.stderr
    assert f"{tmp_path / 'missing.ndjson'}: No such file or directory" in out.stderr
    assert "Traceback" not in out.stderr and server.received == 0


def test_an_input_that_vanishes_before_it_is_opened_is_reported_with_a_summary(server, tmp_path):
    later = write_ndjson(tmp_path / "later.ndjson", 10, start=100)
    args = [sys.executable, "-m", "eventpush", "push", "-", later, "--to", server.url, "--collection", "c"]
    with running(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdin.write(b"".join(orjson.dumps({"id": f"s-{i}"}) + b"\n" for i in range(20)))
        proc.stdin.flush()
        assert server.wait_for(received=20, timeout=30)  # (the inputs were checked: the push is under way)
        (tmp_path / "later.ndjson").unlink()
        _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 1, err
    assert f"{later}: No such file or directory" in err and "Traceback" not in err
    assert "20 delivered" in err and "1 input(s) could not be read" in err


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_interrupted_summary_accounts_for_every_event_pushed(make_server, tmp_path):
    """Every event the batcher took is counted as pushed and ends delivered or spooled, and the line recorded is
    right: the rerun delivers every event exactly once. With batches of one event, an interrupt often lands inside
    the push, after the event was taken (the run defers it until the event is queued and counted)."""
    n = 5_000
    src = write_numbered(tmp_path / "in.ndjson", n)
    for attempt in range(2):
        s = make_server("status", slow_rate=1.0, slow_delay=0.002)
        spool = tmp_path / f"spool-{attempt}"
        args = [sys.executable, "-m", "eventpush", "push", str(src), "--to", s.url, "--dialect", "ndjson",
                "--spool", str(spool), "--concurrency", "4"]
        with running(args + ["--batch", "1"], stderr=subprocess.PIPE, text=True) as proc:
            assert s.wait_for(received=200, timeout=60), "nothing arrived"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        c = _summary(err)
        assert c["pushed"] == c["delivered"] + c["rejected"] + c["spooled"], (attempt, c)
        assert c["delivered"] == settled_received(s), (attempt, c)
        s.faults.slow_rate = 0.0
        out = subprocess.run(args + ["--batch", "500"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert sorted(e["n"] for e in s.events()) == list(range(n)), attempt  # each once: none lost, none twice
        s.stop()
