"""Blob upload (streamed, signed over the streamed hash) and capability downloads."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from quackmesh.coordinator.auth.capability import check_capability
from quackmesh.coordinator.auth.sessions import COOKIE
from quackmesh.coordinator.deps import (
    RuntimeDep,
    Signer,
    is_signed,
    not_before,
    session_address,
    signed_path,
)
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.storage.service import StagedUpload
from quackmesh.core.errors import BlobNotFound, Forbidden
from quackmesh.core.ids import SHA256_RE
from quackmesh.core.schemas import BlobPublic
from quackmesh.core.signing import precheck_headers, verify_request

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])


@router.post("", response_model=BlobPublic, status_code=201)
async def upload_blob(request: Request, rt: RuntimeDep) -> BlobPublic:
    """Upload raw bytes (``application/octet-stream``); the signature covers their sha256.

    From the dashboard the session cookie (with its CSRF header) stands in for the signature.
    """
    if not is_signed(request) and COOKIE in request.cookies:
        owner = await session_address(request, rt, method="POST")  # before any disk write
        rt.read_limiter.hit(owner)
        staged = await rt.blobs.stage(request.stream())
        await run_in_threadpool(_record, rt, staged, owner)
        return BlobPublic(sha256=staged.sha256, size=staged.size)
    precheck_headers(request.headers, window=rt.settings.auth_window_s)  # before any disk write
    staged = await rt.blobs.stage(request.stream())
    try:
        owner = verify_request(
            request.headers,
            method=request.method,
            path=signed_path(request),
            body_sha256=staged.sha256,
            window=rt.settings.auth_window_s,
            nonces=rt.nonces,
            not_before=not_before(rt),
        )
        rt.read_limiter.hit(owner)
    except BaseException:
        staged.discard()
        raise
    await run_in_threadpool(_record, rt, staged, owner)  # never block the event loop on the DB
    return BlobPublic(sha256=staged.sha256, size=staged.size)


def _record(rt: Runtime, staged: StagedUpload, owner: str) -> None:
    with rt.sessions.begin() as session:
        staged.commit(session, owner=owner)
        emit(session, "blob.uploaded", address=owner, sha256=staged.sha256, size=staged.size)


@router.get("/{sha256}", response_class=FileResponse)
def download_blob(
    sha256: str,
    signer: Signer,
    rt: RuntimeDep,
    reader: str | None = None,
    exp: int | None = None,
    cap: str | None = None,
) -> FileResponse:
    """Download by capability (``reader``/``exp``/``cap`` from a lease) or as an uploader."""
    if not SHA256_RE.match(sha256):
        raise BlobNotFound("not a sha256", sha256=sha256)
    if cap is not None:
        if reader is None or exp is None or reader.lower() != signer.lower():
            raise Forbidden("this capability URL belongs to another reader")
        if not check_capability(
            rt.secret, sha256=sha256, reader=signer, expires=exp, cap=cap, now=time.time()
        ):
            raise Forbidden("capability URL is invalid or expired", sha256=sha256)
    else:
        with rt.reads() as session:
            rt.blobs.owned(session, sha256, signer)
    path = rt.blobs.path_for(sha256)
    if not path.is_file():
        raise BlobNotFound(f"blob {sha256} is not stored here", sha256=sha256)
    return FileResponse(path, media_type="application/octet-stream")
