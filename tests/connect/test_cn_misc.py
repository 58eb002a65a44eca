"""Filtered keys, the public namespace, and the Batcher-backed buffered pusher."""

from __future__ import annotations

import hashlib
import json

import pytest

import eventpush.connect as connect
from eventpush.connect import (
    ConnectClient,
    InvalidEventError,
    decrypt_filtered_key,
    encrypt_filtered_key,
    generate_filtered_key,
    generate_key_json,
)

PROJECT, KEY = "proj-c", "key-c"


def _aes_decrypt(key: bytes, iv: bytes, ct: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return d.update(ct) + d.finalize()


@pytest.mark.parametrize("key", ["0" * 32, "k" * 16, b"y" * 24])
def test_python_filtered_key_round_trip_and_format(key):
    definition = {"filters": {"type": "cycling"}, "canQuery": True, "canPush": False}
    fk = encrypt_filtered_key(definition, key)
    assert isinstance(fk, bytes)
    iv_hex, ct_hex = fk.split(b"-")
    assert len(iv_hex) == 32 and fk == fk.upper() and len(ct_hex) % 32 == 0
    assert json.loads(decrypt_filtered_key(fk, key)) == definition
    assert decrypt_filtered_key(fk.decode(), key) == json.dumps(definition).encode()
    raw = key.encode() if isinstance(key, str) else key
    plain = _aes_decrypt(raw, bytes.fromhex(iv_hex.decode()), bytes.fromhex(ct_hex.decode()))
    assert plain[: -plain[-1]] == json.dumps(definition).encode()  # raw master key, PKCS7
    assert encrypt_filtered_key(definition, key)[:32] != fk[:32]  # random IV


@pytest.mark.parametrize("master", ["2fMSlDSOGtMWH50wffnCscgGMcJGMQ0s", "short-master-key"])
def test_ruby_filtered_key_sha256_derivation(master):
    query_json = '{"filters":{"type":"cycling"},"canPush":true}'
    fk = generate_filtered_key(query_json, master)
    assert isinstance(fk, str) and fk == fk.upper()
    assert generate_key_json(fk, master) == query_json
    assert generate_key_json(generate_filtered_key("{}", master), master) == "{}"
    iv_hex, ct_hex = fk.split("-")
    key = master.encode() if len(master.encode()) == 32 else hashlib.sha256(master.encode()).digest()
    plain = _aes_decrypt(key, bytes.fromhex(iv_hex), bytes.fromhex(ct_hex))
    assert plain[: -plain[-1]] == query_json.encode()
    with pytest.raises(ValueError):
        generate_key_json(fk, master + "x")


def test_all_lists_exactly_the_public_names():
    public = {n for n in dir(connect) if not n.startswith("_")}
    modules = {"api", "client", "exceptions", "responses", "ruby", "security", "annotations"}
    assert set(connect.__all__) == public - modules
    assert len(connect.__all__) == len(set(connect.__all__))
    for name in connect.__all__:
        obj = getattr(connect, name)
        assert obj.__doc__, name


def test_exceptions_hierarchy():
    from eventpush import errors

    assert issubclass(connect.InvalidEventError, errors.EventValidationError)
    assert issubclass(connect.InvalidEventError, ValueError)
    assert issubclass(connect.EventDataValidationError, errors.EventValidationError)
    assert issubclass(connect.UnconfiguredError, RuntimeError)
    assert issubclass(connect.EventTooLargeError, errors.EventTooLargeError)


def test_buffered_pusher_delivers_everything(hub, use_core, coll, tmp_path):
    with ConnectClient(PROJECT, KEY, base_url=hub.base) as client:
        with client.buffered(interval=0.05, spool_dir=str(tmp_path / "spool"), atexit=False) as bp:
            for i in range(3000):
                bp.push_event(coll, {"i": i})
            bp.push_events({coll: [{"j": j} for j in range(500)]})
            with pytest.raises(InvalidEventError) as ei:
                bp.push_event(coll, {"tp_x": 1})
            assert ei.value.args[0] == {"tp_x": "Property names cannot start with thereserved prefix 'tp_'"}
            with pytest.raises(InvalidEventError):
                bp.push_events({coll: [{"ok": 1}, {"a.b": 1}]})  # the good one is still queued
            assert bp.flush(30)
            stats = bp.stats
        assert stats["pushed"] == 3501 and stats["delivered"] == 3501 and stats["dropped"] == 0
    assert len(hub.events(coll)) == 3501


def test_module_api_exceptions_pickle():
    import pickle

    for e in (connect.UnconfiguredError(),
              connect.EventDataValidationError("The following properties use the reserved prefix tp_:\n->tp_a",
                                               index=1, collection="c", field="tp_a",
                                               errors={"tp_a": "x"})):
        e2 = pickle.loads(pickle.dumps(e))
        assert type(e2) is type(e) and str(e2) == str(e)
    assert str(connect.UnconfiguredError()) == (
        "Connect must configured before it can be used, please call Connect.configure")


def test_closing_the_client_flushes_its_pushers(hub, use_core, coll, tmp_path):
    from eventpush.connect import ClosedError

    client = ConnectClient(PROJECT, KEY, base_url=hub.base)
    bp = client.buffered(interval=5.0, spool_dir=str(tmp_path / "spool"), atexit=False)
    for i in range(700):
        bp.push_event(coll, {"i": i})
    client.close()  # the pusher is closed (and flushed) before the shared pool
    assert bp.stats["delivered"] == 700 and bp.stats["spooled"] == 0
    assert len(hub.events(coll)) == 700
    with pytest.raises(ClosedError):
        bp.push_event(coll, {"late": 1})
    with pytest.raises(ClosedError):
        client.buffered()


def test_push_cli_keeps_integers_beyond_64_bits(hub, coll, tmp_path):
    """``eventpush push`` reads a file's integers exactly (orjson alone would round 2**70 + 1 to a float) and sends
    them with all their digits."""
    import subprocess
    import sys

    src = tmp_path / "big.ndjson"
    src.write_bytes(b'{"id": "b-1", "n": 1180591620717411303425}\n{"id": "b-2", "l": [-100000000000000000000001]}\n')
    arr = tmp_path / "big.json"
    arr.write_bytes(b'[{"id": "b-3", "n": 18446744073709551617}]')
    out = subprocess.run([sys.executable, "-m", "eventpush", "push", str(src), str(arr), "--to", hub.base,
                          "--collection", coll, "--project-id", PROJECT, "--api-key", KEY],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status, body = hub.request("GET", f"/connect/events/{coll}?limit=10",
                               headers={"X-Project-Id": PROJECT, "X-Api-Key": KEY})
    assert status == 200
    stored = {e["id"]: e for e in json.loads(body)["results"]}
    assert stored["b-1"]["n"] == 2**70 + 1 and stored["b-2"]["l"] == [-(10**23) - 1]
    assert stored["b-3"]["n"] == 2**64 + 1 and type(stored["b-3"]["n"]) is int
