"""Names repeated at the top level of a JSON request body, however they are spelled.

orjson, like the other JSON parsers, keeps the last of two equal names in an object without a word: in a Connect
batch ``{"c": [e1], "c": [e2]}`` or a Barchart body ``{"events": [e1], "events": [e2]}`` the first array's events
would get no result and not be stored. Names are compared decoded: ``"c"`` and ``"\\u0063"`` are one name, as
are ``"a/b"`` and ``"a\\/b"``. The hub refuses such a body (:func:`repeated_key`).

PERF (the Connect batch hot path; ``--sink`` runs ~700k events/s): a body with no backslash spells each name one
way only, so one search per name's JSON spelling settles it (for up to 8 names; each search scans the whole body,
so more names go straight to the exact check). A backslash adds one regex pass that
stops only at escaped strings (one match per string with an escape, whole string at a time), to see whether any
escaped *name* could decode to a top-level one. Only when something looks repeated is the body parsed again, by
orjson, with every object turned into an array (exact, C speed); only a body that is refused is then looked at by
Python's parser to say which name.
"""

from __future__ import annotations

import json
import re
from typing import Any, Collection, List, Optional, Tuple

import orjson

__all__ = ["repeated_key"]

_WS_COLON = rb"[ \t\r\n]*:"

# From the first backslash of a string (which always starts an escape) to its closing quote, escapes taken whole,
# and the ":" after it when the string is a name. A match consumes the whole rest of its string, so the search for
# the next backslash always starts outside strings again: one match per string that holds an escape, and no string
# scanned twice. _ESCAPED_NAME gives only b":" (a name) or b"" per such string (nothing allocated); when there are
# escaped names, _ESCAPED_TAIL gives (tail from the first backslash, b":" or b"") pairs.
_TAIL = rb'\\.[^"\\]*(?:\\.[^"\\]*)*'
_ESCAPED_NAME = re.compile(_TAIL + rb'"[ \t\r\n]*(:)?', re.DOTALL).findall
_ESCAPED_TAIL = re.compile(rb"(" + _TAIL + rb')"[ \t\r\n]*(:)?', re.DOTALL).findall

# {"a": [1], "b": {"c": 2}} -> ["a", [1], "b", ["c", 2]]: still valid JSON (inside strings, "[", "]" and "," are
# ordinary characters too) and as deep, so it parses wherever the body did; the top level becomes
# [name, value, name, value, ...], one pair per member, repeated names included.
_OBJECTS_TO_ARRAYS = bytes.maketrans(b"{}:", b"[],")

# Tokens for the fallback scanner, over a copy of the body where escaped quotes and backslashes are blanked out.
_TOKENS = re.compile(rb'"[^"]*"(' + _WS_COLON + rb")?|[\[{]|[\]}]").finditer

# An escaped name whose tail is checked against the top-level names costs one decode and one substring search of
# the joined names; past this many (distinct tails × characters of names) the exact check is cheaper.
_TAIL_CHECK_BUDGET = 1 << 20

# Each name's search scans the whole body: past this many names, one exact parse (linear) is cheaper, and a body
# of many small names (20,000 empty collections in 280 kB) cannot make the check quadratic.
_SEARCHED_NAMES = 8


def repeated_key(raw: bytes, names: Collection[str]) -> Optional[str]:
    """The first name (in the order of the repetitions) that the top-level object of ``raw`` holds more than once,
    compared decoded, or ``None``. ``raw`` is a body ``orjson.loads`` accepted as an object and ``names`` its keys
    (the parsed dict itself will do)."""
    if len(names) > _SEARCHED_NAMES:
        return _exact(raw, len(names))
    for name in names:
        if len(re.findall(re.escape(orjson.dumps(name)) + _WS_COLON, raw)) > 1:
            # Twice as written, though maybe as a name inside the events: the exact check decides.
            return _exact(raw, len(names))
    # No name is written twice in orjson's spelling of it (the count never falls short: an occurrence the search
    # could skip by overlap is replaced by the overlapping match). Any other spelling holds an escape: without a
    # backslash in the body, no name is repeated.
    if b"\\" not in raw or not _escaped_name_could_be(raw, names):
        return None
    return _exact(raw, len(names))


def _escaped_name_could_be(raw: bytes, names: Collection[str]) -> bool:
    """Whether some name in ``raw`` (at any depth) is spelled with an escape and could decode to one of ``names``:
    its part from the first escape on, decoded, ends one of them (the part before is literal text)."""
    if b":" not in _ESCAPED_NAME(raw):  # escapes in values only (the usual case)
        return False
    tails = {tail for tail, colon in _ESCAPED_TAIL(raw) if colon}
    joined = "\x00".join(names) + "\x00"
    if len(tails) * len(joined) > _TAIL_CHECK_BUDGET:
        return True
    for tail in tails:
        try:
            decoded = orjson.loads(b'"' + tail + b'"')
        except orjson.JSONDecodeError:
            return True
        # "\x00" ends every name in ``joined``: a name ending with ``decoded`` is found (a NUL inside a name can
        # only add a false alarm, which the exact check clears).
        if decoded + "\x00" in joined:
            return True
    return False


def _exact(raw: bytes, distinct: int) -> Optional[str]:
    """Count the top-level members exactly (orjson, objects as arrays); more than ``distinct`` names means one
    is repeated, and Python's parser says which."""
    try:
        members = len(orjson.loads(raw.translate(_OBJECTS_TO_ARRAYS))) // 2
    except orjson.JSONDecodeError:  # (cannot happen for a body orjson accepted; the slow path decides)
        members = -1
    if members == distinct:
        return None
    try:
        return _first_repeated_parsed(raw)
    except (ValueError, RecursionError):  # nested deeper than Python's parser goes (orjson goes to 1024)
        return _first_repeated_scanned(raw)


def _first_repeated_parsed(raw: bytes) -> Optional[str]:
    found: List[Optional[str]] = []

    def pairs(items: List[Tuple[str, Any]]) -> None:
        seen = set()
        first = None
        for k, _ in items:
            if k in seen:
                first = k
                break
            seen.add(k)
        found.append(first)  # the top-level object is the last one completed

    json.loads(raw, object_pairs_hook=pairs)
    return found[-1] if found else None


def _first_repeated_scanned(raw: bytes) -> Optional[str]:
    """The same without recursion: the top-level names found by tracking the depth over a copy of ``raw`` whose
    escaped backslashes and quotes are blanked (same length, so every quote left delimits a string)."""
    text = raw.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    depth = 0
    seen = set()
    for m in _TOKENS(text):
        c = text[m.start()]
        if c == 0x22:  # '"'
            if depth == 1 and m.group(1) is not None:
                name = orjson.loads(raw[m.start():m.start(1)])
                if name in seen:
                    return name
                seen.add(name)
        elif c == 0x5B or c == 0x7B:  # '[' '{'
            depth += 1
        else:
            depth -= 1
    return None
