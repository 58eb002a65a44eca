"""Filtered keys (spec/connect.md §5), with the ``cryptography`` package (``pip install 'eventpush[crypto]'``).

Python format (connect-python): ``encrypt_filtered_key(definition, master_key) -> bytes`` =
``UPPERHEX(iv) + b"-" + UPPERHEX(AES-CBC(PKCS7(json.dumps(definition))))`` with the raw master key (16/24/32
bytes → AES-128/192/256). Ruby format (connect_client gem): ``generate_filtered_key(key_json, master_key) -> str``
with AES-256-CBC, the key being the master key when it is 32 bytes long, else its SHA-256; uppercase hex.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
from typing import Any, Union

__all__ = ["encrypt_filtered_key", "decrypt_filtered_key", "generate_filtered_key", "generate_key_json"]

BytesLike = Union[str, bytes, bytearray]


def _cipher(key: bytes, iv: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("filtered keys need the cryptography package: pip install 'eventpush[crypto]'") from exc
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def _bytes(value: BytesLike) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _pad(data: bytes) -> bytes:
    n = 16 - len(data) % 16  # PKCS7: always 1..16 bytes
    return data + bytes([n]) * n


def _unpad(data: bytes) -> bytes:
    if not data or len(data) % 16:
        raise ValueError("the filtered key's ciphertext is not a whole number of AES blocks")
    n = data[-1]
    if not 1 <= n <= 16 or data[-n:] != bytes([n]) * n:
        raise ValueError("bad padding: wrong master key or a damaged filtered key")
    return data[:-n]


def _encrypt(plain: bytes, key: bytes) -> bytes:
    iv = os.urandom(16)
    enc = _cipher(key, iv).encryptor()
    ct = enc.update(_pad(plain)) + enc.finalize()
    return binascii.hexlify(iv).upper() + b"-" + binascii.hexlify(ct).upper()


def _decrypt(encrypted: BytesLike, key: bytes) -> bytes:
    raw = _bytes(encrypted)
    iv = binascii.unhexlify(raw[:32])
    ct = binascii.unhexlify(raw[33:])
    dec = _cipher(key, iv).decryptor()
    return _unpad(dec.update(ct) + dec.finalize())


def encrypt_filtered_key(definition: Any, master_key: BytesLike) -> bytes:
    """connect-python's filtered key: ``b"IVHEX-CIPHERHEX"`` (uppercase) of ``json.dumps(definition)``,
    encrypted with the master key itself (a ``str`` key is UTF-8 encoded; 16, 24 or 32 bytes)."""
    return _encrypt(json.dumps(definition).encode("utf-8"), _bytes(master_key))


def decrypt_filtered_key(encrypted: BytesLike, master_key: BytesLike) -> bytes:
    """The JSON bytes inside a connect-python filtered key (IV = the first 32 hex digits, ciphertext from
    position 33)."""
    return _decrypt(encrypted, _bytes(master_key))


def _ruby_key(master_key: BytesLike) -> bytes:
    key = _bytes(master_key)
    return key if len(key) == 32 else hashlib.sha256(key).digest()


def generate_filtered_key(key_json: str, master_key: BytesLike) -> str:
    """The Ruby gem's filtered key for the JSON definition ``key_json``: AES-256-CBC with the master key (or its
    SHA-256 when it is not 32 bytes), ``"IVHEX-CIPHERHEX"`` in uppercase."""
    return _encrypt(_bytes(key_json), _ruby_key(master_key)).decode("ascii")


def generate_key_json(filtered_key: str, master_key: BytesLike) -> str:
    """The JSON definition inside a Ruby-format filtered key (the inverse of :func:`generate_filtered_key`)."""
    return _decrypt(filtered_key, _ruby_key(master_key)).decode("utf-8")
