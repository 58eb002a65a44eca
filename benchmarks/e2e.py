"""End-to-end push throughput: eventpush against a plain baseline and the popular clients, one sink, one run.

    python benchmarks/e2e.py              # 1,000,000 events per row
    python benchmarks/e2e.py --quick      # 100,000 events per row
    python benchmarks/e2e.py --rows eventpush,baseline --events 200000 --json out.json

Every row pushes the same Connect-shaped events (about 250 bytes each once the client has stamped an id and a
timestamp) to the same local sink, each row in a fresh subprocess, rows one after the other in one run. The sink
(``benchmarks/e2e_sink.py``, its own process) reads and discards every body and **counts the events that arrived**
by a per-row marker, so "delivered" is measured at the receiving end. Reported per row: events/s (events / wall
time from the first event to the client saying it is done: close / flush / all futures resolved), client CPU
seconds per million events (user + system of the client process, all threads), events delivered, and the sink's
CPU seconds for the row. The sink answers like the real APIs (Connect per-event batch replies, Segment
``{"success": true}``, PostHog ``{"status": 1}``).

Runner interface (pluggable rows). Each module ``benchmarks/e2e_runners/<name>.py`` defines ``ROWS``, a list of
dicts::

    {"name": "eventpush batch push (compiled)",   # the row label
     "run": callable(ctx) -> None,                 # push ctx.n events to ctx.url; return when all is sent
     "marker": b'"id":',                           # appears exactly once per event in the bodies it sends
     "requires": ("eventpush._core",),             # optional: modules that must import, else the row is skipped
     "prepare": callable() -> None,                # optional: imports / warm-up, run in the child before timing
     "note": "…"}                                  # optional: printed under the table

``ctx`` (a :class:`Context`) gives ``url`` (the sink), ``n`` (events), ``collection`` (``"events"``), and fresh event
dicts without id / timestamp: ``ctx.chunk(start, count) -> list`` and ``ctx.chunks(size)`` (lists covering all
``n`` events). A run function builds events as it goes (the producing application's cost is the same for every row;
the "generate only" row measures it). Rows are selected with ``--rows`` by module name or by a substring of the
row name.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, Iterator, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER_PKG = "e2e_runners"
COLLECTION = "events"

# 64 variants so bodies are not one repeated string; no "id"/"uuid"/"messageId" keys (those are the markers)
_TEMPLATES = [
    {"type": "page_view", "user": f"user-{1000 + k:06d}", "session": f"sess-{k:08x}",
     "url": f"https://shop.example.com/p/{k * 7919 % 100000}", "ref": "home",
     "value": round(k * 1.25, 2), "items": [k, k + 1, k + 2], "ok": k % 3 != 0}
    for k in range(64)
]


class Context:
    """What a run function gets (see the module docstring)."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.n = n
        self.collection = COLLECTION

    def chunk(self, start: int, count: int) -> List[Dict[str, Any]]:
        """Fresh event dicts ``start … start + count - 1`` (clients stamp id / timestamp into them)."""
        t = _TEMPLATES
        # PERF: a dict copy is the cheapest way to hand every client its own fresh event
        return [t[i & 63].copy() for i in range(start, start + count)]

    def chunks(self, size: int) -> Iterator[List[Dict[str, Any]]]:
        """Lists of at most ``size`` fresh events, ``n`` in all."""
        for start in range(0, self.n, size):
            yield self.chunk(start, min(size, self.n - start))


# -- the sink -----------------------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "e2e_sink.py"), "--connect-collection", COLLECTION],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _req(self, method: str, path: str, body: Optional[bytes] = None) -> bytes:
        r = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.read()

    def reset(self, marker: bytes) -> None:
        self._req("POST", "/_reset", marker)

    def count(self) -> Dict[str, int]:
        return json.loads(self._req("GET", "/_count"))

    def cpu(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


# -- rows -------------------------------------------------------------------------------------------------------


def load_rows() -> List[Dict[str, Any]]:
    sys.path.insert(0, HERE)
    rows = []
    for fname in sorted(os.listdir(os.path.join(HERE, RUNNER_PKG))):
        if not fname.endswith(".py") or fname.startswith("_"):
            continue
        mod_name = fname[:-3]
        mod = importlib.import_module(f"{RUNNER_PKG}.{mod_name}")
        for i, row in enumerate(getattr(mod, "ROWS", [])):
            rows.append(dict(row, module=mod_name, index=i))
    order = {"generate": 0, "eventpush": 1, "baseline": 2, "peers": 3}
    rows.sort(key=lambda r: (order.get(r["module"], 9), r["index"]))
    return rows


def missing_requirement(row: Dict[str, Any]) -> Optional[str]:
    for mod in row.get("requires", ()):
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure skips the row
            return f"{mod}: {exc.__class__.__name__}: {exc}"
    return None


def child(spec: str, url: str, n: int) -> int:
    """Run one row in this (fresh) process and print its timings as JSON."""
    import resource

    sys.path.insert(0, HERE)
    mod_name, index = spec.split(":")
    mod = importlib.import_module(f"{RUNNER_PKG}.{mod_name}")
    row = mod.ROWS[int(index)]
    ctx = Context(url, n)
    if row.get("prepare"):
        row["prepare"]()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    extra = row["run"](ctx) or {}
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"wall": wall, "cpu": cpu, "extra": extra}))
    return 0


