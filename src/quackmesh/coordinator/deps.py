"""FastAPI dependencies as ``Annotated`` aliases: the runtime, the caller, rate limits.

The caller is the address that signed the request (scripts, nodes, the SDK) or, for the
dashboard, the address of the browser session in the ``qm_session`` cookie; a session
request that changes state must also carry the session's CSRF token.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from quackmesh.coordinator.auth.sessions import COOKIE, CSRF_HEADER, check_csrf, lookup
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.errors import MissingAuth
from quackmesh.core.signing import HEADER_SIGNATURE, verify_request

__all__ = [
    "OptionalViewer",
    "ReadSigner",
    "RuntimeDep",
    "Signer",
    "SubmitSigner",
    "get_runtime",
    "is_signed",
    "session_address",
    "signed_path",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_runtime(request: HTTPConnection) -> Runtime:
    # async on purpose: a sync dependency would push every request through the threadpool.
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def signed_path(request: HTTPConnection) -> str:
    """The path exactly as the client sent (and signed) it, query string included."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    path: str = raw.decode("latin-1")
    return f"{path}?{query.decode('latin-1')}" if query else path


def not_before(rt: Runtime) -> float:
    # Nonces are remembered in memory only: refuse anything signed before this process
    # started, so a restart cannot open a replay window.
    return float(math.floor(rt.started_at) - 1)


def is_signed(conn: HTTPConnection) -> bool:
    return HEADER_SIGNATURE.lower() in {k.lower() for k in conn.headers}


def _session_address(rt: Runtime, token: str | None, *, method: str, csrf: str | None) -> str:
    with rt.reads() as session:
        row = lookup(session, token, now=time.time())
        if row is None:
            raise MissingAuth("not signed in: sign the request or sign in on the dashboard")
        if method not in SAFE_METHODS:
            check_csrf(row, csrf)
        return row.address


async def session_address(conn: HTTPConnection, rt: Runtime, *, method: str) -> str:
    """The address of the browser session (401 without one; 403 without CSRF on writes)."""
    return await run_in_threadpool(
        _session_address,
        rt,
        conn.cookies.get(COOKIE),
        method=method,
        csrf=conn.headers.get(CSRF_HEADER),
    )


def _verify_signed(conn: HTTPConnection, rt: Runtime, *, method: str, body: bytes) -> str:
    return verify_request(
        conn.headers,
        method=method,
        path=signed_path(conn),
        body=body,
        window=rt.settings.auth_window_s,
        nonces=rt.nonces,
        not_before=not_before(rt),
    )


async def get_signer(request: Request, rt: RuntimeDep) -> str:
    if not is_signed(request) and COOKIE in request.cookies:
        return await session_address(request, rt, method=request.method)
    return _verify_signed(request, rt, method=request.method, body=await request.body())


Signer = Annotated[str, Depends(get_signer)]


async def get_read_signer(signer: Signer, rt: RuntimeDep) -> str:
    rt.read_limiter.hit(signer)
    return signer


async def get_submit_signer(signer: Signer, rt: RuntimeDep) -> str:
    rt.submit_limiter.hit(signer)
    return signer


ReadSigner = Annotated[str, Depends(get_read_signer)]
SubmitSigner = Annotated[str, Depends(get_submit_signer)]


async def get_optional_viewer(conn: HTTPConnection, rt: RuntimeDep) -> str | None:
    """Who is looking at a public view: a signed request's or session's address, else None.

    Only for reads (the public projection is shown to anyone); a bad signature is still a
    401 rather than a silent downgrade to signed-out.
    """
    if is_signed(conn):
        return _verify_signed(conn, rt, method=conn.scope.get("method", "GET"), body=b"")
    if COOKIE in conn.cookies:
        try:
            return await session_address(conn, rt, method="GET")
        except MissingAuth:
            return None  # an expired cookie just means signed out
    return None


OptionalViewer = Annotated[str | None, Depends(get_optional_viewer)]
