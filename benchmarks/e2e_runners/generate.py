"""Reference row: the cost of producing the events alone (every other row pays it too)."""

from __future__ import annotations


def run_generate(ctx) -> None:
    for chunk in ctx.chunks(5000):
        for _ev in chunk:
            pass


ROWS = [
    {"name": "generate only (no client, nothing sent)", "run": run_generate, "marker": b"\x00never\x00",
     "note": "'generate only' is the cost of building the fresh event dicts that every row pushes."},
]