def run_row(sink: Sink, row: Dict[str, Any], n: int, timeout: float) -> Dict[str, Any]:
    sink.reset(row.get("marker", b'"id":'))
    cpu0 = sink.cpu()
    spec = f"{row['module']}:{row['index']}"
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec, "--url", sink.url,
                           "--events", str(n)], capture_output=True, text=True, timeout=timeout)
    time.sleep(0.3)  # let the sink finish counting the last bodies
    counted = sink.count()
    sink_cpu = sink.cpu() - cpu0
    if proc.returncode != 0:
        return {"name": row["name"], "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "name": row["name"], "events": n, "wall": out["wall"], "cpu": out["cpu"], "delivered": counted["events"],
        "requests": counted["requests"], "sink_cpu": sink_cpu, "extra": out.get("extra") or {},
        "events_per_s": n / out["wall"], "cpu_per_million": out["cpu"] / n * 1e6,
    }


def versions() -> Dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("eventpush", "orjson", "urllib3", "requests", "connect-client", "segment-analytics-python",
                 "posthog"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        import eventpush

        out["eventpush core"] = eventpush.IMPLEMENTATION
    except Exception as exc:  # noqa: BLE001
        out["eventpush core"] = f"unavailable ({exc})"
    return out


def machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def table(results: List[Dict[str, Any]], baseline_name: Optional[str]) -> str:
    ref = next((r for r in results if baseline_name and baseline_name in r["name"] and "events_per_s" in r), None)
    lines = ["| client | events/s | client CPU s / 1M events | events delivered | sink CPU s | vs segment |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error']} | | | | |")
            continue
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} | | | | |")
            continue
        ratio = f"{r['events_per_s'] / ref['events_per_s']:.1f}×" if ref else ""
        delivered = f"{r['delivered']:,} / {r['events']:,}"
        lines.append(f"| {r['name']} | {r['events_per_s']:,.0f} | {r['cpu_per_million']:.2f} | {delivered} | "
                     f"{r['sink_cpu']:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=None, help="events per row (default 1,000,000; --quick 100,000)")
    p.add_argument("--quick", action="store_true", help="100,000 events per row")
    p.add_argument("--rows", default=None, help="comma-separated module names or row-name substrings")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per row before it is abandoned")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    n = args.events or (100_000 if args.quick else 1_000_000)
    if args.child:
        return child(args.child, args.url, n)

    rows = load_rows()
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        rows = [r for r in rows if any(w == r["module"] or w.lower() in r["name"].lower() for w in wanted)]
    sink = Sink()
    results: List[Dict[str, Any]] = []
    try:
        for row in rows:
            why = missing_requirement(row)
            if why:
                results.append({"name": row["name"], "skipped": why})
                print(f"{row['name']}: skipped ({why})", file=sys.stderr)
                continue
            print(f"{row['name']}: pushing {n:,} events …", file=sys.stderr, flush=True)
            try:
                res = run_row(sink, row, n, args.timeout)
            except subprocess.TimeoutExpired:
                res = {"name": row["name"], "error": f"timed out after {args.timeout:.0f} s"}
            results.append(res)
            if "error" not in res:
                print(f"  {res['events_per_s']:,.0f} events/s, {res['cpu_per_million']:.2f} CPU s/M, "
                      f"{res['delivered']:,} delivered, sink CPU {res['sink_cpu']:.2f} s", file=sys.stderr)
            else:
                print(f"  error: {res['error']}", file=sys.stderr)
    finally:
        sink.stop()
    info = versions()
    print(f"\n{n:,} events per row; machine: {machine()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()) + "\n")
    print(table(results, "segment"))
    notes = [r.get("note") for r in rows if r.get("note")]
    if notes:
        print()
        for note in notes:
            print(f"- {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"events": n, "machine": machine(), "versions": info, "results": results}, f, indent=2,
                      default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
