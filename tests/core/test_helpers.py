"""uuid4_str, the time formatters and the random pool, on both cores."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from eventpush.dialects import CONNECT_RUBY

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
EPOCH = dt.datetime(1970, 1, 1)


def test_uuid4_shared_pool(core):
    ids = {core.uuid4_str() for _ in range(1000)}
    assert len(ids) == 1000 and all(UUID_RE.match(i) for i in ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_uuid4_bits_from_given_bytes(core):
    assert core.uuid4_str(lambda n: b"\xff" * n) == "ffffffff-ffff-4fff-bfff-ffffffffffff"
    assert core.uuid4_str(lambda n: b"\x00" * n) == "00000000-0000-4000-8000-000000000000"
    assert core.uuid4_str(lambda n: bytes(range(n))) == "00010203-0405-4607-8809-0a0b0c0d0e0f"


def test_uuid4_short_random(core):
    with pytest.raises(ValueError):
        core.uuid4_str(lambda n: b"abc")
    enc = core.Encoder(CONNECT_RUBY, urandom=lambda n: b"x" * 15)
    with pytest.raises(ValueError):
        enc.encode({})


def test_pool_refill_uses_whole_chunks(core):
    calls = []

    def rnd(n):
        calls.append(n)
        return bytes([len(calls)]) * 40  # a short chunk: two ids, the 8 bytes left over are dropped

    enc = core.Encoder(CONNECT_RUBY, urandom=rnd, clock=lambda: 0)
    ids = [enc.encode({})[7:43].decode() for _ in range(5)]
    assert calls == [4096, 4096, 4096]
    assert [i[:2] for i in ids] == ["01", "01", "02", "02", "03"]


@pytest.mark.parametrize(
    "micros",
    [0, 1, 999_999, 1_000_000, -1, 1438387200_123456, 1438387200_000000, 951782400_000001, -62135596800_000000,
     253402300799_999999, 4102444800_000000, 1_000],
)
def test_formatters(core, micros):
    value = EPOCH + dt.timedelta(microseconds=micros)
    assert core.format_iso_naive(micros) == value.isoformat()
    assert core.format_iso_seconds_z(micros) == value.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + "Z"


def test_formatters_sweep(core):
    # every day boundary over a few centuries, plus odd offsets within the day
    step = 86_400_000_000 * 37 + 3_723_000_123
    for micros in range(-20_000 * 86_400_000_000, 30_000 * 86_400_000_000, step):
        value = EPOCH + dt.timedelta(microseconds=micros)
        assert core.format_iso_naive(micros) == value.isoformat()


@pytest.mark.parametrize("bad, exc", [(-62135596800_000001, OverflowError), (253402300800_000000, OverflowError),
                                      (2**70, OverflowError), (1.5, TypeError), ("0", TypeError), (True, TypeError)])
def test_formatters_reject(core, bad, exc):
    with pytest.raises(exc):
        core.format_iso_naive(bad)
    with pytest.raises(exc):
        core.format_iso_seconds_z(bad)


def test_bad_clock(core):
    enc = core.Encoder(CONNECT_RUBY, clock=lambda: "now")
    with pytest.raises(TypeError):
        enc.encode({})
