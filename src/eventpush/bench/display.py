"""What the bench prints: the live line on stderr while a run goes, the final summary, the comparison table."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Dict, List, Optional, TextIO

__all__ = ["LiveDisplay", "format_summary", "format_table", "fmt_int", "fmt_ms"]


def fmt_int(n: Optional[float]) -> str:
    """``1,234,567`` (``-`` for ``None``; a float that is not finite as itself, never an OverflowError)."""
    if n is None:
        return "-"
    if isinstance(n, float) and not math.isfinite(n):
        return str(n)
    return f"{int(round(n)):,}"


def fmt_ms(v: Optional[float]) -> str:
    """Milliseconds with a sensible number of digits (``-`` for ``None``)."""
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.2f} ms"
    if v < 1000:
        return f"{v:.1f} ms"
    return f"{v / 1000:.2f} s"


class LiveDisplay:
    """Progress while a run goes, on ``stream`` (stderr).

    On a terminal one status line is rewritten in place at every tick; elsewhere (CI logs, pipes) a plain line is
    written at most every ``plain_every`` seconds, or nothing when ``plain_every`` is ``None``.
    """

    def __init__(self, stream: TextIO = sys.stderr, *, label: str = "", plain_every: Optional[float] = 5.0,
                 tty: Optional[bool] = None) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self.plain_every = plain_every
        self._last_plain = time.monotonic()
        self._dirty = False

    def line(self, p: Dict[str, Any]) -> str:
        """The status text of one tick."""
        errors = p.get("errors_total", p.get("errors", 0))
        return (f"{self.label}{p['elapsed']:6.1f}s  {fmt_int(p['events_per_s'])} ev/s  {p['mb_per_s']:.1f} MB/s  "
                f"p50 {fmt_ms(p['p50_ms'])}  p99 {fmt_ms(p['p99_ms'])}  sent {fmt_int(p['events_sent'])}  "
                f"delivered {fmt_int(p['delivered'])}  errors {fmt_int(errors)}")

    def __call__(self, p: Dict[str, Any]) -> None:
        p = dict(p)
        p["errors_total"] = p.get("errors_total", p.get("errors_all", p.get("errors", 0)))
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(p))
            self.stream.flush()
            self._dirty = True
        elif self.plain_every is not None and time.monotonic() - self._last_plain >= self.plain_every:
            self._last_plain = time.monotonic()
            self.stream.write(self.line(p) + "\n")
            self.stream.flush()

    def finish(self) -> None:
        """End the status line (on a terminal) so the summary starts on a clean line."""
        if self.tty and self._dirty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._dirty = False


def _kv(rows: List[List[str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def format_summary(doc: Dict[str, Any]) -> str:
    """The human summary of one load run (``mode: load``)."""
    cfg, ev, rq, th, lat, err = (doc["config"], doc["events"], doc["requests"], doc["throughput"],
                                 doc["latency_ms"], doc["errors"])
    if cfg["model"] == "open":
        model = f"open model, {fmt_int(cfg['rate'])} events/s offered, up to {cfg['concurrency']} in flight"
    else:
        model = f"closed model, {cfg['concurrency']} request(s) in flight"
    head = (f"eventpush bench → {doc['target']['url']} ({doc['target']['dialect']}; {model}; batches of "
            f"{cfg['batch']}; {doc['encoder']} encoder)")
    if doc["interrupted"]:
        head += "\n  INTERRUPTED: the numbers cover the part that ran"
    counted = ev["server_counted"]
    if counted is None:
        counted_s = "not available (the target has no eventpush /stats)"
    else:
        mark = "= delivered" if counted == ev["delivered"] else f"≠ delivered ({ev['delivered']:,})"
        counted_s = f"{counted:,} ({mark})"
    rows = [
        ["source", doc["source"]],
        ["elapsed", f"{doc['elapsed_s']:.2f} s"],
        ["events", f"{ev['sent']:,} sent, {ev['delivered']:,} delivered, {ev['duplicates']:,} duplicates, "
                   f"{ev['rejected']:,} rejected, {ev['failed']:,} failed, {ev['invalid']:,} invalid"],
        ["server counted", counted_s],
        ["throughput", f"{fmt_int(th['events_per_s'])} events/s delivered, {th['mb_per_s']:.2f} MB/s, "
                       f"{th['requests_per_s']:.1f} requests/s"],
    ]
    if th["offered_rate"] is not None:
        rows.append(["rate", f"{fmt_int(th['offered_rate'])} events/s offered, {fmt_int(th['achieved_rate'])} "
                             "achieved (requests issued on the timetable)"])
    rows.append(["requests", f"{rq['sent']:,} sent, {rq['completed']:,} completed, {rq['ok']:,} fully delivered, "
                             f"{rq['retries']:,} retries ({ev['retried']:,} events re-sent)"])
    rows.append(["latency", "  ".join(f"{k.replace('_', '.')} {fmt_ms(lat[k])}"
                                      for k in ("p50", "p90", "p99", "p99_9", "max"))
                 + f"  ({lat['count']:,} requests" + (", from the intended send time)" if cfg["model"] == "open"
                                                       else ")")])
    if doc.get("send_lag_ms"):
        lag = doc["send_lag_ms"]
        rows.append(["send lag", f"p50 {fmt_ms(lag['p50'])}  p99 {fmt_ms(lag['p99'])}  max {fmt_ms(lag['max'])} "
                                 "(how late the scheduler sent)"])
    cpu = doc["client_cpu"]
    rows.append(["client CPU", f"{cpu['seconds']:.2f} s"
                 + (f" ({cpu['per_million_events']:.2f} s per million events)" if cpu["per_million_events"] else "")])
    if err["total"]:
        by_status = ", ".join(f"HTTP {k}: {v:,}" for k, v in err["by_status"].items())
        by_kind = ", ".join(f"{k}: {v:,}" for k, v in err["by_kind"].items())
        rows.append(["errors", f"{err['total']:,} ({by_kind})" + (f"; requests by status: {by_status}"
                                                                  if by_status else "")])
        for m in err["messages"][:5]:
            rows.append(["", f"{m['count']:,} × {m['message']}"])
    else:
        rows.append(["errors", "none"])
    return head + "\n" + _kv(rows)


def format_table(doc: Dict[str, Any]) -> str:
    """The comparison table of a target-less run (``mode: compare``)."""
    rows = doc["rows"]
    headers = ["client", "events/s", "MB/s", "client CPU s/1M ev", "hub CPU s/1M ev", "delivered (hub)",
               "speed-up", "CPU ratio"]
    table: List[List[str]] = []
    for r in rows:
        if r.get("skipped"):
            table.append([r["name"], "skipped: " + r["skipped"], "", "", "", "", "", ""])
            continue
        delivered = "-" if r["server_counted"] is None else f"{r['server_counted']:,}"
        if r["server_counted"] is not None:
            delivered += " ✓" if r["server_counted"] == r["events"] else f" ✗ of {r['events']:,}"
        table.append([
            r["name"],
            fmt_int(r["events_per_s"]),
            f"{r['mb_per_s']:.1f}",
            "-" if r["client_cpu_per_million"] is None else f"{r['client_cpu_per_million']:.2f}",
            "-" if r["hub_cpu_per_million"] is None else f"{r['hub_cpu_per_million']:.2f}",
            delivered,
            "-" if r["speedup"] is None else f"{r['speedup']:.1f}×",
            "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.1f}×",
        ])
    widths = [max([len(h)] + [len(t[i]) for t in table if i == 0 or not t[1].startswith("skipped")])
              for i, h in enumerate(headers)]
    lines = []

    def fmt(cells: List[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join(out).rstrip()

    lines.append(fmt(headers))
    lines.append("  ".join("-" * w for w in widths))
    for t in table:
        if t[1].startswith("skipped"):
            lines.append(f"{t[0].ljust(widths[0])}  {t[1]}")
        else:
            lines.append(fmt(t))
    return "\n".join(lines)
