"""FastAPI dependencies as ``Annotated`` aliases: the runtime, the signer, rate limits."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request

from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.signing import verify_request

__all__ = ["ReadSigner", "RuntimeDep", "Signer", "SubmitSigner", "get_runtime", "signed_path"]


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: a sync dependency would push every request through the threadpool.
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def signed_path(request: Request) -> str:
    """The path exactly as the client sent (and signed) it, query string included."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    path: str = raw.decode("latin-1")
    return f"{path}?{query.decode('latin-1')}" if query else path


def not_before(rt: Runtime) -> float:
    # Nonces are remembered in memory only: refuse anything signed before this process
    # started, so a restart cannot open a replay window.
    return float(math.floor(rt.started_at) - 1)


async def get_signer(request: Request, rt: RuntimeDep) -> str:
    body = await request.body()
    return verify_request(
        request.headers,
        method=request.method,
        path=signed_path(request),
        body=body,
        window=rt.settings.auth_window_s,
        nonces=rt.nonces,
        not_before=not_before(rt),
    )


Signer = Annotated[str, Depends(get_signer)]


async def get_read_signer(signer: Signer, rt: RuntimeDep) -> str:
    rt.read_limiter.hit(signer)
    return signer


async def get_submit_signer(signer: Signer, rt: RuntimeDep) -> str:
    rt.submit_limiter.hit(signer)
    return signer


ReadSigner = Annotated[str, Depends(get_read_signer)]
SubmitSigner = Annotated[str, Depends(get_submit_signer)]
