"""Browser sign-in: EIP-4361 challenge and verification, development sign-in, sessions."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from quackmesh.coordinator.auth.sessions import (
    COOKIE,
    CSRF_HEADER,
    challenge,
    check_csrf,
    dev_accounts,
    dev_message,
    lookup,
    sign_in,
    sign_out,
)
from quackmesh.coordinator.auth.siwe import SiweMessage
from quackmesh.coordinator.db.models import WebSession
from quackmesh.coordinator.deps import RuntimeDep
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.errors import DevModeOnly, ValidationFailed
from quackmesh.core.ids import normalize_address

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class ChallengeCreate(BaseModel):
    address: str = Field(max_length=42)


class SiweCreate(BaseModel):
    message: str = Field(max_length=2048)
    signature: str = Field(max_length=200)


class DevSignIn(BaseModel):
    address: str | None = Field(default=None, max_length=42)


def _origin(request: Request) -> tuple[str, str]:
    """(domain, uri) of this server as the browser addressed it."""
    host = request.headers.get("host") or request.url.netloc
    return host, f"{request.url.scheme}://{host}"


def _session_view(rt: Runtime, row: WebSession | None) -> dict[str, Any]:
    dev = rt.settings.dev_mode
    return {
        "address": row.address if row else None,
        "csrf_token": row.csrf if row else None,
        "expires_at": row.expires_at if row else None,
        "method": row.method if row else None,
        "dev_mode": dev,
        "dev_accounts": [
            {"label": a.label, "address": a.address} for a in dev_accounts(rt.settings)
        ],
    }


def _set_cookie(request: Request, response: Response, token: str, ttl_s: float) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


@router.get("/session")
def read_session(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """Who this browser is signed in as (all nulls when signed out), and its CSRF token."""
    with rt.reads() as session:
        row = lookup(session, request.cookies.get(COOKIE), now=time.time())
        return _session_view(rt, row)


def _challenge(request: Request, rt: Runtime, address: str) -> SiweMessage:
    domain, uri = _origin(request)
    with rt.sessions.begin() as session:
        return challenge(
            session,
            address=address,
            domain=domain,
            uri=uri,
            chain_id=rt.settings.siwe_chain_id,
            now=time.time(),
        )


@router.post("/challenge")
def create_challenge(body: ChallengeCreate, request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """An EIP-4361 message for the wallet to sign (single-use nonce, 5 minutes)."""
    msg = _challenge(request, rt, body.address)
    return {"message": msg.text(), "nonce": msg.nonce, "expires_at": msg.expiration_time}


def _open_session(
    request: Request, response: Response, rt: Runtime, *, message: str, signature: str, method: str
) -> dict[str, Any]:
    domain, uri = _origin(request)
    with rt.sessions.begin() as session:
        token, row = sign_in(
            session,
            message=message,
            signature=signature,
            domain=domain,
            uri=uri,
            chain_id=rt.settings.siwe_chain_id,
            ttl_s=rt.settings.session_ttl_s,
            now=time.time(),
            method=method,
        )
        view = _session_view(rt, row)
    _set_cookie(request, response, token, rt.settings.session_ttl_s)
    return view


@router.post("/siwe")
def siwe_sign_in(
    body: SiweCreate, request: Request, response: Response, rt: RuntimeDep
) -> dict[str, Any]:
    """Verify a signed EIP-4361 message and open a session (HTTP-only cookie)."""
    return _open_session(
        request, response, rt, message=body.message, signature=body.signature, method="siwe"
    )


@router.post("/dev")
def dev_sign_in(
    body: DevSignIn, request: Request, response: Response, rt: RuntimeDep
) -> dict[str, Any]:
    """Development mode only: sign in with a local demo key (the server signs the same SIWE
    message a wallet would, and checks it the same way)."""
    if not rt.settings.dev_mode:
        raise DevModeOnly("development sign-in only exists in development mode")
    accounts = dev_accounts(rt.settings)
    if body.address is None:
        account = accounts[0]
    else:
        try:
            wanted = normalize_address(body.address)
        except (ValueError, TypeError) as exc:
            raise ValidationFailed(f"not an address: {body.address!r}", field="address") from exc
        matches = [a for a in accounts if a.address == wanted]
        if not matches:
            raise ValidationFailed("no local development key for that address", field="address")
        account = matches[0]
    message, signature = dev_message(_challenge(request, rt, account.address), account)
    return _open_session(request, response, rt, message=message, signature=signature, method="dev")


@router.post("/logout", status_code=204)
def logout(request: Request, rt: RuntimeDep) -> Response:
    """End the session (needs the CSRF header, like every state change from the page)."""
    token = request.cookies.get(COOKIE)
    with rt.sessions.begin() as session:
        row = lookup(session, token, now=time.time())
        if row is not None:
            check_csrf(row, request.headers.get(CSRF_HEADER))
            sign_out(session, token)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    return response
