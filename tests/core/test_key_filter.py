"""``HubKeyFilter``: the hub's in-memory filter of the index keys it stored, on both implementations.

A key it was given must always be reported (a miss would let the hub store a duplicate); a key it was never given
is reported rarely; both implementations set the same bits, so they answer every question alike.
"""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpush import _core_py

from core_support import CORE_C


def text(keys: list) -> str:
    return orjson.dumps(keys).decode()


def test_a_key_added_is_always_found_and_split_keeps_the_order(core):
    f = core.HubKeyFilter()
    assert f.keys == 0 and f.tables == 1 and f.nbytes == (1 << 20) * 2
    assert f.split("[]") == ("[]", "[]")
    q = "[5,3,9]"
    new, maybe = f.split(q)
    assert new is q and maybe == "[]"  # nothing may have been added: the same str, no copy
    assert f.add("[3]") == 3 and f.add("[]") == -1
    assert f.split(q) == ("[5,9]", "[3]")
    assert f.split("[3,5]") == ("[5]", "[3]") and f.split("[3]") == ("[]", "[3]")
    assert f.split("[3,3,5,3]") == ("[5]", "[3,3,3]")
    rng = random.Random(1)
    keys = sorted(rng.sample(range(1 << 48), 20_000)) + [0, 10 ** 18 - 1]
    assert f.add(text(keys)) == 10 ** 18 - 1
    assert f.keys == 20_003
    assert all(k in f for k in keys)
    new, maybe = f.split(text(keys))
    assert new == "[]" and orjson.loads(maybe) == keys
    for other in (-1, 10 ** 18, 1.0, "3", None, True):
        assert other not in f


def test_false_positives_are_rare_at_capacity(core):
    rng = random.Random(2)
    f = core.HubKeyFilter(1 << 12)
    f.add(text(rng.sample(range(1 << 48), 1 << 12)))
    others = rng.sample(range(1 << 48), 20_000)
    new, maybe = f.split(text(others))
    new, maybe = orjson.loads(new), orjson.loads(maybe)
    assert 0 < len(maybe) < 20_000 * 0.005  # ~0.1% expected
    held = set(maybe)
    assert new == [k for k in others if k not in held]  # both in the order given
    assert maybe == [k for k in others if k in held]


def test_it_grows_by_chaining_tables_without_losing_a_key(core):
    f = core.HubKeyFilter(32)
    keys = list(range(0, 7 * 3000, 7))
    for i in range(0, len(keys), 100):
        f.add(text(keys[i:i + 100]))
    assert f.keys == 3000
    assert f.tables == 7  # 32 + 64 + ... + 2048 >= 3000
    assert f.nbytes == sum(32 << i for i in range(7)) * 2
    assert all(k in f for k in keys)
    assert f.split(text(keys))[0] == "[]"


@pytest.mark.parametrize("bad", ["", "[", "]", "[1,]", "[,1]", "[1 2]", "[]]", "[-1]", "[1.5]", "x[1]", "[1]x",
                                 "[1000000000000000000]", '["1"]', "[1,,2]", "{}"])
def test_bad_input(core, bad):
    f = core.HubKeyFilter(32)
    with pytest.raises(ValueError):
        f.add(bad)
    with pytest.raises(ValueError):
        f.split(bad)


def test_bad_arguments(core):
    with pytest.raises(TypeError):
        core.HubKeyFilter(32).add(b"[1]")
    with pytest.raises(TypeError):
        core.HubKeyFilter(32).split(["1"])
    for cap in (0, 16, 33, 1000):
        with pytest.raises(ValueError):
            core.HubKeyFilter(cap)


@pytest.mark.skipif(CORE_C is None, reason="the compiled core is not built")
@settings(max_examples=100, deadline=None, database=None)
@given(added=st.lists(st.lists(st.integers(0, 10 ** 18 - 1), max_size=80), max_size=6),
       asked=st.lists(st.integers(0, 10 ** 18 - 1), max_size=200), cap=st.sampled_from([32, 64, 1 << 10]))
def test_compiled_and_twin_agree(added, asked, cap):
    c, p = CORE_C.HubKeyFilter(cap), _core_py.HubKeyFilter(cap)
    for keys in added:
        assert c.add(text(keys)) == p.add(text(keys))
    assert (c.keys, c.tables, c.nbytes) == (p.keys, p.tables, p.nbytes)
    assert c.split(text(asked)) == p.split(text(asked))
    assert [k in c for k in asked] == [k in p for k in asked]
    # enough keys for a small filter to say "maybe" to many others: the same ones
    rng = random.Random(len(asked))
    many = text(rng.sample(range(1 << 48), 500))
    c.add(many)
    p.add(many)
    others = text(rng.sample(range(1 << 48), 2000))
    assert c.split(others) == p.split(others)
