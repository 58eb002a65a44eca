"""``--report FILE.html``: a self-contained page whose plots render in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib

import pytest

from eventpush.bench.report import COLORS, render_report


def decode_png(data: bytes):
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        ftype, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def count_color(rows, bpp, rgb, tol=40):
    n = 0
    for row in rows:
        for x in range(0, len(row), bpp):
            if abs(row[x] - rgb[0]) + abs(row[x + 1] - rgb[1]) + abs(row[x + 2] - rgb[2]) <= tol:
                n += 1
    return n


def hex_rgb(h):
    return tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))


@pytest.fixture(scope="module")
def load_report(sink_hub, tmp_path_factory):
    """A real open-model run against the hub, with --report and --json."""
    from eventpush.cli import main

    out = tmp_path_factory.mktemp("report")
    html = out / "bench.html"
    code = main(["bench", "--to", sink_hub.base + "/connect", "--rate", "4000", "--duration", "2", "--batch", "50",
                 "--report", str(html), "--quiet"])
    assert code == 0
    return html


def test_report_is_self_contained(load_report):
    text = load_report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # no external resources, no scripts
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text and "@import" not in text and "url(" not in text
    for name in ("throughput", "latency", "percentiles"):
        assert f'data-plot="{name}"' in text
    assert "Events per second" in text and "No errors." in text


@pytest.mark.chromium
def test_report_renders_in_headless_chromium(load_report, chromium, tmp_path):
    png = tmp_path / "shot.png"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run(common + [f"--screenshot={png}", "--window-size=1000,2000", load_report.as_uri()],
                   check=True, timeout=90, capture_output=True)
    dom = subprocess.run(common + ["--dump-dom", load_report.as_uri()], check=True, timeout=90,
                         capture_output=True, text=True).stdout

    # the DOM Chromium built has the three SVG plots, each with drawn series
    plots = re.findall(r'<svg class="plot" data-plot="(\w+)".*?</svg>', dom, re.S)
    assert plots == ["throughput", "latency", "percentiles"]
    for body in re.findall(r'<svg class="plot".*?</svg>', dom, re.S):
        polylines = re.findall(r'<polyline[^>]*points="([^"]+)"', body)
        assert polylines and max(len(p.split()) for p in polylines) >= 3

    # the screenshot is a real rendering: the requested size, mostly page background, and the series colours
    width, height, bpp, rows = decode_png(png.read_bytes())
    assert (width, height) == (1000, 2000)
    assert len(set(rows)) > 200  # not a blank page
    blue = count_color(rows, bpp, hex_rgb(COLORS[0]))
    green = count_color(rows, bpp, hex_rgb(COLORS[1]))
    assert blue > 500 and green > 300, (blue, green)


def test_compare_report_renders_bars():
    doc = {"mode": "compare", "version": "0", "started_at": "2026-01-01T00:00:00+00:00",
           "config": {"events_per_row": 10, "event_size": 250, "batch": 5, "concurrency": 1},
           "rows": [
               {"name": "eventpush (compiled core)", "skipped": "not built"},
               {"name": "eventpush (pure-Python twin)", "skipped": None, "events_per_s": 1000.0, "mb_per_s": 0.3,
                "client_cpu_per_million": 5.0, "server_counted": 10, "events": 10, "speedup": 2.0, "cpu_ratio": 2.0},
               {"name": "requests + json (baseline)", "skipped": None, "events_per_s": 500.0, "mb_per_s": 0.1,
                "client_cpu_per_million": 10.0, "server_counted": 10, "events": 10, "speedup": 1.0,
                "cpu_ratio": 1.0},
           ]}
    text = render_report(doc)
    assert 'data-plot="rate"' in text and 'data-plot="cpu"' in text
    assert text.count('<rect class="series"') == 4
    assert "skipped: not built" in text
