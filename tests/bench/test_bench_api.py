"""The ``eventpush.bench`` namespace: ``__all__`` lists exactly the public names, each resolves and is documented;
building the CLI parser does not load the bench."""

from __future__ import annotations

import subprocess
import sys

import eventpush.bench as bench


def test_all_is_exact_and_documented():
    public = {n for n in dir(bench) if not n.startswith("_")} - {"annotations", "importlib", "json", "os", "Any",
                                                                 "Dict"}
    public -= {"compare", "defaults", "display", "embedded", "events", "histogram", "report", "runner"}
    assert public == set(bench.__all__)
    for name in bench.__all__:
        obj = getattr(bench, name)
        if callable(obj):
            assert obj.__doc__, name


def test_cli_parser_does_not_load_the_bench():
    code = ("import sys; from eventpush.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith('eventpush.bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['eventpush.bench', 'eventpush.bench.defaults']"
