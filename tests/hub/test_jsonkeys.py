"""eventpush.hub.jsonkeys.repeated_key against Python's own parser: the first top-level name repeated, compared
decoded, whatever mix of literal characters and escapes spells it, with look-alike names and escapes inside the
values. (The hub's answers to such bodies are tested over HTTP in test_connect.py and test_barchart.py.)"""

from __future__ import annotations

import json
import random
import sys
from typing import Any, List, Optional, Tuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpush.hub import jsonkeys
from eventpush.hub.jsonkeys import repeated_key

SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def spell(text: str, rnd: random.Random) -> str:
    """``text`` as a JSON string, each character written literally or escaped (short form, \\uXXXX in either
    case, a surrogate pair beyond the BMP), chosen at random."""
    out = ['"']
    for ch in text:
        options = []
        if ch not in '"\\' and ord(ch) >= 0x20:
            options.append(ch)
        if ch in SHORT:
            options.append(SHORT[ch])
        cp = ord(ch)
        if cp < 0x10000:
            options.append("\\u%04x" % cp)
            options.append("\\u%04X" % cp)
        else:
            hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
            options.append("\\u%04x\\u%04x" % (hi, lo))
        out.append(rnd.choice(options))
    out.append('"')
    return "".join(out)


def reference(raw: bytes) -> Optional[str]:
    """Python's parser: the first top-level name seen a second time."""
    found: List[Optional[str]] = []

    def pairs(items: List[Tuple[str, Any]]) -> dict:
        seen = set()
        first = None
        for k, _ in items:
            if k in seen and first is None:
                first = k
            seen.add(k)
        found.append(first)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    return found[-1]


ALPHABET = 'ab/é"\\:{}[],\n\x00 \U0001F600'
names_st = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), min_size=1, max_size=4, unique=True)


def build(names: List[str], order: List[int], rnd: random.Random) -> bytes:
    """A batch-shaped body: the top-level members named ``names[i]`` for i in ``order`` (repeats allowed), each
    spelled at random, their events holding the same names as inner keys and values, escapes and all."""
    ws = lambda: rnd.choice(["", " ", "\n", "\t "])  # noqa: E731
    members = []
    for i in order:
        events = []
        for _ in range(rnd.randint(0, 2)):
            inner = [f"{spell(rnd.choice(names), rnd)}{ws()}:{ws()}{spell(rnd.choice(names), rnd)}"
                     for _ in range(rnd.randint(0, 2))]
            inner.append(f'"id":{spell(str(rnd.random()), rnd)}')
            events.append("{" + ",".join(inner) + "}")
        members.append(f"{ws()}{spell(names[i], rnd)}{ws()}:{ws()}[{','.join(events)}]")
    return ("{" + ",".join(members) + "}").encode()


@settings(max_examples=600, deadline=None)
@given(names=names_st, data=st.data())
def test_repeated_key_matches_python_parser(names, data):
    order = data.draw(st.lists(st.integers(0, len(names) - 1), min_size=1, max_size=6))
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    raw = build(names, order, rnd)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:  # (never: the spellings are valid)
        pytest.fail(f"invalid body {raw!r}")
    expected = reference(raw)
    assert repeated_key(raw, doc) == expected, raw
    # both exact paths agree too (the scanner is the one for bodies nested deeper than Python's parser goes)
    assert jsonkeys._first_repeated_parsed(raw) == expected
    assert jsonkeys._first_repeated_scanned(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    (b'{"c":[{"id":"k1"}],"\\u0063":[{"id":"k2"}]}', "c"),
    (b'{"a/b":[],"a\\/b":[]}', "a/b"),
    (b'{"a\\/b":[],"a/b":[]}', "a/b"),
    (b'{"\\u00e9":[],"\xc3\xa9":[]}', "\u00e9"),
    (b'{"\\ud83d\\ude00":[],"\xf0\x9f\x98\x80":[]}', "\U0001F600"),
    (b'{"x\\"y":[],"x\\u0022y":[]}', 'x"y'),
    (b'{"c":[],"d":[],"c":[],"\\u0064":[]}', "c"),
    # escapes everywhere in the values, no name repeated
    (b'{"c":[{"\\u0063":"\\"c\\":","c":{"c":["\\\\"]}}],"d":[{"p":"a\\/b\\\\"}]}', None),
    (b'{"c":[{"id":"\\"c\\":[]"}],"\\u0064":[]}', None),
])
def test_repeated_key_examples(raw, expected):
    assert repeated_key(raw, orjson.loads(raw)) == expected == reference(raw)


def test_repeated_key_deeper_than_pythons_parser():
    """orjson parses up to 1024 levels, Python's parser fewer: the repetition is still found (and named)."""
    deep = b"[" * 1000 + b"]" * 1000
    for raw in (b'{"c":[{"id":"k1"}],"c":[' + deep + b"]}", b'{"c":[{"id":"k1"}],"\\u0063":[' + deep + b"]}"):
        if sys.version_info < (3, 12):  # from 3.12 the C parser goes deeper than orjson's 1024 levels
            with pytest.raises(RecursionError):
                json.loads(raw)
        assert repeated_key(raw, orjson.loads(raw)) == "c"
        assert jsonkeys._first_repeated_scanned(raw) == "c"  # the fallback, whatever this Python's parser does
    raw = b'{"c":[{"c":1,"\\u0063":2}],"d":[' + deep + b"]}"
    assert repeated_key(raw, orjson.loads(raw)) is None


@pytest.mark.parametrize("count", [9, 20_000])
def test_many_names_are_checked_exactly_in_one_pass(count, monkeypatch):
    """Past 8 top-level names, the body is checked by one exact parse instead of one whole-body search per name:
    20,000 empty collections in 280 kB made the per-name searches take seconds on the event loop."""
    searched = []
    real_findall = jsonkeys.re.findall
    monkeypatch.setattr(jsonkeys.re, "findall", lambda *a, **k: searched.append(1) or real_findall(*a, **k))
    names = ["c%07d" % i for i in range(count)]
    # every name also appears as a key inside an event: a search per name would see each twice
    raw = ("{" + ",".join('"%s":[{"%s":1}]' % (n, n) for n in names) + "}").encode()
    assert repeated_key(raw, orjson.loads(raw)) is None
    repeated = raw[:-1] + b',"\\u0063%s":[]}' % names[count // 2][1:].encode()
    assert repeated_key(repeated, orjson.loads(repeated)) == names[count // 2] == reference(repeated)
    assert searched == []
