"""Wire formats and key schedule shared by the secure aggregation client and server.

Bonawitz et al., CCS'17, §4 (Figure 4) and §6.1: adverts carry the two X25519 public keys;
share ciphertexts are AES-GCM under a key agreed from ``c_sk``/``c_pk``; pairwise mask seeds
are agreed from ``s_sk``/``s_pk``. Every derivation is HKDF-SHA256 with ``info`` naming the
purpose, the round tag and the (sorted) client ids, so no key is ever used for two purposes,
rounds or pairs.

JSON-friendly encodings: bytes are base64 (standard, padded); Shamir share values are hex of
at most 132 digits; client ids are ints in ``[1, 65535]`` — decimal strings are accepted as
well, since JSON object keys are always strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from quackmesh.fl.secagg.crypto import agree, b64decode, hkdf
from quackmesh.fl.secagg.errors import BadEncoding
from quackmesh.fl.secagg.shamir import PRIME, SHARE_BYTES

__all__ = [
    "DOMAIN",
    "Advert",
    "IdMap",
    "as_id",
    "by_id",
    "commit",
    "ids_of",
    "info",
    "pair_seed",
    "parse_adverts",
    "parse_share",
    "share_aad",
    "share_key",
]

T = TypeVar("T")
# An id-keyed mapping as built in Python (int keys) or read back from JSON (str keys).
IdMap: TypeAlias = Mapping[int, T] | Mapping[str, T]
DOMAIN = "quackmesh/secagg/v1"


class Advert(NamedTuple):
    """A client's parsed advert (raw 32-byte values)."""

    c_pk: bytes
    s_pk: bytes
    b_commit: bytes


def info(label: str, round_tag: str, *ids: int) -> bytes:
    """HKDF ``info``/AEAD associated data; JSON keeps it injective for any round tag."""
    return json.dumps([DOMAIN, label, round_tag, *ids]).encode()


def commit(b: bytes) -> bytes:
    """The published commitment ``sha256(domain || b)`` to a self-mask seed."""
    return hashlib.sha256(DOMAIN.encode() + b"/b-commit|" + b).digest()


def as_id(key: object) -> int:
    """A client id from an int or a decimal string."""
    if isinstance(key, str) and key.isascii() and key.isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key < 2**16:
        raise BadEncoding(f"client id {key!r} must be an int in [1, 65535]")
    return key


def ids_of(values: Sequence[Any] | IdMap[Any], *, what: str) -> list[int]:
    """Parsed ids of a sequence (or a mapping's keys), refusing duplicates."""
    ids = [as_id(v) for v in values]
    if len(set(ids)) != len(ids):
        raise BadEncoding(f"duplicate client ids in {what}")
    return ids


def by_id(mapping: IdMap[T], *, what: str) -> dict[int, T]:
    """Copy of ``mapping`` with parsed int ids as keys."""
    if not isinstance(mapping, Mapping):
        raise BadEncoding(f"{what} must be an id-keyed object")
    return dict(zip(ids_of(mapping, what=what), mapping.values(), strict=True))


def parse_adverts(peers: IdMap[Mapping[str, str]]) -> dict[int, Advert]:
    """Parse ``{id: advertise(...)}``; :class:`BadEncoding` on any malformed field."""
    out: dict[int, Advert] = {}
    for cid, advert in by_id(peers, what="peers").items():
        if not isinstance(advert, Mapping):
            raise BadEncoding(f"advert of client {cid} must be an object", client=cid)
        c_pk, s_pk, b_commit = (
            b64decode(advert.get(f), what=f"{f} of client {cid}", length=32)
            for f in ("c_pk", "s_pk", "b_commit")
        )
        out[cid] = Advert(c_pk, s_pk, b_commit)
    return out


def parse_share(text: object, *, what: str) -> int:
    """A Shamir share value from its hex text."""
    if not isinstance(text, str) or not 0 < len(text) <= 2 * SHARE_BYTES:
        raise BadEncoding(f"{what} must be a hex string of at most {2 * SHARE_BYTES} digits")
    try:
        value = int(text, 16)
    except ValueError as exc:
        raise BadEncoding(f"{what} is not hex") from exc
    if value >= PRIME:
        raise BadEncoding(f"{what} is not a field element")
    return value


def share_key(
    c_sk: bytes | X25519PrivateKey, peer_c_pk: bytes, *, round_tag: str, ids: tuple[int, int]
) -> bytes:
    """AES-256-GCM key for share ciphertexts between the two clients ``ids``."""
    return hkdf(agree(c_sk, peer_c_pk), info=info("share-key", round_tag, *sorted(ids)))


def share_aad(round_tag: str, sender: int, receiver: int) -> bytes:
    """Associated data of a share ciphertext: binds round, sender and receiver (ordered)."""
    return info("shares", round_tag, sender, receiver)


def pair_seed(
    s_sk: bytes | X25519PrivateKey, peer_s_pk: bytes, *, round_tag: str, ids: tuple[int, int]
) -> bytes:
    """The 32-byte PRG seed ``s_uv`` of the pairwise mask between the clients ``ids``."""
    return hkdf(agree(s_sk, peer_s_pk), info=info("mask", round_tag, *sorted(ids)))
