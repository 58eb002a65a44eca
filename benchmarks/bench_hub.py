"""End-to-end ingest benchmark of the hub (``eventpush serve``): events/s and hub CPU per million events.

Starts the real hub (uvicorn, one worker) twice — storage on (SQLite, a fresh file) and ``--sink`` — and pushes
Connect batches of 500 and 5,000 events with eventpush: the batches are encoded by its encoder before the clock
starts (so the client costs little), then its ``Sender`` posts them with ``--threads`` requests in flight over one
keep-alive pool. Every reply is checked: each event must come back stored as new; with storage on the stored row
count is checked against the acknowledged count.

    python benchmarks/bench_hub.py [--events 400000] [--threads 4] [--sizes 500,5000] [--ids uuid|sequential]

CPU comes from /proc/<pid>/stat (utime + stime of the hub process). The machine is shared: quote ratios measured
in one run, not absolute numbers from different runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime

from typing import Any

import orjson
import urllib3

from eventpush import Encoder
from eventpush.dialects import CONNECT
from eventpush.sender import Sender
from eventpush.transport import Limits, Retry, Timeout, Transport

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds of the hub process and (with --workers N) its worker children."""
    total = _pid_cpu(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            total += _pid_cpu(child)
        except OSError:
            pass
    return total


class Hub:
    """The hub in a subprocess, on a free port; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-hub-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventpush.cli.serve", "--port", str(self.port), "--no-realtime",
             "--log-level", "warning", *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        http = urllib3.PoolManager()
        deadline = time.time() + 20
        while True:
            try:
                if http.request("GET", f"http://127.0.0.1:{self.port}/health", timeout=1).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"hub did not start; see {self.log.name}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def make_batches(n_events: int, batch: int, ids: str = "uuid") -> "list[Any]":
    """Connect batches ``{"bench": [events]}`` encoded by eventpush's encoder (compiled core), ``batch`` events
    each, with unique ids: random ``uuid4`` strings (what every Connect client stamps; each lands on a random page
    of the hub's unique index) or ``sequential`` ones (``run-N``)."""
    run = uuid.uuid4().hex[:12]
    ts = datetime(2026, 1, 1, 12, 30, 15, 250000)  # the Connect client sends datetimes (its timestamp rule)
    encoder = Encoder(CONNECT, max_batch_events=batch)
    batches = []
    for i in range(n_events):
        ev = {"id": str(uuid.uuid4()) if ids == "uuid" else f"{run}-{i}", "timestamp": ts, "user": f"user-{i % 1000}",
              "action": "click", "value": 12.5, "props": {"page": "/home", "ref": "search", "ab": [1, 2, 3]}}
        sealed = encoder.add(ev, "bench")
        if sealed is not None:
            batches.append(sealed)
    last = encoder.seal()
    if last is not None:
        batches.append(last)
    return batches


def push(port: int, batches: "list[Any]", threads: int) -> "tuple[float, int]":
    """Send every batch with eventpush's Sender (``threads`` requests in flight over one keep-alive pool);
    returns (seconds, events acknowledged as stored)."""
    transport = Transport(f"http://127.0.0.1:{port}/connect", headers={"X-Project-Id": "bench", "X-Api-Key": "bench"},
                          timeout=Timeout(connect=10, read=120), retry=Retry(attempts=1),
                          limits=Limits(max_connections=threads))
    sender = Sender(transport, CONNECT, concurrency=threads)
    try:
        t0 = time.perf_counter()
        futures = [sender.send(b) for b in batches]
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - t0
    finally:
        sender.close()
        transport.close()
    errors = [r for r in results if not r.ok or r.duplicates]
    if errors:
        raise RuntimeError(f"{len(errors)} batches not stored as new, e.g. {errors[:3]}")
    return elapsed, sum(r.delivered for r in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400_000, help="events per run (default 400,000)")
    ap.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--sizes", default="500,5000", help="batch sizes (default 500,5000)")
    ap.add_argument("--modes", default="sqlite,sink", help="hub modes (default sqlite,sink)")
    ap.add_argument("--workers", type=int, default=1, help="hub worker processes (default 1)")
    ap.add_argument("--ids", choices=("uuid", "sequential"), default="uuid",
                    help="event ids: random uuid4 strings as clients stamp them (default), or sequential")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    import uvicorn

    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}, urllib3 {urllib3.__version__}, "
          f"uvicorn {uvicorn.__version__}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs; "
          f"{args.events:,} events per run ({args.ids} ids), {args.threads} client threads, {args.workers} hub worker(s); "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'mode':8} {'batch':>6} {'events/s':>12} {'hub CPU s/M events':>20} {'hub CPU util':>13}")
    rows = []
    for mode in args.modes.split(","):
        for size in sizes:
            tmp = tempfile.mkdtemp(prefix="bench-hub-")
            db = os.path.join(tmp, "bench.db")
            extra = ["--sink"] if mode == "sink" else ["--db", db]
            extra += ["--workers", str(args.workers)]
            hub = Hub(*extra)
            try:
                warm = make_batches(min(20_000, size * 4), size, args.ids)
                push(hub.port, warm, args.threads)
                batches = make_batches(args.events, size, args.ids)
                c0 = cpu_seconds(hub.proc.pid)
                elapsed, acked = push(hub.port, batches, args.threads)
                cpu = cpu_seconds(hub.proc.pid) - c0
            finally:
                hub.stop()
            if acked != args.events:
                raise RuntimeError(f"acknowledged {acked} of {args.events}")
            if mode != "sink":
                with sqlite3.connect(db) as conn:
                    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                if stored != acked + sum(b.count for b in warm):
                    raise RuntimeError(f"stored {stored} rows, acknowledged {acked} (+ warm-up)")
            rate = acked / elapsed
            print(f"{mode:8} {size:>6} {rate:>12,.0f} {cpu / acked * 1e6:>20.2f} {cpu / elapsed:>12.0%}")
            rows.append((mode, size, rate, cpu / acked * 1e6))
    print(f"load average {os.getloadavg()[0]:.2f} at the end (the machine is shared: compare rows of one run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
