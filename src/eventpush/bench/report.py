"""``--report FILE.html``: one self-contained page (inline CSS and SVG, no scripts, no external resources).

A load run gets: the key numbers, throughput over time (events/s sent and delivered, errors), latency over time
(p50, p99, max per interval, log scale), the latency percentile curve, and the error breakdown. A comparison run
gets the table and bar charts of events/s and client CPU per million events. Every plot is an ``<svg>`` element
with ``class="plot"`` and a ``data-plot`` name, so tools (and the tests) can find them.
"""

from __future__ import annotations

import html
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .display import fmt_int, fmt_ms

__all__ = ["render_report", "write_report", "line_chart", "bar_chart"]

W, H = 860, 300
ML, MR, MT, MB = 70, 20, 30, 45
COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:900px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#666}.bad{color:#b00020;font-weight:600}
.ok{color:#1b7d2a;font-weight:600}svg.plot{display:block;background:#fcfcfc;border:1px solid #e4e4e4;margin:6px 0}
svg text{font:12px system-ui,sans-serif;fill:#333}code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            ticks.append(round(v, 10))
        v += step
    if not ticks or ticks[-1] < hi:
        ticks.append(round(v, 10))  # the axis must reach the largest value
    return ticks


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    if a >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


def _fmt_value(v: float) -> str:
    """Three significant digits: 160k, 52.7k, 10.7, 2.87."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _svg_open(name: str, title: str, ticks: Sequence[float], fy: Callable[[float], float]) -> List[str]:
    """The opening of a plot: the ``<svg>`` element, its title, and the horizontal grid lines with their labels."""
    out = [f'<svg class="plot" data-plot="{_e(name)}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" role="img" aria-label="{_e(title)}">',
           f'<text x="{ML}" y="18" font-weight="600">{_e(title)}</text>']
    for t in ticks:
        y = fy(t)
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(t)}</text>')
    return out


def line_chart(
    name: str,
    title: str,
    series: Sequence[Tuple[str, Sequence[Tuple[float, Optional[float]]]]],
    *,
    x_label: str,
    y_label: str,
    log_y: bool = False,
) -> str:
    """An SVG line chart; ``series`` is ``[(label, [(x, y or None), …]), …]`` (``None`` breaks the line)."""
    pts = [(x, y) for _, s in series for x, y in s if y is not None and (y > 0 or not log_y)]
    xs = [x for _, s in series for x, _ in s]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    if log_y:
        ys = [y for _, y in pts] or [1.0]
        y0 = 10 ** math.floor(math.log10(min(ys)))
        y1 = 10 ** math.ceil(math.log10(max(ys)))
        if y1 <= y0:
            y1 = y0 * 10
        ticks = [10 ** k for k in range(int(round(math.log10(y0))), int(round(math.log10(y1))) + 1)]

        def fy(y: float) -> float:
            return MT + (H - MT - MB) * (1 - (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)))
    else:
        ymax = max([y for _, y in pts] or [1.0])
        ticks = _nice_ticks(0.0, ymax * 1.05 if ymax > 0 else 1.0)
        y0, y1 = 0.0, ticks[-1]

        def fy(y: float) -> float:
            return MT + (H - MT - MB) * (1 - (y - y0) / (y1 - y0))

    def fx(x: float) -> float:
        return ML + (W - ML - MR) * (x - x0) / (x1 - x0)

    out = _svg_open(name, title, ticks, fy)
    for t in _nice_ticks(x0, x1, 8):
        if x0 <= t <= x1:
            x = fx(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{H - MB}" y2="{H - MB + 4}" stroke="#888"/>')
            out.append(f'<text x="{x:.1f}" y="{H - MB + 17}" text-anchor="middle">{_fmt_tick(t)}</text>')
    out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{H - MB}" y2="{H - MB}" stroke="#888"/>')
    out.append(f'<line x1="{ML}" x2="{ML}" y1="{MT}" y2="{H - MB}" stroke="#888"/>')
    out.append(f'<text x="{(ML + W - MR) / 2}" y="{H - 8}" text-anchor="middle">{_e(x_label)}</text>')
    out.append(f'<text transform="translate(14,{(MT + H - MB) / 2}) rotate(-90)" text-anchor="middle">'
               f'{_e(y_label)}</text>')
    lx = W - MR
    for i, (label, s) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        segments: List[List[str]] = [[]]
        for x, yv in s:
            if yv is None or (log_y and yv <= 0):
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(f"{fx(x):.1f},{fy(min(max(yv, y0), y1)):.1f}")
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle class="series" cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            elif seg:
                out.append(f'<polyline class="series" data-series="{_e(label)}" fill="none" stroke="{color}" '
                           f'stroke-width="1.8" points="{" ".join(seg)}"/>')
        lx -= 8 + 7 * len(label) + 14
        out.append(f'<rect x="{lx}" y="9" width="10" height="10" fill="{color}"/>'
                   f'<text x="{lx + 14}" y="18">{_e(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(name: str, title: str, bars: Sequence[Tuple[str, float]], *, y_label: str) -> str:
    """An SVG bar chart of ``[(label, value), …]``."""
    ymax = max([v for _, v in bars] or [1.0])
    ticks = _nice_ticks(0.0, ymax * 1.15 if ymax > 0 else 1.0)  # room for the value above the highest bar
    top = ticks[-1]

    def fy(v: float) -> float:
        return MT + (H - MT - MB) * (1 - v / top)

    out = _svg_open(name, title, ticks, fy)
    n = max(1, len(bars))
    slot = (W - ML - MR) / n
    for i, (label, v) in enumerate(bars):
        x = ML + i * slot + slot * 0.2
        y = fy(v)
        out.append(f'<rect class="series" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" height="{H - MB - y:.1f}" '
                   f'fill="{COLORS[i % len(COLORS)]}"/>')
        out.append(f'<text x="{x + slot * 0.3:.1f}" y="{y - 5:.1f}" text-anchor="middle">{_fmt_value(v)}</text>')
        out.append(f'<text x="{x + slot * 0.3:.1f}" y="{H - MB + 17}" text-anchor="middle">{_e(label)}</text>')
    out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{H - MB}" y2="{H - MB}" stroke="#888"/>')
    out.append(f'<text transform="translate(14,{(MT + H - MB) / 2}) rotate(-90)" text-anchor="middle">'
               f'{_e(y_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _downsample(points: List[Dict[str, Any]], limit: int = 1200) -> List[Dict[str, Any]]:
    if len(points) <= limit:
        return points
    step = math.ceil(len(points) / limit)
    return points[::step]


def _percentile_curve(buckets: Sequence[Sequence[int]]) -> List[Tuple[float, Optional[float]]]:
    """``[(nines, ms)]``: x = -log10(1 - q) (0 = p0, 1 = p90, 2 = p99, 3 = p99.9 …), y = the bucket's top in ms."""
    total = sum(b[2] for b in buckets)
    if not total:
        return []
    out: List[Tuple[float, Optional[float]]] = []
    seen = 0
    for lo, hi, c in buckets:
        seen += c
        q = seen / total
        # the last sample sits at the resolution the sample count allows (1 / total), never at infinity
        x = -math.log10(max(1 - q, 1.0 / total))
        out.append((min(x, 5.0), max(hi, 1) / 1000.0))
    return out


def _table(rows: Sequence[Sequence[Any]], head: Optional[Sequence[str]] = None, numeric_from: int = 1) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f'<th class="{"n" if i >= numeric_from else ""}">{_e(h)}</th>'
                                    for i, h in enumerate(head)) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="{"n" if i >= numeric_from else ""}">{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _page(title: str, body: List[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _render_load(doc: Dict[str, Any]) -> str:
    cfg, ev, th, lat, err = doc["config"], doc["events"], doc["throughput"], doc["latency_ms"], doc["errors"]
    tl = _downsample(doc["timeline"])
    title = f"eventpush bench — {doc['target']['url']}"
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="muted">{_e(doc["started_at"])} · eventpush {_e(doc["version"])} ({_e(doc["encoder"])} '
            f'encoder) · {_e(doc["source"])}</p>']
    if doc["interrupted"]:
        body.append('<p class="bad">Interrupted: the numbers cover the part that ran.</p>')
    model = (f"open model, {fmt_int(cfg['rate'])} events/s offered" if cfg["model"] == "open"
             else f"closed model, {cfg['concurrency']} in flight")
    counted = ev["server_counted"]
    counted_html = ('<span class="muted">not available</span>' if counted is None else
                    (f'<span class="ok">{counted:,}</span>' if counted == ev["delivered"]
                     else f'<span class="bad">{counted:,} (≠ {ev["delivered"]:,} delivered)</span>'))
    rows = [
        ["dialect / model", f"{_e(doc['target']['dialect'])} · {_e(model)} · batches of {cfg['batch']}"
                            + (" · gzip" if cfg["gzip"] else "")],
        ["elapsed", f"{doc['elapsed_s']:.2f} s"],
        ["events sent", f"{ev['sent']:,}"],
        ["events delivered", f"{ev['delivered']:,}"],
        ["counted by the server", counted_html],
        ["duplicates / rejected / failed / invalid",
         f"{ev['duplicates']:,} / {ev['rejected']:,} / {ev['failed']:,} / {ev['invalid']:,}"],
        ["throughput", f"{fmt_int(th['events_per_s'])} events/s · {th['mb_per_s']:.2f} MB/s · "
                       f"{th['requests_per_s']:.1f} requests/s"],
    ]
    if th["offered_rate"] is not None:
        rows.append(["offered / achieved rate", f"{fmt_int(th['offered_rate'])} / {fmt_int(th['achieved_rate'])} "
                                                "events/s"])
    rows.append(["latency p50 / p90 / p99 / p99.9 / max",
                 " / ".join(_e(fmt_ms(lat[k])) for k in ("p50", "p90", "p99", "p99_9", "max"))])
    rows.append(["retries", f"{doc['requests']['retries']:,} requests ({ev['retried']:,} events re-sent)"])
    cpu = doc["client_cpu"]
    rows.append(["client CPU", f"{cpu['seconds']:.2f} s" + (f" ({cpu['per_million_events']:.2f} s per million "
                                                              "events)" if cpu["per_million_events"] else "")])
    body.append("<h2>Summary</h2>" + _table(rows, numeric_from=99))
    body.append("<h2>Throughput over time</h2>")
    series = [("sent events/s", [(p["t"], p["events_per_s"]) for p in tl]),
              ("delivered events/s", [(p["t"], p["delivered_per_s"]) for p in tl])]
    if any(p["errors"] for p in tl):
        series.append(("errors (requests+events)", [(p["t"], float(p["errors"])) for p in tl]))
    body.append(line_chart("throughput", "Events per second", series, x_label="seconds since start",
                           y_label="events/s"))
    body.append("<h2>Latency over time</h2>")
    body.append(line_chart("latency", "Request latency per interval (log scale)",
                           # max first: with few requests per interval p99 equals max and is drawn over it
                           [("max", [(p["t"], p["max_ms"]) for p in tl]),
                            ("p99", [(p["t"], p["p99_ms"]) for p in tl]),
                            ("p50", [(p["t"], p["p50_ms"]) for p in tl])],
                           x_label="seconds since start", y_label="ms", log_y=True))
    curve = _percentile_curve(doc.get("latency_buckets") or [])
    if curve:
        body.append("<h2>Latency distribution</h2>")
        body.append(line_chart("percentiles", "Latency by percentile (x: 0 = p0, 1 = p90, 2 = p99, 3 = p99.9)",
                               [("latency", curve)], x_label="percentile (nines)", y_label="ms", log_y=True))
    body.append("<h2>Errors</h2>")
    if err["total"]:
        body.append(_table([[_e(k), f"{v:,}"] for k, v in err["by_kind"].items()], head=["kind", "count"]))
        if err["by_status"]:
            body.append(_table([[f"HTTP {_e(k)}", f"{v:,}"] for k, v in err["by_status"].items()],
                               head=["final status", "requests"]))
        body.append(_table([[_e(m["message"]), f"{m['count']:,}"] for m in err["messages"]],
                           head=["message", "count"]))
    else:
        body.append('<p class="ok">No errors.</p>')
    body.append("<h2>Configuration</h2>" + _table([[_e(k), _e(v)] for k, v in cfg.items()], numeric_from=99))
    return _page(title, body)


def _render_compare(doc: Dict[str, Any]) -> str:
    title = "eventpush bench — eventpush vs a plain client"
    c = doc["config"]
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="muted">{_e(doc["started_at"])} · eventpush {_e(doc["version"])} · {c["events_per_row"]:,} '
            f'synthetic Connect events (~{c["event_size"]} B) per row, batches of {c["batch"]}, '
            f'{c["concurrency"]} requests in flight, embedded hub <code>eventpush serve --sink</code></p>']
    rows = []
    bars_rate: List[Tuple[str, float]] = []
    bars_cpu: List[Tuple[str, float]] = []
    for r in doc["rows"]:
        if r.get("skipped"):
            rows.append([_e(r["name"]), f'<span class="muted">skipped: {_e(r["skipped"])}</span>', "", "", "", "",
                         ""])
            continue
        ok = r["server_counted"] == r["events"]
        rows.append([_e(r["name"]), fmt_int(r["events_per_s"]), f"{r['mb_per_s']:.1f}",
                     "-" if r["client_cpu_per_million"] is None else f"{r['client_cpu_per_million']:.2f}",
                     f'<span class="{"ok" if ok else "bad"}">{fmt_int(r["server_counted"])}</span>',
                     "-" if r["speedup"] is None else f"{r['speedup']:.1f}×",
                     "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.1f}×"])
        short = r["name"].split(" (")[0] + (" (" + r["name"].split(" (")[1] if " (" in r["name"] else "")
        bars_rate.append((short, r["events_per_s"]))
        if r["client_cpu_per_million"] is not None:
            bars_cpu.append((short, r["client_cpu_per_million"]))
    body.append("<h2>Results</h2>" + _table(rows, head=["client", "events/s", "MB/s", "client CPU s/1M ev",
                                                         "delivered (hub)", "speed-up", "CPU ratio"]))
    body.append(bar_chart("rate", "Events per second (delivered, counted by the hub)", bars_rate,
                          y_label="events/s"))
    body.append(bar_chart("cpu", "Client CPU seconds per million events (lower is better)", bars_cpu,
                          y_label="CPU s / 1M events"))
    return _page(title, body)


def render_report(doc: Dict[str, Any]) -> str:
    """The HTML page of a result document (``mode`` ``load`` or ``compare``)."""
    return _render_compare(doc) if doc["mode"] == "compare" else _render_load(doc)


def write_report(doc: Dict[str, Any], path: str) -> None:
    """Write :func:`render_report` to ``path`` (UTF-8)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_report(doc))
