"""``hub_id_hashes``: the keyed SipHash-2-4 behind the hub's duplicate index, on both implementations.

Both must give the same numbers for every input (a database written by a hub on the compiled core is read by one
on the twin), and the numbers must be SipHash-2-4's: the reference vectors of its paper (key 00..0f, messages
00, 01, ... of each length) come out when the 8-byte prefix and the id are chosen to spell them.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpush import _core_py

from core_support import CORE_C


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


@pytest.mark.skipif(CORE_C is None, reason="the compiled core is not built")
@settings(max_examples=300, deadline=None, database=None)
@given(key=st.binary(min_size=16, max_size=16), cid=st.integers(-(1 << 63), (1 << 63) - 1),
       ids=st.lists(st.text(max_size=40), max_size=8))
def test_compiled_and_twin_agree(key, cid, ids):
    ids = [i for i in ids if not any(0xD800 <= ord(c) <= 0xDFFF for c in i)]
    assert CORE_C.hub_id_hashes(key, cid, ids) == _core_py.hub_id_hashes(key, cid, ids)


# --------------------------------------------------------------------------------------------------------------
# hub_index_keys: the index's keys of a request's hashes, masked and sorted, as the JSON text SQLite reads


def test_index_keys_are_the_masked_hashes_in_order(core):
    hashes = core.hub_id_hashes(KEY, 1, [f"id-{i}" for i in range(2000)]) + [-(1 << 63), (1 << 63) - 1, 0, -1, -1]
    keys = orjson.loads(core.hub_index_keys(hashes, 16, 48))
    assert keys == sorted((h >> 16) & ((1 << 48) - 1) for h in hashes)
    assert core.hub_index_keys([], 16, 48) == "[]"
    assert core.hub_index_keys([-1], 0, 63) == "[9223372036854775807]"
    assert core.hub_index_keys([-1, 5], 60, 4) == "[0,15]"


def test_index_keys_bad_arguments(core):
    with pytest.raises(TypeError):
        core.hub_index_keys((1, 2), 16, 48)
    with pytest.raises(TypeError):
        core.hub_index_keys([1, True], 16, 48)
    with pytest.raises(TypeError):
        core.hub_index_keys([1.0], 16, 48)
    with pytest.raises(OverflowError):
        core.hub_index_keys([1 << 63], 16, 48)
    with pytest.raises(OverflowError):
        core.hub_index_keys([-(1 << 63) - 1], 16, 48)
    for shift, bits in ((16, 49), (-1, 8), (0, 0), (0, 64)):
        with pytest.raises(ValueError):
            core.hub_index_keys([1], shift, bits)


@pytest.mark.skipif(CORE_C is None, reason="the compiled core is not built")
@settings(max_examples=300, deadline=None, database=None)
@given(hashes=st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=50), shift=st.integers(0, 63),
       bits=st.integers(1, 63))
def test_index_keys_compiled_and_twin_agree(hashes, shift, bits):
    if shift + bits > 64:
        bits = 64 - shift
        if bits < 1:
            return
    assert CORE_C.hub_index_keys(hashes, shift, bits) == _core_py.hub_index_keys(hashes, shift, bits)
