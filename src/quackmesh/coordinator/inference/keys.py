"""API keys for the gateway: ``sk-qm-…`` bearer keys bound to a wallet.

A key is made by the wallet it spends from (``POST /v1/keys``, signed), shown once and
stored as its sha256 only: a leaked database cannot be replayed against the gateway.
Looking a key up by its hash leaks nothing through timing (the hash of a guess says
nothing about the real key's hash), so no constant-time compare is needed here.

Lookups are cached in memory for ``inference_key_cache_s`` so the hot path reads no
table; revoking through this process drops the entry at once (another coordinator
process would see a revocation within that time). ``last_used_at`` is written with a
request's reservation at most once a minute per key (``TOUCH_S``), which is as precise
as a "last used" column needs to be and keeps a statement off most requests.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import ApiKey
from quackmesh.core.errors import Conflict, NotFound
from quackmesh.core.ids import new_id
from quackmesh.core.inference_schemas import ApiKeyPublic

__all__ = [
    "KEY_PREFIX",
    "TOUCH_S",
    "KeyCache",
    "KeyInfo",
    "create_key",
    "hash_key",
    "key_public",
    "list_keys",
    "lookup_key",
    "revoke_key",
]

KEY_PREFIX = "sk-qm-"
SHOWN_PREFIX = 12  # "sk-qm-" and six random characters, to tell keys apart in a list
TOUCH_S = 60.0  # last_used_at is this precise


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """What the gateway needs to know about a presented key."""

    id: str
    address: str
    revoked: bool


def key_public(row: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        address=row.address,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked,
    )


def create_key(
    session: Session, *, address: str, name: str, now: float, max_active: int
) -> tuple[ApiKey, str]:
    """A new key for ``address``; returns the row and the key (the only time it exists)."""
    active = session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.address == address, ApiKey.revoked.is_(False))
    )
    if (active or 0) >= max_active:
        raise Conflict(
            f"{address} already has {active} active API keys; revoke one first",
            limit=max_active,
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        key_sha256=hash_key(key),
        address=address,
        name=name,
        prefix=key[:SHOWN_PREFIX],
        created_at=now,
        last_used_at=None,
        revoked=False,
    )
    session.add(row)
    return row, key


def list_keys(session: Session, *, address: str) -> list[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.address == address)
    return list(session.scalars(stmt.order_by(ApiKey.created_at.desc(), ApiKey.id)))


def revoke_key(session: Session, *, key_id: str, address: str, now: float) -> ApiKey:
    """Revoke one of ``address``'s keys (someone else's key is not found, not forbidden)."""
    row = session.get(ApiKey, key_id, with_for_update=True)
    if row is None or row.address != address:
        raise NotFound(f"no API key {key_id!r} for {address}", key_id=key_id)
    if not row.revoked:
        row.revoked = True
        row.revoked_at = now
    return row


def lookup_key(session: Session, key: str) -> KeyInfo | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == hash_key(key)))
    if row is None:
        return None
    return KeyInfo(id=row.id, address=row.address, revoked=row.revoked)


class KeyCache:
    """key sha256 -> (KeyInfo or None for unknown, when cached); thread-safe."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        self._entries: dict[str, tuple[KeyInfo | None, float]] = {}
        self._touched: dict[str, float] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def get(
        self, digest: str, *, ttl: float, now: float | None = None
    ) -> tuple[bool, KeyInfo | None]:
        """``(hit, info)``; a miss or an entry older than ``ttl`` is ``(False, None)``."""
        t = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or t - entry[1] > ttl:
            return False, None
        return True, entry[0]

    def put(self, digest: str, info: KeyInfo | None, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()  # rare; the next lookups refill it
            self._entries[digest] = (info, t)

    def touch_due(self, key_id: str, *, every: float = TOUCH_S) -> bool:
        """Whether to write ``last_used_at`` for ``key_id`` now (then not for ``every`` s)."""
        t = time.monotonic()
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and t - last < every:
                return False
            if len(self._touched) >= self._max:
                self._touched.clear()
            self._touched[key_id] = t
            return True

    def forget(self, key_id: str) -> None:
        with self._lock:
            for digest, (info, _) in list(self._entries.items()):
                if info is not None and info.id == key_id:
                    del self._entries[digest]
