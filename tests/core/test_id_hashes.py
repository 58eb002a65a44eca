"""``hub_id_hashes``: the keyed SipHash-2-4 behind the hub's duplicate index, on both implementations.

Both must give the same numbers for every input (a database written by a hub on the compiled core is read by one
on the twin), and the numbers must be SipHash-2-4's: the reference vectors of its paper (key 00..0f, messages
00, 01, ... of each length) come out when the 8-byte prefix and the id are chosen to spell them.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpush import _core_py
from eventpush._envflags import env_flag

_CORE_C = None if env_flag("EVENTPUSH_PURE") else __import__("eventpush._core", fromlist=["_core"])

KEY = bytes(range(16))
# SipHash-2-4 reference outputs (their bytes, little-endian) for the messages 00 01 .. (n-1), key 00 .. 0f
VECTORS = {
    8: "6224939a79f5f593",
    15: "e545be4961ca29a1",
}
PREFIX = int.from_bytes(bytes(range(8)), "little")


def signed(h: int) -> int:
    return h - (1 << 64) if h >> 63 else h


@pytest.mark.parametrize("n", [8, 15])
def test_reference_vectors(core, n):
    want = signed(int.from_bytes(bytes.fromhex(VECTORS[n]), "little"))
    assert core.hub_id_hashes(KEY, PREFIX, ["".join(map(chr, range(8, n)))]) == [want]


def test_the_message_is_cid_then_utf8_id(core):
    """Each id is hashed after its collection's id: the same id in two collections, or under two keys, differs;
    a non-ASCII id is hashed as its UTF-8 bytes (the twin's definition)."""
    ids = ["a", "é", "雪" * 300, "x" * 7, "x" * 8, "x" * 9, "𝄞"]
    one = core.hub_id_hashes(KEY, 1, ids)
    assert len(set(one)) == len(ids)
    assert core.hub_id_hashes(KEY, 2, ids) != one
    assert core.hub_id_hashes(bytes(16), 1, ids) != one
    assert core.hub_id_hashes(KEY, -1, ids) == _core_py.hub_id_hashes(KEY, -1, ids)
    assert core.hub_id_hashes(KEY, 1, []) == []


def test_bad_arguments(core):
    with pytest.raises(ValueError):
        core.hub_id_hashes(b"short", 1, ["a"])
    with pytest.raises(ValueError):
        core.hub_id_hashes(bytearray(16), 1, ["a"])
    with pytest.raises(TypeError):
        core.hub_id_hashes(KEY, 1, ("a",))
    with pytest.raises(TypeError):
        core.hub_id_hashes(KEY, 1, ["a", 1])
    with pytest.raises(OverflowError):
        core.hub_id_hashes(KEY, 1 << 64, ["a"])
    with pytest.raises(UnicodeEncodeError):
        core.hub_id_hashes(KEY, 1, ["a\ud800"])


@pytest.mark.skipif(_CORE_C is None, reason="the compiled core is not built")
@settings(max_examples=300, deadline=None, database=None)
@given(key=st.binary(min_size=16, max_size=16), cid=st.integers(-(1 << 63), (1 << 63) - 1),
       ids=st.lists(st.text(max_size=40), max_size=8))
def test_compiled_and_twin_agree(key, cid, ids):
    ids = [i for i in ids if not any(0xD800 <= ord(c) <= 0xDFFF for c in i)]
    assert _CORE_C.hub_id_hashes(key, cid, ids) == _core_py.hub_id_hashes(key, cid, ids)
