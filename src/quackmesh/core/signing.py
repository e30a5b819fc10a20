"""Signed, replay-protected requests (EIP-191 ``personal_sign`` over a canonical string).

Every node and client request carries four headers::

    X-QuackMesh-Address    0x… EIP-55 address of the signer
    X-QuackMesh-Timestamp  unix seconds (integer)
    X-QuackMesh-Nonce      16–64 chars [A-Za-z0-9_-], never reused by that address
    X-QuackMesh-Signature  0x… 65-byte signature

The signed text (EIP-191 version 0x45, i.e. what ``eth_sign``/MetaMask ``personal_sign``
produce) is::

    QUACKMESH-REQUEST-V1\n{METHOD}\n{path?query}\n{sha256(body) hex}\n{timestamp}\n{nonce}

The coordinator recovers the address from the signature and compares it with the claimed
one, rejects timestamps more than ``window`` seconds from its clock, and remembers nonces
for twice the window so a captured request cannot be replayed.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKey
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from quackmesh.core.errors import BadSignature, MissingAuth, ReplayedNonce, StaleRequest
from quackmesh.core.ids import ADDRESS_RE

__all__ = [
    "HEADER_ADDRESS",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "NonceCache",
    "SignedHeaders",
    "address_of",
    "canonical_request",
    "eip191_hash",
    "personal_sign",
    "precheck_headers",
    "recover_address",
    "sign_request",
    "verify_request",
]

HEADER_ADDRESS = "X-QuackMesh-Address"
HEADER_TIMESTAMP = "X-QuackMesh-Timestamp"
HEADER_NONCE = "X-QuackMesh-Nonce"
HEADER_SIGNATURE = "X-QuackMesh-Signature"
_HEADERS = (HEADER_ADDRESS, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)
PREFIX = "QUACKMESH-REQUEST-V1"
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def eip191_hash(text: str) -> bytes:
    """The digest ``personal_sign`` signs: keccak256 of the EIP-191 (0x45) framed text."""
    data = text.encode()
    return bytes(keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data))


def personal_sign(private_key: bytes, text: str) -> bytes:
    """A 65-byte r‖s‖v signature (v = 27/28), byte-identical to ``eth_account``'s."""
    sig = PrivateKey(private_key).sign_recoverable(eip191_hash(text), hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


@functools.lru_cache(maxsize=65_536)
def _checksum(address_hex: str) -> str:
    return str(to_checksum_address(address_hex))


def address_of(private_key: bytes) -> str:
    public = PrivateKey(private_key).public_key.format(compressed=False)[1:]
    return _checksum("0x" + bytes(keccak(public))[-20:].hex())


def recover_address(text: str, signature: bytes) -> str:
    """The checksummed address that signed ``text``; ``ValueError`` if malformed."""
    if len(signature) != 65:
        raise ValueError("a signature is 65 bytes")
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    if v not in (0, 1):
        raise ValueError("bad recovery id")
    public = PublicKey.from_signature_and_message(
        signature[:64] + bytes([v]), eip191_hash(text), hasher=None
    )
    raw = public.format(compressed=False)[1:]
    return _checksum("0x" + bytes(keccak(raw))[-20:].hex())


def canonical_request(
    *, method: str, path: str, body_sha256: str, timestamp: int, nonce: str
) -> str:
    """The exact text that is signed; ``path`` includes the query string, if any."""
    return f"{PREFIX}\n{method.upper()}\n{path}\n{body_sha256}\n{timestamp}\n{nonce}"


@dataclass(frozen=True)
class SignedHeaders:
    address: str
    timestamp: int
    nonce: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            HEADER_ADDRESS: self.address,
            HEADER_TIMESTAMP: str(self.timestamp),
            HEADER_NONCE: self.nonce,
            HEADER_SIGNATURE: self.signature,
        }


