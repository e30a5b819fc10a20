"""Expiring capability URLs for blobs, scoped to one reader (like presigned URLs).

A capability is ``HMAC-SHA256(secret, "blob|{sha256}|{reader}|{expires}")``; the download
must also be a request signed by ``reader``, so a leaked URL is useless to anyone else.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

__all__ = ["capability_query", "check_capability"]


def _mac(secret: bytes, sha256: str, reader: str, expires: int) -> str:
    msg = f"blob|{sha256}|{reader.lower()}|{expires}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def capability_query(secret: bytes, *, sha256: str, reader: str, expires: int) -> str:
    return urlencode(
        {"reader": reader, "exp": expires, "cap": _mac(secret, sha256, reader, expires)}
    )


def check_capability(
    secret: bytes, *, sha256: str, reader: str, expires: int, cap: str, now: float
) -> bool:
    if now > expires:
        return False
    return hmac.compare_digest(_mac(secret, sha256, reader, expires), cap)
