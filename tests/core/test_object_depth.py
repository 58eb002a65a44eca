"""The depth guard reaches inside dataclasses and Enum members, on both cores.

orjson writes a dataclass instance as a map of its attributes and an Enum member as its value, and (3.13) does not
count the tuples inside either: a dataclass holding tuples nested a few thousand deep corrupted the heap (the
process aborted with "free(): corrupted unsorted chunks"). The guard now walks what orjson would write of them.
Shallow ones are written as orjson writes them, by both cores; deep ones are refused like any value nested too
deep, naming the event and the field.
"""

from __future__ import annotations

import enum
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pytest

from eventpush.dialects import BARCHART, CONNECT, CONNECT_RUBY, JSON_ARRAY, NDJSON
from eventpush.errors import EventError


@dataclass
class Box:
    x: Any
    _hidden: Any = None


@dataclass
class Slotted:
    __slots__ = ("x", "_y")
    x: Any
    _y: Any


class Color(enum.Enum):
    RED = (1, (2, 3))


def nested(n: int) -> tuple:
    t: tuple = ()
    for _ in range(n):
        t = (t,)
    return t


class Deep(enum.Enum):
    VALUE = nested(300)


DIALECTS = [CONNECT, CONNECT_RUBY, NDJSON, JSON_ARRAY]


def encode(core, dialect, value):
    enc = core.Encoder(dialect, clock=lambda: 0, urandom=lambda k: bytes(k))
    ts = datetime(2026, 1, 1) if dialect is CONNECT else "2026-01-01T00:00:00Z"
    ev = {"id": "e1", "timestamp": ts, "a": {"b": value}}
    batches, errors = enc.encode_batch({"c": [ev]} if dialect.framing == "collections" else [ev])
    return b"".join(bytes(b) for b in batches), errors


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("value", [Box([1, (2,)]), Box(1, nested(300)), Slotted({"k": (1,)}, nested(300)), Color.RED],
                         ids=["dataclass", "hidden-deep", "slots", "enum"])
def test_shallow_objects_are_written_as_orjson_writes_them(core, dialect, value):
    data, errors = encode(core, dialect, value)
    assert errors == []
    assert orjson.dumps({"b": value}) in data  # what orjson writes of it, as it is (the private attribute left out)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("value", [Box(nested(300)), Box(Box(nested(300))), Slotted(nested(300), None), Deep.VALUE,
                                   [Box({"t": nested(300)})]],
                         ids=["dataclass", "nested-dataclass", "slots", "enum", "in-list"])
def test_deep_objects_are_refused_naming_the_field(core, dialect, value):
    data, errors = encode(core, dialect, value)
    assert data == b""
    [err] = errors
    assert isinstance(err, EventError) and "Nesting too deep" in str(err)
    assert err.index == 0 and err.field.startswith("a.b")


def test_barchart_context_items(core):
    enc = core.Encoder(BARCHART, clock=lambda: 0, urandom=lambda k: bytes(k))
    ev = {"customer": "BARCHART", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1}
    batches, errors = enc.encode_batch([dict(ev, context=[Box(1)]), dict(ev, context=[Box(nested(300))])])
    assert b'"context":[{"x":1}]' in b"".join(bytes(b) for b in batches)
    assert [e.index for e in errors] == [1] and "Nesting too deep" in str(errors[0])


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "twin"])
def test_thousands_deep_inside_a_dataclass_do_not_crash_the_process(pure):
    """The reproduction, in a child process: before the fix it aborted with heap corruption."""
    code = textwrap.dedent("""
        from dataclasses import dataclass
        import eventpush
        from eventpush.dialects import CONNECT, CONNECT_RUBY, NDJSON, JSON_ARRAY
        @dataclass
        class Box:
            x: object
        t = ()
        for _ in range(30000):
            t = (t,)
        ev = {"id": "e1", "timestamp": "2026-01-01T00:00:00Z", "a": Box(t)}
        for d in (CONNECT_RUBY, NDJSON, JSON_ARRAY):
            enc = eventpush.Encoder(d)
            _, errors = enc.encode_batch({"c": [ev]} if d.framing == "collections" else [ev])
            assert len(errors) == 1 and "Nesting too deep" in str(errors[0]), errors
        print("refused", eventpush.IMPLEMENTATION)
    """)
    env = dict(__import__("os").environ, EVENTPUSH_PURE="1" if pure else "0")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["refused", "python" if pure else "cython"]
