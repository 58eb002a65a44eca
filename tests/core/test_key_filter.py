"""``HubKeyFilter``: the hub's in-memory filter of the index keys it stored, and ``HubKeyLog``, the keys of its
key log with their chunks, on both implementations.

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
    with pytest.raises(ValueError):
        core.HubKeyFilter(32).split_add(bad)
    log = core.HubKeyLog()
    with pytest.raises(ValueError):
        log.add(bad, 1)
    with pytest.raises(ValueError):
        log.absent(bad)


def test_bad_arguments(core):
    with pytest.raises(TypeError):
        core.HubKeyFilter(32).add(b"[1]")
    with pytest.raises(TypeError):
        core.HubKeyFilter(32).split(["1"])
    for cap in (0, 16, 33, 1000):
        with pytest.raises(ValueError):
            core.HubKeyFilter(cap)


def test_split_add_looks_at_each_key_then_adds_it(core):
    f = core.HubKeyFilter(32)
    q = "[5,3,9]"
    new, maybe = f.split_add(q)
    assert new is q and maybe == "[]"  # none seen before: the same str
    assert f.keys == 3 and all(k in f for k in (5, 3, 9))
    assert f.split_add("[3,7,7,5,8]") == ("[7,8]", "[3,7,5]")  # 7 is seen by its second copy
    assert f.keys == 8
    assert f.split("[3,7,8,10]") == ("[10]", "[3,7,8]")
    rng = random.Random(4)
    keys = rng.sample(range(1 << 48), 5000)  # past the first table: the filter grows on the way
    new, maybe = f.split_add(text(keys))
    assert f.tables > 1
    assert sorted(orjson.loads(new) + orjson.loads(maybe)) == sorted(keys)
    assert f.split(text(keys))[0] == "[]"


def test_the_key_log_maps_each_key_to_its_first_chunk(core):
    log = core.HubKeyLog()
    assert len(log) == 0 and log.get(5) is None and 5 not in log
    assert log.add("[5,3,5]", 10) == 2  # a key twice counts once
    assert log.add("[3,4]", 11) == 1  # 3 keeps its first chunk
    assert len(log) == 3 and (log.get(5), log.get(3), log.get(4)) == (10, 10, 11)
    for other in (6, -1, 10 ** 18, 5.0, "5", None, True):
        assert log.get(other) is None and other not in log
    q = "[1,2]"
    assert log.absent(q) is q  # none held: the same str
    assert log.absent("[1,3,2,4,7]") == "[1,2,7]" and log.absent("[3,4]") == "[]" and log.absent("[]") == "[]"
    rng = random.Random(5)
    keys = rng.sample(range(10 ** 18), 300_000)  # past the first table of the compiled class: it grows
    assert log.add(text(keys), 2 ** 63 - 1) == 300_000 and len(log) == 300_003
    assert all(log.get(k) == 2 ** 63 - 1 for k in keys[::97]) and log.get(5) == 10
    log.clear()
    assert len(log) == 0 and log.get(5) is None and log.get(keys[0]) is None
    assert log.add("[5]", 0) == 1 and log.get(5) == 0


def test_key_log_bad_arguments(core):
    log = core.HubKeyLog()
    for ref in (1.5, "1", None, True):
        with pytest.raises(TypeError):
            log.add("[1]", ref)
    for ref in (-1, 2 ** 63):
        with pytest.raises(ValueError):
            log.add("[1]", ref)
    with pytest.raises(TypeError):
        log.add(b"[1]", 1)
    with pytest.raises(TypeError):
        log.absent(["1"])
    assert len(log) == 0


@pytest.mark.skipif(CORE_C is None, reason="the compiled core is not built")
@settings(max_examples=100, deadline=None, database=None)
@given(steps=st.lists(st.tuples(st.lists(st.integers(0, 10 ** 18 - 1), max_size=60), st.booleans()),
                      max_size=8), cap=st.sampled_from([32, 64]))
def test_compiled_and_twin_agree_on_split_add_and_the_log(steps, cap):
    cf, pf = CORE_C.HubKeyFilter(cap), _core_py.HubKeyFilter(cap)
    cl, pl = CORE_C.HubKeyLog(), _core_py.HubKeyLog()
    for ref, (keys, clear) in enumerate(steps):
        assert cf.split_add(text(keys)) == pf.split_add(text(keys))
        assert cl.absent(text(keys)) == pl.absent(text(keys))
        assert cl.add(text(keys), ref) == pl.add(text(keys), ref)
        assert len(cl) == len(pl)
        assert [cl.get(k) for k in keys] == [pl.get(k) for k in keys]
        if clear:
            cl.clear()
            pl.clear()
    assert (cf.keys, cf.tables) == (pf.keys, pf.tables)


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
