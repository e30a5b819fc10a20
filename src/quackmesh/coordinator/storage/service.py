"""Local content-addressed blob store: files named by their sha256 under ``blob_dir``."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Blob
from quackmesh.core.errors import BlobNotFound, PayloadTooLarge, ValidationFailed

__all__ = ["LocalBlobStore", "StagedUpload"]


class StagedUpload:
    """A streamed upload in a temp file, hashed as it arrived; commit or discard it."""

    def __init__(self, store: LocalBlobStore, tmp: Path, sha256: str, size: int) -> None:
        self.store = store
        self.tmp = tmp
        self.sha256 = sha256
        self.size = size

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def commit(self, session: Session, *, owner: str) -> None:
        """Move the bytes into place and record the uploader (idempotent per owner)."""
        final = self.store.path_for(self.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            self.tmp.unlink(missing_ok=True)
        else:
            os.replace(self.tmp, final)
        exists = session.get(Blob, (self.sha256, owner))
        if exists is None:
            session.add(
                Blob(sha256=self.sha256, owner=owner, size=self.size, created_at=time.time())
            )
            try:
                session.flush()
            except IntegrityError:
                session.rollback()  # a concurrent identical upload by the same owner


class LocalBlobStore:
    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    async def stage(self, chunks: AsyncIterator[bytes]) -> StagedUpload:
        """Stream a body to a temp file, hashing it; 413 past ``max_bytes``."""
        tmp = self.root / "tmp" / secrets.token_hex(12)
        digest = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLarge(
                            f"upload exceeds the limit of {self.max_bytes} bytes",
                            limit=self.max_bytes,
                        )
                    digest.update(chunk)
                    fh.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if size == 0:
            tmp.unlink(missing_ok=True)
            raise ValidationFailed("an upload must not be empty", field="body")
        return StagedUpload(self, tmp, digest.hexdigest(), size)

    def put_bytes(self, session: Session, data: bytes, *, owner: str) -> str:
        """Store bytes produced inside the coordinator (small results, test fixtures)."""
        sha = hashlib.sha256(data).hexdigest()
        tmp = self.root / "tmp" / secrets.token_hex(12)
        tmp.write_bytes(data)
        StagedUpload(self, tmp, sha, len(data)).commit(session, owner=owner)
        return sha

    def owned(self, session: Session, sha256: str, owner: str) -> Blob:
        blob = session.get(Blob, (sha256, owner))
        if blob is None or not self.exists(sha256):
            raise BlobNotFound(f"no blob {sha256} uploaded by {owner}", sha256=sha256)
        return blob

    def any_owner(self, session: Session, sha256: str) -> Blob | None:
        return session.scalars(select(Blob).where(Blob.sha256 == sha256).limit(1)).first()
