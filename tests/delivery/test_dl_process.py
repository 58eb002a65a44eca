"""Whole processes: a pusher killed with SIGKILL (its spool replays after a restart) and a normal interpreter exit
without flush() (the atexit hook delivers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from eventpush import CONNECT
from eventpush.batcher import Batcher
from eventpush.errors import SpoolCorruptError
from eventpush.spool import Spool

from dl_helpers import FAST_RETRY

KILLED_PUSHER = textwrap.dedent("""
    import sys
    from eventpush import CONNECT
    from eventpush.batcher import Batcher
    from eventpush.transport import Retry

    url, spool = sys.argv[1], sys.argv[2]
    b = Batcher(url, CONNECT, max_batch_events=200, max_buffered=1000, overflow="spill", fsync="never",
                retry=Retry(attempts=1), spool_dir=spool, atexit=False)
    i = 0
    while True:
        b.push({"id": "k-%d" % i, "pad": "x" * 100}, "c")
        i += 1
        if i % 2000 == 0:
            print(i, b.stats["spooled"], flush=True)
""")

EXITING_PUSHER = textwrap.dedent("""
    import sys
    from eventpush import CONNECT
    from eventpush.batcher import Batcher

    b = Batcher(sys.argv[1], CONNECT, interval=3600, spool_dir=False)
    for i in range(12345):
        b.push({"id": "x-%d" % i}, "c")
    print("pushed", b.stats["pushed"], flush=True)
    # no flush(), no close(): a plain interpreter exit
""")


def _intact_ids(directory):
    out = set()
    with Spool(directory) as sp:  # reads a copy: acknowledges nothing in the original
        while True:
            rec = sp.next_record()
            if rec is None:
                return out
            out.update(orjson.loads(rec.batch.event(i))["id"] for i in range(rec.batch.count))
            rec.ack()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")
def test_sigkill_mid_run_then_replay_delivers_every_spooled_event(make_server, tmp_path):
    import shutil

    spool_dir = str(tmp_path / "spool")
    s = make_server("collections")
    s.down()  # the endpoint refuses connections while the pusher runs: everything spills to the spool
    script = tmp_path / "pusher.py"
    script.write_text(KILLED_PUSHER)
    proc = subprocess.Popen([sys.executable, str(script), s.url, spool_dir], stdout=subprocess.PIPE, text=True)
    try:
        spooled = 0
        deadline = time.monotonic() + 60
        while spooled < 10_000 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            spooled = int(line.split()[1])
        assert spooled >= 10_000, "the pusher did not spool in time"
        proc.send_signal(signal.SIGKILL)  # mid-run: it is still pushing and spilling
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert any(n.endswith(".open") for n in os.listdir(spool_dir))  # its segment was still being written

    copy = str(tmp_path / "inspect")
    shutil.copytree(spool_dir, copy)
    expected = _intact_ids(copy)
    assert len(expected) >= spooled

    s.up()
    errors = []
    with Batcher(s.url, CONNECT, retry=FAST_RETRY, spool_dir=spool_dir,
                 on_error=lambda e, evs: errors.append(e)) as b:
        assert b.flush(60)
        st = b.stats
    assert s.ids() == expected  # every intact spooled event, nothing else
    assert st["replayed"] == len(expected)
    assert st["corrupt"] == len([e for e in errors if isinstance(e, SpoolCorruptError)]) <= 1
    assert not [n for n in os.listdir(spool_dir) if n.endswith((".seg", ".open"))]


def test_normal_exit_without_flush_delivers_everything(server, tmp_path):
    script = tmp_path / "exiting.py"
    script.write_text(EXITING_PUSHER)
    out = subprocess.run([sys.executable, str(script), server.url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pushed 12345" in out.stdout
    assert server.ids() == {f"x-{i}" for i in range(12345)}
    assert server.received == 12345


def test_exit_with_the_endpoint_down_spools_what_is_buffered(make_server, tmp_path):
    s = make_server("collections")
    s.down()
    spool_dir = str(tmp_path / "spool")
    script = tmp_path / "exiting_down.py"
    script.write_text(textwrap.dedent("""
        import sys
        from eventpush import CONNECT
        from eventpush.batcher import Batcher
        from eventpush.transport import Retry

        b = Batcher(sys.argv[1], CONNECT, interval=3600, spool_dir=sys.argv[2],
                    retry=Retry(attempts=3, backoff=0.01, backoff_max=0.02))
        for i in range(3000):
            b.push({"id": "d-%d" % i}, "c")
    """))
    out = subprocess.run([sys.executable, str(script), s.url, spool_dir], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    with Spool(spool_dir) as sp:
        assert sp.pending() == (1, 3000)
