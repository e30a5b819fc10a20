"""Browser sessions: SIWE challenges, sign-in, cookie lookup, CSRF, development sign-in.

A session is a random 256-bit token in an HTTP-only, ``SameSite=Strict`` cookie; the
database keeps only its sha256, so a leaked table opens no session. Each session has its
own CSRF token, which the page sends back in ``X-CSRF-Token`` on every state-changing
request (double submit: a cross-site form can neither read nor set the header).

Development sign-in signs a real SIWE message server-side with a local key from
``$QUACKMESH_HOME/dev-keys/*.key`` (hex private keys the demo writes for its client and
nodes) and then runs the very same checks as a wallet sign-in. It is refused unless the
coordinator is in development mode.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import delete
from sqlalchemy.orm import Session

from quackmesh.coordinator.auth.siwe import SiweMessage, parse_message, recover_signer
from quackmesh.coordinator.db.models import AuthNonce, WebSession
from quackmesh.coordinator.settings import Settings
from quackmesh.core.errors import (
    AuthError,
    BadSignature,
    CsrfFailed,
    DevModeOnly,
    Forbidden,
    ValidationFailed,
)
from quackmesh.core.ids import normalize_address

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "DevAccount",
    "challenge",
    "check_csrf",
    "dev_accounts",
    "dev_message",
    "lookup",
    "sign_in",
    "sign_out",
    "write_dev_key",
]

COOKIE = "qm_session"
CSRF_HEADER = "X-CSRF-Token"
CHALLENGE_TTL_S = 300.0
CLOCK_SKEW_S = 60.0


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def challenge(
    session: Session, *, address: str, domain: str, uri: str, chain_id: int, now: float
) -> SiweMessage:
    """A fresh EIP-4361 message for ``address`` with a single-use nonce."""
    try:
        address = normalize_address(address)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an address: {address!r}", field="address") from exc
    # Expired challenges are dropped here, so the table only ever holds the live ones.
    session.execute(delete(AuthNonce).where(AuthNonce.expires_at < now))
    nonce = secrets.token_hex(12)
    session.add(AuthNonce(nonce=nonce, issued_at=now, expires_at=now + CHALLENGE_TTL_S))
    return SiweMessage(
        domain=domain,
        address=address,
        uri=uri,
        chain_id=chain_id,
        nonce=nonce,
        issued_at=now,
        expiration_time=now + CHALLENGE_TTL_S,
    )


def sign_in(
    session: Session,
    *,
    message: str,
    signature: str,
    domain: str,
    uri: str,
    chain_id: int,
    ttl_s: float,
    now: float,
    method: str = "siwe",
) -> tuple[str, WebSession]:
    """Check a signed SIWE message and open a session: ``(cookie token, row)``.

    Checked: the signer is the message's address, the domain and URI are this server's
    (a message signed for another site cannot be replayed here), the chain, the times,
    and that the nonce was issued here and is spent now (single use).
    """
    msg = parse_message(message)
    if msg.domain != domain or msg.uri != uri:
        raise Forbidden(
            f"this sign-in message is for {msg.domain} ({msg.uri}), not {domain} ({uri})"
        )
    if msg.chain_id != chain_id or msg.version != "1":
        raise ValidationFailed(f"SIWE Chain ID must be {chain_id}, version 1", field="message")
    if msg.issued_at > now + CLOCK_SKEW_S or msg.expiration_time < now:
        raise AuthError("the sign-in message has expired; ask for a new one")
    if recover_signer(message, signature) != msg.address:
        raise BadSignature("the signature is not by the address in the message")
    row = session.get(AuthNonce, msg.nonce, with_for_update=True)
    if row is None or row.used or row.expires_at < now:
        raise AuthError("unknown or already used sign-in nonce; ask for a new message")
    row.used = True
    token = secrets.token_urlsafe(32)
    web = WebSession(
        token_sha=_sha(token),
        address=msg.address,
        csrf=secrets.token_urlsafe(24),
        created_at=now,
        expires_at=now + ttl_s,
        method=method,
    )
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    session.add(web)
    return token, web


def lookup(session: Session, token: str | None, *, now: float) -> WebSession | None:
    if not token or len(token) > 128:
        return None
    row = session.get(WebSession, _sha(token))
    if row is None or row.expires_at < now:
        return None
    return row


def check_csrf(row: WebSession, header: str | None) -> None:
    if not header or not hmac.compare_digest(row.csrf, header):
        raise CsrfFailed(
            f"missing or wrong {CSRF_HEADER} header (state-changing requests made with a "
            "session cookie must echo the session's CSRF token)"
        )


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.token_sha == _sha(token)))


# --- development sign-in ----------------------------------------------------------------


@dataclass(frozen=True)
class DevAccount:
    label: str
    address: str
    key: str  # hex private key; development mode only, never sent to a browser


def _dev_dir(settings: Settings) -> Path:
    return settings.home / "dev-keys"


def write_dev_key(settings: Settings, label: str, private_key: bytes) -> Path:
    """Keep a demo key where development sign-in finds it (0600, dev mode only)."""
    if not settings.dev_mode:
        raise DevModeOnly("development keys are only written in development mode")
    folder = _dev_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{label}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(private_key.hex())
    return path


def dev_accounts(settings: Settings) -> list[DevAccount]:
    """The local development keys, the client ("client", then "dev") first."""
    if not settings.dev_mode:
        return []
    folder = _dev_dir(settings)
    if not folder.is_dir() or not any(folder.glob("*.key")):
        write_dev_key(settings, "dev", Account.create().key)
    found: list[DevAccount] = []
    for path in sorted(folder.glob("*.key")):
        key = path.read_text().strip()
        try:
            address = normalize_address(Account.from_key(key).address)
        except Exception:
            continue  # a file that is not a key is ignored, not fatal
        found.append(DevAccount(label=path.stem, address=address, key=key))
    order = {"client": 0, "dev": 1}
    return sorted(found, key=lambda a: (order.get(a.label, 2), a.label))


def dev_message(msg: SiweMessage, account: DevAccount) -> tuple[str, str]:
    """``(message, signature)``: the SIWE message signed with the local key."""
    text = msg.text()
    signed = Account.sign_message(encode_defunct(text=text), private_key=account.key)
    return text, "0x" + bytes(signed.signature).hex().removeprefix("0x")
