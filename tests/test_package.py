"""The package as users meet it: every public name resolves, the top level imports nothing heavy, and typical
code type-checks against the shipped annotations (py.typed, _core.pyi)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import eventpush

NAMESPACES = [
    "eventpush",
    "eventpush.errors",
    "eventpush.dialects",
    "eventpush.transport",
    "eventpush.sender",
    "eventpush.batcher",
    "eventpush.spool",
    "eventpush.connect",
    "eventpush.barchart",
    "eventpush.realtime",
    "eventpush.hub",
]


@pytest.mark.parametrize("name", NAMESPACES)
def test_every_name_in_all_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if getattr(module, n, None) is None and n != "IMPLEMENTATION"]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"


def test_top_level_names_are_the_engine_objects() -> None:
    from eventpush.batcher import Batcher
    from eventpush.transport import Retry, Transport

    assert eventpush.Batcher is Batcher and eventpush.Transport is Transport and eventpush.Retry is Retry
    assert eventpush.IMPLEMENTATION in ("cython", "python")


def test_import_eventpush_stays_light() -> None:
    # the CLI and `eventpush serve` start without loading the encoder core or the HTTP client
    code = (
        "import sys, eventpush; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('eventpush') or m in ('urllib3', 'orjson'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.split(",") == ["eventpush", "eventpush._barchart_data", "eventpush.dialects", "eventpush.errors"]


def test_py_typed_and_stub_ship_with_the_package() -> None:
    root = Path(eventpush.__file__).parent
    assert (root / "py.typed").is_file()
    assert (root / "_core.pyi").is_file()


def test_typical_code_type_checks_with_mypy(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "data" / "typing_examples.py"
    env = dict(os.environ)
    root = Path(eventpush.__file__).parent.parent
    if root.name not in ("site-packages", "dist-packages"):  # an editable install from src/: point mypy at it
        env["MYPYPATH"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
         "--warn-unused-ignores", "--disallow-untyped-calls", str(example)],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
