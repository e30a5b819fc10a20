"""Sign-In with Ethereum messages (EIP-4361): build, parse, and check one.

The coordinator prepares the message (with a fresh single-use nonce) so the wallet shows
the user exactly what they sign; on the way back every field is parsed again and checked
against this server, never trusted from the earlier step:

    ${domain} wants you to sign in with your Ethereum account:
    ${address}

    ${statement}

    URI: ${uri}
    Version: 1
    Chain ID: ${chain_id}
    Nonce: ${nonce}
    Issued At: ${issued_at}
    Expiration Time: ${expiration_time}

The signature is EIP-191 ``personal_sign`` over the UTF-8 message; the recovered address
must be the one in the message (EIP-55 checksummed, as the spec requires).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from eth_account import Account
from eth_account.messages import encode_defunct

from quackmesh.core.errors import BadSignature, ValidationFailed
from quackmesh.core.ids import normalize_address

__all__ = ["SiweMessage", "parse_message", "recover_signer"]

STATEMENT = "Sign in to the QuackMesh dashboard. This costs nothing and moves no funds."
MAX_MESSAGE = 2048

_HEADER = re.compile(
    r"^(?P<domain>[^\s/]+) wants you to sign in with your Ethereum account:\n"
    r"(?P<address>0x[0-9a-fA-F]{40})\n\n"
    r"(?:(?P<statement>[^\n]+)\n\n)?"
)
_FIELDS = (
    ("uri", "URI"),
    ("version", "Version"),
    ("chain_id", "Chain ID"),
    ("nonce", "Nonce"),
    ("issued_at", "Issued At"),
    ("expiration_time", "Expiration Time"),
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(name: str, raw: str) -> float:
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ValidationFailed(f"SIWE {name} is not an RFC 3339 time", field="message") from exc


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str  # EIP-55 checksummed
    uri: str
    chain_id: int
    nonce: str
    issued_at: float
    expiration_time: float
    statement: str = STATEMENT
    version: str = "1"

    def text(self) -> str:
        return (
            f"{self.domain} wants you to sign in with your Ethereum account:\n"
            f"{self.address}\n\n"
            f"{self.statement}\n\n"
            f"URI: {self.uri}\n"
            f"Version: {self.version}\n"
            f"Chain ID: {self.chain_id}\n"
            f"Nonce: {self.nonce}\n"
            f"Issued At: {_iso(self.issued_at)}\n"
            f"Expiration Time: {_iso(self.expiration_time)}"
        )


def parse_message(text: str) -> SiweMessage:
    """Parse the EIP-4361 fields this server issues; anything else is a 422."""
    if len(text) > MAX_MESSAGE:
        raise ValidationFailed("SIWE message too long", field="message")
    head = _HEADER.match(text)
    if head is None:
        raise ValidationFailed("not an EIP-4361 sign-in message", field="message")
    values: dict[str, str] = {}
    lines = text[head.end() :].split("\n")
    for key, label in _FIELDS:
        if not lines or not lines[0].startswith(f"{label}: "):
            raise ValidationFailed(f"SIWE message lacks '{label}'", field="message")
        values[key] = lines.pop(0)[len(label) + 2 :]
    if any(line.strip() for line in lines):
        raise ValidationFailed("SIWE message has unexpected trailing fields", field="message")
    address = head["address"]
    try:
        checksummed = normalize_address(address)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed("SIWE address is not an address", field="message") from exc
    if checksummed != address:
        raise ValidationFailed("SIWE address must be EIP-55 checksummed", field="message")
    if not values["chain_id"].isdigit():
        raise ValidationFailed("SIWE Chain ID must be an integer", field="message")
    return SiweMessage(
        domain=head["domain"],
        address=address,
        statement=head["statement"] or "",
        uri=values["uri"],
        version=values["version"],
        chain_id=int(values["chain_id"]),
        nonce=values["nonce"],
        issued_at=_parse_iso("Issued At", values["issued_at"]),
        expiration_time=_parse_iso("Expiration Time", values["expiration_time"]),
    )


def recover_signer(text: str, signature: str) -> str:
    """The address that signed ``text`` with ``personal_sign`` (EIP-191)."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65:
            raise ValueError("a signature is 65 bytes")
        recovered: str = Account.recover_message(encode_defunct(text=text), signature=raw)
    except Exception as exc:
        raise BadSignature(f"unreadable SIWE signature: {exc}") from exc
    return normalize_address(recovered)