def sign_request(
    private_key: bytes,
    *,
    method: str,
    path: str,
    body: bytes = b"",
    body_sha256: str | None = None,
    timestamp: int | None = None,
    address: str | None = None,
) -> SignedHeaders:
    """Sign one request with a secp256k1 key; returns the headers to send.

    Pass ``body_sha256`` instead of ``body`` to sign a body streamed from a file.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = secrets.token_urlsafe(18)
    digest = body_sha256 if body_sha256 is not None else hashlib.sha256(body).hexdigest()
    text = canonical_request(
        method=method, path=path, body_sha256=digest, timestamp=ts, nonce=nonce
    )
    return SignedHeaders(
        address=address or address_of(private_key),
        timestamp=ts,
        nonce=nonce,
        signature="0x" + personal_sign(private_key, text).hex(),
    )


class NonceCache:
    """Remembers (address, nonce) pairs for ``ttl`` seconds; thread-safe and bounded.

    Entries older than the timestamp window can never be accepted again anyway (the
    timestamp check rejects them first), so forgetting them after ``2 × window`` is safe.
    A process restart forgets the cache; requests signed before the start are therefore
    refused (see ``not_before`` in :func:`verify_request`).
    """

    def __init__(self, ttl: float, max_entries: int = 1_000_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, address: str, nonce: str, now: float) -> bool:
        """Record the pair; ``False`` if it was already seen (a replay)."""
        key = (address, nonce)
        with self._lock:
            while self._seen:
                oldest_key, seen_at = next(iter(self._seen.items()))
                if now - seen_at <= self._ttl and len(self._seen) < self._max:
                    break
                del self._seen[oldest_key]
            if key in self._seen:
                return False
            self._seen[key] = now
            return True


def precheck_headers(headers: Mapping[str, str], *, window: int, now: float | None = None) -> None:
    """Cheap checks before a streamed body is read: headers present, timestamp fresh.

    The full :func:`verify_request` still runs once the body's hash is known.
    """
    lowered = {k.lower() for k in headers}
    missing = [h for h in _HEADERS if h.lower() not in lowered]
    if missing:
        raise MissingAuth(
            f"request is not signed: header {missing[0]!r} is missing", required=list(_HEADERS)
        )
    ts_text = next(v for k, v in headers.items() if k.lower() == HEADER_TIMESTAMP.lower())
    clock = time.time() if now is None else now
    try:
        timestamp = int(ts_text)
    except ValueError:
        raise BadSignature(f"{HEADER_TIMESTAMP} must be integer unix seconds") from None
    if abs(clock - timestamp) > window:
        raise StaleRequest(
            f"timestamp {timestamp} is more than {window}s from the server clock",
            server_time=int(clock),
            window_s=window,
        )


def verify_request(
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    body: bytes | None = None,
    body_sha256: str | None = None,
    window: int,
    nonces: NonceCache,
    now: float | None = None,
    not_before: float = 0.0,
) -> str:
    """Check a signed request and return the signer's checksummed address.

    Raises :class:`MissingAuth`, :class:`BadSignature`, :class:`StaleRequest` or
    :class:`ReplayedNonce`. ``not_before`` is the verifier's start time minus the window:
    a nonce cache is lost on restart, so older requests are refused outright. Pass
    ``body_sha256`` instead of ``body`` when the body was hashed while streaming.
    """
    if body_sha256 is None:
        body_sha256 = hashlib.sha256(body or b"").hexdigest()
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        address = lowered[HEADER_ADDRESS.lower()]
        ts_text = lowered[HEADER_TIMESTAMP.lower()]
        nonce = lowered[HEADER_NONCE.lower()]
        signature = lowered[HEADER_SIGNATURE.lower()]
    except KeyError as exc:
        raise MissingAuth(
            f"request is not signed: header {exc.args[0]!r} is missing",
            required=[HEADER_ADDRESS, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE],
        ) from None
    if not ADDRESS_RE.match(address):
        raise BadSignature(f"{HEADER_ADDRESS} is not an Ethereum address")
    if not _NONCE_RE.match(nonce):
        raise BadSignature(f"{HEADER_NONCE} must be 16-64 characters of [A-Za-z0-9_-]")
    try:
        timestamp = int(ts_text)
    except ValueError:
        raise BadSignature(f"{HEADER_TIMESTAMP} must be integer unix seconds") from None
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > window or timestamp < not_before:
        raise StaleRequest(
            f"timestamp {timestamp} is more than {window}s from the server clock {int(clock)}",
            server_time=int(clock),
            window_s=window,
        )
    text = canonical_request(
        method=method, path=path, body_sha256=body_sha256, timestamp=timestamp, nonce=nonce
    )
    try:
        recovered = recover_address(text, bytes.fromhex(signature.removeprefix("0x")))
    except Exception as exc:  # malformed signature bytes of any kind
        raise BadSignature("signature is malformed") from exc
    if recovered.lower() != address.lower():
        raise BadSignature("signature does not match the address and request")
    if not nonces.add(recovered, nonce, clock):
        raise ReplayedNonce("nonce already used: this request was replayed", nonce=nonce)
    return str(recovered)
