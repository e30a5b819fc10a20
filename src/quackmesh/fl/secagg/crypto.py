"""Cryptographic primitives for secure aggregation (Bonawitz et al., CCS'17, §4 and §6.1).

The paper's instantiation, with the :mod:`cryptography` package:

* key agreement — X25519 (RFC 7748) in place of the paper's elliptic-curve Diffie–Hellman;
* key derivation — HKDF-SHA256 (RFC 5869) over the raw shared secret, with a domain label,
  the round tag and the two client ids as ``info``, so keys never repeat across rounds or pairs;
* authenticated encryption — AES-256-GCM with a random 96-bit nonce prepended to the
  ciphertext (one message per key in the protocol; the random nonce keeps a retried step safe);
* PRG — the ChaCha20 keystream (RFC 8439, zero counter and nonce) under a 32-byte seed,
  read as little-endian ``uint32`` words: one vectorised call per mask.

Secret keys are kept as their 32 raw bytes (X25519 clamps them when used); public keys are
32 raw bytes, and base64 (standard alphabet, padded) on the wire.
"""

from __future__ import annotations

import base64
import binascii
import os

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from quackmesh.fl.secagg.errors import BadEncoding, DecryptionFailed

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "agree",
    "b64decode",
    "b64encode",
    "hkdf",
    "open_sealed",
    "prg_uint32",
    "private_key",
    "public_key",
    "seal",
]

KEY_BYTES = 32
NONCE_BYTES = 12
_ZERO_NONCE = bytes(16)  # ChaCha20 in `cryptography`: 4-byte counter + 12-byte nonce


def b64encode(data: bytes) -> str:
    """Standard padded base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, *, what: str, length: int | None = None) -> bytes:
    """Strictly decode base64 ``text``; :class:`BadEncoding` names ``what`` on failure."""
    if not isinstance(text, str):
        raise BadEncoding(f"{what} must be a base64 string, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadEncoding(f"{what} is not valid base64") from exc
    if length is not None and len(data) != length:
        raise BadEncoding(f"{what} must be {length} bytes, got {len(data)}", length=len(data))
    return data


def hkdf(ikm: bytes, *, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (no salt) of ``ikm`` for the context ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def public_key(secret: bytes) -> bytes:
    """The raw X25519 public key of the 32-byte secret ``secret``."""
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def private_key(secret: bytes) -> X25519PrivateKey:
    """The X25519 key of a 32-byte secret; build it once when agreeing with many peers."""
    return X25519PrivateKey.from_private_bytes(secret)


def agree(secret: bytes | X25519PrivateKey, peer_public: bytes) -> bytes:
    """Raw X25519 shared secret of ``secret`` with ``peer_public``.

    A low-order peer key (all-zero shared secret) is rejected as :class:`BadEncoding`.
    """
    sk = private_key(secret) if isinstance(secret, bytes) else secret
    try:
        return sk.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise BadEncoding(f"unusable X25519 public key: {exc}") from exc


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """AES-256-GCM encryption: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """Decrypt a :func:`seal` output; :class:`DecryptionFailed` if it does not authenticate."""
    if len(blob) < NONCE_BYTES + 16:
        raise DecryptionFailed("ciphertext too short", length=len(blob))
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise DecryptionFailed(
            "ciphertext does not authenticate (wrong key, round tag or ids, or tampered)"
        ) from exc


def prg_uint32(seed: bytes, length: int) -> npt.NDArray[np.uint32]:
    """Expand a 32-byte ``seed`` into ``length`` pseudorandom little-endian words (read-only)."""
    encryptor = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(4 * length))
    # (length,) uint32; no copy on little-endian hosts
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)
